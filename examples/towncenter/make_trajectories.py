"""Checkpoints over training for two broken towncenter locations: collapsed and under-trained.

Retrains loc08 (L1 on conv1 plus strong weight decay: conv1 collapses) and loc02 (stopped
after 40 steps) with exactly the recipe, seeds and data of ``make_example.py`` and saves
snapshots along the way as ``trajectories/locNN/step_S.pt``. The final step is not saved
again: it is ``checkpoints/locNN.pt``, and the script compares the retrained final weights
with it.

Bit-for-bit agreement needs the machine that made the checkpoints: CPU kernels differ between
machines and a few hundred steps of training amplify the last-bit differences. On the machine
these snapshots were made on, loc02's final weights differed from the shipped ones by at most
0.0045 (conv1 cosine 1.000: the snapshots describe its run faithfully), but loc08's conv1 ended
at cosine 0.89 to the shipped one (8 of 9 surviving filters the same). A history ending at
another run's weights would show a false jump in its last interval, so loc08's checkpoint
was replaced by the retrained one (``--replace-final loc08``, written by
make_example.save_checkpoint, so the file has the same form).

To keep the repository small the snapshots hold only conv1's weight, in float16: the layer the
regularisation acts on and the one the example's health findings are about. reportgen follows
every inspected layer a step file holds and notes the others. float16 halves the bytes and,
measured on loc08's snapshots against float32, changes no filter's dead/alive status at any
step and no filter norm by more than 0.04% (the collapsed filters' norms included: their
largest weights stay in float16's normal range).

Run from the repository root:
    python examples/towncenter/make_trajectories.py [--replace-final loc08]
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
    "loc08": [0, 10, 20, 30, 40, 50, 60, 80, 100, 150, 200, 250],
    "loc02": [0, 10, 20, 30],
}
KEEP = ("conv1.weight",)


def snapshot(name: str, step: int, model: torch.nn.Module) -> dict:
    state = model.state_dict()
    return {"state_dict": {k: state[k].detach().half() for k in KEEP}, "location": name, "step": step,
            "steps": mx.PLANS[name].steps}


def main(argv: list[str]) -> int:
    replace = set(argv[argv.index("--replace-final") + 1:]) if "--replace-final" in argv else set()
    torch.set_num_threads(2)  # as make_example.py: the same kernels give the same floats
    torch.set_flush_denormal(True)
    start = time.time()
    total = 0
    for name, wanted in SNAPSHOTS.items():
        plan = mx.PLANS[name]
        seed = list(mx.PLANS).index(name) + 1  # make_example.py's seed for this location
        saved: dict[int, dict] = {}

        def on_step(step: int, model: torch.nn.Module) -> None:
            if step in wanted:
                saved[step] = snapshot(name, step, model)

        t0 = time.time()
        model, stats = mx.train_location(name, plan, seed, on_step)
        final = HERE / "checkpoints" / f"{name}.pt"
        shipped = torch.load(final, weights_only=True)["state_dict"]
        diff = max(float((model.state_dict()[k] - v).abs().max()) for k, v in shipped.items())
        a, b = model.conv1.weight.detach().flatten(), shipped["conv1.weight"].flatten()
        print(f"{name}: retrained vs checkpoints/{name}.pt: max |difference| {diff:.3g}, conv1 cosine "
              f"{float(a @ b / (a.norm() * b.norm())):.4f}", flush=True)
        if name in replace:
            mx.save_checkpoint(final, name, model, plan, stats, seed)
            print(f"{name}: checkpoints/{name}.pt replaced by the retrained final weights")
        out = HERE / "trajectories" / name
        out.mkdir(parents=True, exist_ok=True)
        for step in wanted:
            path = out / f"step_{step}.pt"
            torch.save(saved[step], path)
            total += path.stat().st_size
        print(f"{name}: {plan.steps} steps in {time.time() - t0:.0f} s, saved steps {wanted}", flush=True)
    print(f"{sum(map(len, SNAPSHOTS.values()))} snapshots, {total} bytes; total time {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
