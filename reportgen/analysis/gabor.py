"""Gabor-likeness of first-layer filters.

A 2-D Gabor function is fitted to each filter by nonlinear least squares and
the quality of the fit is reported as the filter's "Gabor-likeness".

Model and conventions
---------------------
Pixel coordinates: x is the column, y the row, (0, 0) is the centre of the
top-left pixel, y grows downwards (image convention). For a centre (x0, y0)

    xr =  (x - x0) cos(theta) + (y - y0) sin(theta)     # along the wave vector
    yr = -(x - x0) sin(theta) + (y - y0) cos(theta)     # along the stripes
    g  = amplitude * exp(-(xr^2 + gamma^2 yr^2) / (2 sigma^2))
                   * cos(2 pi freq xr + phase) + offset

so theta is the direction of the wave vector (normal to the stripes), measured
from +x towards +y, i.e. clockwise as displayed: theta = 0 gives vertical
stripes, theta = pi/2 horizontal ones. freq is in cycles/pixel, sigma (pixels)
is the envelope width along the wave, sigma/gamma across it.

Reported fits are canonical: amplitude >= 0, theta in [0, pi), phase in (-pi, pi].
(The parameterisation has exact symmetries: (amplitude, phase) ~
(-amplitude, phase + pi) and (theta, phase) ~ (theta + pi, -phase).)

Score
-----
A 9-parameter model fits anything a little: on a 5x5 kernel (n = 25 pixels)
white noise gets a plain R^2 of about 0.45 (0.13 on 11x11), which would read
as "somewhat Gabor-like". The score is therefore the adjusted R^2,
1 - (1 - R^2)(n - 1)/(n - p - 1) with p = 9, clipped to [0, 1], which puts
noise near 0 and leaves a clean Gabor near 1 at any kernel size. It does not
remove the bias completely: a nonlinear fit searched over frequency and
orientation uses more than 9 degrees of freedom, and clipping at 0 keeps only
the upper tail, so white noise still averages about 0.18 on 5x5, 0.11 on 7x7
and 0.07 on 11x11 (see bench/bench_gabor.py); read scores against that floor.
Kernels with n <= p + 1 pixels (3x3) have no defined adjusted R^2: score NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import least_squares

__all__ = [
    "GaborFit",
    "gabor",
    "fit_gabor",
    "rgb_to_spatial",
    "gabor_scores",
    "orientation_histogram",
]

N_PARAMS = 9
_TWO_PI = 2.0 * np.pi
_GAMMA_RANGE = (0.5, 2.0)  # envelope aspect: up to 2:1 elongation either way
_NYQUIST = 0.5  # cycles/pixel
_CENTRE_PAD = 0.5  # centre may sit anywhere on the kernel, up to its outer edge
_MAX_NFEV = (30, 15)  # per least-squares run: best-ranked start, other starts


@dataclass(frozen=True, eq=False)
class GaborFit:
    """Best Gabor fit of one filter (see module docstring for the model).

    theta, freq, phase, sigma, gamma, x0, y0, amplitude, offset: fitted parameters.
    r2:     plain coefficient of determination of the fit.
    score:  Gabor-likeness, adjusted R^2 clipped to [0, 1]; 0 for a constant
            filter, NaN for a filter containing NaN/inf or with <= 10 pixels.
    fitted: (h, w) float64 the fitted Gabor (read-only).

    ``eq=False`` because ``fitted`` is an array (``==`` has no single truth value).
    """

    theta: float
    freq: float
    phase: float
    sigma: float
    gamma: float
    x0: float
    y0: float
    amplitude: float
    offset: float
    r2: float
    score: float
    fitted: np.ndarray

    @property
    def params(self) -> dict:
        """The 9 model parameters, so that ``gabor(shape, **fit.params)`` redraws the fit."""
        return {
            "theta": self.theta, "freq": self.freq, "phase": self.phase,
            "sigma": self.sigma, "gamma": self.gamma, "x0": self.x0, "y0": self.y0,
            "amplitude": self.amplitude, "offset": self.offset,
        }


# --------------------------------------------------------------------------- model

def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Flattened pixel-centre coordinates: (h*w,) x (column) and (h*w,) y (row)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    return xx.ravel().astype(np.float64), yy.ravel().astype(np.float64)


def _parts(p: np.ndarray, xs: np.ndarray, ys: np.ndarray):
    """Shared intermediate terms of the model and its Jacobian, all (n,)."""
    theta, freq, phase, sigma, gamma, x0, y0 = p[:7]
    c, s = np.cos(theta), np.sin(theta)
    dx, dy = xs - x0, ys - y0
    xr = dx * c + dy * s
    yr = -dx * s + dy * c
    env = np.exp(-(xr * xr + gamma * gamma * yr * yr) / (2.0 * sigma * sigma))
    arg = _TWO_PI * freq * xr + phase
    return c, s, xr, yr, env, np.cos(arg), np.sin(arg)


def _model(p: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Gabor at the given coordinates: p (9,) -> (n,)."""
    _, _, _, _, env, cos_, _ = _parts(p, xs, ys)
    return p[7] * env * cos_ + p[8]


