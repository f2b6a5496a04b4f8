"""Train the colour_mlp example: which text colour (black or white) to write on a background.

Labels: black text (1) when the background's relative luminance is above
THRESHOLD, else white text (0). Relative luminance is computed the sRGB way:
each channel is linearised (IEC 61966-2-1 transfer curve) and weighted with the
BT.709 / sRGB primaries' weights 0.2126, 0.7152, 0.0722. Because of the
linearisation the decision surface is curved in the RGB cube the network sees.

Training: seeded uniform random colours, full-batch Adam on binary cross-entropy
(computed from the last pre-activation for stability), then accuracy on a
held-out set drawn from a separate generator. Takes a few seconds on one CPU core.

Writes, next to this script:
* ``checkpoint.pt``: ``{"state_dict", "seed", "steps", "threshold",
  "train_accuracy", "test_accuracy", "test_size"}``, tensors and plain values
  only, so it loads with ``torch.load(path, weights_only=True)``;
* ``batch.json``: eight named colours with their labels, for the trace page.

Run from the repository root:  python examples/colour_mlp/make_example.py
Exits with status 1 if the held-out accuracy is below MIN_ACCURACY.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from model import ColourMLP  # noqa: E402

SEED = 0
THRESHOLD = 0.5
TRAIN_SIZE = 4000
TEST_SIZE = 4000
STEPS = 3000
LR = 0.05
MIN_ACCURACY = 0.97

DESCRIPTION = ("Background colours (sRGB in [0, 1]) and whether to write black (1) or white (0) "
               f"text on them: label = relative luminance > {THRESHOLD}. inputs is (B, 3), "
               "labels is (B, 1), colours repeats them with names.")

# A batch for the trace page: easy cases at both ends plus colours near the boundary.
BATCH = [
    ("white", [1.0, 1.0, 1.0]),
    ("black", [0.0, 0.0, 0.0]),
    ("red", [1.0, 0.0, 0.0]),
    ("yellow", [1.0, 1.0, 0.0]),
    ("navy", [0.0, 0.0, 0.5]),
    ("green", [0.0, 1.0, 0.0]),
    ("mid grey", [0.5, 0.5, 0.5]),
    ("orange", [1.0, 0.65, 0.0]),
]


def srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    """Undo the sRGB transfer curve: (..., 3) in [0, 1] -> linear light."""
    return torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def relative_luminance(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3) sRGB in [0, 1] -> (N,) relative luminance (BT.709 weights on linear light)."""
    weights = torch.tensor([0.2126, 0.7152, 0.0722], dtype=rgb.dtype)
    return srgb_to_linear(rgb) @ weights


def labels(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3) -> (N, 1) float: 1 = write black text, 0 = write white text."""
    return (relative_luminance(rgb) > THRESHOLD).to(rgb.dtype)[:, None]


def main() -> int:
    torch.set_num_threads(1)  # tiny tensors: threads only add noise on a shared machine
    torch.manual_seed(SEED)
    gen_train = torch.Generator().manual_seed(SEED)
    gen_test = torch.Generator().manual_seed(SEED + 1)
    x_train = torch.rand(TRAIN_SIZE, 3, generator=gen_train)
    x_test = torch.rand(TEST_SIZE, 3, generator=gen_test)
    y_train, y_test = labels(x_train), labels(x_test)

    model = ColourMLP()
    # Everything but the final Sigmoid, sharing its parameters.
    logits = torch.nn.Sequential(*list(model.children())[:-1])
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    for _ in range(STEPS):
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(logits(x_train), y_train)
        loss.backward()
        opt.step()

    model.eval()
    with torch.no_grad():
        train_acc = float(((model(x_train) > 0.5).float() == y_train).float().mean())
        test_acc = float(((model(x_test) > 0.5).float() == y_test).float().mean())
        test_loss = float(F.binary_cross_entropy(model(x_test), y_test))
    print(f"final train loss {loss.item():.4f}; train accuracy {train_acc:.4f}; "
          f"held-out accuracy {test_acc:.4f} on {TEST_SIZE} colours (loss {test_loss:.4f}); "
          f"black-text share {float(y_test.mean()):.3f}")

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "seed": SEED, "steps": STEPS, "threshold": THRESHOLD,
                "train_accuracy": train_acc, "test_accuracy": test_acc, "test_size": TEST_SIZE},
               HERE / "checkpoint.pt")

    rgb = torch.tensor([c for _, c in BATCH], dtype=torch.float64)
    rows = [
        {"name": name, "rgb": colour, "label": int(lab), "luminance": round(lum, 4)}
        for (name, colour), lab, lum in zip(BATCH, labels(rgb)[:, 0].tolist(),
                                            relative_luminance(rgb).tolist())
    ]
    # One colour per line keeps the file small and readable in a diff.
    lines = ",\n".join("  " + json.dumps(r) for r in rows)
    (HERE / "batch.json").write_text(
        "{\n"
        f' "description": {json.dumps(DESCRIPTION)},\n'
        ' "loss": "bce",\n'
        f' "inputs": {json.dumps([c for _, c in BATCH])},\n'
        f' "labels": {json.dumps([[r["label"]] for r in rows])},\n'
        f' "colours": [\n{lines}\n ]\n'
        "}\n")

    if test_acc < MIN_ACCURACY:
        print(f"held-out accuracy {test_acc:.4f} is below {MIN_ACCURACY}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
