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


# --- Top-N over all positions with non-maximum suppression ---------------------------------


def _pixels(origin, size):
    """The set of input pixels a crop with top-left ``origin`` covers (the overlap reference)."""
    return {(origin[0] + dy, origin[1] + dx) for dy in range(size[0]) for dx in range(size[1])}


def _brute_force_nms(acts, rf_size, jump, start, top_n):
    """Greedy NMS written out with python loops and pixel sets, for one channel of (N, H, W)."""
    n, h, w = acts.shape
    cands = [(-float(acts[i, r, c]), i, r, c) for i in range(n) for r in range(h) for c in range(w)
             if acts[i, r, c] > 0]
    cands.sort()  # strongest first; ties by image, row, column
    kept = []
    for neg, i, r, c in cands:
        # top-left corner: centre minus half the size, rounded half up
        org = tuple(int(np.floor(start[k] + (r, c)[k] * jump[k] - (rf_size[k] - 1) / 2 + 0.5)) for k in range(2))
        px = _pixels(org, rf_size)
        area = rf_size[0] * rf_size[1]
        if any(ki == i and len(px & kpx) / area > 0.5 for _, ki, _, _, kpx in kept):
            continue
        kept.append((-neg, i, r, c, px))
        if len(kept) == top_n:
            break
    return kept


def _bumpy_acts(seed=3):
    """(N=3, C=3, 9, 11) activations with smooth bumps, so neighbours of a maximum are strong too."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:9, 0:11]
    acts = rng.normal(0, 0.05, (3, 3, 9, 11))
    for n in range(3):
        for c in range(3):
            for _ in range(2):
                cy, cx, a = rng.uniform(0, 9), rng.uniform(0, 11), rng.uniform(0.5, 3)
                acts[n, c] += a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 6.0)
    acts[:, 2] = -np.abs(acts[:, 2])  # channel 2 never active
    return acts


def test_nms_top_n_matches_brute_force_and_never_repeats_a_crop():
    from reportgen.optim.patches import top_patches_nms

    acts = _bumpy_acts()
    rng = np.random.default_rng(1)
    rf, jump, start = (7, 7), (2, 2), (1.0, 1.0)
    images = rng.uniform(0, 1, (3, 3, 20, 24))
    res = top_patches_nms(images, acts, rf, jump, start, top_n=6)
    suppressed_something = False
    for c in (0, 1):
        ref = _brute_force_nms(acts[:, c], rf, jump, start, top_n=6)
        t = res[c]
        assert not t.inactive and len(t.value) == len(ref) == 6
        np.testing.assert_array_equal(t.value, [v for v, *_ in ref])
        np.testing.assert_array_equal(t.image_index, [i for _, i, *_ in ref])
        np.testing.assert_array_equal(t.position, [(r, cc) for _, _, r, cc, _ in ref])
        # no two kept crops of one image overlap by more than half (pixel sets, not our formula)
        for a in range(6):
            for b in range(a + 1, 6):
                if t.image_index[a] == t.image_index[b]:
                    share = len(_pixels(t.origin[a], rf) & _pixels(t.origin[b], rf)) / (rf[0] * rf[1])
                    assert share <= 0.5
        # the kept set is not just the six largest values: suppression did something
        plain_top = np.sort(acts[:, c].ravel())[::-1][:6]
        suppressed_something |= not np.array_equal(np.sort(t.value)[::-1], plain_top)
        # every crop is the image window at its origin (zero-padded)
        for j in range(6):
            o = t.origin[j]
            pad = np.pad(images[t.image_index[j]], ((0, 0), (10, 10), (10, 10)))
            np.testing.assert_array_equal(t.crops[j], pad[:, o[0] + 10:o[0] + 17, o[1] + 10:o[1] + 17])
    assert suppressed_something
    assert res[2].inactive and len(res[2].value) == 0 and res[2].crops.shape == (0, 3, 7, 7)


def test_nms_neuron_feature_is_the_weighted_mean_of_the_kept_crops():
    from reportgen.optim.patches import top_patches_nms

    acts = _bumpy_acts(seed=5)
    images = np.random.default_rng(2).uniform(0, 1, (3, 3, 20, 24))
    t = top_patches_nms(images, acts, (5, 5), (2, 2), (2.0, 2.0), top_n=4)[0]
    assert len(t.value) == 4
    # weights a_j / a_max, and per pixel only the crops that cover it (padding left out)
    w = (t.value / t.value.max())[:, None, None, None] * t.valid[:, None]
    expected = (w * t.crops).sum(axis=0) / w.sum(axis=0)
    np.testing.assert_allclose(neuron_feature(t.crops, t.value, t.valid), expected, rtol=1e-12)


def test_nms_keeps_fewer_when_few_separate_responses():
    from reportgen.optim.patches import top_patches_nms

    acts = np.zeros((2, 1, 6, 6))
    acts[0, 0, 2, 2], acts[0, 0, 2, 3] = 5.0, 4.0  # neighbours: 1 px apart at jump 1, RF 5 -> overlap 0.8
    acts[1, 0, 0, 0] = 1.0
    t = top_patches_nms(np.zeros((2, 3, 6, 6)), acts, (5, 5), (1, 1), (0.0, 0.0), top_n=9)[0]
    np.testing.assert_array_equal(t.value, [5.0, 1.0])
    np.testing.assert_array_equal(t.image_index, [0, 1])
    assert not t.inactive and not t.tie_at_cut
