"""What the frames of one location look like, and how far apart two locations are.

Pure numpy (Pillow only to resample backgrounds): frames in, numbers out.

Per location (``location_data``):
- background: the per-pixel median over its frames, which removes whatever moves;
- colour: mean and standard deviation of each CIELAB channel (D65 white, from sRGB)
  over every pixel of every frame;
- spectrum: the radially averaged power spectrum of the luminance, in fixed
  log-spaced frequency bins (cycles per pixel, so frames of any size compare), and its
  slope on log-log axes (natural images: about -2);
- objects (with annotations): histograms of box height over image height, foot row
  (box bottom over image height) and box centre column (over image width), in fixed bins.

Distances between two locations (``DISTANCES`` says each in words). Every distance is
0 for a location against itself, symmetric, and NaN where either side lacks the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Log-spaced frequency bins from 1/128 to the Nyquist frequency 0.5 cycles per pixel.
SPECTRUM_EDGES = np.geomspace(1 / 128, 0.5, 17)
# The slope is fitted on the middle of the range: the lowest bins hold the window's own
# leakage and few frequencies, the highest ones the camera's blur and aliasing.
SLOPE_RANGE = (0.02, 0.35)
HIST_EDGES = np.linspace(0.0, 1.0, 21)  # shares of the image height or width, 0.05 wide
BACKGROUND_SIZE = (32, 32)  # backgrounds are compared at this (H, W)
COLOUR_SPACE = "CIELAB (D65), from sRGB"

DISTANCES = {
    "background": "root mean square difference of the two background estimates (RGB in [0, 1]), both "
                  f"resized to {BACKGROUND_SIZE[0]}×{BACKGROUND_SIZE[1]} pixels",
    "colour": "Euclidean distance between the locations' CIELAB mean and standard deviation "
              "(L*, a*, b* of each: 6 numbers, in CIELAB units)",
    "spectrum": "root mean square difference of the log10 radially averaged power spectra over the "
                "frequency bins both have",
    "scale": "earth mover's distance between the histograms of box height / image height "
             "(in shares of the image height)",
    "position": "mean of the earth mover's distances between the foot-row histograms (box bottom / image "
                "height) and the centre-column histograms (box centre / image width)",
}
MEASURES = tuple(DISTANCES)
OBJECT_MEASURES = ("scale", "position")


@dataclass
class LocationData:
    """One location's data statistics (the value the per-run part returns and the cache stores)."""

    frames: int  # frames the statistics are over
    extra_frames: int  # of which came from ``extra_frames`` rather than the test images
    background: np.ndarray  # (H, W, 3) float32 RGB in [0, 1]: per-pixel median over frames
    colour_mean: np.ndarray  # (3,) CIELAB L*, a*, b*
    colour_sd: np.ndarray  # (3,)
    spectrum: np.ndarray  # (B,) mean power per SPECTRUM_EDGES bin; NaN where no frequency falls
    spectrum_slope: float  # log10 power per log10 frequency over SLOPE_RANGE; NaN when not fitted
    annotated_frames: int = 0  # frames with an entry in the annotation file (0 without one)
    boxes: int = 0
    scale_hist: np.ndarray | None = None  # (20,) counts of box height / image height; None without annotations
    foot_hist: np.ndarray | None = None  # (20,) counts of box bottom / image height
    centre_hist: np.ndarray | None = None  # (20,) counts of box centre x / image width


def background(frames: np.ndarray) -> np.ndarray:
    """frames: (N, H, W, 3) in [0, 1] -> (H, W, 3) per-pixel median (float32)."""
    return np.median(np.asarray(frames, dtype=np.float32), axis=0).astype(np.float32)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB in [0, 1] -> (..., 3) CIELAB with the D65 white point."""
    c = np.asarray(rgb, dtype=np.float64)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    eps, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def colour_stats(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """frames: (N, H, W, 3) sRGB in [0, 1] -> (mean (3,), sd (3,)) of L*, a*, b* over all pixels."""
    lab = srgb_to_lab(frames).reshape(-1, 3)
    return lab.mean(axis=0), lab.std(axis=0)


def luminance(frames: np.ndarray) -> np.ndarray:
    """(..., 3) RGB -> (...) ITU-R BT.601 luma, the grey the input pipeline uses."""
    return np.asarray(frames, dtype=np.float64) @ np.array([0.299, 0.587, 0.114])


def radial_spectrum(grey: np.ndarray) -> np.ndarray:
    """grey: (H, W) -> (B,) mean power in each SPECTRUM_EDGES bin (NaN for empty bins).

    The mean is removed and a Hann window applied (edges would otherwise add a cross of
    power along the axes); power is |FFT|^2 / sum(window^2), so white noise of variance
    s^2 has a flat spectrum at s^2.
    """
    g = np.asarray(grey, dtype=np.float64)
    h, w = g.shape
    win = np.outer(np.hanning(h), np.hanning(w)) if min(h, w) > 2 else np.ones((h, w))
    x = (g - g.mean()) * win
    power = np.abs(np.fft.fft2(x)) ** 2 / max(float(np.sum(win ** 2)), 1e-12)
    radius = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
    which = np.digitize(radius.ravel(), SPECTRUM_EDGES) - 1  # bin i holds edges[i] <= f < edges[i+1]
    nb = len(SPECTRUM_EDGES) - 1
    ok = (which >= 0) & (which < nb)
    sums = np.bincount(which[ok], weights=power.ravel()[ok], minlength=nb)
    counts = np.bincount(which[ok], minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def spectrum_centres() -> np.ndarray:
    """(B,) geometric centre of each spectrum bin, cycles per pixel."""
    return np.sqrt(SPECTRUM_EDGES[:-1] * SPECTRUM_EDGES[1:])


def spectrum_slope(spectrum: np.ndarray) -> float:
    """Least-squares slope of log10 power against log10 frequency over SLOPE_RANGE."""
    f = spectrum_centres()
    p = np.asarray(spectrum, dtype=np.float64)
    ok = (f >= SLOPE_RANGE[0]) & (f <= SLOPE_RANGE[1]) & np.isfinite(p) & (p > 0)
    if ok.sum() < 3:
        return float("nan")
    return float(np.polyfit(np.log10(f[ok]), np.log10(p[ok]), 1)[0])


def box_histograms(boxes: list[tuple[float, float, float, float, float, float]]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """boxes: (x0, y0, x1, y1, image width, image height) each -> counts per HIST_EDGES bin of
    (box height / image height, box bottom / image height, box centre x / image width).
    Values outside [0, 1] (a box leaving the frame) go to the end bins."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    x0, y0, x1, y1, w, h = b.T
    return tuple(_hist(v) for v in ((y1 - y0) / h, y1 / h, (x0 + x1) / 2 / w))


