"""Checkpoints over training for three towncenter locations: healthy, partly collapsed, collapsed.

Retrains loc01 (healthy), loc04 (group lasso on conv1: a third of the filters collapse) and
loc08 (L1 on conv1 plus strong weight decay: conv1 collapses) with exactly the recipe, seeds
and data of ``make_example.py``, and saves snapshots along the way as
``trajectories/locNN/step_S.pt``. The final step is not saved again: it is
``checkpoints/locNN.pt``, and the script checks that the retrained final weights are identical
to it (it exits with status 1 otherwise).

To keep the repository small the snapshots hold only conv1 (weight and bias, float32): the
layer the regularisation acts on and the one the example's health findings are about.
reportgen follows every inspected layer a step file holds and notes the others. float16 would
halve the bytes but changes the collapsed filters' norms by up to 1e-2 of their size (values
near 1e-6 fall into float16's subnormal range), so the files stay float32.

Run from the repository root (about a third of make_example.py's time):
    python examples/towncenter/make_trajectories.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

import make_example as mx

HERE = Path(__file__).resolve().parent
# Steps to save per location (the last, the run's end, is checkpoints/locNN.pt): dense where
# the filters fall, sparse where little happens.
SNAPSHOTS = {
    "loc01": [0, 100, 200, 300, 400, 500],
    "loc04": [0, 50, 100, 150, 200, 300, 400, 500],
    "loc08": [0, 10, 20, 30, 40, 50, 60, 80, 100, 150, 200, 250],
}
KEEP = ("conv1.weight", "conv1.bias")


def snapshot(name: str, step: int, model: torch.nn.Module) -> dict:
    state = model.state_dict()
    return {"state_dict": {k: state[k].detach().clone() for k in KEEP}, "location": name, "step": step,
            "steps": mx.PLANS[name].steps}


def main() -> int:
    torch.set_num_threads(2)  # as make_example.py: the same kernels give the same floats
    torch.set_flush_denormal(True)
    start = time.time()
    problems = []
    total = 0
    for name, wanted in SNAPSHOTS.items():
        plan = mx.PLANS[name]
        seed = list(mx.PLANS).index(name) + 1  # make_example.py's seed for this location
        saved: dict[int, dict] = {}

        def on_step(step: int, model: torch.nn.Module) -> None:
            if step in wanted:
                saved[step] = snapshot(name, step, model)

        t0 = time.time()
        model, _ = mx.train_location(name, plan, seed, on_step)
        shipped = torch.load(HERE / "checkpoints" / f"{name}.pt", weights_only=True)["state_dict"]
        diff = max(float((model.state_dict()[k] - v).abs().max()) for k, v in shipped.items())
        if diff != 0.0:
            problems.append(f"{name}: retrained final weights differ from checkpoints/{name}.pt by up to {diff:.3g}")
        out = HERE / "trajectories" / name
        out.mkdir(parents=True, exist_ok=True)
        for step in wanted:
            path = out / f"step_{step}.pt"
            torch.save(saved[step], path)
            total += path.stat().st_size
        print(f"{name}: {plan.steps} steps in {time.time() - t0:.0f} s, saved steps {wanted}; final weights "
              f"{'identical to' if diff == 0 else 'DIFFER from'} checkpoints/{name}.pt", flush=True)
    print(f"{sum(map(len, SNAPSHOTS.values()))} snapshots, {total} bytes; total time {time.time() - start:.0f} s")
    for p in problems:
        print("UNEXPECTED:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
