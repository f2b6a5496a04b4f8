"""Top activating patches, the neuron feature and the colour selectivity index.

After Rafegas, Vanrell, Alexandre and Arias, "Understanding trained CNNs by
indexing neuron selectivity" (2017/2020). Pure numpy, no model and no I/O: the
caller runs the network and passes its activations in.

Geometry of a crop. A unit at map position ``(py, px)`` of a layer looks at the
input window centred on ``start + position * jump`` (``start``: the input
coordinate of the centre of the receptive field of unit ``(0, 0)``; ``jump``:
the layer's cumulative stride; both per axis, ``(y, x)``). The crop is the
``rf_size`` window around that centre; its top-left corner is
``centre - (size - 1) / 2``, rounded half up when it is not whole (an even RF
size with a whole centre, or the reverse). The parts of the window that fall
outside the image are padded (``pad="zero"``: black, the default;
``pad="mean"``: the image's per-channel mean colour), so every crop has the RF
size, and ``TopPatches.valid`` says which pixels came from the image.

Which crops. ``top_patches`` keeps one crop per image (the image's spatial max),
the top-N images. ``top_patches_nms`` (what reports use) ranks every position of
every image and keeps the strongest that do not overlap a kept crop of the same
image by more than half (non-maximum suppression), so one image can give several
crops and near-identical neighbours are not repeated.

Neuron feature (NF), the form used here:
``NF = sum_j w_j I_j / sum_j w_j`` with ``w_j = a_j / a_max`` over the crops
whose activation ``a_j`` is positive; crops with ``a_j <= 0`` get weight 0.
Dividing by ``a_max`` cancels out, so this is the activation-weighted mean of
the crops; the normalisation only keeps the weights in ``(0, 1]`` for display.
With a ``valid`` mask, padded pixels are left out of the sums pixel by pixel.
No positive activation, or a pixel no weighted crop covers: NaN, so that an
undefined NF shows as a flagged colour instead of a plausible black image.

Colour selectivity: ``1 - mean_j(a_grey_j / a_colour_j)`` over the crops whose
colour activation is positive, clipped to ``[0, 1]``; NaN when there is none.
The grey crop is the BT.601 luma replicated to three channels (``to_grey``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ITU-R BT.601 luma weights, the usual rgb-to-grey conversion (applied to the
# values as given: the images are gamma-encoded sRGB in [0, 1]).
BT601 = np.array([0.299, 0.587, 0.114])


def _numpy(a) -> np.ndarray:
    """A torch tensor or array-like as a numpy array, without copying when possible."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


@dataclass(frozen=True)
class TopActivations:
    """Spatial maximum of every channel on every image.

    value: (C, N) float64, the max of channel c's map on image n (NaN when the
    whole map is NaN). position: (C, N, 2) int64, its (row, col) in the map; the
    first maximum in row-major order when several positions tie.
    """

    value: np.ndarray
    position: np.ndarray


