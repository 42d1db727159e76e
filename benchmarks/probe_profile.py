#!/usr/bin/env python3
"""Where a probe step spends its time: ``torch.profiler`` over one ``probe_step`` of a randomly initialised model.

    PYTHONPATH=$PWD python3 benchmarks/probe_profile.py --size XL --batch 2              # CPU
    PYTHONPATH=$PWD python3 benchmarks/probe_profile.py --size XL --batch 64 --device cuda --precision bf16

Prints the wall time of the step and of its reductions (``dartool.probe._reduce``) over a few repeats, then the
profiler's table of the most expensive operators. A diagnostic for the capture overhead measured by
``benchmarks/probe_overhead.py``; it writes nothing.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

import dartool.probe as P  # noqa: E402
from dartool.models import SiT, model_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="XL")
    ap.add_argument("--routing", default="residual", choices=["residual", "dar"])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="float32", choices=["float32", "bf16"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=18)
    a = ap.parse_args()
    dev = torch.device(a.device)
    torch.manual_seed(0)
    model = SiT(model_config(a.size, 2, input_size=32, in_channels=4, routing=a.routing)).to(dev)
    with torch.no_grad():                     # wake the zero-initialised adaLN / head weights
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    x = torch.randn(a.batch, 4, 32, 32, device=dev)
    y = torch.randint(0, 1000, (a.batch,), device=dev)
    eps = torch.randn_like(x)
    ctx = P.StepContext.build(model, dev, a.precision)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    spent: dict[str, list[float]] = {"step": [], "reduce": []}
    orig = P._reduce

    def timed(*args, **kw):
        sync()
        t = time.perf_counter()
        out = orig(*args, **kw)
        sync()
        spent["reduce"].append(time.perf_counter() - t)
        return out

    P._reduce = timed
    try:
        with P.capturing(ctx) as cap:
            state = None
            for _ in range(a.repeats + 1):
                sync()
                t = time.perf_counter()
                _, state = P.probe_step(ctx, cap, x, y, eps, 0.5, prev=state)
                sync()
                spent["step"].append(time.perf_counter() - t)
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
            with profile(activities=acts) as prof:
                P.probe_step(ctx, cap, x, y, eps, 0.5, prev=state)
                sync()
    finally:
        P._reduce = orig
    step, red = spent["step"][1:], spent["reduce"][1:]            # the first (warm-up) step is left out
    print(f"probe step {sum(step) / len(step) * 1e3:.1f} ms, reductions {sum(red) / len(red) * 1e3:.1f} ms "
          f"({sum(red) / sum(step):.0%}); SiT-{a.size}/2 {a.routing}, batch {a.batch}, {a.device}, {a.precision}")
    key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=a.rows))


if __name__ == "__main__":
    main()
