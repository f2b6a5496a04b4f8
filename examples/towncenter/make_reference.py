"""Make the towncenter example's reference model: ICA filters of natural-image patches.

reportgen compares each location's conv1 with the first layer of a reference,
normally a well-trained network downloaded by the user. The example ships no
downloaded weights, so this script makes a stand-in offline: 64 colour 5x5
filters learned by independent component analysis (ICA) of patches of a real
photograph. ICA of natural-image patches gives localized, oriented, Gabor-like
filters (Olshausen & Field 1996, Bell & Sejnowski 1997, van Hateren & van der
Schaaf 1998), the same kind of filters well-trained CNNs learn in conv1.

Steps (all numpy, seeded, deterministic):

1. Image: ``grace_hopper.jpg`` from matplotlib's sample data, the only real
   photograph shipped there, downscaled to 0.5x, 0.35x and 0.25x (Lanczos)
   and mirrored. Downscaling puts more image structure into a 5x5 window and
   undoes JPEG's 2x chroma subsampling and most of its block artefacts; it
   scored better than using the photo at 0.7x-1x (see REFERENCE.md). Pixels are
   then normalised with the ImageNet mean/std that the example's SceneNets
   use, so the filters live in the same input space.
2. Patches: ``N_PATCHES`` random 5x5x3 patches, flattened in conv weight
   order (channel, row, column); the data set's mean patch is subtracted.
3. Whitening: PCA; the ``N_COMPONENTS`` = 64 leading components (largest
   variance, i.e. the lowest spatial frequencies) of the 75 are kept and
   scaled to unit variance. Dropping the 11 weakest components acts as the
   usual low-pass step of ICA on image patches.
4. FastICA (Hyvarinen 1999), symmetric version: logcosh contrast, so the
   nonlinearity is g(u) = tanh(u); after every fixed-point step the rows are
   decorrelated together, W <- (W W^T)^(-1/2) W.
5. Filters: the rows of the unmixing matrix mapped back to pixel space,
   ``W @ V`` with V the whitening matrix (filters, not basis functions). Each
   filter's sign is chosen so that its response to the patches has positive
   skew (the heavy tail passes the ReLU), filters are ordered by their
   non-Gaussianity (logcosh negentropy estimate), and the whole set is
   rescaled by one factor so that its median L2 norm is ``MEDIAN_NORM``.
   Biases are 0.

Output: ``reference/reference.pt`` = ``{"state_dict", "source", ...}``, plain
tensors and Python values (loads with ``torch.load(path, weights_only=True)``,
strict-loads into ``ReferenceNet``). It then prints the Gabor-likeness of the
filters (``reportgen.analysis.gabor.gabor_scores``) and, when present, of
``checkpoints/loc01.pt``'s conv1 for comparison.

Run from the repository root:  python examples/towncenter/make_reference.py
Optional:  --png PATH  also writes a grid picture of the 64 filters.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # small problem; be gentle with shared machines
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib import cbook  # noqa: E402
from PIL import Image  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from reference import ReferenceNet  # noqa: E402

SEED = 0
IMAGE = "grace_hopper.jpg"
SCALES = (0.5, 0.35, 0.25)  # downscale factors of the photo (Lanczos)
MEAN = np.array([0.485, 0.456, 0.406])  # ImageNet statistics, as in make_example.py
STD = np.array([0.229, 0.224, 0.225])
K = 5  # kernel size
N_FILTERS = 64
N_PATCHES = 60_000
N_COMPONENTS = 64  # whitened dimensions kept (of 3 * K * K = 75); = number of ICA filters
MAX_ITER = 1000
TOL = 1e-6
MEDIAN_NORM = 0.5  # median L2 norm of the final filters (a trained 5x5x3 conv1 is ~0.2-0.8)
OUT = HERE / "reference" / "reference.pt"


# --------------------------------------------------------------------------- data

def load_images() -> list[np.ndarray]:
    """The photo at several scales, each also mirrored: list of (3, h, w) normalised float64."""
    with cbook.get_sample_data(IMAGE) as f:
        img = Image.open(f).convert("RGB")
        img.load()
    out = []
    for s in SCALES:
        size = (round(img.width * s), round(img.height * s))
        a = np.asarray(img.resize(size, Image.Resampling.LANCZOS), dtype=np.float64) / 255.0
        a = ((a - MEAN) / STD).transpose(2, 0, 1)
        out += [a, a[:, :, ::-1]]
    return out


def sample_patches(images: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """n random K x K patches, spread over the images in proportion to their area: (n, 3*K*K)."""
    areas = np.array([(a.shape[1] - K + 1) * (a.shape[2] - K + 1) for a in images], dtype=np.float64)
    which = rng.choice(len(images), size=n, p=areas / areas.sum())
    out = np.empty((n, 3 * K * K))
    for i, a in enumerate(images):
        idx = np.flatnonzero(which == i)
        ys = rng.integers(0, a.shape[1] - K + 1, size=idx.size)
        xs = rng.integers(0, a.shape[2] - K + 1, size=idx.size)
        win = np.lib.stride_tricks.sliding_window_view(a, (K, K), axis=(1, 2))  # (3, H', W', K, K)
        out[idx] = win[:, ys, xs].transpose(1, 0, 2, 3).reshape(idx.size, -1)
    return out


# --------------------------------------------------------------------------- ICA

def whiten(x: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA whitening keeping the d strongest components.

    x: (n, D) -> (z (n, d) whitened data, V (d, D) whitening matrix, variances (D,) descending).
    """
    cov = x.T @ x / x.shape[0]
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    # Fix each eigenvector's sign (largest entry positive) so the result does not
    # depend on the LAPACK build.
    evecs = evecs * np.sign(evecs[np.argmax(np.abs(evecs), axis=0), np.arange(evecs.shape[1])])
    v = evecs[:, :d].T / np.sqrt(evals[:d])[:, None]
    return x @ v.T, v, evals


