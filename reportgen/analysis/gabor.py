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

__all__ = [
    "GaborFit",
    "gabor",
    "fit_gabor",
    "rgb_to_spatial",
    "gabor_scores",
    "orientation_histogram",
    "is_gabor_like",
    "GABOR_MARGIN",
]

N_PARAMS = 9
DOG_PARAMS = 7
# A filter is Gabor-like only when its Gabor fit's adjusted R^2 exceeds the centre-surround's by
# this much: an oriented pattern must explain clearly more than a blob.
GABOR_MARGIN = 0.1
_TWO_PI = 2.0 * np.pi
_GAMMA_RANGE = (0.5, 2.0)  # envelope aspect: up to 2:1 elongation either way
_NYQUIST = 0.5  # cycles/pixel
_CENTRE_PAD = 0.5  # centre may sit anywhere on the kernel, up to its outer edge
_MAX_ITER = (30, 15)  # LM evaluations per start: best-ranked start, other starts


@dataclass(frozen=True, eq=False)
class GaborFit:
    """Best Gabor fit of one filter (see module docstring for the model).

    theta, freq, phase, sigma, gamma, x0, y0, amplitude, offset: fitted parameters.
    r2:     plain coefficient of determination of the fit.
    score:  Gabor-likeness, adjusted R^2 clipped to [0, 1]; 0 for a constant
            filter, NaN for a filter containing NaN/inf or with <= 10 pixels.
    fitted: (h, w) float64 the fitted Gabor (read-only).
    dog_score, dog_r2: the same for the best centre-surround (difference of Gaussians) fit.

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
    dog_score: float = float("nan")  # adjusted R^2 of the centre-surround fit (7 parameters)
    dog_r2: float = float("nan")

    @property
    def params(self) -> dict:
        """The 9 model parameters, so that ``gabor(shape, **fit.params)`` redraws the fit."""
        return {
            "theta": self.theta, "freq": self.freq, "phase": self.phase,
            "sigma": self.sigma, "gamma": self.gamma, "x0": self.x0, "y0": self.y0,
            "amplitude": self.amplitude, "offset": self.offset,
        }


# --------------------------------------------------------------------------- model

def gabor_grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Flattened pixel-centre coordinates: (h*w,) x (column) and (h*w,) y (row)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    return xx.ravel().astype(np.float64), yy.ravel().astype(np.float64)


def _parts(p: np.ndarray, xs: np.ndarray, ys: np.ndarray):
    """Shared intermediate terms of the model and its Jacobian.

    p (..., 9), xs/ys (n,) -> terms of shape (..., n) (cos/sin of theta (..., 1)).
    """
    col = lambda k: p[..., k, None]  # noqa: E731  (..., 1), broadcasts against (n,)
    theta, freq, phase, sigma, gamma, x0, y0 = (col(k) for k in range(7))
    c, s = np.cos(theta), np.sin(theta)
    dx, dy = xs - x0, ys - y0
    xr = dx * c + dy * s
    yr = -dx * s + dy * c
    env = np.exp(-(xr * xr + gamma * gamma * yr * yr) / (2.0 * sigma * sigma))
    arg = _TWO_PI * freq * xr + phase
    return c, s, xr, yr, env, np.cos(arg), np.sin(arg)


def gabor_model(p: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Gabor at the given coordinates: p (..., 9) -> (..., n)."""
    _, _, _, _, env, cos_, _ = _parts(p, xs, ys)
    return p[..., 7, None] * env * cos_ + p[..., 8, None]


