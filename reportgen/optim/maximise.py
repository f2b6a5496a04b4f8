"""Batched activation maximisation: images that drive one channel of a layer up.

Two recipes, both batched the same way: one channel per batch slot, so a
layer's channels are optimised together and one backward pass serves all of
them. Slots never interact (the model runs in eval mode, so batch norm uses its
running statistics), hence slot ``b``'s gradient of the summed objective is the
gradient of its own channel's objective. Channels are processed ``chunk`` slots
at a time to bound memory, and the network runs only up to the target layer
(``truncated_forward``).

* ``plain_ascent``: the Keras blog recipe ("How convolutional neural networks
  see the world", F. Chollet, 2016): grey plus noise, gradient normalised by its
  RMS, a fixed number of steps of size ``step``; a filter whose final objective
  is <= 0 is "stuck".
* ``fourier_ascent``: the regularised recipe of Olah, Mordvintsev & Schubert,
  "Feature Visualization", Distill 2017: a 1/f-scaled Fourier spectrum,
  decorrelated colour and a sigmoid; random pad, jitter, scale and rotation
  every step; Adam; an optional diversity term between images of the same unit.

Every random draw of a slot comes from a generator seeded by ``(seed, channel,
replica)`` only, so a channel's result does not depend on which other channels
share its batch or on ``chunk``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reportgen.optim.receptive import ReceptiveField
from reportgen.optim.truncate import truncated_forward

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

OBJECTIVES = ("mean", "centre")

# Square root of the colour correlation matrix of ImageNet pixels (columns =
# decorrelated colour directions), as published with Lucid
# (tensorflow/lucid, lucid/optvis/param/color.py, "color_correlation_svd_sqrt").
# It is a measured fact about ImageNet, normalised below so that its largest
# column has unit norm, as Lucid does.
_COLOR_SVD_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02],
     [0.27, 0.00, -0.05],
     [0.27, -0.09, 0.03]],
    dtype=torch.float64,
)
COLOR_MATRIX = (_COLOR_SVD_SQRT / _COLOR_SVD_SQRT.norm(dim=0).max()).float()

# The Fourier image is divided by this before the colour matrix and sigmoid:
# with the spectrum initialised at std 0.01 the first image then sits in the
# sigmoid's near-linear range around grey (Lucid's constant).
_SPECTRUM_DIVISOR = 4.0

# Transformation robustness, as fractions of the image side or absolute values.
# Lucid's defaults for 224 px images are pad 12, jitter 8 (+4), scale 0.9..1.1,
# rotation +-10 degrees; here pad and jitter scale with the image.
_PAD_FRACTION = 1 / 16
_JITTER_FRACTION = 1 / 24
_MAX_SCALE = 0.1
_MAX_ROTATION_DEG = 10.0


@dataclass(frozen=True)
class AscentResult:
    """Result of an activation maximisation run; slot ``b`` maximised ``channels[b]``.

    images: (B, 3, H, W) float32 in [0, 1], for display (``plain_ascent``: after
        ``deprocess_plain``; ``fourier_ascent``: the decoded image itself).
    raw: (B, 3, H, W) float32, the model input (normalised with mean/std).
    loss: (B,) float32, the objective of ``raw`` at the end.
    stuck: (B,) bool, ``loss <= 0``: the unit never switched on.
    history: (steps + 1, B) float32; row k is the objective of the input the
        k-th update's gradient was taken at, the last row equals ``loss``.
    channels: the channel of each slot (repeated ``per_unit`` times in Fourier runs).
    outside: (B,) float32, the share of the values of the pixel image
        (``raw * std + mean``, every colour of every pixel) outside [0, 1]: how
        far the image leaves what a real image can be.
    clipped_loss: (B,) float32, the objective of the same pixel image clipped
        to [0, 1] (what a real image of it reaches); equals ``loss`` when
        ``outside`` is 0.
    """

    images: torch.Tensor
    raw: torch.Tensor
    loss: torch.Tensor
    stuck: torch.Tensor
    history: torch.Tensor
    channels: tuple[int, ...]
    outside: torch.Tensor | None = None
    clipped_loss: torch.Tensor | None = None


def _objective(out: torch.Tensor, index: torch.Tensor, objective: str, check: bool = True) -> torch.Tensor:
    """(B,) objective of slot b's own channel ``index[b]`` in ``out`` (B, C, h, w). ``check``:
    validate the shapes and channels first (reading ``index`` back from its device: once per
    optimisation, not every step)."""
    if check and out.dim() != 4:
        raise ValueError(f"target layer output has shape {tuple(out.shape)}, expected (B, C, h, w)")
    if check and int(index.max()) >= out.shape[1]:
        raise IndexError(f"channel {int(index.max())} out of range for a layer with {out.shape[1]} channels")
    maps = out[torch.arange(out.shape[0], device=out.device), index]  # (B, h, w)
    if objective == "mean":
        return maps.mean(dim=(1, 2))
    return maps[:, maps.shape[1] // 2, maps.shape[2] // 2]


def _range_check(run: Callable[[torch.Tensor], torch.Tensor], pixels: torch.Tensor, index: torch.Tensor,
                 objective: str, mu: torch.Tensor, sd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) share of ``pixels`` values outside [0, 1], and (B,) the objective of the clipped image."""
    with torch.no_grad():
        outside = ((pixels < 0) | (pixels > 1)).float().mean(dim=(1, 2, 3))
        clipped = _objective(run((pixels.clamp(0.0, 1.0) - mu) / sd), index, objective)
    return outside.detach(), clipped.detach()