def _hist(values: np.ndarray) -> np.ndarray:
    nb = len(HIST_EDGES) - 1
    idx = np.clip(np.floor(np.clip(values, 0.0, 1.0) * nb).astype(np.intp), 0, nb - 1)
    return np.bincount(idx, minlength=nb).astype(np.int64)


def location_data(frames: np.ndarray, extra: int = 0,
                  boxes: list[tuple[float, float, float, float, float, float]] | None = None,
                  annotated_frames: int = 0) -> LocationData:
    """frames: (N, H, W, 3) RGB in [0, 1], N >= 1; boxes: None without an annotation file."""
    frames = np.asarray(frames, dtype=np.float32)
    mean, sd = colour_stats(frames)
    spec = np.mean([radial_spectrum(g) for g in luminance(frames)], axis=0)
    out = LocationData(frames=len(frames), extra_frames=extra, background=background(frames),
                       colour_mean=mean, colour_sd=sd, spectrum=spec, spectrum_slope=spectrum_slope(spec))
    if boxes is not None:
        out.annotated_frames, out.boxes = annotated_frames, len(boxes)
        out.scale_hist, out.foot_hist, out.centre_hist = box_histograms(boxes)
    return out


# -- distances ------------------------------------------------------------------------


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) float -> (size[0], size[1], C), bilinear, per channel."""
    from PIL import Image

    h, w = size
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(img[..., i], dtype=np.float32), "F")
                        .resize((w, h), Image.Resampling.BILINEAR)) for i in range(img.shape[-1])]
    return np.stack(chans, axis=-1).astype(np.float64)


def emd(p: np.ndarray | None, q: np.ndarray | None, width: float = float(HIST_EDGES[1] - HIST_EDGES[0])) -> float:
    """Earth mover's distance between two histograms on the same equal-width bins (each
    normalised to sum 1): the area between their cumulative distributions. NaN when
    either is missing or empty."""
    if p is None or q is None:
        return float("nan")
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    return float(np.sum(np.abs(np.cumsum(p / p.sum()) - np.cumsum(q / q.sum()))[:-1]) * width)


def distance(measure: str, a: LocationData, b: LocationData) -> float:
    if measure == "background":
        x, y = resize(a.background, BACKGROUND_SIZE), resize(b.background, BACKGROUND_SIZE)
        return float(np.sqrt(np.mean((x - y) ** 2)))
    if measure == "colour":
        va = np.concatenate([a.colour_mean, a.colour_sd])
        vb = np.concatenate([b.colour_mean, b.colour_sd])
        return float(np.linalg.norm(va - vb))
    if measure == "spectrum":
        with np.errstate(divide="ignore", invalid="ignore"):
            la, lb = np.log10(a.spectrum), np.log10(b.spectrum)
        ok = np.isfinite(la) & np.isfinite(lb)
        return float(np.sqrt(np.mean((la[ok] - lb[ok]) ** 2))) if ok.any() else float("nan")
    if measure == "scale":
        return emd(a.scale_hist, b.scale_hist)
    if measure == "position":
        return 0.5 * (emd(a.foot_hist, b.foot_hist) + emd(a.centre_hist, b.centre_hist))
    raise KeyError(f"unknown data measure {measure!r}; one of {', '.join(MEASURES)}")


def distance_matrix(measure: str, data: list[LocationData]) -> np.ndarray:
    """(K, K) distances between locations, 0 on the diagonal (NaN on it when undefined)."""
    k = len(data)
    out = np.zeros((k, k))
    for i in range(k):
        for j in range(i, k):
            out[i, j] = out[j, i] = distance(measure, data[i], data[j]) if i != j else (
                0.0 if math.isfinite(distance(measure, data[i], data[i])) else float("nan"))
    return out
