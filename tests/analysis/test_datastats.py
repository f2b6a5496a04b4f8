"""Data statistics per location: known answers for the background, colour, spectrum,
object histograms and the distances between locations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from reportgen.analysis import datastats as ds


def test_median_background_removes_a_moving_object():
    bg = np.random.default_rng(0).uniform(size=(12, 16, 3)).astype(np.float32)
    frames = np.stack([bg.copy() for _ in range(3)])
    for i, x in enumerate((1, 6, 11)):  # a bright square at a different place in each frame
        frames[i, 3:7, x:x + 4] = 1.0
    assert np.array_equal(ds.background(frames), bg)


def test_lab_of_reference_colours():
    # CIELAB (D65) of sRGB white, black, red, green and blue as published by colour scientists
    lab = ds.srgb_to_lab(np.array([[1, 1, 1], [0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float))
    ref = [[100, 0, 0], [0, 0, 0], [53.24, 80.09, 67.20], [87.73, -86.18, 83.18], [32.30, 79.19, -107.86]]
    assert lab == pytest.approx(np.array(ref), abs=0.05)


def test_colour_stats_of_two_flat_frames():
    frames = np.stack([np.full((4, 4, 3), 0.0), np.full((4, 4, 3), 1.0)])
    mean, sd = ds.colour_stats(frames)
    assert mean == pytest.approx([50, 0, 0], abs=1e-4)  # half the pixels L*=0, half L*=100
    assert sd == pytest.approx([50, 0, 0], abs=1e-4)


def _coloured_noise(exponent: float, seed: int, size: int = 128) -> np.ndarray:
    """Gaussian noise whose power falls as f^exponent (amplitude as f^(exponent/2))."""
    rng = np.random.default_rng(seed)
    f = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None, :])
    f[0, 0] = 1.0
    return np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(size, size))) * f ** (exponent / 2)))


def test_white_noise_has_a_flat_spectrum_at_its_variance():
    p = np.mean([ds.radial_spectrum(np.random.default_rng(s).normal(scale=0.5, size=(96, 128)))
                 for s in range(8)], axis=0)
    assert abs(ds.spectrum_slope(p)) < 0.1
    assert np.nanmedian(p) == pytest.approx(0.25, rel=0.1)


@pytest.mark.parametrize("exponent", [-2.0, -1.0])
def test_power_law_noise_reads_back_its_slope(exponent):
    spec = np.mean([ds.radial_spectrum(_coloured_noise(exponent, s)) for s in range(4)], axis=0)
    assert ds.spectrum_slope(spec) == pytest.approx(exponent, abs=0.15)


def test_spectrum_bins_are_in_cycles_per_pixel():
    # a horizontal grating of 0.25 cycles/pixel puts its power in the bin holding 0.25
    x = np.cos(2 * np.pi * 0.25 * np.arange(64))[None, :].repeat(64, axis=0)
    p = ds.radial_spectrum(x)
    peak = int(np.nanargmax(p))
    assert ds.SPECTRUM_EDGES[peak] <= 0.25 < ds.SPECTRUM_EDGES[peak + 1]


def test_box_histograms_by_hand():
    # image 100 x 200 (w x h): a box 50 px tall with its feet at row 190, centred at x 25
    scale, foot, centre = ds.box_histograms([(20, 140, 30, 190, 100, 200), (0, 0, 100, 200, 100, 200)])
    assert scale[5] == 1 and scale[19] == 1 and scale.sum() == 2  # 0.25 -> bin 5; 1.0 -> last bin
    assert foot[19] == 2  # 0.95 and 1.0
    assert centre[5] == 1 and centre[10] == 1  # 0.25 and 0.5


def test_emd_equals_scipy_wasserstein():
    rng = np.random.default_rng(2)
    p, q = rng.integers(0, 5, 20), rng.integers(0, 5, 20)
    centres = (ds.HIST_EDGES[:-1] + ds.HIST_EDGES[1:]) / 2
    assert ds.emd(p, q) == pytest.approx(stats.wasserstein_distance(centres, centres, p, q), abs=1e-12)
    assert np.isnan(ds.emd(p, None)) and np.isnan(ds.emd(p, np.zeros(20)))


def _loc(level: float, boxes=None) -> ds.LocationData:
    frames = np.full((2, 8, 8, 3), level, dtype=np.float32)
    frames[:, ::2] += 0.1  # some structure so the spectrum is not empty
    return ds.location_data(frames, boxes=boxes, annotated_frames=2 if boxes is not None else 0)


def test_distances_are_zero_on_self_symmetric_and_by_hand():
    a, b = _loc(0.2, [(0, 0, 4, 4, 8, 8)]), _loc(0.5, [(0, 0, 8, 8, 8, 8)])
    assert ds.distance("background", a, b) == pytest.approx(0.3, abs=1e-6)
    # all mass moves from the bin [0.5, 0.55) to the last one [0.95, 1]: 9 bins of 0.05
    assert ds.distance("scale", a, b) == pytest.approx(0.45, abs=1e-12)
    for m in ds.MEASURES:
        d = ds.distance_matrix(m, [a, b])
        assert d[0, 0] == 0 and d[0, 1] == d[1, 0] and d[0, 1] >= 0
    lab_a = np.concatenate(ds.colour_stats(np.full((1, 2, 2, 3), 0.2)))
    assert ds.distance("colour", _loc(0.2), _loc(0.2)) == 0
    assert lab_a[0] > 0


def test_object_distances_are_nan_without_annotations():
    d = ds.distance_matrix("scale", [_loc(0.2), _loc(0.5, [(0, 0, 4, 4, 8, 8)])])
    assert np.isnan(d[0, 1]) and np.isnan(d[0, 0]) and d[1, 1] == 0
