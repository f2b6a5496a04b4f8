"""What deeper units respond to: every view of one layer's units for one run.

For each unit (output channel) of a layer the spec selects under ``analyses.units``:
activation maximisation (the regularised Fourier kind and/or plain gradient ascent,
with how far the image leaves [0, 1] and the objective of the clipped image), the
top-activating receptive-field crops over all positions of all test images
(non-maximum suppression) with their neuron feature and colour-selectivity index,
the decoded image-space filter (substitution through the layers below) with its
fidelity R² against the unit's real pre-activation and, for the top activation,
deconvnet and guided-backprop images. A unit never active on the images (max <= 0
everywhere) is flagged and gets no crops, neuron feature or baselines (NaN), since
any crop would show an arbitrary place. The numerics live in ``reportgen.optim``;
this module runs them for a build.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from reportgen.core.cache import register
from reportgen.load.images import LoadedImage
from reportgen.optim.decode import (
    decode_layer,
    template_fidelity,
    template_response,
    unit_gradients,
)
from reportgen.optim.maximise import default_size, fourier_ascent, plain_ascent
from reportgen.optim.patches import (
    colour_selectivity,
    crop_origin,
    crop_padded,
    neuron_feature,
    to_grey,
    top_patches_nms,
)
from reportgen.optim.receptive import receptive_field
from reportgen.run.hooks import LayerRecorder, inference


@dataclass
class UnitViews:
    """Arrays for the units 0..U-1 of one layer of one run (U <= max_units)."""

    layer: str
    rf_size: tuple[int, int]
    rf_jump: tuple[int, int]
    image_size: tuple[int, int]
    plain: np.ndarray | None  # (U, 3, S, S) in [0, 1], display-ready
    plain_loss: np.ndarray | None  # (U,)
    stuck: np.ndarray | None  # (U,) bool: the objective stayed <= 0
    fourier: np.ndarray | None  # (U, 3, S, S) in [0, 1]
    fourier_loss: np.ndarray | None
    decoded: np.ndarray | None  # (U, C_in, s, s) linear templates (None if the path is not a chain)
    decode_note: str | None
    patches: np.ndarray  # (U, K, 3, h, w) top receptive-field crops in [0, 1], zero-padded; NaN where none
    patch_values: np.ndarray  # (U, K), NaN where fewer than K crops were kept
    patch_images: np.ndarray  # (U, K) index of the image each crop comes from (-1: none)
    nf: np.ndarray  # (U, 3, h, w) neuron feature (NaN where undefined)
    colour_index: np.ndarray  # (U,) colour selectivity in [0, 1], NaN without positive activations
    deconv: np.ndarray | None  # (U, 3, h, w) deconvnet image of the top activation, RF crop (NaN: inactive)
    guided: np.ndarray | None  # (U, 3, h, w) guided backprop, RF crop (NaN: inactive)
    # Fields added with the "views that do not mislead" work; defaults keep old values readable.
    max_activation: np.ndarray | None = None  # (U,) max over all positions of all images
    inactive: np.ndarray | None = None  # (U,) bool: max_activation <= 0 (never active on the images)
    patch_positions: np.ndarray | None = None  # (U, K, 2) map (row, col) of each crop (-1: none)
    plain_outside: np.ndarray | None = None  # (U,) share of pixel values outside [0, 1]
    plain_clipped: np.ndarray | None = None  # (U,) objective of the image clipped to [0, 1]
    fourier_outside: np.ndarray | None = None
    fourier_clipped: np.ndarray | None = None
    fidelity: np.ndarray | None = None  # (U,) R^2 of the decoded template against the pre-activation
    pooling: str = "subsample"  # how decoding treated max pooling


register(UnitViews)  # cached per layer ("units" entries)


def compute_units(model: nn.Module, layer: str, images: list[LoadedImage], opts, relu: bool,
                  mean, std, device: torch.device) -> UnitViews:
    """All unit views of ``layer``. images: the run's test images (all of one shape)."""
    shape = tuple(images[0].tensor.shape)
    rf = receptive_field(model, layer, input_shape=shape)
    x = torch.stack([im.tensor for im in images]).to(device)
    pixels = np.stack([im.pixels.transpose(2, 0, 1) for im in images]).astype(np.float64) / 255.0
    preact = _acts(model, layer, x, relu=False)
    n_units = min(preact.shape[1], opts.max_units)
    preact = preact[:, :n_units]
    acts = np.maximum(preact, 0.0) if relu else preact
    grey_x = normalise_pixels(to_grey(pixels), mean, std, channels=x.shape[1]).to(device)
    acts_grey = _acts(model, layer, grey_x, relu)[:, :n_units]

    tops = top_patches_nms(pixels, acts, rf.size, rf.jump, rf.start, top_n=opts.top_n)
    k = opts.top_n
    patches = np.full((n_units, k, pixels.shape[1], *rf.size), np.nan)
    values = np.full((n_units, k), np.nan)
    where = np.full((n_units, k), -1, dtype=np.int64)
    positions = np.full((n_units, k, 2), -1, dtype=np.int64)
    for t in tops:
        m = len(t.value)
        patches[t.channel, :m], values[t.channel, :m] = t.crops, t.value
        where[t.channel, :m], positions[t.channel, :m] = t.image_index, t.position
    nf = np.stack([neuron_feature(t.crops, t.value, t.valid) if len(t.value)
                   else np.full((pixels.shape[1], *rf.size), np.nan) for t in tops])
    colour = np.array([
        colour_selectivity(t.value, acts_grey[t.image_index, t.channel, t.position[:, 0], t.position[:, 1]])
        if len(t.value) else np.nan for t in tops])
    flat = acts.reshape(acts.shape[0], n_units, -1)
    max_act = np.nanmax(np.where(np.isnan(flat), -np.inf, flat), axis=(0, 2))
    inactive = np.array([t.inactive for t in tops])

    size = (opts.size, opts.size) if opts.size else tuple(default_size(rf, objective=opts.objective))
    channels = list(range(n_units))
    plain = fourier = None
    # The optimisers work on RGB images; a one-channel model sees their channel mean.
    target, target_layer = (model, layer) if shape[0] == 3 else (_GreyInput(model), f"net.{layer}")
    rgb_mean, rgb_std = _rgb(mean), _rgb(std)
    if opts.maximise in ("plain", "both"):
        plain = plain_ascent(target, target_layer, channels, size, steps=opts.steps, objective=opts.objective,
                             mean=rgb_mean, std=rgb_std, seed=opts.seed, device=device)
    if opts.maximise in ("fourier", "both"):
        fourier = fourier_ascent(target, target_layer, channels, size, steps=opts.fourier_steps,
                                 objective=opts.objective, mean=rgb_mean, std=rgb_std, seed=opts.seed,
                                 device=device, lr=opts.fourier_lr)
    if shape[0] != 3:  # show what the model saw
        plain, fourier = _grey_result(plain), _grey_result(fourier)

    decoded, note, fidelity = None, None, None
    try:
        decoded = decode_layer(model, layer, input_channels=shape[0], pooling=opts.pooling)[:n_units]
    except ValueError as exc:  # not a plain chain of convolutions and pooling
        note = str(exc)
    if decoded is not None:
        # The template's [0, 0] sits on the top-left pixel of the unit's receptive field.
        origin = crop_origin(np.zeros(2), rf.size, rf.jump, rf.start)
        response = template_response(decoded, x, origin, rf.jump, preact.shape[2:])
        fidelity = template_fidelity(response, preact)

    deconv = guided = None
    if opts.baselines:
        deconv, guided = _baselines(model, layer, x, tops, rf, pixels.shape[1])
    return UnitViews(
        layer=layer, rf_size=tuple(rf.size), rf_jump=tuple(rf.jump), image_size=size,
        plain=_np(plain.images) if plain else None, plain_loss=_np(plain.loss) if plain else None,
        stuck=_np(plain.stuck) if plain else None,
        fourier=_np(fourier.images) if fourier else None, fourier_loss=_np(fourier.loss) if fourier else None,
        decoded=decoded, decode_note=note, patches=patches, patch_values=values, patch_images=where, nf=nf,
        colour_index=colour, deconv=deconv, guided=guided,
        max_activation=max_act, inactive=inactive, patch_positions=positions,
        plain_outside=_np(plain.outside) if plain else None, plain_clipped=_np(plain.clipped_loss) if plain else None,
        fourier_outside=_np(fourier.outside) if fourier else None,
        fourier_clipped=_np(fourier.clipped_loss) if fourier else None,
        fidelity=fidelity, pooling=opts.pooling,
    )


