#!/usr/bin/env python3
"""Where a training step's peak memory sits: what the forward leaves alive for the backward (saved activations),
the peak inside the forward, the backward and the optimizer step, for residual and DAR variants, eager or
compiled. GB, one line per variant:

    PYTHONPATH=$PWD python3 benchmarks/step_memory.py --size B --batch 256 --compiled \
        --variant residual --variant static --variant dynamic

Needs CUDA (bf16 autocast, as ``dartool bench``).
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def measure(size: str, batch: int, variant: str, compiled: bool, steps: int = 3) -> dict:
    from dartool.bench import _build, _cleanup
    from dartool.diffusion import diffusion_loss

    routing, query = ("residual", "static") if variant == "residual" else ("dar", variant)
    model, cfg = _build(size, routing, query, 4, "cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    f = torch.compile(model) if compiled else model
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(batch, cfg.in_channels, cfg.input_size, cfg.input_size, device="cuda", generator=gen)
    y = torch.randint(0, cfg.num_classes, (batch,), device="cuda", generator=gen)
    s = torch.rand(batch, device="cuda", generator=gen)
    gb = 1e9
    out = dict(size=size, batch=batch, variant=variant, compiled=compiled)
    for i in range(steps):
        last = i == steps - 1
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        if last:
            torch.cuda.reset_peak_memory_stats()
            out["resident_gb"] = base / gb                         # parameters, optimizer state
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = diffusion_loss(f, x, y, s)
        torch.cuda.synchronize()
        if last:
            out["after_forward_gb"] = (torch.cuda.memory_allocated() - base) / gb   # kept for the backward
            out["forward_peak_gb"] = (torch.cuda.max_memory_allocated() - base) / gb
            torch.cuda.reset_peak_memory_stats()
        loss.backward()
        torch.cuda.synchronize()
        if last:
            out["backward_peak_gb"] = (torch.cuda.max_memory_allocated() - base) / gb
            torch.cuda.reset_peak_memory_stats()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if last:
            out["optimizer_peak_gb"] = (torch.cuda.max_memory_allocated() - base) / gb
    del model, opt, f
    if compiled:
        torch._dynamo.reset()
    _cleanup()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="B")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--compiled", action="store_true")
    ap.add_argument("--variant", action="append", default=[], help="residual, static, static_t or dynamic")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("step_memory.py needs CUDA", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = True
    rows = []
    for v in a.variant or ["residual", "static", "dynamic"]:
        r = measure(a.size, a.batch, v, a.compiled)
        rows.append(r)
        print(f"SiT-{a.size}/2 b{a.batch} {v:9s} {'compiled' if a.compiled else 'eager'}: resident "
              f"{r['resident_gb']:.2f} GB, + after forward {r['after_forward_gb']:.2f}, forward peak "
              f"{r['forward_peak_gb']:.2f}, backward peak {r['backward_peak_gb']:.2f}, optimizer peak "
              f"{r['optimizer_peak_gb']:.2f}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