def slot_generator(seed: int, channel: int, replica: int) -> torch.Generator:
    """A CPU generator that depends only on (seed, channel, replica)."""
    state = np.random.SeedSequence([int(seed), int(channel), int(replica)]).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0]))


def _check_args(channels: Sequence[int], size: tuple[int, int], steps: int, objective: str, chunk: int) -> list[int]:
    chans = [int(c) for c in channels]
    if not chans:
        raise ValueError("no channels given")
    if min(chans) < 0:
        raise IndexError("channels must be >= 0")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, not {objective!r}")
    if steps < 0 or chunk < 1:
        raise ValueError("steps must be >= 0 and chunk >= 1")
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (H, W) with H, W >= 1, not {size!r}")
    return chans


def _colour(values: Sequence[float], device: str | torch.device) -> torch.Tensor:
    """(1, 3, 1, 1) float32 tensor of per-colour constants."""
    t = torch.as_tensor(values, dtype=torch.float32, device=device).reshape(1, -1, 1, 1)
    if t.shape[1] != 3:
        raise ValueError("mean and std need three values (RGB)")
    return t


def deprocess_plain(x: torch.Tensor) -> torch.Tensor:
    """The Keras recipe's display step, per image: standardise, std 0.1, centre 0.5, clip.

    x: (B, C, H, W) float; returns a new (B, C, H, W) float tensor in [0, 1].
    Statistics are over each whole image (all colours), so colour balance is kept.
    """
    flat = x.reshape(x.shape[0], -1)
    mu = flat.mean(dim=1).view(-1, 1, 1, 1)
    sd = flat.std(dim=1, unbiased=False).view(-1, 1, 1, 1)
    return ((x - mu) / (sd + 1e-5) * 0.1 + 0.5).clamp(0.0, 1.0)