def top_activations(acts) -> TopActivations:
    """Per channel and image, the spatial max of the map and where it is.

    acts: (N, C, H, W) activations (numpy or torch). Returns TopActivations with
    ``value`` (C, N) and ``position`` (C, N, 2); ``value[c]`` is channel c's
    per-image maximum. NaN positions are never chosen while a finite value exists.
    """
    a = _numpy(acts)
    if a.ndim != 4:
        raise ValueError(f"acts must be (N, C, H, W), got shape {a.shape}")
    n, c, h, w = a.shape
    flat = a.reshape(n, c, h * w).astype(np.float64)
    # argmax treats NaN as the maximum; rank NaN lowest instead.
    ranked = np.where(np.isnan(flat), -np.inf, flat)
    idx = ranked.argmax(axis=2)  # (N, C), first max in row-major order
    value = np.take_along_axis(flat, idx[..., None], axis=2)[..., 0]
    position = np.stack([idx // w, idx % w], axis=-1)
    return TopActivations(value=value.T.copy(), position=position.transpose(1, 0, 2).copy())


@dataclass(frozen=True)
class TopPatches:
    """The top-N images of one channel and their receptive-field crops.

    K = min(top_n, N) entries, strongest first.
    image_index: (K,) int, index into the image batch.
    value: (K,) float, the channel's spatial max on that image.
    position: (K, 2) int, (row, col) of that max in the activation map.
    origin: (K, 2) int, input (row, col) of the crop's top-left pixel; negative
        or past the edge where the crop was padded.
    crops: (K, 3, h, w) float, the input window, padded to the RF size.
    valid: (K, h, w) bool, True where the pixel came from the image.
    positive: (K,) bool, value > 0 (only those count for the neuron feature).
    inactive: the channel's max over all images is <= 0 (or NaN): the crops are
        still returned, but they show where it was least negative, not a feature.
    tie_at_cut: the last kept value equals the best left out, so which of the
        tied images made the list is arbitrary (the lower image index wins).
    """

    channel: int
    image_index: np.ndarray
    value: np.ndarray
    position: np.ndarray
    origin: np.ndarray
    crops: np.ndarray
    valid: np.ndarray
    positive: np.ndarray
    inactive: bool
    tie_at_cut: bool


def crop_origin(position, rf_size, jump, start) -> np.ndarray:
    """Input (row, col) of the top-left pixel of the RF crop of units at ``position``.

    position: (..., 2) map coordinates; rf_size, jump, start: (y, x) pairs.
    Returns (..., 2) int64: ``round_half_up(start + position * jump - (size - 1) / 2)``.
    """
    pos = np.asarray(position, dtype=np.float64)
    corner = (np.asarray(start, dtype=np.float64) + pos * np.asarray(jump, dtype=np.float64)
              - (np.asarray(rf_size, dtype=np.float64) - 1.0) / 2.0)
    # Round half up (not numpy's half-to-even) so equal offsets always move the
    # crop the same way.
    return np.floor(corner + 0.5).astype(np.int64)


def crop_padded(image: np.ndarray, origin, size, pad: str = "zero") -> tuple[np.ndarray, np.ndarray]:
    """Cut a (3, h, w) window with top-left ``origin`` out of ``image`` (3, H, W).

    Pixels outside the image are filled with 0 (``pad="zero"``) or with the
    image's per-channel mean (``pad="mean"``). Returns (crop (3, h, w) float64,
    valid (h, w) bool). The image is not modified.
    """
    if pad not in ("zero", "mean"):
        raise ValueError(f"pad must be 'zero' or 'mean', got {pad!r}")
    img = np.asarray(image)
    ch, hi, wi = img.shape
    h, w = int(size[0]), int(size[1])
    y0, x0 = int(origin[0]), int(origin[1])
    if pad == "mean":
        fill = img.reshape(ch, -1).astype(np.float64).mean(axis=1)
    else:
        fill = np.zeros(ch)
    crop = np.broadcast_to(fill[:, None, None], (ch, h, w)).copy()
    valid = np.zeros((h, w), dtype=bool)
    # The overlap of the window with the image, in image and in crop coordinates.
    ys, ye = max(y0, 0), min(y0 + h, hi)
    xs, xe = max(x0, 0), min(x0 + w, wi)
    if ys < ye and xs < xe:
        crop[:, ys - y0:ye - y0, xs - x0:xe - x0] = img[:, ys:ye, xs:xe]
        valid[ys - y0:ye - y0, xs - x0:xe - x0] = True
    return crop, valid


def top_patches(images, acts, rf_size, jump, start, top_n: int = 9,
                pad: str = "zero") -> list[TopPatches]:
    """For every channel, the top-N images by spatial max and their RF crops.

    images: (N, 3, Hi, Wi) float in [0, 1]; acts: (N, C, H, W) the layer's
    activations on those images. rf_size (h, w), jump (sy, sx) and start
    (y0, x0) place a map position in the input (see the module docstring).
    Images are ranked by their spatial max, strongest first; equal values keep
    image order (stable sort). pad: "zero" or "mean" for crops that cross the
    border. Returns a list of C ``TopPatches``; nothing is dropped, channels
    whose max is <= 0 are flagged ``inactive``.
    """
    imgs = _numpy(images)
    top = top_activations(acts)
    if imgs.ndim != 4 or imgs.shape[0] != top.value.shape[1]:
        raise ValueError(f"images must be (N, 3, H, W) with N={top.value.shape[1]}, got {imgs.shape}")
    h, w = int(rf_size[0]), int(rf_size[1])
    n = imgs.shape[0]
    k = max(0, min(int(top_n), n))
    out = []
    for c in range(top.value.shape[0]):
        vals = top.value[c]
        # NaN ranks last; a stable sort keeps the lower image index first on ties.
        key = np.where(np.isnan(vals), np.inf, -vals)
        order = np.argsort(key, kind="stable")
        keep = order[:k]
        pos = top.position[c][keep]
        origin = crop_origin(pos, (h, w), jump, start)
        crops = np.empty((k, imgs.shape[1], h, w))
        valid = np.empty((k, h, w), dtype=bool)
        for j, (i, o) in enumerate(zip(keep, origin)):
            crops[j], valid[j] = crop_padded(imgs[i], o, (h, w), pad)
        kept = vals[keep]
        best = np.nanmax(vals) if np.isfinite(vals).any() else np.nan
        tie = bool(0 < k < n and vals[order[k - 1]] == vals[order[k]])
        out.append(TopPatches(
            channel=c, image_index=keep.astype(np.int64), value=kept, position=pos,
            origin=origin, crops=crops, valid=valid,
            positive=np.nan_to_num(kept, nan=0.0) > 0,
            inactive=bool(not best > 0), tie_at_cut=tie,
        ))
    return out


def crop_overlap(origin_a, origin_b, size) -> np.ndarray:
    """Share of a crop's area that a same-size crop covers: ``|A & B| / (h * w)``.

    origin_a, origin_b: (..., 2) top-left corners (broadcast); size: (h, w).
    Both crops have the same size, so the share is the same from either side
    (and equals neither IoU nor a distance: two crops offset by half a side
    overlap by exactly 0.5). Returns (...) float64 in [0, 1].
    """
    d = np.abs(np.asarray(origin_a, dtype=np.int64) - np.asarray(origin_b, dtype=np.int64))
    h, w = int(size[0]), int(size[1])
    inter = np.clip(h - d[..., 0], 0, None) * np.clip(w - d[..., 1], 0, None)
    return inter / float(h * w)


def top_patches_nms(images, acts, rf_size, jump, start, top_n: int = 9, max_overlap: float = 0.5,
                    pad: str = "zero") -> list[TopPatches]:
    """For every channel, its top-N responses over all positions of all images, without repeats.

    images: (N, 3, Hi, Wi) float in [0, 1]; acts: (N, C, H, W). Candidates are
    every map position of every image with a positive, finite activation (a
    crop the unit does not respond to is not a "top" crop). They are taken
    strongest first (ties: lower image, then row-major position, first) and a
    candidate is kept unless its crop covers more than ``max_overlap`` of the
    area of a crop already kept from the same image (``crop_overlap``; crops of
    different images never overlap). Stops at ``top_n`` kept, so a channel may
    keep fewer when it has fewer separate positive responses, and none when it
    is never active (max <= 0 or NaN everywhere: ``inactive``). Returns C
    ``TopPatches`` with K <= top_n entries each; ``tie_at_cut`` says that the
    next candidate that would have been kept has the last kept value.
    """
    imgs = _numpy(images)
    a = _numpy(acts).astype(np.float64)
    if a.ndim != 4 or imgs.ndim != 4 or imgs.shape[0] != a.shape[0]:
        raise ValueError(f"images (N, 3, H, W) and acts (N, C, H, W) disagree: {imgs.shape} vs {a.shape}")
    n, c_all, hm, wm = a.shape
    size = (int(rf_size[0]), int(rf_size[1]))
    rows, cols = np.meshgrid(np.arange(hm), np.arange(wm), indexing="ij")
    grid_pos = np.stack([rows.ravel(), cols.ravel()], axis=1)  # (H*W, 2), row-major
    grid_org = crop_origin(grid_pos, size, jump, start)
    k_max = max(0, int(top_n))
    out = []
    for c in range(c_all):
        flat = a[:, c].reshape(-1)  # (N*H*W,): image-major, then row-major
        cand = np.flatnonzero(np.isfinite(flat) & (flat > 0))
        # Stable sort on -value keeps the lower flat index first among equal values.
        cand = cand[np.argsort(-flat[cand], kind="stable")]
        kept: list[int] = []
        tie = False
        for idx in cand:
            img, cell = divmod(int(idx), hm * wm)
            same = [j for j in kept if j // (hm * wm) == img]
            if same and (crop_overlap(grid_org[[j % (hm * wm) for j in same]], grid_org[cell], size)
                         > max_overlap).any():
                continue
            if len(kept) == k_max:  # the first one left out
                tie = bool(k_max > 0 and flat[idx] == flat[kept[-1]])
                break
            kept.append(int(idx))
        kept_arr = np.asarray(kept, dtype=np.int64)
        image_index, cell = np.divmod(kept_arr, hm * wm)
        pos = grid_pos[cell].reshape(-1, 2)
        origin = grid_org[cell].reshape(-1, 2)
        crops = np.empty((len(kept), imgs.shape[1]) + size)
        valid = np.empty((len(kept),) + size, dtype=bool)
        for j, (i, o) in enumerate(zip(image_index, origin)):
            crops[j], valid[j] = crop_padded(imgs[i], o, size, pad)
        out.append(TopPatches(
            channel=c, image_index=image_index, value=flat[kept_arr], position=pos, origin=origin,
            crops=crops, valid=valid, positive=np.ones(len(kept), dtype=bool),
            inactive=len(cand) == 0, tie_at_cut=tie,
        ))
    return out


def neuron_feature(crops, values, valid=None) -> np.ndarray:
    """Activation-weighted mean of the crops: the neuron feature (NF).

    crops: (K, 3, h, w); values: (K,) the unit's activation on each crop's image;
    valid: optional (K, h, w) bool, False on padded pixels (left out pixel by
    pixel). ``w_j = a_j / a_max`` for ``a_j > 0``, else 0;
    ``NF = sum_j w_j I_j / sum_j w_j``. Returns (3, h, w) float64; all NaN when
    no activation is positive, NaN on pixels that no weighted crop covers.
    """
    I = _numpy(crops).astype(np.float64)
    a = _numpy(values).astype(np.float64).reshape(-1)
    if I.ndim != 4 or I.shape[0] != a.shape[0]:
        raise ValueError(f"crops (K, 3, h, w) and values (K,) disagree: {I.shape} vs {a.shape}")
    keep = np.isfinite(a) & (a > 0)
    if not keep.any():
        return np.full(I.shape[1:], np.nan)
    wts = np.where(keep, a, 0.0) / a[keep].max()
    # Zero-weight crops are dropped before multiplying so a NaN in an unused crop
    # cannot leak into the NF.
    I, wts = I[keep], wts[keep]
    if valid is None:
        pix = np.broadcast_to(wts[:, None, None], (len(wts),) + I.shape[2:])
    else:
        pix = wts[:, None, None] * _numpy(valid)[keep].astype(np.float64)
    num = np.einsum("khw,kchw->chw", pix, np.where(pix[:, None] > 0, I, 0.0))
    den = pix.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        nf = num / den[None]
    nf[:, den <= 0] = np.nan
    return nf


def to_grey(crops) -> np.ndarray:
    """BT.601 luma replicated to three channels.

    crops: (..., 3, h, w) RGB. Returns the same shape, float64, every channel
    equal to ``0.299 R + 0.587 G + 0.114 B``.
    """
    x = _numpy(crops).astype(np.float64)
    if x.ndim < 3 or x.shape[-3] != 3:
        raise ValueError(f"crops must be (..., 3, h, w), got {x.shape}")
    y = np.einsum("c,...chw->...hw", BT601, x)
    return np.repeat(y[..., None, :, :], 3, axis=-3)


def colour_selectivity(act_colour, act_grey) -> float:
    """Colour selectivity index of a unit from its responses to crops and their grey versions.

    act_colour, act_grey: (K,) the unit's activation on each colour crop and on
    ``to_grey`` of it. Index = ``1 - mean(act_grey / act_colour)`` over the
    crops with ``act_colour > 0``, clipped to [0, 1]: 0 when colour makes no
    difference, 1 when the grey version does not excite the unit at all.
    Returns NaN when no colour activation is positive.
    """
    c = _numpy(act_colour).astype(np.float64).reshape(-1)
    g = _numpy(act_grey).astype(np.float64).reshape(-1)
    if c.shape != g.shape:
        raise ValueError(f"act_colour and act_grey differ in shape: {c.shape} vs {g.shape}")
    keep = np.isfinite(c) & np.isfinite(g) & (c > 0)
    if not keep.any():
        return float("nan")
    return float(np.clip(1.0 - np.mean(g[keep] / c[keep]), 0.0, 1.0))
