"""Benchmark batched activation maximisation against the one-channel-at-a-time loop.

Run from the repository root:

    /work/venv/bin/python bench/bench_maximise.py                 # CPU, all 64 channels of conv3
    /work/venv/bin/python bench/bench_maximise.py --threads 1     # steadier numbers on a busy machine
    /work/venv/bin/python bench/bench_maximise.py --device cuda   # when a GPU is available

Model: SceneNet of the towncenter example with the loc01 checkpoint; layer
``conv3`` (receptive field 23 px, jump 4); plain gradient ascent (Keras recipe,
mean objective, ``--steps`` steps, default 20) on every channel:

* (a) reportgen: ``plain_ascent``, all channels as batch slots (``--chunk``),
  the network run only up to conv3, image size ``default_size(rf)`` (48x48);
* (b) the usual loop: one channel at a time, the *full* network each step (a
  forward hook reads conv3), a fixed 128x128 image; parameters do not require
  grad here either, so (b) is not charged for weight gradients;
* (c) reportgen at 128x128, for equal image size;
* (d) ``fourier_ascent``, all channels x ``--fourier-steps`` steps (default 48, Adam
  lr ``--fourier-lr`` 0.15: the report's defaults) at the default size;
* (e) the limit of the approach: a plain torch forward and backward (gradient to the
  input only) of the same truncated network (conv1 .. conv3 as an ``nn.Sequential``), on
  the same batch (``--fourier-chunk`` images of the default size), as many steps as (d),
  nothing else: no decoding, transforms or optimiser. The table's last line is (d)/(e).

Besides time and memory the table gives the mean final objective, the mean
objective of the same images clipped to the valid pixel range [0, 1] and the
mean share of pixel values outside it: plain ascent runs far out of range, so
its raw objective is not what a real image reaches.

All variants do steps + 1 forwards and steps backwards per unit from the same
seeded starts. Each runs in its own subprocess after a short warm-up, so that
peak memory is its own: CPU = growth of ``ru_maxrss`` over the process's
footprint after loading the model; CUDA = ``torch.cuda.max_memory_allocated``.
Throughput is units x steps per second; the ratios compare it with (b).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reportgen.optim.maximise import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    default_size,
    fourier_ascent,
    plain_ascent,
    slot_generator,
)
from reportgen.optim.receptive import receptive_field  # noqa: E402

LAYER = "conv3"


def load_model(device: str) -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("_towncenter_model", ROOT / "examples/towncenter/model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.SceneNet()
    ckpt = torch.load(ROOT / "examples/towncenter/checkpoints/loc01.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval()


def loop_one_at_a_time(model, layer, channels, size, steps, step, device, seed=0):
    """The popular recipe: one image, the full network, one channel at a time."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    store = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: store.__setitem__("o", o))
    for p in model.parameters():
        p.requires_grad_(False)
    losses = []
    try:
        for c in channels:
            noise = torch.rand((1, 3, *size), generator=slot_generator(seed, c, 0)).to(device)
            x = ((0.5 + 20 / 255 * (noise - 0.5) - mean) / std).requires_grad_(True)
            for k in range(steps + 1):
                model(x)
                loss = store["o"][0, c].mean()
                if k == steps:
                    break
                (g,) = torch.autograd.grad(loss, x)
                with torch.no_grad():
                    x = x + step * g / (g.pow(2).mean().sqrt() + 1e-5)
                x.requires_grad_(True)
            losses.append(loss.item())
    finally:
        handle.remove()
    return losses


def plain_forward_backward(model, channels, size, steps, batch, device, seed=0):
    """Forward and backward of conv1 .. conv3 alone, ``batch`` images at a time, the gradient
    of each image's channel mean to the input, a fixed input: what one step of any
    maximisation has to compute at least."""
    names = list(dict(model.named_children()))
    upto = nn.Sequential(*[getattr(model, n) for n in names[: names.index(LAYER) + 1]])
    for p in upto.parameters():
        p.requires_grad_(False)  # as reportgen runs it: gradients to the input only
    losses = []
    for lo in range(0, len(channels), batch):
        index = torch.tensor(channels[lo : lo + batch], device=device)
        x = torch.rand((len(index), 3, *size), generator=torch.Generator().manual_seed(seed)).to(device)
        x.requires_grad_(True)
        for _ in range(steps):
            out = upto(x)
            value = out[torch.arange(len(index), device=device), index].mean(dim=(1, 2))
            (g,) = torch.autograd.grad(value.sum(), x)
        losses += value.detach().tolist()
    return losses