def _model_and_jacobian(p: np.ndarray, xs: np.ndarray, ys: np.ndarray):
    """Model (..., n) and analytic d model / d p (..., n, 9) from one evaluation."""
    freq, sigma, gamma, amp = p[..., 1, None], p[..., 3, None], p[..., 4, None], p[..., 7, None]
    c, s, xr, yr, env, cos_, sin_ = _parts(p, xs, ys)
    s2 = sigma * sigma
    g2 = gamma * gamma
    ae = amp * env
    aec, aes = ae * cos_, ae * sin_
    # Partial derivatives with respect to the rotated coordinates.
    d_xr = -(aec * xr / s2 + aes * (_TWO_PI * freq))
    d_yr = -aec * g2 * yr / s2
    jac = np.empty(xr.shape + (N_PARAMS,))
    jac[..., 0] = d_xr * yr - d_yr * xr              # d xr/d theta = yr, d yr/d theta = -xr
    jac[..., 1] = -aes * _TWO_PI * xr
    jac[..., 2] = -aes
    jac[..., 3] = aec * (xr * xr + g2 * yr * yr) / (s2 * sigma)
    jac[..., 4] = -aec * gamma * yr * yr / s2
    jac[..., 5] = -d_xr * c + d_yr * s               # d xr/d x0 = -cos, d yr/d x0 = sin
    jac[..., 6] = -d_xr * s - d_yr * c               # d xr/d y0 = -sin, d yr/d y0 = -cos
    jac[..., 7] = env * cos_
    jac[..., 8] = 1.0
    return aec + p[..., 8, None], jac


