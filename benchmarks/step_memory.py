#!/usr/bin/env python3
"""Where a training step's peak memory sits: what the forward leaves alive for the backward (saved activations),
the peak inside the forward, the backward and the optimizer step, for residual and DAR variants, eager or
compiled. GB, one line per variant:

    PYTHONPATH=$PWD python3 benchmarks/step_memory.py --size B --batch 256 --compiled \
        --variant residual --variant static --variant dynamic
    # what is alive at the peak (the allocator's trace replayed; sites in dartool or Inductor's generated code):
    PYTHONPATH=$PWD python3 benchmarks/step_memory.py --size B --batch 256 --compiled --variant dynamic --peak-buffers 12

Needs CUDA (bf16 autocast, as ``dartool bench``).
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

_SKIP_FRAMES = ("torch/", "<frozen", "/site-packages/", "<eval_with_key>")


def _where(frames: list) -> str:
    """The allocation's first frame outside torch and the standard library: a line of dartool, of a benchmark,
    or of the module Inductor generated for a compiled graph (its ``bufN = ...`` line)."""
    for f in frames or []:
        fn = str(f.get("filename", ""))
        if "torchinductor" in fn or not any(k in fn for k in _SKIP_FRAMES):
            return f"{Path(fn).name}:{f.get('line')} {f.get('name')}"
    f = (frames or [{}])[0]
    return f"{Path(str(f.get('filename', '?'))).name}:{f.get('line')} {f.get('name')}" if frames else "?"


def peak_buffers(trace: list[dict], n_forward: int, top: int = 12) -> dict:
    """Replay the caching allocator's trace (``torch.cuda.memory._snapshot()['device_traces'][0]``, recorded from
    the start of a step) and name what is alive at the step's peak: the peak (bytes above the allocations made
    before the recording began), whether it falls in the forward (event index < ``n_forward``) or the backward,
    and the ``top`` largest live blocks and the largest totals by allocation site (:func:`_where`)."""
    live: dict = {}
    total = peak = 0
    peak_at, peak_live = -1, {}
    for i, ev in enumerate(trace):
        act, addr, size = ev.get("action"), ev.get("addr"), int(ev.get("size", 0))
        if act == "alloc":
            live[addr] = (size, ev.get("frames", []), i)
            total += size
            if total > peak:
                peak, peak_at, peak_live = total, i, dict(live)
        elif act == "free_completed" and addr in live:
            total -= live.pop(addr)[0]
    blocks = sorted(((sz, _where(fr), i >= n_forward) for sz, fr, i in peak_live.values()), reverse=True)

    def sites_of(bl):
        by_site: dict = {}
        for sz, w, _ in bl:
            n, b = by_site.get(w, (0, 0))
            by_site[w] = (n + 1, b + sz)
        return [dict(where=w, blocks=n, gb=b / 1e9)
                for w, (n, b) in sorted(by_site.items(), key=lambda kv: -kv[1][1])[:top]]

    in_bwd = [x for x in blocks if x[2]]
    return dict(peak_gb=peak / 1e9, peak_event=peak_at, phase="forward" if peak_at < n_forward else "backward",
                live_blocks=len(peak_live),
                # the allocation that reached the peak, and what the backward itself had allocated and kept by then
                peak_site=_where(trace[peak_at].get("frames", [])) if peak_at >= 0 else "?",
                from_backward_gb=sum(x[0] for x in in_bwd) / 1e9, from_backward_blocks=len(in_bwd),
                largest=[dict(gb=sz / 1e9, where=w, backward=bw) for sz, w, bw in blocks[:top]],
                by_site=sites_of(blocks), by_site_backward=sites_of(in_bwd))


def measure(size: str, batch: int, variant: str, compiled: bool, steps: int = 3, peak: int = 0,
            chunk: int = 4) -> dict:
    from dartool.bench import _build, _cleanup
    from dartool.diffusion import diffusion_loss

    routing, query = ("residual", "static") if variant == "residual" else ("dar", variant)
    model, cfg = _build(size, routing, query, chunk, "cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    f = torch.compile(model) if compiled else model
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(batch, cfg.in_channels, cfg.input_size, cfg.input_size, device="cuda", generator=gen)
    y = torch.randint(0, cfg.num_classes, (batch,), device="cuda", generator=gen)
    s = torch.rand(batch, device="cuda", generator=gen)
    gb = 1e9
    out = dict(size=size, batch=batch, variant=variant, chunk=chunk, compiled=compiled)
    for i in range(steps):
        last = i == steps - 1
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        if last:
            torch.cuda.reset_peak_memory_stats()
            out["resident_gb"] = base / gb                         # parameters, optimizer state
            if peak:
                torch.cuda.memory._record_memory_history(max_entries=2_000_000, stacks="python")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = diffusion_loss(f, x, y, s)
        torch.cuda.synchronize()
        if last:
            out["after_forward_gb"] = (torch.cuda.memory_allocated() - base) / gb   # kept for the backward
            out["forward_peak_gb"] = (torch.cuda.max_memory_allocated() - base) / gb
            torch.cuda.reset_peak_memory_stats()
            if peak:
                n_fwd = len(torch.cuda.memory._snapshot()["device_traces"][0])
        loss.backward()
        torch.cuda.synchronize()
        if last:
            out["backward_peak_gb"] = (torch.cuda.max_memory_allocated() - base) / gb
            torch.cuda.reset_peak_memory_stats()
            if peak:
                out["peak_buffers"] = peak_buffers(torch.cuda.memory._snapshot()["device_traces"][0], n_fwd, peak)
                torch.cuda.memory._record_memory_history(enabled=None)
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
    ap.add_argument("--chunk", type=int, default=4, help="DAR chunk size S (1: every sublayer a chunk)")
    ap.add_argument("--variant", action="append", default=[], help="residual, static, static_t or dynamic")
    ap.add_argument("--json", default=None)
    ap.add_argument("--peak-buffers", type=int, default=0, metavar="K",
                    help="record the allocator's trace over the last step and list the K largest blocks (and "
                         "allocation sites) alive at its peak")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("step_memory.py needs CUDA", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = True
    rows = []
    for v in a.variant or ["residual", "static", "dynamic"]:
        r = measure(a.size, a.batch, v, a.compiled, peak=a.peak_buffers, chunk=a.chunk)
        rows.append(r)
        print(f"SiT-{a.size}/2 b{a.batch} {v:9s} c{a.chunk} {'compiled' if a.compiled else 'eager'}: resident "
              f"{r['resident_gb']:.2f} GB, + after forward {r['after_forward_gb']:.2f}, forward peak "
              f"{r['forward_peak_gb']:.2f}, backward peak {r['backward_peak_gb']:.2f}, optimizer peak "
              f"{r['optimizer_peak_gb']:.2f}", flush=True)
        pb = r.get("peak_buffers")
        if pb:
            print(f"  peak {pb['peak_gb']:.2f} GB above the step's start, in the {pb['phase']}, "
                  f"{pb['live_blocks']} blocks live; by allocation site:")
            for x in pb["by_site"]:
                print(f"    {x['gb']:7.3f} GB in {x['blocks']:4d} blocks  {x['where']}")
            print(f"  reached at {pb['peak_site']}; {pb['from_backward_gb']:.2f} GB of it in "
                  f"{pb['from_backward_blocks']} blocks the backward allocated, by site:")
            for x in pb["by_site_backward"]:
                print(f"    {x['gb']:7.3f} GB in {x['blocks']:4d} blocks  {x['where']}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