def run_variant(name: str, args) -> dict:
    """Time one variant in this process; returns a row of the table."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    model = load_model(device)
    rf = receptive_field(model, LAYER, (3, 32, 32))
    auto = default_size(rf)
    channels = list(range(args.channels))
    steps = args.fourier_steps if name in "de" else args.steps
    size = {"a": auto, "b": (128, 128), "c": (128, 128), "d": auto, "e": auto}[name]

    def work(chs, n_steps):
        if name == "b":
            return loop_one_at_a_time(model, LAYER, chs, size, n_steps, 1.0, device)
        if name == "e":
            return plain_forward_backward(model, chs, size, n_steps, args.fourier_chunk, device)
        if name == "d":
            return fourier_ascent(model, LAYER, chs, size, steps=n_steps, device=device, chunk=args.fourier_chunk,
                                  lr=args.fourier_lr)
        return plain_ascent(model, LAYER, chs, size, steps=n_steps, chunk=args.chunk, device=device)

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    work(channels[:2], 1)  # warm-up: lazy initialisation, allocator
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = work(channels, steps)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        # ru_maxrss is in KiB on Linux
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    losses = result if name in "be" else result.loss.tolist()
    clipped = None if name in "be" else result.clipped_loss.mean().item()
    outside = None if name in "be" else result.outside.mean().item()
    return {
        "variant": name,
        "size": f"{size[0]}x{size[1]}",
        "units": len(channels),
        "steps": steps,
        "seconds": seconds,
        "rate": len(channels) * steps / seconds,
        "peak_mb": peak_mb,
        "mean_loss": sum(losses) / len(losses),
        "mean_clipped": clipped,
        "outside": outside,
        "rf": f"{rf.size[0]} px, jump {rf.jump[0]}",
    }


LABELS = {
    "a": "(a) reportgen batched, RF size, up to conv3",
    "b": "(b) one channel at a time, full net",
    "c": "(c) reportgen batched, 128x128",
    "d": "(d) reportgen fourier_ascent, RF size",
    "e": "(e) plain torch fwd+bwd, same net and batch",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--fourier-steps", type=int, default=48)
    ap.add_argument("--fourier-lr", type=float, default=0.15)
    ap.add_argument("--channels", type=int, default=64, help="first N channels of conv3")
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--fourier-chunk", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--variants", default="abcde")
    ap.add_argument("--_one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("CUDA is not available")
    if args._one:
        print(json.dumps(run_variant(args._one, args)))
        return

    rows = {}
    passthrough = [a for a in sys.argv[1:]]
    for v in args.variants:
        out = subprocess.run(
            [sys.executable, __file__, *passthrough, "--_one", v], capture_output=True, text=True, check=True
        ).stdout
        rows[v] = json.loads(out.strip().splitlines()[-1])

    first = next(iter(rows.values()))
    threads = args.threads or torch.get_num_threads()
    print(f"SceneNet loc01, layer {LAYER} (RF {first['rf']}), device {args.device}, torch threads {threads}")
    print(f"{'variant':46s} {'image':>8s} {'units':>5s} {'steps':>5s} {'seconds':>8s} {'units*steps/s':>13s} "
          f"{'peak MB':>8s} {'mean loss':>9s} {'clipped':>8s} {'outside':>8s}")
    for v, r in rows.items():
        clipped = "-" if r["mean_clipped"] is None else f"{r['mean_clipped']:.3f}"
        outside = "-" if r["outside"] is None else f"{100 * r['outside']:.0f}%"
        print(
            f"{LABELS[v]:46s} {r['size']:>8s} {r['units']:5d} {r['steps']:5d} {r['seconds']:8.2f} "
            f"{r['rate']:13.1f} {r['peak_mb']:8.1f} {r['mean_loss']:9.3f} {clipped:>8s} {outside:>8s}"
        )
    if "b" in rows:
        for v in "acd":
            if v in rows:
                print(f"throughput ratio ({v})/(b): {rows[v]['rate'] / rows['b']['rate']:.1f}x")
    if "d" in rows and "e" in rows:
        print(f"fourier_ascent against the plain forward+backward, (d)/(e): {rows['d']['rate'] / rows['e']['rate']:.2f} "
              f"({rows['d']['rate']:.1f} against {rows['e']['rate']:.1f} images x steps per second)")


if __name__ == "__main__":
    main()