def gabor_jacobian(p: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Analytic d model / d p: p (..., 9) -> (..., n, 9).

    Analytic rather than finite differences: one evaluation instead of ten per
    iteration, which is most of the fitting time on small kernels.
    """
    return _model_and_jacobian(p, xs, ys)[1]


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
    xs, ys = gabor_grid((h, w))
    return gabor_model(p, xs, ys).reshape(h, w)


# --------------------------------------------------------------------------- fitting

def _bounds(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Fit bounds for (theta, freq, phase, sigma, gamma, x0, y0, amplitude, offset)."""
    h, w = shape
    inf = np.inf
    pad = _CENTRE_PAD
    lo = np.array([-inf, 0.0, -inf, 0.5, _GAMMA_RANGE[0], -pad, -pad, -inf, -inf])
    hi = np.array([inf, _NYQUIST, inf, float(max(h, w)), _GAMMA_RANGE[1], w - 1 + pad, h - 1 + pad, inf, inf])
    return lo, hi


def _linear_fill(ps: np.ndarray, target: np.ndarray, xs: np.ndarray, ys: np.ndarray):
    """Complete candidate starts: solve amplitude, phase and offset exactly.

    ps: (..., C, 9) starts (phase, amplitude, offset ignored), target: (..., n)
    (one target per leading index, e.g. per filter)
    -> (..., C, 9) completed starts, (..., C) their residual sums of squares.
    A cos(u + phase) = a cos(u) - b sin(u) with a = A cos(phase), b = A sin(phase),
    so for fixed theta, freq, sigma, gamma and centre the rest is a 3-column
    linear least-squares problem: the best phase and amplitude for that start,
    more reliable than reading the phase off the FFT. All candidates are solved
    in one batched pseudo-inverse; near-DC starts (freq < 1e-3) drop the sine
    column, which would otherwise turn a blob start into a huge-amplitude ramp.
    """
    ps = np.array(ps, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    col = lambda k: ps[..., k : k + 1]  # noqa: E731  (..., C, 1), broadcasts against (n,)
    theta, freq, sigma, gamma, x0, y0 = col(0), col(1), col(3), col(4), col(5), col(6)
    c, s = np.cos(theta), np.sin(theta)
    dx, dy = xs - x0, ys - y0
    xr = dx * c + dy * s
    yr = -dx * s + dy * c
    env = np.exp(-(xr * xr + gamma * gamma * yr * yr) / (2.0 * sigma * sigma))
    arg = _TWO_PI * freq * xr
    sine = np.where(freq >= 1e-3, -env * np.sin(arg), 0.0)
    design = np.stack([env * np.cos(arg), sine, np.ones_like(env)], axis=-1)  # (..., C, n, 3)
    t = target[..., None, :, None]  # (..., 1, n, 1)
    coef = np.linalg.pinv(design) @ t  # (..., C, 3, 1)
    a, b, off = coef[..., 0, 0], coef[..., 1, 0], coef[..., 2, 0]
    ps[..., 2] = np.arctan2(b, a)
    ps[..., 7] = np.hypot(a, b)
    ps[..., 8] = off
    resid = design @ coef - t
    return ps, np.sum(resid[..., 0] ** 2, axis=-1)


def _fft_peaks(g: np.ndarray, n_peaks: int) -> tuple[np.ndarray, np.ndarray]:
    """Orientation and frequency of the strongest spatial frequencies, batched.

    g: (N, h, w) zero-mean filters -> (peaks (N, n_peaks, 2) of (theta, freq),
    valid (N, n_peaks) bool: False where a filter has no further peak).
    Zero-padded to at least 32 per side so the peak is located more finely than
    the kernel's own 1/h, 1/w frequency grid. Only half of the spectrum is
    searched (it is conjugate-symmetric). After each peak, its lobe (radius
    1/max(h, w), about the spectral resolution of the kernel, and the lobe's
    mirror image) is masked so the next peak is a different component.
    """
    n_f, h, w = g.shape
    ph, pw = max(32, 2 * h), max(32, 2 * w)
    mag = np.abs(np.fft.rfft2(g, s=(ph, pw))).reshape(n_f, -1)
    fy = np.broadcast_to(np.fft.fftfreq(ph)[:, None], (ph, pw // 2 + 1)).ravel()
    fx = np.broadcast_to(np.fft.rfftfreq(pw)[None, :], (ph, pw // 2 + 1)).ravel()
    radius = 1.0 / max(h, w)
    peaks = np.zeros((n_f, n_peaks, 2))
    valid = np.zeros((n_f, n_peaks), dtype=bool)
    rows = np.arange(n_f)
    alive = np.ones(n_f, dtype=bool)
    for k in range(n_peaks):
        idx = np.argmax(mag, axis=1)
        alive &= mag[rows, idx] > 0
        vx, vy = fx[idx][:, None], fy[idx][:, None]
        peaks[:, k, 0] = np.arctan2(vy[:, 0], vx[:, 0])
        peaks[:, k, 1] = np.hypot(vx[:, 0], vy[:, 0])
        valid[:, k] = alive
        if k + 1 < n_peaks:
            near = np.minimum(np.hypot(fx - vx, fy - vy), np.hypot(fx + vx, fy + vy)) < radius
            mag = np.where(near, -1.0, mag)
    return peaks, valid


_N_GROUPS = 3  # two FFT-peak groups and one blob group


def _start_groups(g: np.ndarray, xs: np.ndarray, ys: np.ndarray):
    """Best candidate start of each group, for a batch of filters.

    g: (N, h, w), each zero-mean and scaled to max |g| = 1
    -> (starts (N, 3, 9), costs (N, 3), valid (N, 3) bool).
    Groups are the basins we probe: one per FFT peak (4 envelope widths x 2
    centres: kernel centre and energy centroid) and one low-frequency blob group
    (2 widths at the peak pixel). Starts within a group usually converge to the
    same optimum while the groups often do not (a noisy low-frequency pattern may
    fit best as a blob even when its FFT-peak start looks better), so the fit
    polishes the cheapest start of each group rather than the best few overall.
    The width grid matters because the FFT peak of a narrow Gabor is broad and
    its frequency estimate rough. A filter without a second FFT peak has that
    group marked invalid.
    """
    n_f, h, w = g.shape
    lo, hi = _bounds((h, w))
    size = float(max(h, w))
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    flat = g.reshape(n_f, -1)
    # Energy centroid: where the filter's structure sits if it is off-centre.
    e = flat * flat
    esum = e.sum(axis=1)
    ex, ey = e @ xs / esum, e @ ys / esum
    # Peak pixel: the centre of a blob.
    k = np.argmax(np.abs(flat), axis=1)
    bx, by = xs[k], ys[k]

    peaks, peak_valid = _fft_peaks(g, 2)
    fft_sigmas = np.array([size / 8.0, size / 5.0, size / 3.0, size / 2.0])
    n_fft = 2 * fft_sigmas.size * 2
    n_blob = 2
    cand = np.zeros((n_f, n_fft + n_blob, N_PARAMS))
    cand[:, :, 4] = 1.0
    j = 0
    for pk in range(2):
        for sigma in fft_sigmas:
            for x0, y0 in ((cx, cy), (ex, ey)):
                cand[:, j, 0] = peaks[:, pk, 0]
                cand[:, j, 1] = peaks[:, pk, 1]
                cand[:, j, 3] = sigma
                cand[:, j, 5] = x0
                cand[:, j, 6] = y0
                j += 1
    for sigma in (size / 6.0, size / 4.0):
        cand[:, j, 3] = sigma
        cand[:, j, 5] = bx
        cand[:, j, 6] = by
        j += 1
    margin = 1e-6  # strictly inside the bounds (freq = 0 is a bound)
    cand = np.clip(cand, lo + margin, hi - margin)
    filled, costs = _linear_fill(cand, flat, xs, ys)
    per = n_fft // 2
    bounds_ = [(0, per), (per, 2 * per), (2 * per, 2 * per + n_blob)]
    starts = np.empty((n_f, _N_GROUPS, N_PARAMS))
    best = np.empty((n_f, _N_GROUPS))
    rows = np.arange(n_f)
    for gi, (a, b) in enumerate(bounds_):
        jj = a + np.argmin(costs[:, a:b], axis=1)
        starts[:, gi] = filled[rows, jj]
        best[:, gi] = costs[rows, jj]
    valid = np.ones((n_f, _N_GROUPS), dtype=bool)
    valid[:, :2] = peak_valid
    return starts, best, valid


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


def _adjusted(r2: float, n: int, params: int = N_PARAMS) -> float:
    if n <= params + 1:
        return float("nan")
    adj = 1.0 - (1.0 - r2) * (n - 1) / (n - params - 1)
    return float(np.clip(adj, 0.0, 1.0))


def _make_fit(p: np.ndarray, r2: float, score: float, fitted: np.ndarray, dog_r2: float = float("nan"),
              dog_score: float = float("nan")) -> GaborFit:
    fitted = np.array(fitted, dtype=np.float64)
    fitted.setflags(write=False)
    return GaborFit(*(float(v) for v in p), r2=float(r2), score=float(score), fitted=fitted,
                    dog_score=float(dog_score), dog_r2=float(dog_r2))


def _constant_fit(value: float, shape: tuple[int, int]) -> GaborFit:
    """The fit reported for a constant filter: zero amplitude, score 0."""
    h, w = shape
    p = np.array([0.0, 0.0, 0.0, 1.0, 1.0, (w - 1) / 2.0, (h - 1) / 2.0, 0.0, value])
    return _make_fit(p, 0.0, 0.0, np.full((h, w), value), 0.0, 0.0)


def _levenberg_marquardt(p, cost, targets, xs, ys, lo, hi, max_iter, model_jac=None, model_fn=None):
    """Bounds-projected Levenberg-Marquardt on a batch of independent problems.

    p: (B, 9) starts, cost: (B,) their residual sums of squares, targets: (B, n),
    max_iter: (B,) int evaluation caps -> (p (B, 9), cost (B,)) with cost never
    above the start's. Each iteration solves B damped 9x9 normal equations
    (Marquardt scaling by the running maximum of diag(J^T J), the analogue of
    least_squares' x_scale="jac"); the trial point is clipped into the bounds and
    parameters sitting on a bound with the gradient pushing outwards are frozen
    for that step (projected Newton). Items stop on their own (relative cost
    decrease < 1e-6 or a relative step < 1e-6 on an accepted step, or their cap);
    only the items still running are evaluated.
    """
    model_jac = model_jac or _model_and_jacobian
    model_fn = model_fn or gabor_model
    p = p.copy()
    cost = cost.copy()
    b_n, n_par = p.shape
    lam = np.full(b_n, 1e-3)
    nu = np.full(b_n, 2.0)
    dscale = np.zeros((b_n, n_par))
    done = np.zeros(b_n, dtype=bool)
    eye = np.eye(n_par)
    for it in range(int(max_iter.max(initial=0))):
        act = np.flatnonzero(~done & (it < max_iter))
        if act.size == 0:
            break
        pa, ca, ta = p[act], cost[act], targets[act]
        model, jac = model_jac(pa, xs, ys)
        r = model - ta
        jt = np.swapaxes(jac, 1, 2)
        a_mat = jt @ jac  # (b, 9, 9)
        grad = (jt @ r[:, :, None])[:, :, 0]  # (b, 9)
        diag = np.einsum("bii->bi", a_mat)
        ds = np.maximum(dscale[act], diag)
        dscale[act] = ds
        ds = np.maximum(ds, 1e-12 * ds.max(axis=1, keepdims=True) + 1e-300)
        # Parameters on a bound whose descent direction points outwards stay put.
        tol = 1e-10 * (1.0 + np.abs(pa))
        frozen = ((pa <= lo + tol) & (grad > 0)) | ((pa >= hi - tol) & (grad < 0))
        keep = (~frozen).astype(np.float64)
        lhs = a_mat * keep[:, :, None] * keep[:, None, :]
        lhs = lhs + (lam[act, None] * ds * keep + (1.0 - keep))[:, :, None] * eye
        step = np.linalg.solve(lhs, -(grad * keep)[:, :, None])[:, :, 0]
        trial = np.clip(pa + step, lo, hi)
        d = trial - pa
        new_cost = np.sum((model_fn(trial, xs, ys) - ta) ** 2, axis=1)
        pred = -(2.0 * np.sum(grad * d, axis=1) + np.einsum("bi,bij,bj->b", d, a_mat, d))
        gain = ca - new_cost
        ok = np.isfinite(new_cost) & (gain > 0)
        rho = np.where(pred > 0, gain / np.where(pred > 0, pred, 1.0), 0.0)
        # Nielsen's damping update.
        lam_ok = lam[act] * np.maximum(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
        lam[act] = np.where(ok, lam_ok, lam[act] * nu[act])
        nu[act] = np.where(ok, 2.0, nu[act] * 2.0)
        small = (gain <= 1e-6 * ca) | (
            np.linalg.norm(d, axis=1) <= 1e-6 * (1e-6 + np.linalg.norm(pa, axis=1)))
        acc = act[ok]
        p[acc] = trial[ok]
        cost[acc] = new_cost[ok]
        done[act] = (ok & small) | (lam[act] > 1e12) | (cost[act] <= 1e-20)
    return p, cost


def _fit_batch(maps: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> list[GaborFit]:
    """Fit a batch of (h, w) filters of one shape together: maps (N, h, w)."""
    n_f, h, w = maps.shape
    n = h * w
    f = np.asarray(maps, dtype=np.float64).reshape(n_f, n)
    out: list[GaborFit | None] = [None] * n_f
    finite = np.isfinite(f).all(axis=1)
    nan = float("nan")
    for i in np.flatnonzero(~finite):
        out[i] = _make_fit(np.full(N_PARAMS, nan), nan, nan, np.full((h, w), nan))
    # Work on copies scaled to max |.| = 1 and then zero-mean, and undo both at the
    # end: the mean cannot overflow, and the optimiser's tolerances do not depend
    # on the weights' magnitude (first-layer weights are often ~1e-2).
    fin = np.flatnonzero(finite)
    ff = f[fin]
    peak = np.abs(ff).max(axis=1) if n else np.zeros(fin.size)
    zero = peak == 0.0
    for i in fin[zero]:
        out[i] = _constant_fit(0.0, (h, w))
    fin, ff, peak = fin[~zero], ff[~zero], peak[~zero]
    f1 = ff / peak[:, None]
    mean1 = f1.mean(axis=1)
    g = f1 - mean1[:, None]
    scale1 = np.abs(g).max(axis=1)
    flat_ = scale1 <= 1e-12
    for i, m in zip(fin[flat_], (peak * mean1)[flat_]):
        # Constant filter (up to round-off in the mean): nothing Gabor-like in it.
        out[i] = _constant_fit(float(m), (h, w))
    keep = ~flat_
    fin, g = fin[keep], g[keep] / scale1[keep, None]
    scale, mean = (peak * scale1)[keep], (peak * mean1)[keep]
    if fin.size:
        m_f = fin.size
        ss_tot = np.sum(g * g, axis=1)
        lo, hi = _bounds((h, w))
        # errstate: a trial step may underflow the envelope to 0 or overflow a
        # derivative; such steps are rejected, the user need not hear of them.
        with np.errstate(all="ignore"):
            starts, costs, valid = _start_groups(g.reshape(m_f, h, w), xs, ys)
            costs = np.where(valid, costs, np.inf)
            # Evaluation caps keep noise (which never converges cleanly) affordable:
            # the most promising start of a filter may take longer, the others are
            # checks for a different basin.
            rank = np.argsort(np.argsort(costs, axis=1, kind="stable"), axis=1, kind="stable")
            caps = np.where(rank == 0, _MAX_ITER[0], _MAX_ITER[1])
            item_f, item_g = np.nonzero(valid)
            p, c = _levenberg_marquardt(
                starts[item_f, item_g], costs[item_f, item_g], g[item_f], xs, ys, lo, hi,
                caps[item_f, item_g],
            )
            final = np.full((m_f, _N_GROUPS), np.inf)
            final[item_f, item_g] = np.where(np.isfinite(c), c, np.inf)
            params = np.zeros((m_f, _N_GROUPS, N_PARAMS))
            params[item_f, item_g] = p
            best = np.argmin(final, axis=1)
            rows = np.arange(m_f)
            best_p, best_cost = params[rows, best], final[rows, best]
            dog_cost = _fit_dog(g, xs, ys, (h, w))
        r2 = np.clip(1.0 - best_cost / ss_tot, 0.0, 1.0)
        dog_r2 = np.clip(1.0 - dog_cost / ss_tot, 0.0, 1.0)
        for k, i in enumerate(fin):
            pk = _canonical(best_p[k])
            pk[7] *= scale[k]
            pk[8] = pk[8] * scale[k] + mean[k]
            fitted = gabor_model(pk, xs, ys).reshape(h, w)
            out[i] = _make_fit(pk, r2[k], _adjusted(float(r2[k]), n), fitted, dog_r2[k],
                               _adjusted(float(dog_r2[k]), n, DOG_PARAMS))
    return out  # type: ignore[return-value]


def fit_gabor(f: np.ndarray) -> GaborFit:
    """Fit a 2-D Gabor to one filter.

    f: (h, w) float -> GaborFit. Bounded nonlinear least squares
    (batched bounds-projected Levenberg-Marquardt, analytic Jacobian; the same
    code path as ``gabor_scores`` with one filter): freq in [0, 0.5]
    cycles/px (Nyquist), sigma in [0.5, max(h, w)] px, centre inside the kernel
    ([-0.5, w-0.5] x [-0.5, h-0.5]), gamma in [0.5, 2].
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
    xs, ys = gabor_grid(f.shape)
    return _fit_batch(f[None], xs, ys)[0]


# --------------------------------------------------------------------------- centre-surround

def dog_model(p: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Difference of two concentric round Gaussians: p (..., 7) = (x0, y0, sigma1, sigma2, a1, a2,
    offset) -> (..., n): a1 exp(-r²/2σ1²) - a2 exp(-r²/2σ2²) + offset, r the distance to (x0, y0)."""
    return _dog_model_and_jacobian(p, xs, ys)[0]


def _dog_model_and_jacobian(p: np.ndarray, xs: np.ndarray, ys: np.ndarray):
    col = lambda k: p[..., k, None]  # noqa: E731
    x0, y0, s1, s2, a1, a2 = (col(k) for k in range(6))
    dx, dy = xs - x0, ys - y0
    r2 = dx * dx + dy * dy
    g1 = np.exp(-r2 / (2.0 * s1 * s1))
    g2 = np.exp(-r2 / (2.0 * s2 * s2))
    t1, t2 = a1 * g1, a2 * g2
    jac = np.empty(r2.shape + (DOG_PARAMS,))
    w = t1 / (s1 * s1) - t2 / (s2 * s2)
    jac[..., 0] = w * dx
    jac[..., 1] = w * dy
    jac[..., 2] = t1 * r2 / (s1 ** 3)
    jac[..., 3] = -t2 * r2 / (s2 ** 3)
    jac[..., 4] = g1
    jac[..., 5] = -g2
    jac[..., 6] = 1.0
    return t1 - t2 + p[..., 6, None], jac


def _dog_bounds(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    size = float(max(h, w))
    inf = np.inf
    lo = np.array([-_CENTRE_PAD, -_CENTRE_PAD, 0.3, 0.3, -inf, -inf, -inf])
    hi = np.array([w - 1 + _CENTRE_PAD, h - 1 + _CENTRE_PAD, size, 2.0 * size, inf, inf, inf])
    return lo, hi


def _fit_dog(g: np.ndarray, xs: np.ndarray, ys: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Residual sums of squares of the best centre-surround fit of each row of g (M, n) (zero-mean,
    max |.| = 1): starts at three centres (kernel centre, peak pixel, energy centroid), five inner
    widths and two surround ratios, amplitudes and offset solved linearly, the best two polished
    by the same Levenberg-Marquardt as the Gabor."""
    m_f, n = g.shape
    h, w = shape
    size = float(max(h, w))
    e = g * g
    esum = np.maximum(e.sum(axis=1), 1e-300)
    k = np.argmax(np.abs(g), axis=1)
    centres = [(np.full(m_f, (w - 1) / 2.0), np.full(m_f, (h - 1) / 2.0)), (xs[k], ys[k]),
               (e @ xs / esum, e @ ys / esum)]
    widths = (0.5, 0.8, 1.2, size / 4.0, size / 2.5)
    ratios = (1.6, 3.0)
    cand = np.zeros((m_f, len(centres) * len(widths) * len(ratios), DOG_PARAMS))
    j = 0
    for cx, cy in centres:
        for s1 in widths:
            for r in ratios:
                cand[:, j, 0], cand[:, j, 1], cand[:, j, 2], cand[:, j, 3] = cx, cy, s1, s1 * r
                j += 1
    lo, hi = _dog_bounds(shape)
    cand = np.clip(cand, lo + 1e-6, hi - 1e-6)
    dx, dy = xs - cand[..., 0:1], ys - cand[..., 1:2]
    r2 = dx * dx + dy * dy
    g1 = np.exp(-r2 / (2.0 * cand[..., 2:3] ** 2))
    g2 = np.exp(-r2 / (2.0 * cand[..., 3:4] ** 2))
    design = np.stack([g1, -g2, np.ones_like(g1)], axis=-1)  # (M, C, n, 3)
    t = g[:, None, :, None]
    coef = np.linalg.pinv(design) @ t
    cand[..., 4], cand[..., 5], cand[..., 6] = coef[..., 0, 0], coef[..., 1, 0], coef[..., 2, 0]
    costs = np.sum((design @ coef - t)[..., 0] ** 2, axis=-1)  # (M, C)
    costs = np.where(np.isfinite(costs), costs, np.inf)
    best = np.argsort(costs, axis=1, kind="stable")[:, :2]
    rows = np.repeat(np.arange(m_f), 2)
    starts = cand[rows, best.ravel()]
    p, c = _levenberg_marquardt(starts, costs[rows, best.ravel()], g[rows], xs, ys, lo, hi,
                                np.full(len(rows), _MAX_ITER[0]), _dog_model_and_jacobian, dog_model)
    c = np.where(np.isfinite(c), c, np.inf).reshape(m_f, 2)
    return np.minimum(c.min(axis=1), costs.min(axis=1))


def is_gabor_like(fit: GaborFit, min_score: float, margin: float = GABOR_MARGIN) -> bool:
    """A Gabor fit that reaches ``min_score`` and explains at least ``margin`` more (adjusted R²)
    than the filter's centre-surround fit: an oriented pattern, not a blob."""
    if not np.isfinite(fit.score) or fit.score < min_score:
        return False
    dog = fit.dog_score if np.isfinite(fit.dog_score) else 0.0
    return fit.score - dog >= margin


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


def rgb_to_spatial_batch(w: np.ndarray) -> np.ndarray:
    """``rgb_to_spatial(w[i])[0]`` for every i at once: w (N, C, h, w) -> (N, h, w)."""
    w = np.asarray(w, dtype=np.float64)
    n_f, c, h, wd = w.shape
    out = np.full((n_f, h, wd), np.nan)
    ok = np.isfinite(w.reshape(n_f, -1)).all(axis=1)
    if ok.any():
        u, s, vt = np.linalg.svd(w[ok].reshape(-1, c, h * wd), full_matrices=False)
        colour, spatial = u[:, :, 0], s[:, :1] * vt[:, 0]
        flip = colour[np.arange(len(colour)), np.argmax(np.abs(colour), axis=1)] < 0
        out[ok] = np.where(flip[:, None], -spatial, spatial).reshape(-1, h, wd)
    return out


def gabor_scores(w: np.ndarray) -> list[GaborFit]:
    """Fit every filter of a layer.

    w: (N, C, h, w) or (N, h, w) -> list of N GaborFit, in filter order.
    Multi-channel filters (C > 1) are reduced with ``rgb_to_spatial`` first;
    C = 1 is used as is. All filters are fitted together: starts, the
    Levenberg-Marquardt iterations and the linear fills are vectorised over
    filters and starts (about 0.6 ms per 5x5 filter in a 700-filter layer on
    2 CPU cores, against ~8 ms with one scipy least_squares fit per start). Each
    filter's fit does not depend on the rest of the batch.
    """
    w = np.asarray(w)
    if w.ndim in (3, 4) and w.shape[0] == 0:
        return []
    if w.ndim == 4:
        if w.shape[1] == 1:
            maps = [w[i, 0] for i in range(w.shape[0])]
        else:
            maps = list(rgb_to_spatial_batch(w))
    elif w.ndim == 3:
        maps = [w[i] for i in range(w.shape[0])]
    else:
        raise ValueError(f"gabor_scores needs (N, C, h, w) or (N, h, w), got shape {w.shape}")
    if not maps:
        return []
    xs, ys = gabor_grid(maps[0].shape)
    return _fit_batch(np.stack(maps), xs, ys)


def _theta_sensitivity(fit: GaborFit) -> float:
    """How much the fitted pattern changes per radian of rotation, relative to its size.

    ||d fitted / d theta|| / ||fitted - offset|| over the kernel's pixels
    (dimensionless, per radian). 0 for an isotropic blob, whose theta is
    arbitrary; of order 1 for stripes, edges and elongated bars. Frequency alone
    cannot tell these apart: an odd (edge-like) fit can have freq near 0 with a
    large amplitude and still be sharply oriented.
    """
    h, w = fit.fitted.shape
    xs, ys = gabor_grid((h, w))
    p = np.array([fit.theta, fit.freq, fit.phase, fit.sigma, fit.gamma, fit.x0, fit.y0,
                  fit.amplitude, fit.offset])
    size = np.linalg.norm(gabor_model(p, xs, ys) - fit.offset)
    if not np.isfinite(size) or size == 0.0:
        return 0.0
    return float(np.linalg.norm(gabor_jacobian(p, xs, ys)[:, 0]) / size)


def orientation_histogram(
    fits: Sequence[GaborFit],
    bins: int = 8,
    min_score: float = 0.7,
    min_orientedness: float = 0.2,
) -> np.ndarray:
    """Histogram of orientations theta (mod pi) of the Gabor-like filters (``is_gabor_like``).

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
        if is_gabor_like(fit, min_score) and _theta_sensitivity(fit) >= min_orientedness
    ]
    counts, _ = np.histogram(np.asarray(thetas, dtype=np.float64), bins=bins, range=(0.0, np.pi))
    return counts.astype(np.int64)