class _GreyInput(nn.Module):
    """A one-channel model behind an RGB input: it sees the mean of the three channels."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.mean(dim=1, keepdim=True))


def _rgb(values) -> tuple[float, ...]:
    """One mean/std value stands for all three channels."""
    values = tuple(float(v) for v in values)
    return values * 3 if len(values) == 1 else values


def _grey_result(res):
    """A maximisation result with its (U, 3, H, W) images replaced by their channel mean, repeated."""
    if res is None:
        return None
    grey = res.images.mean(dim=1, keepdim=True).expand_as(res.images).contiguous()
    return replace(res, images=grey)


def _acts(model: nn.Module, layer: str, x: torch.Tensor, relu: bool) -> np.ndarray:
    with inference(model), LayerRecorder(model, [layer]) as rec:
        a = rec.run(x)[layer].float()
    if relu:
        a = torch.relu(a)
    return a.cpu().numpy().astype(np.float64)


def normalise_pixels(pixels01: np.ndarray, mean, std, channels: int) -> torch.Tensor:
    """(N, 3, H, W) pixels in [0, 1] -> the model's (N, channels, H, W) input; one mean/std value
    applies to every channel."""
    m = np.asarray(mean, dtype=np.float64).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float64).reshape(1, -1, 1, 1)
    if pixels01.shape[1] != channels:  # grey models take one channel (to_grey made them equal)
        pixels01 = pixels01[:, :channels]
    return torch.from_numpy(((pixels01 - m) / s).astype(np.float32))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _baselines(model, layer, x, tops, rf, n_colours: int) -> tuple[np.ndarray, np.ndarray]:
    """Deconvnet and guided backprop of each unit's top activation, cropped to its field.

    Never-active units get NaN: they have no top activation to project. The active units
    of a layer go through one batched forward and backward per method, each on a window
    of its image around its receptive field (``_field_windows``) rather than the whole
    image: the gradient is zero outside the field, and the field's pixels alone decide
    the unit. A unit whose value on its window differs from its value on the whole image
    (a layer whose statistics span the map, which the measured field ignores) is done
    again on the whole image.
    """
    n = len(tops)
    out = {name: np.full((n, n_colours, *rf.size), np.nan) for name in ("deconv", "guided")}
    active = [k for k, t in enumerate(tops) if len(t.value)]
    if not active:
        return out["deconv"], out["guided"]
    image_of = [int(tops[k].image_index[0]) for k in active]
    positions = [tuple(int(v) for v in tops[k].position[0]) for k in active]
    channels = [tops[k].channel for k in active]
    want = np.array([float(tops[k].value[0]) for k in active])
    origins = [crop_origin(np.array(pos), rf.size, rf.jump, rf.start) for pos in positions]
    windows = _field_windows(origins, rf, tuple(x.shape[2:]))
    for name, rule in (("deconv", "deconvnet"), ("guided", "guided")):
        todo = []  # slots whose window did not reproduce the unit
        groups: dict[tuple, list[int]] = {}
        for s, (y0, x0, h, w) in enumerate(windows):
            groups.setdefault((h, w), []).append(s)
        for (h, w), slots in groups.items():
            images = torch.stack([x[image_of[s], :, windows[s][0]:windows[s][0] + h, windows[s][1]:windows[s][1] + w]
                                  for s in slots])
            local = [(positions[s][0] - windows[s][0] // rf.jump[0], positions[s][1] - windows[s][1] // rf.jump[1])
                     for s in slots]
            got: list[float] = []
            grads = unit_gradients(model, layer, [channels[s] for s in slots], images, rule, local, values=got)
            for g, s, value in zip(grads, slots, got):
                if not np.isclose(value, want[s], rtol=1e-4, atol=1e-6 * max(1.0, abs(want[s]))):
                    todo.append(s)
                    continue
                origin = origins[s] - np.array(windows[s][:2])
                out[name][active[s]], _ = crop_padded(g, origin, rf.size, pad="zero")
        if todo:
            grads = unit_gradients(model, layer, [channels[s] for s in todo], x[[image_of[s] for s in todo]], rule,
                                   [positions[s] for s in todo])
            for g, s in zip(grads, todo):
                out[name][active[s]], _ = crop_padded(g, origins[s], rf.size, pad="zero")
    return out["deconv"], out["guided"]


def _field_windows(origins, rf, image_hw: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(y0, x0, h, w) of the input window each unit is computed on: its receptive field
    (top-left ``origins[k]``) and one jump more on every side, clipped to the image, with
    the top-left on the layer's jump grid so every layer's positions line up with the
    whole image's. Windows of units away from the borders share one size (one batch)."""
    out = []
    for origin in origins:
        window = []
        for axis in (0, 1):
            jump, size, full = int(rf.jump[axis]), int(rf.size[axis]), int(image_hw[axis])
            lo = max(0, (int(origin[axis]) - jump) // jump * jump)
            span = -(-(size + 3 * jump) // jump) * jump  # field + a jump each side + alignment slack
            window.append((lo, min(span, full - lo)))
        out.append((window[0][0], window[1][0], window[0][1], window[1][1]))
    return out