def plain_ascent(
    model: nn.Module,
    layer: str,
    channels: Sequence[int],
    size: tuple[int, int],
    steps: int = 20,
    step: float = 1.0,
    objective: str = "mean",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    seed: int = 0,
    chunk: int = 64,
    device: str | torch.device = "cpu",
    noise: float = 20 / 255,
    norm_bound: float | None = None,
) -> AscentResult:
    """Plain gradient ascent (Keras recipe), one channel of ``layer`` per batch slot.

    The start of slot b is grey 0.5 plus uniform noise of width ``noise`` in
    [0, 1] pixel space (the blog used 128 + U[0, 20) on 0..255), normalised with
    ``mean``/``std`` into the model's input space. The ascent itself runs in that
    input space, as the blog's did: each step ``x += step * g / (rms(g) + 1e-5)``
    with g the gradient of slot b's objective w.r.t. its own image and rms over
    that slot's (3, H, W). No clipping during the ascent.

    model: on ``device`` already; not modified (flags restored on exit).
    channels: channel indices of ``layer``, one slot each (duplicates allowed).
    size: (H, W) of the images.
    objective: "mean" (mean of the channel's map) or "centre" (its unit at
        (h // 2, w // 2)).
    norm_bound: if set, after each step every slot's model input is rescaled to
        this L2 norm (over the whole image: pass ``size`` = the unit's RF to bound
        the RF patch). For a linear unit the iteration then converges to the
        constrained optimum ``norm_bound * w / ||w||``.
    Returns AscentResult; ``images`` = ``deprocess_plain`` of the pixel image
    ``raw * std + mean``.
    """
    chans = _check_args(channels, size, steps, objective, chunk)
    H, W = int(size[0]), int(size[1])
    mu, sd = _colour(mean, device), _colour(std, device)
    raws, hists, checks = [], [], []
    with truncated_forward(model, layer) as run:
        for lo in range(0, len(chans), chunk):
            part = chans[lo : lo + chunk]
            index = torch.tensor(part, device=device)
            pixels = torch.stack(
                [0.5 + noise * (torch.rand((3, H, W), generator=slot_generator(seed, c, 0)) - 0.5) for c in part]
            ).to(device)
            x = ((pixels - mu) / sd).requires_grad_(True)
            hist = []
            for k in range(steps + 1):
                value = _objective(run(x), index, objective)
                hist.append(value.detach())
                if k == steps:
                    break
                (g,) = torch.autograd.grad(value.sum(), x)
                # Per-slot RMS: every unit moves the same distance per step,
                # whatever the scale of its gradient.
                rms = g.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-5
                with torch.no_grad():
                    x = x + step * g / rms
                    if norm_bound is not None:
                        norms = x.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                        x = x * (norm_bound / norms)
                x.requires_grad_(True)
            raws.append(x.detach())
            hists.append(torch.stack(hist))
            checks.append(_range_check(run, x.detach() * sd + mu, index, objective, mu, sd))
    raw = torch.cat(raws)
    history = torch.cat(hists, dim=1).float()
    loss = history[-1].clone()
    return AscentResult(
        images=deprocess_plain(raw * sd + mu),
        raw=raw,
        loss=loss,
        stuck=loss <= 0,
        history=history,
        channels=tuple(chans),
        outside=torch.cat([o for o, _ in checks]).float(),
        clipped_loss=torch.cat([c for _, c in checks]).float(),
    )


def _frequency_scale(H: int, W: int, decay: float = 1.0) -> torch.Tensor:
    """(H, W // 2 + 1) weights 1 / f**decay of the rfft2 grid, f floored at 1 / max(H, W)."""
    fy = torch.fft.fftfreq(H).view(-1, 1)
    fx = torch.fft.rfftfreq(W).view(1, -1)
    f = (fy**2 + fx**2).sqrt()
    # The floor gives the DC term the weight of the lowest nonzero frequency
    # instead of infinity.
    return 1.0 / f.clamp_min(1.0 / max(H, W)) ** decay