def sym_decorrelate(w: np.ndarray) -> np.ndarray:
    """W <- (W W^T)^(-1/2) W."""
    s, u = np.linalg.eigh(w @ w.T)
    return (u / np.sqrt(s)) @ u.T @ w


def fastica(z: np.ndarray, rng: np.random.Generator, max_iter: int, tol: float) -> tuple[np.ndarray, int, float]:
    """Symmetric FastICA with the logcosh contrast (g = tanh) on whitened z (n, d).

    -> (W (d, d) orthogonal unmixing matrix in whitened space, iterations, last change).
    Fixed point: W <- E[g(W z) z^T] - diag(E[g'(W z)]) W, then symmetric decorrelation;
    converged when every row's direction moves by less than tol (1 - |<w_new, w_old>|).
    """
    n, d = z.shape
    w = sym_decorrelate(rng.standard_normal((d, d)))
    change = np.inf
    for it in range(1, max_iter + 1):
        y = z @ w.T  # (n, d)
        g = np.tanh(y)
        g_prime = 1.0 - g * g
        w_new = sym_decorrelate(g.T @ z / n - g_prime.mean(axis=0)[:, None] * w)
        change = float(np.max(np.abs(np.abs(np.einsum("ij,ij->i", w_new, w)) - 1.0)))
        w = w_new
        if change < tol:
            break
    return w, it, change


def negentropy_logcosh(y: np.ndarray) -> np.ndarray:
    """(E[G(y)] - E[G(nu)])^2 per column of unit-variance y (n, d), G = log cosh, nu ~ N(0, 1)."""
    g_gauss = 0.3745672075  # E[log cosh(nu)] for standard normal nu
    return (np.mean(np.log(np.cosh(y)), axis=0) - g_gauss) ** 2


# --------------------------------------------------------------------------- main

def make_filters() -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(SEED)
    images = load_images()
    x = sample_patches(images, N_PATCHES, rng)
    x = x - x.mean(axis=0)
    z, v, evals = whiten(x, N_COMPONENTS)
    w, iters, change = fastica(z, rng, MAX_ITER, TOL)
    filters = w @ v  # (d, 75): rows of the unmixing matrix in pixel space
    y = x @ filters.T  # the components' responses (unit variance)
    skew = np.mean(y ** 3, axis=0)
    sign = np.where(skew < 0, -1.0, 1.0)
    filters, y = filters * sign[:, None], y * sign
    order = np.argsort(-negentropy_logcosh(y), kind="stable")
    filters = filters[order][:N_FILTERS]
    norms = np.linalg.norm(filters, axis=1)
    scale = MEDIAN_NORM / float(np.median(norms))
    filters = filters * scale
    info = {
        "patches": N_PATCHES,
        "components": N_COMPONENTS,
        "variance_kept": float(evals[:N_COMPONENTS].sum() / evals.sum()),
        "ica_iterations": iters,
        "ica_last_change": change,
        "converged": bool(change < TOL),
    }
    return filters.reshape(N_FILTERS, 3, K, K), info


