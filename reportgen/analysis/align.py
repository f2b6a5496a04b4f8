"""Weight matching through the network: each layer compared after its inputs are aligned.

Channels of one network are a permutation away from another's (Li et al. 2016,
"Convergent learning"). A layer's filters are vectors over its *input* channels, so
comparing layer l+1 in each network's own input order mixes unrelated inputs. Weight
matching (Ainsworth et al. 2023, "Git Re-Basin") walks the chain from the input: match
layer l, reorder layer l+1's input channels by that matching, match layer l+1, and so
on. Biases and BatchNorm parameters travel with their channels; they break ties
between otherwise equally similar filters (two all-zero filters, say).

Matching uses weights, not activations: weights exist without test images, a permuted
copy matches exactly at every layer, and dead (constant) channels, indistinguishable
by their activations, stay distinct by their filters, so the next layer's inputs are
aligned correctly even behind them.

A chain is a list of links from the network input (reportgen.run.chain.layer_chains):
{"name", "weight" (N, ...), "bias" (N,) or None, "bn" dict of (N,) arrays or None,
"block" (input features per producer channel)}.
"""

from __future__ import annotations

import numpy as np

from reportgen.analysis.compare import Match, matched_similarity


def channel_extras(link: dict) -> np.ndarray:
    """(N, k) float64: the numbers that travel with each output channel (bias, BatchNorm)."""
    cols = [link["bias"]] if link.get("bias") is not None else []
    cols += [v for v in (link.get("bn") or {}).values() if v is not None]
    n = len(link["weight"])
    return np.stack([np.asarray(c, dtype=np.float64).reshape(n) for c in cols], axis=1) if cols else np.zeros((n, 0))


def extras_affinity(ea: np.ndarray, eb: np.ndarray) -> np.ndarray:
    """(N, k), (M, k) -> (N, M) in (0, 1]: 1 where the channels' biases and BatchNorm agree."""
    if ea.shape[1] == 0:
        return np.zeros((len(ea), len(eb)))
    scale = max(float(np.nanmedian(np.abs(np.concatenate([ea, eb])))), 1e-12)
    dist = np.sqrt(((ea[:, None, :] - eb[None, :, :]) ** 2).sum(axis=2)) / scale
    return 1.0 / (1.0 + dist)


def permute_inputs(w: np.ndarray, order: np.ndarray, block: int = 1) -> np.ndarray:
    """w (N, C*block, ...) with its input channels taken in ``order`` (C,): a new array.

    ``block`` > 1 for a dense layer after a flatten: each channel owns ``block``
    consecutive inputs (channel-major flattening, as torch.flatten does).
    """
    order = np.asarray(order, dtype=np.intp)
    idx = (order[:, None] * block + np.arange(block)[None, :]).ravel()
    return np.take(w, idx, axis=1)


def align_chain(chain_a: list[dict], chain_b: list[dict], last_weights: list | None = None,
                memo: dict | None = None) -> list[Match]:
    """Match every link of two chains of the same architecture, inputs aligned first.

    Returns one Match per link; ``cols[i]`` is b's channel matched to a's channel i.
    For b = a with its channels permuted (filters, biases, BatchNorm and the next
    layer's inputs together), every link's mean is 1 and ``cols`` undoes the permutation.
    ``last_weights``: if a list, receives the last link's (a, b) weights with b's inputs aligned.
    ``memo``: a dict kept for one pair of runs across layers; a layer's path from the input
    is unique, so its matching is reused by every deeper layer's chain instead of recomputed.
    """
    if [l["name"] for l in chain_a] != [l["name"] for l in chain_b]:
        raise ValueError("chains of different layers")
    out: list[Match] = []
    order = None  # b's producer channels in a's order
    last = len(chain_a) - 1
    for pos, (la, lb) in enumerate(zip(chain_a, chain_b)):
        if memo is not None and la["name"] in memo and pos < last:
            out.append(memo[la["name"]])
            order = out[-1].cols
            continue
        wa = np.asarray(la["weight"], dtype=np.float64)
        wb = np.asarray(lb["weight"], dtype=np.float64)
        if wa.shape != wb.shape:
            raise ValueError(f"`{la['name']}` has shapes {wa.shape} and {wb.shape}")
        if order is not None:
            wb = permute_inputs(wb, order, lb.get("block", 1))
        m = matched_similarity(wa, wb, tie=extras_affinity(channel_extras(la), channel_extras(lb)))
        out.append(m)
        if memo is not None:
            memo[la["name"]] = m
        if last_weights is not None:
            last_weights[:] = [wa, wb]
        order = m.cols
    return out