def spectrum_to_image(spectrum: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Decode a Fourier parameterisation into an image.

    spectrum: (B, 3, H, W // 2 + 1, 2) float, real and imaginary parts of the
        unscaled coefficients (the optimised parameters).
    Returns (B, 3, H, W) float in (0, 1): coefficients times 1/frequency,
    orthonormal inverse real FFT, divided by 4, mixed by the ImageNet colour
    matrix ``COLOR_MATRIX``, sigmoid. A zero spectrum decodes to uniform 0.5.
    """
    return _Decoder(size, spectrum.device, spectrum.dtype)(spectrum)


class _Decoder:
    """``spectrum_to_image`` for one size, device and dtype, its constant tensors made once."""

    def __init__(self, size: tuple[int, int], device: str | torch.device, dtype: torch.dtype):
        self.H, self.W = int(size[0]), int(size[1])
        self.scale = _frequency_scale(self.H, self.W).to(device, dtype)
        self.colour = COLOR_MATRIX.to(device, dtype)

    def __call__(self, spectrum: torch.Tensor) -> torch.Tensor:
        H, W = self.H, self.W
        if spectrum.shape[-3:] != (H, W // 2 + 1, 2):
            raise ValueError(f"spectrum shape {tuple(spectrum.shape)} does not fit size {(H, W)}")
        coeffs = torch.view_as_complex(spectrum.contiguous()) * self.scale
        img = torch.fft.irfft2(coeffs, s=(H, W), norm="ortho") / _SPECTRUM_DIVISOR
        img = torch.einsum("ij,bjhw->bihw", self.colour, img)
        return torch.sigmoid(img)


def robustness_transforms(
    img: torch.Tensor, params: torch.Tensor, pad_mode: str
) -> torch.Tensor:
    """Pad, then one random similarity transform per slot, sampled back to (H, W).

    img: (B, 3, H, W) in [0, 1]; params: (B, 4) uniforms in [0, 1) for angle,
    scale, shift x, shift y. The output pixel at centred position q samples the
    padded image at R(angle) q / scale + shift (pixel units), so at zero angle,
    unit scale and no shift it returns ``img`` exactly.
    """
    B, _, H, W = img.shape
    pad = max(1, math.ceil(_PAD_FRACTION * max(H, W)))
    jitter = max(1.0, _JITTER_FRACTION * max(H, W))
    if pad_mode == "constant":
        padded = F.pad(img, (pad, pad, pad, pad), mode="constant", value=0.5)
    else:
        padded = F.pad(img, (pad, pad, pad, pad), mode=pad_mode)
    Hp, Wp = H + 2 * pad, W + 2 * pad
    u = params.to(img.device, img.dtype) * 2 - 1  # uniforms in [-1, 1)
    angle = u[:, 0] * math.radians(_MAX_ROTATION_DEG)
    scale = 1 + u[:, 1] * _MAX_SCALE
    cos, sin = angle.cos() / scale, angle.sin() / scale
    # affine_grid works in normalised coordinates of output and input; convert
    # the pixel-space transform with the half-sides of both.
    theta = torch.stack(
        [
            torch.stack([cos * W / Wp, -sin * H / Wp, u[:, 2] * jitter * 2 / Wp], dim=1),
            torch.stack([sin * W / Hp, cos * H / Hp, u[:, 3] * jitter * 2 / Hp], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, [B, 3, H, W], align_corners=False)
    return F.grid_sample(padded, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def gram_similarity(acts: torch.Tensor, per_unit: int) -> torch.Tensor:
    """Sum over units of the mean pairwise cosine similarity of the slots' Gram matrices.

    acts: (U * per_unit, C, h, w), slots of one unit adjacent. Returns a scalar.
    """
    B, C = acts.shape[:2]
    flat = acts.reshape(B, C, -1)
    gram = flat @ flat.transpose(1, 2) / flat.shape[-1]  # (B, C, C)
    gram = F.normalize(gram.reshape(B // per_unit, per_unit, -1), dim=-1)
    sim = gram @ gram.transpose(1, 2)  # (U, P, P)
    off = sim.sum(dim=(1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(dim=1)
    return (off / (per_unit * (per_unit - 1))).sum()


def fourier_ascent(
    model: nn.Module,
    layer: str,
    channels: Sequence[int],
    size: tuple[int, int],
    steps: int = 256,
    lr: float = 0.05,
    objective: str = "mean",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    seed: int = 0,
    chunk: int = 64,  # a 64-unit layer in one batch: about a quarter less CPU than 32 (results do not depend on it)
    diversity: float = 0.0,
    transforms: bool = True,
    device: str | torch.device = "cpu",
    per_unit: int = 1,
    pad_mode: str = "constant",
) -> AscentResult:
    """Regularised activation maximisation (Olah et al. 2017), one image per batch slot.

    Each slot's image is ``spectrum_to_image`` of its own spectrum (initialised
    N(0, 0.01²) from the slot's generator). Each of ``steps`` Adam steps (lr
    ``lr``) decodes, applies transformation robustness if ``transforms``
    (pad by ~H/16 with ``pad_mode`` "constant" (grey 0.5) or "reflect", then a
    per-slot random rotation within +-10 degrees, scale 0.9..1.1 and shift
    within ~H/24 px, drawn from the slot's generator), normalises with
    mean/std, runs the model up to ``layer`` and minimises
    ``-sum(objective) + diversity * similarity``.

    per_unit: images per channel; slots are channel-major (``channels[0]``
        ``per_unit`` times, then ``channels[1]``, ...), all images of a unit in
        the same chunk (a chunk holds ``max(1, chunk // per_unit)`` units).
    diversity: weight of the diversity term, the mean pairwise cosine
        similarity of the Gram matrices of the target layer's activations
        across the slots of the same unit (minimising it = maximising the
        negative similarity); needs ``per_unit >= 2`` to have any effect.
    Returns AscentResult with B = len(channels) * per_unit; ``images`` is the
    final decoded image (no transforms), ``loss`` its objective, ``history``
    rows 0..steps-1 the objective of the transformed inputs optimised at each
    step.
    """
    chans = _check_args(channels, size, steps, objective, chunk)
    if per_unit < 1:
        raise ValueError("per_unit must be >= 1")
    if pad_mode not in ("constant", "reflect", "replicate"):
        raise ValueError(f"pad_mode must be 'constant', 'reflect' or 'replicate', not {pad_mode!r}")
    H, W = int(size[0]), int(size[1])
    mu, sd = _colour(mean, device), _colour(std, device)
    slots = [(c, r) for c in chans for r in range(per_unit)]
    units_per_chunk = max(1, chunk // per_unit)
    images, hists = [], []
    decode = _Decoder((H, W), device, torch.float32)
    with truncated_forward(model, layer) as run:
        for lo in range(0, len(chans), units_per_chunk):
            part = slots[lo * per_unit : (lo + units_per_chunk) * per_unit]
            index = torch.tensor([c for c, _ in part], device=device)
            gens = [slot_generator(seed, c, r) for c, r in part]
            spectrum = torch.stack(
                [0.01 * torch.randn((3, H, W // 2 + 1, 2), generator=g) for g in gens]
            ).to(device).requires_grad_(True)
            # All of a slot's transform draws up front, from its own generator.
            draws = torch.stack([torch.rand((max(steps, 1), 4), generator=g) for g in gens], dim=1).to(device)
            opt = Adam(spectrum, lr)
            hist = []
            for k in range(steps):
                img = decode(spectrum)
                if transforms:
                    img = robustness_transforms(img, draws[k], pad_mode)
                out = run((img - mu) / sd)
                value = _objective(out, index, objective, check=k == 0)
                hist.append(value.detach())
                loss = -value.sum()
                if diversity and per_unit > 1:
                    loss = loss + diversity * gram_similarity(out, per_unit)
                spectrum.grad = None
                loss.backward()
                opt.step()
            with torch.no_grad():
                img = decode(spectrum)
                hist.append(_objective(run((img - mu) / sd), index, objective))
            images.append(img.detach())
            hists.append(torch.stack(hist))
    image = torch.cat(images).float()
    history = torch.cat(hists, dim=1).float()
    loss = history[-1].clone()
    return AscentResult(
        images=image,
        raw=(image - mu) / sd,
        loss=loss,
        stuck=loss <= 0,
        history=history,
        channels=tuple(c for c, _ in slots),
        # A sigmoid image never leaves (0, 1): nothing to clip.
        outside=torch.zeros_like(loss),
        clipped_loss=loss.clone(),
    )


class Adam:
    """Adam (Kingma and Ba, 2015) for one tensor, with torch.optim.Adam's defaults (betas 0.9 and
    0.999, eps 1e-8, no weight decay) and the same operations in the same order, so the same
    numbers (tests/optim/test_maximise.py checks them against it).

    Written out because creating the first torch.optim optimizer of a process imports
    torch._dynamo, about a second per build worker, for an update of four lines.
    """

    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.param, self.lr, self.betas, self.eps, self.steps = param, lr, betas, eps, 0
        self.avg = torch.zeros_like(param, memory_format=torch.preserve_format)
        self.avg_sq = torch.zeros_like(param, memory_format=torch.preserve_format)

    @torch.no_grad()
    def step(self) -> None:
        grad = self.param.grad
        if grad is None:
            return
        b1, b2 = self.betas
        self.steps += 1
        self.avg.lerp_(grad, 1 - b1)
        self.avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        step_size = self.lr / (1 - b1 ** self.steps)
        denom = (self.avg_sq.sqrt() / math.sqrt(1 - b2 ** self.steps)).add_(self.eps)
        self.param.addcdiv_(self.avg, denom, value=-step_size)


def default_size(
    rf: ReceptiveField, minimum: int = 32, maximum: int = 224, objective: str = "mean"
) -> tuple[int, int]:
    """(H, W) image size for maximising a unit with receptive field ``rf``.

    "centre": the RF itself (the centre unit sees all of it, nothing else
    matters). "mean": twice the RF, so the map has several units and the image
    room for the pattern to repeat. Each side is clipped to [minimum, maximum]
    and rounded up to a multiple of the layer's jump (the map then tiles the
    image evenly), unless that would exceed ``maximum``.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, not {objective!r}")
    factor = 2 if objective == "mean" else 1
    out = []
    for side, jump in zip(rf.size, rf.jump):
        n = min(max(factor * int(side), minimum), maximum)
        j = max(1, int(jump))
        rounded = -(-n // j) * j
        out.append(rounded if rounded <= maximum else n)
    return out[0], out[1]