def score_summary(name: str, w: np.ndarray) -> dict:
    from reportgen.analysis.gabor import gabor_scores

    s = np.array([f.score for f in gabor_scores(w)])
    norms = np.linalg.norm(w.reshape(w.shape[0], -1), axis=1)
    q = np.percentile(s, [10, 25, 50, 75, 90])
    print(f"{name:<14} n={len(s):>3}  median={np.median(s):.3f}  mean={s.mean():.3f}  "
          f">=0.7: {np.mean(s >= 0.7):5.1%}  >=0.5: {np.mean(s >= 0.5):5.1%}  "
          f"p10/p25/p75/p90={q[0]:.2f}/{q[1]:.2f}/{q[3]:.2f}/{q[4]:.2f}  median L2 norm={np.median(norms):.3f}")
    return {"median": float(np.median(s)), "share_ge_0.7": float(np.mean(s >= 0.7))}


def save_png(w: np.ndarray, path: Path, cell: int = 12, pad: int = 2, cols: int = 8) -> None:
    """Grid of filters, each min-max scaled to [0, 255] and enlarged nearest-neighbour."""
    n = w.shape[0]
    rows = -(-n // cols)
    size = K * cell
    canvas = np.full((rows * (size + pad) + pad, cols * (size + pad) + pad, 3), 128, dtype=np.uint8)
    for i in range(n):
        f = w[i].transpose(1, 2, 0)
        f = (f - f.min()) / max(f.max() - f.min(), 1e-12)
        tile = np.kron(f, np.ones((cell, cell, 1)))
        r, c = divmod(i, cols)
        y0, x0 = pad + r * (size + pad), pad + c * (size + pad)
        canvas[y0:y0 + size, x0:x0 + size] = np.round(tile * 255).astype(np.uint8)
    Image.fromarray(canvas).save(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--png", type=Path, help="also write a grid picture of the filters here")
    ap.add_argument("--no-scores", action="store_true", help="skip the Gabor-likeness measurement")
    args = ap.parse_args()
    t0 = time.perf_counter()
    filters, info = make_filters()
    print(f"ICA: {info['patches']} patches, {info['components']} of 75 whitened components "
          f"({info['variance_kept']:.4%} of the variance), {info['ica_iterations']} iterations, "
          f"converged={info['converged']} (last change {info['ica_last_change']:.1e})")

    net = ReferenceNet()
    sd = net.state_dict()
    sd["conv1.weight"] = torch.tensor(filters, dtype=torch.float32)
    sd["conv1.bias"] = torch.zeros(N_FILTERS)
    net.load_state_dict(sd, strict=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "state_dict": {k: t.clone().contiguous() for k, t in net.state_dict().items()},
        "source": "ICA of natural-image patches",
        "method": "symmetric FastICA (logcosh / tanh) of PCA-whitened 5x5x3 patches; "
                  "filters = rows of the unmixing matrix in pixel space",
        "image": f"matplotlib sample_data/{IMAGE}, scales {list(SCALES)}, mirrored, "
                 "ImageNet mean/std normalised",
        "median_l2_norm": MEDIAN_NORM,
        "seed": SEED,
        "made_by": "examples/towncenter/make_reference.py",
        **info,
    }, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes) in {time.perf_counter() - t0:.1f}s")
    if args.png:
        save_png(filters, args.png)
        print(f"wrote {args.png}")

    if not args.no_scores:
        print("Gabor-likeness (adjusted R^2 of a 2-D Gabor fit; white noise on 5x5 averages ~0.18):")
        score_summary("reference", filters)
        loc01 = HERE / "checkpoints" / "loc01.pt"
        if loc01.exists():
            ck = torch.load(loc01, map_location="cpu", weights_only=True)
            score_summary("loc01 conv1", ck["state_dict"]["conv1.weight"].double().numpy())
    print(f"total {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
