"""Known-answer tests for reportgen.optim.patches (top patches, neuron feature, colour index)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reportgen.optim.patches import (
    colour_selectivity,
    crop_origin,
    crop_padded,
    neuron_feature,
    to_grey,
    top_activations,
    top_patches,
)


def _ramp_image(h=8, w=10):
    """(3, h, w) image whose every pixel value encodes its channel, row and column."""
    c, y, x = np.meshgrid(np.arange(3), np.arange(h), np.arange(w), indexing="ij")
    return (c * 1000 + y * 100 + x + 1) / 10000.0


def test_top_activations_value_position_and_tie_rule():
    acts = np.zeros((2, 2, 3, 4))
    acts[0, 0, 1, 2] = 5.0
    acts[1, 0, 2, 3] = 7.0
    acts[0, 1] = -1.0
    acts[0, 1, 2, 0] = -0.5
    # Two equal maxima: the first in row-major order wins.
    acts[1, 1, 0, 3] = 2.0
    acts[1, 1, 1, 0] = 2.0
    inp = acts.copy()
    top = top_activations(acts)
    np.testing.assert_array_equal(acts, inp)  # not mutated
    assert top.value.shape == (2, 2) and top.position.shape == (2, 2, 2)
    np.testing.assert_array_equal(top.value, [[5.0, 7.0], [-0.5, 2.0]])
    np.testing.assert_array_equal(top.position[0], [[1, 2], [2, 3]])
    np.testing.assert_array_equal(top.position[1], [[2, 0], [0, 3]])


def test_top_activations_ignores_nan_and_accepts_torch():
    acts = torch.zeros(1, 1, 2, 2)
    acts[0, 0, 0, 0] = float("nan")
    acts[0, 0, 1, 1] = 3.0
    top = top_activations(acts)
    assert top.value[0, 0] == 3.0
    np.testing.assert_array_equal(top.position[0, 0], [1, 1])


def test_crop_at_the_border_is_padded_with_the_right_offset():
    img = _ramp_image()
    # Unit (0, 0) of a map with start (1, 1), jump 2, RF 5: centre (1, 1), origin (-1, -1).
    origin = crop_origin([0, 0], (5, 5), (2, 2), (1, 1))
    np.testing.assert_array_equal(origin, [-1, -1])
    crop, valid = crop_padded(img, origin, (5, 5), pad="zero")
    assert crop.shape == (3, 5, 5)
    np.testing.assert_array_equal(crop[:, 1:, 1:], img[:, 0:4, 0:4])
    assert (crop[:, 0, :] == 0).all() and (crop[:, :, 0] == 0).all()
    assert not valid[0].any() and not valid[:, 0].any() and valid[1:, 1:].all()
    # Bottom-right corner: unit (3, 4) -> centre (7, 9), origin (5, 7): 3x3 of the image.
    origin = crop_origin([3, 4], (5, 5), (2, 2), (1, 1))
    np.testing.assert_array_equal(origin, [5, 7])
    crop, valid = crop_padded(img, origin, (5, 5), pad="mean")
    np.testing.assert_array_equal(crop[:, :3, :3], img[:, 5:8, 7:10])
    mean = img.reshape(3, -1).mean(axis=1)
    np.testing.assert_allclose(crop[:, 4, 4], mean)
    assert valid.sum() == 9
    with pytest.raises(ValueError):
        crop_padded(img, (0, 0), (3, 3), pad="edge")


def test_even_rf_and_half_pixel_start_round_half_up():
    # RF 4 centred on 1.5 spans 0..3: origin 0 exactly.
    np.testing.assert_array_equal(crop_origin([0, 0], (4, 4), (1, 1), (1.5, 1.5)), [0, 0])
    # RF 4 centred on the whole pixel 2: corner 0.5, rounded half up to 1.
    np.testing.assert_array_equal(crop_origin([2, 1], (4, 4), (1, 1), (0, 1)), [1, 1])


def test_top_patches_ranking_ties_and_inactive_channels():
    rng = np.random.default_rng(0)
    images = rng.random((5, 3, 8, 8))
    acts = np.full((5, 2, 4, 4), -1.0)
    for n, v in enumerate([1.0, 3.0, 2.0, 3.0, 0.5]):
        acts[n, 0, n % 4, (n + 1) % 4] = v
    acts[:, 1] = -2.0  # never active
    images_in, acts_in = images.copy(), acts.copy()
    res = top_patches(images, acts, rf_size=(3, 3), jump=(2, 2), start=(0, 0), top_n=3)
    np.testing.assert_array_equal(images, images_in)
    np.testing.assert_array_equal(acts, acts_in)
    assert len(res) == 2
    ch0 = res[0]
    # Equal values (images 1 and 3) keep image order.
    np.testing.assert_array_equal(ch0.image_index, [1, 3, 2])
    np.testing.assert_array_equal(ch0.value, [3.0, 3.0, 2.0])
    np.testing.assert_array_equal(ch0.position, [[1, 2], [3, 0], [2, 3]])
    assert ch0.crops.shape == (3, 3, 3, 3) and ch0.positive.all()
    assert not ch0.inactive and not ch0.tie_at_cut
    # Image 1's max sits at (1, 2): centre (2, 4), origin (1, 3).
    np.testing.assert_array_equal(ch0.origin[0], [1, 3])
    np.testing.assert_array_equal(ch0.crops[0], images[1][:, 1:4, 3:6])
    ch1 = res[1]
    assert ch1.inactive and not ch1.positive.any()
    assert ch1.tie_at_cut  # every image ties at -2: the cut is arbitrary
    np.testing.assert_array_equal(ch1.image_index, [0, 1, 2])
    # top_n larger than N keeps every image.
    assert len(top_patches(images, acts, (3, 3), (2, 2), (0, 0), top_n=50)[0].value) == 5


def test_crops_reproduce_the_unit_activation_of_a_strided_conv():
    """The crop of the top unit, run through the conv without padding, gives its value."""
    torch.manual_seed(0)
    weight = torch.randn(4, 3, 3, 3)
    images = torch.rand(6, 3, 9, 11)
    acts = F.conv2d(images, weight, stride=2, padding=1)
    # conv 3x3, stride 2, padding 1: RF 3, jump 2, centre of unit (0, 0) at input 0.
    res = top_patches(images, acts, rf_size=(3, 3), jump=(2, 2), start=(0, 0), top_n=4, pad="zero")
    for tp in res:
        crops = torch.from_numpy(tp.crops).float()
        direct = F.conv2d(crops, weight[tp.channel:tp.channel + 1])[:, 0, 0, 0]
        np.testing.assert_allclose(direct.numpy(), tp.value, rtol=1e-5, atol=1e-5)


def test_neuron_feature_known_answers():
    rng = np.random.default_rng(1)
    crop = rng.random((3, 4, 5))
    same = np.stack([crop] * 4)
    np.testing.assert_allclose(neuron_feature(same, [1.0, 2.0, 0.5, 3.0]), crop)
    a, b, c = rng.random((3, 3, 4, 5))
    nf = neuron_feature(np.stack([a, b, c]), [2.0, 1.0, -4.0])
    # Weights 2/2 and 1/2; the negative activation gets weight 0.
    np.testing.assert_allclose(nf, (1.0 * a + 0.5 * b) / 1.5)
    assert np.isnan(neuron_feature(np.stack([a, b]), [0.0, -1.0])).all()
    # A NaN crop with zero weight does not leak in.
    nan_crop = np.full_like(a, np.nan)
    np.testing.assert_allclose(neuron_feature(np.stack([a, nan_crop]), [1.0, -1.0]), a)


def test_neuron_feature_leaves_padding_out_pixel_by_pixel():
    a = np.ones((3, 2, 2))
    b = np.zeros((3, 2, 2))
    valid = np.ones((2, 2, 2), dtype=bool)
    valid[1, 0, 0] = False  # b's corner is padding
    valid[0, 1, 1] = False
    valid[1, 1, 1] = False  # nobody covers this pixel
    nf = neuron_feature(np.stack([a, b]), [1.0, 1.0], valid=valid)
    np.testing.assert_allclose(nf[:, 0, 0], 1.0)
    np.testing.assert_allclose(nf[:, 0, 1], 0.5)
    assert np.isnan(nf[:, 1, 1]).all()


def test_to_grey_uses_bt601_and_keeps_grey():
    px = np.zeros((1, 3, 1, 1))
    px[0, :, 0, 0] = [1.0, 0.5, 0.25]
    g = to_grey(px)
    assert g.shape == px.shape
    np.testing.assert_allclose(g[0, :, 0, 0], [0.299 + 0.2935 + 0.0285] * 3)
    grey = np.repeat(np.random.default_rng(2).random((5, 1, 3, 3)), 3, axis=1)
    np.testing.assert_allclose(to_grey(grey), grey)


def _unit(weight, crops):
    """Response of a one-channel conv unit covering the whole crop (no bias)."""
    return F.conv2d(torch.as_tensor(crops, dtype=torch.float64), weight)[:, 0, 0, 0].numpy()


def test_colour_selectivity_grey_inputs_give_zero():
    torch.manual_seed(0)
    # Mixed-sign weights with a positive sum, so most grey crops excite the unit.
    weight = torch.randn(1, 3, 3, 3, dtype=torch.float64) + 0.5
    crops = to_grey(np.random.default_rng(3).random((8, 3, 3, 3)))
    colour = _unit(weight, crops)
    assert (colour > 0).sum() >= 4
    # Grey crops are their own grey version: no colour selectivity.
    assert colour_selectivity(colour, _unit(weight, to_grey(crops))) == 0.0


def test_colour_selectivity_red_green_opponent_gives_one():
    weight = torch.zeros(1, 3, 3, 3, dtype=torch.float64)
    weight[0, 0] = 1.0
    weight[0, 1] = -1.0
    rng = np.random.default_rng(4)
    crops = np.zeros((6, 3, 3, 3))
    crops[:, 0] = rng.uniform(0.5, 1.0, (6, 3, 3))  # reddish
    crops[:, 1] = rng.uniform(0.0, 0.2, (6, 3, 3))
    colour = _unit(weight, crops)
    grey = _unit(weight, to_grey(crops))
    assert (colour > 0).all()
    np.testing.assert_allclose(grey, 0.0, atol=1e-12)
    assert colour_selectivity(colour, grey) == 1.0


def test_colour_selectivity_clips_and_skips_non_positive():
    assert colour_selectivity([2.0, -1.0], [1.0, 5.0]) == 0.5
    assert colour_selectivity([1.0], [3.0]) == 0.0  # grey stronger: clipped at 0
    assert colour_selectivity([1.0], [-3.0]) == 1.0  # grey inhibits: clipped at 1
    assert np.isnan(colour_selectivity([0.0, -1.0], [1.0, 1.0]))