def _jacobian(p: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Analytic d model / d p: p (9,) -> (n, 9).

    Analytic rather than finite differences: one evaluation instead of ten per
    iteration, which is most of the fitting time on small kernels.
    """
    theta, freq, phase, sigma, gamma = p[:5]
    amp = p[7]
    c, s, xr, yr, env, cos_, sin_ = _parts(p, xs, ys)
    s2 = sigma * sigma
    ae = amp * env
    # Partial derivatives with respect to the rotated coordinates.
    d_xr = -ae * (cos_ * xr / s2 + sin_ * _TWO_PI * freq)
    d_yr = -ae * cos_ * gamma * gamma * yr / s2
    jac = np.empty((xs.size, N_PARAMS))
    jac[:, 0] = d_xr * yr - d_yr * xr              # d xr/d theta = yr, d yr/d theta = -xr
    jac[:, 1] = -ae * sin_ * _TWO_PI * xr
    jac[:, 2] = -ae * sin_
    jac[:, 3] = ae * cos_ * (xr * xr + gamma * gamma * yr * yr) / (s2 * sigma)
    jac[:, 4] = -ae * cos_ * gamma * yr * yr / s2
    jac[:, 5] = -d_xr * c + d_yr * s               # d xr/d x0 = -cos, d yr/d x0 = sin
    jac[:, 6] = -d_xr * s - d_yr * c               # d xr/d y0 = -sin, d yr/d y0 = -cos
    jac[:, 7] = env * cos_
    jac[:, 8] = 1.0
    return jac


def gabor(
    shape: tuple[int, int],
    theta: float,
    freq: float,
    phase: float = 0.0,
    sigma: float = 1.0,
    gamma: float = 1.0,
    x0: float | None = None,
    y0: float | None = None,
    amplitude: float = 1.0,
    offset: float = 0.0,
) -> np.ndarray:
    """A 2-D Gabor patch (model and conventions in the module docstring).

    shape: (h, w) -> (h, w) float64. x0, y0 default to the kernel centre
    ((w-1)/2, (h-1)/2) in pixel coordinates with (0, 0) the top-left pixel centre.
    """
    h, w = int(shape[0]), int(shape[1])
    x0 = (w - 1) / 2.0 if x0 is None else x0
    y0 = (h - 1) / 2.0 if y0 is None else y0
    p = np.array([theta, freq, phase, sigma, gamma, x0, y0, amplitude, offset], dtype=np.float64)
    xs, ys = _grid((h, w))
    return _model(p, xs, ys).reshape(h, w)


# --------------------------------------------------------------------------- fitting

def _bounds(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """least_squares bounds for (theta, freq, phase, sigma, gamma, x0, y0, amplitude, offset)."""
    h, w = shape
    inf = np.inf
    pad = _CENTRE_PAD
    lo = np.array([-inf, 0.0, -inf, 0.5, _GAMMA_RANGE[0], -pad, -pad, -inf, -inf])
    hi = np.array([inf, _NYQUIST, inf, float(max(h, w)), _GAMMA_RANGE[1], w - 1 + pad, h - 1 + pad, inf, inf])
    return lo, hi


def _linear_fill(ps: np.ndarray, target: np.ndarray, xs: np.ndarray, ys: np.ndarray):
    """Complete candidate starts: solve amplitude, phase and offset exactly.

    ps: (C, 9) starts (phase, amplitude, offset ignored), target: (n,)
    -> (C, 9) completed starts, (C,) their residual sums of squares.
    A cos(u + phase) = a cos(u) - b sin(u) with a = A cos(phase), b = A sin(phase),
    so for fixed theta, freq, sigma, gamma and centre the rest is a 3-column
    linear least-squares problem: the best phase and amplitude for that start,
    more reliable than reading the phase off the FFT. All candidates are solved
    in one batched pseudo-inverse; near-DC starts (freq < 1e-3) drop the sine
    column, which would otherwise turn a blob start into a huge-amplitude ramp.
    """
    ps = np.array(ps, dtype=np.float64)
    col = lambda k: ps[:, k : k + 1]  # noqa: E731  (C, 1), broadcasts against (n,)
    theta, freq, sigma, gamma, x0, y0 = col(0), col(1), col(3), col(4), col(5), col(6)
    c, s = np.cos(theta), np.sin(theta)
    dx, dy = xs - x0, ys - y0
    xr = dx * c + dy * s
    yr = -dx * s + dy * c
    env = np.exp(-(xr * xr + gamma * gamma * yr * yr) / (2.0 * sigma * sigma))
    arg = _TWO_PI * freq * xr
    sine = np.where(freq >= 1e-3, -env * np.sin(arg), 0.0)
    design = np.stack([env * np.cos(arg), sine, np.ones_like(env)], axis=2)  # (C, n, 3)
    coef = np.linalg.pinv(design) @ target  # (C, 3)
    a, b, off = coef[:, 0], coef[:, 1], coef[:, 2]
    ps[:, 2] = np.arctan2(b, a)
    ps[:, 7] = np.hypot(a, b)
    ps[:, 8] = off
    resid = design @ coef[:, :, None] - target[:, None]
    return ps, np.sum(resid[:, :, 0] ** 2, axis=1)


def _fft_peaks(g: np.ndarray, n_peaks: int) -> list[tuple[float, float]]:
    """Orientation and frequency (theta, freq) of the strongest spatial frequencies.

    g: (h, w) zero-mean filter. Zero-padded to at least 32 per side so the peak is
    located more finely than the kernel's own 1/h, 1/w frequency grid. Only half
    of the spectrum is searched (it is conjugate-symmetric). After each peak, its
    lobe (radius 1/max(h, w), about the spectral resolution of the kernel, and
    the lobe's mirror image) is masked so the next peak is a different component.
    """
    h, w = g.shape
    ph, pw = max(32, 2 * h), max(32, 2 * w)
    mag = np.abs(np.fft.rfft2(g, s=(ph, pw)))
    fy = np.fft.fftfreq(ph)[:, None]
    fx = np.fft.rfftfreq(pw)[None, :]
    radius = 1.0 / max(h, w)
    peaks: list[tuple[float, float]] = []
    for _ in range(n_peaks):
        iy, ix = np.unravel_index(int(np.argmax(mag)), mag.shape)
        if not mag[iy, ix] > 0:
            break
        vx, vy = float(fx[0, ix]), float(fy[iy, 0])
        peaks.append((float(np.arctan2(vy, vx)), float(np.hypot(vx, vy))))
        near = np.minimum(np.hypot(fx - vx, fy - vy), np.hypot(fx + vx, fy + vy)) < radius
        mag = np.where(near, -1.0, mag)
    return peaks


def _start_groups(g: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Candidate starting points for g (h, w), zero-mean and scaled to max |g| = 1.

    -> list of (starts (C, 9), costs (C,)), one entry per group. Groups are the
    basins we probe: one per FFT peak (4 envelope widths x 2 centres: kernel
    centre and energy centroid) and one low-frequency blob group. Starts within
    a group usually converge to the same optimum while the groups often do not
    (a noisy low-frequency pattern may fit best as a blob even when its FFT-peak
    start looks better), so the fit polishes the best start of each group rather
    than the best few overall. The width grid matters because the FFT peak of a
    narrow Gabor is broad and its frequency estimate rough.
    """
    h, w = g.shape
    lo, hi = _bounds(g.shape)
    size = float(max(h, w))
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    # Energy centroid: where the filter's structure sits if it is off-centre.
    e = (g * g).ravel()
    ex, ey = float(e @ xs / e.sum()), float(e @ ys / e.sum())
    # Peak pixel: the centre of a blob.
    k = int(np.argmax(np.abs(g)))
    bx, by = float(xs[k]), float(ys[k])

    groups = []
    for theta, freq in _fft_peaks(g, 2):
        groups.append([
            [theta, freq, 0.0, sigma, 1.0, x0, y0, 0.0, 0.0]
            for sigma in (size / 8.0, size / 5.0, size / 3.0, size / 2.0)
            for x0, y0 in ((cx, cy), (ex, ey))
        ])
    groups.append([[0.0, 0.0, 0.0, sigma, 1.0, bx, by, 0.0, 0.0] for sigma in (size / 6.0, size / 4.0)])
    margin = 1e-6  # strictly inside the bounds (freq = 0 is a bound)
    target = g.ravel()
    return [_linear_fill(np.clip(np.array(grp), lo + margin, hi - margin), target, xs, ys) for grp in groups]


def _canonical(p: np.ndarray) -> np.ndarray:
    """Map p to the canonical representative: amplitude >= 0, theta in [0, pi), phase in (-pi, pi]."""
    theta, freq, phase, sigma, gamma, x0, y0, amp, off = p
    if amp < 0:
        amp, phase = -amp, phase + np.pi
    # theta -> theta + k pi flips the sign of xr for odd k, i.e. phase -> -phase.
    k = np.floor(theta / np.pi)
    theta = theta - k * np.pi
    if int(k) % 2:
        phase = -phase
    if theta >= np.pi:  # floating point edge case
        theta = 0.0
    phase = np.pi - np.mod(np.pi - phase, _TWO_PI)  # wrap into (-pi, pi]
    return np.array([theta, freq, phase, sigma, gamma, x0, y0, amp, off])


def _adjusted(r2: float, n: int) -> float:
    if n <= N_PARAMS + 1:
        return float("nan")
    adj = 1.0 - (1.0 - r2) * (n - 1) / (n - N_PARAMS - 1)
    return float(np.clip(adj, 0.0, 1.0))


def _make_fit(p: np.ndarray, r2: float, score: float, fitted: np.ndarray) -> GaborFit:
    fitted = np.array(fitted, dtype=np.float64)
    fitted.setflags(write=False)
    return GaborFit(*(float(v) for v in p), r2=float(r2), score=float(score), fitted=fitted)


def _constant_fit(value: float, shape: tuple[int, int]) -> GaborFit:
    """The fit reported for a constant filter: zero amplitude, score 0."""
    h, w = shape
    p = np.array([0.0, 0.0, 0.0, 1.0, 1.0, (w - 1) / 2.0, (h - 1) / 2.0, 0.0, value])
    return _make_fit(p, 0.0, 0.0, np.full((h, w), value))


def _fit_one(f: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> GaborFit:
    """Fit one (h, w) filter given its precomputed coordinate grid."""
    h, w = f.shape
    n = h * w
    f = np.asarray(f, dtype=np.float64)
    if not np.isfinite(f).all():
        nan = float("nan")
        return _make_fit(np.full(N_PARAMS, nan), nan, nan, np.full((h, w), nan))
    # Work on a copy scaled to max |.| = 1 and then zero-mean, and undo both at the
    # end: the mean cannot overflow, and the optimiser's tolerances do not depend
    # on the weights' magnitude (first-layer weights are often ~1e-2).
    peak = float(np.abs(f).max())
    if peak == 0.0:
        return _constant_fit(0.0, (h, w))
    f1 = f / peak
    mean1 = float(f1.mean())
    g = f1 - mean1
    scale1 = float(np.abs(g).max())
    if scale1 <= 1e-12:
        # Constant filter (up to round-off in the mean): nothing Gabor-like in it.
        return _constant_fit(peak * mean1, (h, w))
    g = g / scale1
    scale, mean = peak * scale1, peak * mean1
    target = g.ravel()
    ss_tot = float(target @ target)
    lo, hi = _bounds((h, w))

    def resid(p):
        return _model(p, xs, ys) - target

    def jac(p):
        return _jacobian(p, xs, ys)

    # Evaluating a start costs microseconds, a least-squares run a millisecond: take
    # the cheapest start of each group and polish those, most promising first.
    starts, costs = [], []
    for group, group_costs in _start_groups(g, xs, ys):
        j = int(np.argmin(group_costs))
        starts.append(group[j])
        costs.append(float(group_costs[j]))
    order = np.argsort(costs)
    best_p, best_cost = starts[order[0]], costs[order[0]]
    # errstate: a trial step may underflow the envelope to 0 or overflow a
    # derivative; the optimiser rejects such steps, the user need not hear of them.
    with np.errstate(all="ignore"):
        for rank, i in enumerate(order):
            # trf, not dogbox: dogbox is faster per step but crawls for hundreds of
            # steps when a parameter sits on a bound (gamma, freq), ending short of
            # the optimum. Evaluation caps keep noise (which never converges
            # cleanly) affordable: the most promising start may take longer, the
            # others are checks for a different basin.
            res = least_squares(
                resid, starts[i], jac=jac, bounds=(lo, hi), method="trf",
                x_scale="jac", ftol=1e-6, xtol=1e-6, gtol=1e-8,
                max_nfev=_MAX_NFEV[0] if rank == 0 else _MAX_NFEV[1],
            )
            cost = 2.0 * float(res.cost)
            if np.isfinite(cost) and cost < best_cost:
                best_p, best_cost = res.x, cost
            # A near-perfect fit cannot be beaten meaningfully: skip the other starts.
            if best_cost <= 1e-4 * ss_tot:
                break
    r2 = float(np.clip(1.0 - best_cost / ss_tot, 0.0, 1.0))
    p = _canonical(best_p)
    p[7] *= scale
    p[8] = p[8] * scale + mean
    fitted = _model(p, xs, ys).reshape(h, w)
    return _make_fit(p, r2, _adjusted(r2, n), fitted)


def fit_gabor(f: np.ndarray) -> GaborFit:
    """Fit a 2-D Gabor to one filter.

    f: (h, w) float -> GaborFit. Bounded least squares
    (``scipy.optimize.least_squares``, trf, analytic Jacobian): freq in
    [0, 0.5] cycles/px (Nyquist), sigma in [0.5, max(h, w)] px, centre inside
    the kernel ([-0.5, w-0.5] x [-0.5, h-0.5]), gamma in [0.5, 2].
    Candidate starts: the two strongest peaks of the zero-padded FFT of the
    zero-mean filter (orientation and frequency from the peak position; phase,
    amplitude and offset then solved linearly, see ``_linear_fill``) at four
    envelope widths and two centres (kernel centre, energy centroid), plus two
    low-frequency blob starts at the peak pixel. The lowest-cost start of each
    of these three groups is polished (iteration-capped) and the best fit kept.
    Deterministic.
    A constant (or zero) filter gives score 0; a filter with NaN/inf gives NaN
    everywhere. No warnings are emitted in either case.
    """
    f = np.asarray(f)
    if f.ndim != 2:
        raise ValueError(f"fit_gabor needs an (h, w) filter, got shape {f.shape}")
    xs, ys = _grid(f.shape)
    return _fit_one(f, xs, ys)


# --------------------------------------------------------------------------- colour

def rgb_to_spatial(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a colour filter into a colour vector and a spatial map (rank-1 SVD).

    w: (C, h, w), normally C = 3 (RGB) -> (spatial (h, w) float64, colour (C,) float64)
    with colour of unit norm and colour[:, None, None] * spatial the best rank-1
    approximation of w (least squares).

    Why not average the channels: a colour-opponent filter (R = +g, G = -g) has
    near-zero luminance, so the channel mean would hide its spatial structure.
    The leading singular pair of the (C, h*w) matrix keeps the dominant spatial
    pattern whatever the colour. Structure that differs between channels (e.g. a
    luminance edge plus a colour blob) is only partly kept: it is a rank-1 view.
    Sign convention: the colour entry of largest |.| is positive, so a filter
    and its negation give the same colour and opposite spatial maps.
    A zero filter gives a zero map (colour is then arbitrary but deterministic);
    a filter with NaN/inf gives NaN for both.
    """
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 3:
        raise ValueError(f"rgb_to_spatial needs (C, h, w), got shape {w.shape}")
    c, h, wd = w.shape
    if not np.isfinite(w).all():
        return np.full((h, wd), np.nan), np.full(c, np.nan)
    u, s, vt = np.linalg.svd(w.reshape(c, h * wd), full_matrices=False)
    colour, spatial = u[:, 0].copy(), s[0] * vt[0]
    if colour[np.argmax(np.abs(colour))] < 0:
        colour, spatial = -colour, -spatial
    return spatial.reshape(h, wd), colour


def gabor_scores(w: np.ndarray) -> list[GaborFit]:
    """Fit every filter of a layer.

    w: (N, C, h, w) or (N, h, w) -> list of N GaborFit, in filter order.
    Multi-channel filters (C > 1) are reduced with ``rgb_to_spatial`` first;
    C = 1 is used as is. The coordinate grid is built once for the layer.
    """
    w = np.asarray(w)
    if w.ndim == 4:
        if w.shape[1] == 1:
            maps = [w[i, 0] for i in range(w.shape[0])]
        else:
            maps = [rgb_to_spatial(w[i])[0] for i in range(w.shape[0])]
    elif w.ndim == 3:
        maps = [w[i] for i in range(w.shape[0])]
    else:
        raise ValueError(f"gabor_scores needs (N, C, h, w) or (N, h, w), got shape {w.shape}")
    if not maps:
        return []
    xs, ys = _grid(maps[0].shape)
    return [_fit_one(m, xs, ys) for m in maps]


def _theta_sensitivity(fit: GaborFit) -> float:
    """How much the fitted pattern changes per radian of rotation, relative to its size.

    ||d fitted / d theta|| / ||fitted - offset|| over the kernel's pixels
    (dimensionless, per radian). 0 for an isotropic blob, whose theta is
    arbitrary; of order 1 for stripes, edges and elongated bars. Frequency alone
    cannot tell these apart: an odd (edge-like) fit can have freq near 0 with a
    large amplitude and still be sharply oriented.
    """
    h, w = fit.fitted.shape
    xs, ys = _grid((h, w))
    p = np.array([fit.theta, fit.freq, fit.phase, fit.sigma, fit.gamma, fit.x0, fit.y0,
                  fit.amplitude, fit.offset])
    size = np.linalg.norm(_model(p, xs, ys) - fit.offset)
    if not np.isfinite(size) or size == 0.0:
        return 0.0
    return float(np.linalg.norm(_jacobian(p, xs, ys)[:, 0]) / size)


def orientation_histogram(
    fits: Sequence[GaborFit],
    bins: int = 8,
    min_score: float = 0.7,
    min_orientedness: float = 0.2,
) -> np.ndarray:
    """Histogram of orientations theta (mod pi) of the Gabor-like filters.

    fits: sequence of GaborFit -> (bins,) int64 counts over [0, pi) in equal
    bins, bin 0 starting at theta = 0 (vertical stripes; see module docstring).
    Counted: fits with score >= min_score (NaN scores never) whose orientation
    is defined, i.e. the fitted pattern changes by at least min_orientedness
    (relative norm, per radian) when rotated. This drops round blobs, whose
    theta is arbitrary and would otherwise pile up at the start value 0.
    """
    if bins < 1:
        raise ValueError("bins must be >= 1")
    thetas = [
        fit.theta % np.pi
        for fit in fits
        if np.isfinite(fit.score) and fit.score >= min_score
        and _theta_sensitivity(fit) >= min_orientedness
    ]
    counts, _ = np.histogram(np.asarray(thetas, dtype=np.float64), bins=bins, range=(0.0, np.pi))
    return counts.astype(np.int64)
