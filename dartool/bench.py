"""``dartool bench``: what DAR costs. Router kernels against the unfused reference and the byte floor,
and the end-to-end training step / sampling of residual vs DAR models.

On CUDA, in one run (about 35 minutes on one GPU, estimated from its parts' times, since session 18 added the
recipe batch and CUDA graphs: compiling and recording an XL/2 model takes 55-90 s; the budgets are 600 s for each
compiled part and 2,400 s in all; split it over a host's GPUs with ``--parts`` / ``--sizes`` / ``--xl-batch`` and
join the results with ``--merge``):

1. correctness of the fused router against float64 (``dartool.kernels.check``; every shape class);
2. device-to-device copy bandwidth (bytes read + written), the byte floor's rate;
3. router microbench at N = 9, 18, 57 sources, B=32, T=256, D=1152, bf16: forward and forward+backward
   time, the backward alone, peak memory, fused vs the PyTorch reference, % of the byte floor;
4. end-to-end training step (AdamW, bf16 autocast, the SiT velocity loss) and peak memory of residual
   vs DAR static / static_t / dynamic c4 and static c1 / c8, for SiT-B/2 (batch 256) and SiT-XL/2
   (batch 64, or 128 where the card has > 100 GB, and 32, the DiT / SiT recipe's images per GPU), eager,
   torch.compile and torch.compile under CUDA graphs (``--compile-mode cudagraphs``; both time-bounded), on
   Gaussian-noise latents, or a dataset's images with ``--data PATH`` (the same ratios within ~1 %, session 21);
5. sampling images/s (SiT-B/2, batch 256, 50 Euler steps), residual vs DAR (fused and reference).

Results: ``bench-<card>-<date>.json`` and ``.md`` under ``--out``, with the card, date, commit and versions.
Without CUDA it runs a small CPU bench of the reference router and a tiny training step, and says that
the fused kernels need CUDA.

``--parts`` runs a subset (``check``: 1; ``router``: 3; ``eager`` / ``compiled`` / ``graphs``: the separate
training-step rows of 4 in each mode; ``paired``: its interleaved compiled rounds, ``--paired-rounds``; ``sampling``:
5; the copy rate always runs),
so that independent parts run at once on several GPUs of one host (``CUDA_VISIBLE_DEVICES``), e.g.
``--parts check,paired --paired-rounds 6`` on one and ``--parts router,eager,compiled,sampling`` on another;
``--merge A.json --merge B.json`` then measures nothing and joins such runs of one card into one results file
(:func:`merge_bench`).

The core is :func:`run_bench` (no typer needed, so ``python benchmarks/bench.py`` works with only
torch + triton); :func:`bench_command` is the typer verb.
"""
from __future__ import annotations

import contextlib
import copy as _copy
import datetime as _dt
import gc
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional

import torch

# --------------------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, flush=True)


def git_commit() -> str:
    """The commit under test: $DARTOOL_COMMIT when set (GPU jobs: the copied tree's git may be stale), else git."""
    env = os.environ.get("DARTOOL_COMMIT")
    if env and env != "unknown":
        return env
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except Exception:
        return "unknown"


def env_info() -> dict:
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "host": platform.node(),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:
        info["triton"] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(card=torch.cuda.get_device_name(0), sms=p.multi_processor_count,
                    memory_gb=round(p.total_memory / 1e9, 1), cuda=torch.version.cuda,
                    capability=f"{p.major}.{p.minor}")
    else:
        info.update(card="cpu", cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    switches = dartool_switches()
    if switches:
        info["switches"] = switches
    return info


def dartool_switches() -> dict[str, str]:
    """The ``DARTOOL_*`` environment variables set for this run (kernel and model switches such as
    ``DARTOOL_SAVE_QUERY_LAST``; the commit label aside): results name what they were measured under."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("DARTOOL_") and k != "DARTOOL_COMMIT"}


def bench_ms(fn: Callable[[], Any], warmup_ms: float = 25, rep_ms: float = 100) -> float:
    """Median time of fn in ms (CUDA events, L2 flushed between reps by triton's do_bench)."""
    try:
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))
    except Exception:  # no triton: events by hand
        return event_ms(fn)


def event_ms(fn: Callable[[], Any], reps: int = 20, warmup: int = 3, best: bool = False) -> float:
    """Median (``best``: fastest) time of fn in ms, timed with CUDA events (no L2 flush)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return float(min(times) if best else sorted(times)[len(times) // 2])


_SLEEP_CYCLES_PER_MS: "float | None" = None


def _sleep_cycles_per_ms() -> float:
    """Cycles of ``torch.cuda._sleep`` per millisecond on this card (measured once)."""
    global _SLEEP_CYCLES_PER_MS
    if _SLEEP_CYCLES_PER_MS is None:
        torch.cuda._sleep(1_000_000)                                    # warm the kernel up
        torch.cuda.synchronize()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        n = 20_000_000
        a.record()
        torch.cuda._sleep(n)
        b.record()
        torch.cuda.synchronize()
        _SLEEP_CYCLES_PER_MS = n / a.elapsed_time(b)
    return _SLEEP_CYCLES_PER_MS


def host_gpu_ms(fn: Callable[[], Any], reps: int = 30, warmup: int = 3) -> dict:
    """One call's time three ways, in ms: ``host`` (Python issue time while the GPU is kept busy), ``wall`` (issue
    and drain: what a loop bound by its host sees) and ``gpu`` (the GPU's own time: a sleep kernel holds the stream
    while the host queues every call, so the events around them see no host gaps). ``gpu_valid`` is False when the
    host did not get ahead of a GPU that was not busy anyway (then ``gpu`` still counts some host gaps: an upper
    bound). No L2 flush: meant for work that streams more than the L2 holds."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    host, wall = 1e3 * (t1 - t0) / reps, 1e3 * (t2 - t0) / reps
    hold = 2.0 * host * reps + 10.0                                      # ms the stream waits while the host queues
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(int(hold * _sleep_cycles_per_ms()))
    t3 = time.perf_counter()
    a.record()
    for _ in range(reps):
        fn()
    b.record()
    queued = 1e3 * (time.perf_counter() - t3)
    torch.cuda.synchronize()
    gpu = a.elapsed_time(b) / reps
    return {"host": host, "wall": wall, "gpu": gpu, "gpu_valid": bool(queued < hold or gpu >= 0.95 * wall)}


def _cleanup() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def copy_bandwidth(nbytes: int = 1 << 30) -> dict:
    """Device-to-device copy rate, counting bytes read + written (the byte floor's rate)."""
    n = nbytes // 2
    src = torch.randn(n, device="cuda", dtype=torch.float32).to(torch.bfloat16)
    dst = torch.empty_like(src)
    ms = bench_ms(lambda: dst.copy_(src), 25, 200)
    bw = 2 * src.numel() * src.element_size() / (ms * 1e-3)
    del src, dst
    _cleanup()
    return {"bytes_moved": 2 * nbytes, "ms": ms, "bytes_per_s": bw, "tb_per_s": bw / 1e12}


# --------------------------------------------------------------------------------------------------
# Router microbench
# --------------------------------------------------------------------------------------------------


def _router_inputs(N: int, B: int, T: int, D: int, query: str, dtype=torch.bfloat16, seed: int = 0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    srcs = [(torch.randn(B, T, D, device="cuda", generator=g) * (0.5 + i % 5)).to(dtype).requires_grad_()
            for i in range(N)]
    qshape = {"static": (D,), "static_t": (B, 1, D), "dynamic": (B, T, D)}[query]
    qdt = dtype if query == "dynamic" else torch.float32
    q = (torch.randn(qshape, device="cuda", generator=g) * 2).to(qdt).requires_grad_()
    gain = (1 + 0.1 * torch.randn(D, device="cuda", generator=g)).requires_grad_()
    dh = torch.randn(B, T, D, device="cuda", generator=g).to(dtype)
    return srcs, q, gain, dh


def _peak_mb(fn: Callable[[], Any]) -> float:
    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del out
    return peak / 2**20


def reference_router_calls(srcs: list, q, gain, dh, query: str = "static"):
    """The unfused PyTorch router (``models.sit.Router``, the fused path switched off) with the fused one's gain:
    (forward without grad, forward + backward through autograd) as two callables."""
    from .kernels import dispatch
    from .models.sit import Router

    ref = Router(srcs[0].shape[-1], query if query != "static_t" else "static").to(srcs[0].device)
    with torch.no_grad():
        ref.norm.weight.copy_(gain)

    def ref_fwd():
        with torch.no_grad(), dispatch.fused(False):
            return ref(srcs, q)

    def ref_fwdbwd():
        with dispatch.fused(False):
            h = ref(srcs, q)
        return torch.autograd.grad(h, srcs + [q, ref.norm.weight], dh)

    return ref_fwd, ref_fwdbwd


def router_microbench(ns=(9, 18, 57), B=32, T=256, D=1152, query="static", bw: float | None = None,
                      with_reference: bool = True) -> list[dict]:
    from .kernels import router_triton as rt

    rows = []
    for N in ns:
        srcs, q, gain, dh = _router_inputs(N, B, T, D, query)
        leaves = srcs + [q, gain]
        eb = srcs[0].element_size()
        R = B * T
        fwd_bytes = N * R * D * eb + R * D * eb                         # sources once + h
        bwd_bytes = N * R * D * eb + R * D * eb + N * R * D * eb        # sources + dh, grads written once
        row: dict[str, Any] = dict(N=N, B=B, T=T, D=D, query=query, dtype="bf16",
                                   fwd_floor_bytes=fwd_bytes, bwd_floor_bytes=bwd_bytes)

        def fused_fwd():
            with torch.no_grad():
                return rt.fused_router(srcs, q, gain, 1e-6)

        def fused_fwdbwd():
            h = rt.fused_router(srcs, q, gain, 1e-6)
            return torch.autograd.grad(h, leaves, dh)

        needs = True
        h_, lse_, _, h32_ = rt.router_fwd(srcs, q, gain, 1e-6, False, needs)
        hb = h32_ if h32_.numel() else h_

        Pb = rt._bwd_prepare(dh, srcs, q, gain, hb, lse_, 1e-6)

        def fused_bwd_only():  # the kernel alone (outputs preallocated, tables built)
            rt._bwd_launch(Pb)

        def fused_fwd_train():
            return rt.fused_router(srcs, q, gain, 1e-6)

        Pf = rt._fwd_prepare(srcs, q, gain, 1e-6, False, False)
        row["fused_fwd_kernel_ms"] = bench_ms(lambda: rt._fwd_launch(Pf))     # the kernel alone
        del Pf
        row["fused_fwd_ms"] = bench_ms(fused_fwd)
        row["fused_fwd_train_ms"] = bench_ms(fused_fwd_train)   # grad enabled: also writes fp32 h if h is 16-bit
        row["fused_fwdbwd_ms"] = bench_ms(fused_fwdbwd)
        # the GPU's own time of the same calls (host overhead hidden behind a sleeping stream): the speedups
        tf, tfb = host_gpu_ms(fused_fwd), host_gpu_ms(fused_fwdbwd)
        row.update(fused_fwd_gpu_ms=tf["gpu"], fused_fwdbwd_gpu_ms=tfb["gpu"], fused_bwd_gpu_ms=tfb["gpu"] - tf["gpu"],
                   fused_fwdbwd_host_ms=tfb["host"], fused_gpu_valid=tf["gpu_valid"] and tfb["gpu_valid"])
        row["fused_bwd_kernel_ms"] = bench_ms(fused_bwd_only)
        row["fused_peak_mb"] = _peak_mb(fused_fwdbwd)
        if with_reference:
            ref_fwd, ref_fwdbwd = reference_router_calls(srcs, q, gain, dh, query)
            try:
                row["ref_fwd_ms"] = bench_ms(ref_fwd, 10, 60)
                row["ref_fwdbwd_ms"] = bench_ms(ref_fwdbwd, 10, 60)
                row["ref_peak_mb"] = _peak_mb(ref_fwdbwd)
                row["ref_bwd_ms"] = row["ref_fwdbwd_ms"] - row["ref_fwd_ms"]
                rf, rfb = host_gpu_ms(ref_fwd, 10, 2), host_gpu_ms(ref_fwdbwd, 10, 2)
                row.update(ref_fwd_gpu_ms=rf["gpu"], ref_fwdbwd_gpu_ms=rfb["gpu"], ref_bwd_gpu_ms=rfb["gpu"] - rf["gpu"])
            except torch.cuda.OutOfMemoryError:
                row["ref_error"] = "OOM"
        row["fused_bwd_ms"] = row["fused_fwdbwd_ms"] - row["fused_fwd_ms"]
        if "ref_bwd_gpu_ms" in row:
            # speedups: the GPU's time of both (what the router costs inside a step, where its host overhead
            # overlaps GPU work) and, for reference, the host-bound times through Python (``_wall``)
            row["speedup_fwd"] = row["ref_fwd_gpu_ms"] / row["fused_fwd_gpu_ms"]
            row["speedup_bwd"] = row["ref_bwd_gpu_ms"] / max(row["fused_bwd_gpu_ms"], 1e-9)
            row["speedup_fwdbwd"] = row["ref_fwdbwd_gpu_ms"] / row["fused_fwdbwd_gpu_ms"]
            row["speedup_fwd_wall"] = row["ref_fwd_ms"] / row["fused_fwd_ms"]
            row["speedup_bwd_wall"] = row["ref_bwd_ms"] / max(row["fused_bwd_ms"], 1e-9)
            row["speedup_fwdbwd_wall"] = row["ref_fwdbwd_ms"] / row["fused_fwdbwd_ms"]
        if bw:
            row["fwd_floor_ms"] = fwd_bytes / bw * 1e3
            row["bwd_floor_ms"] = bwd_bytes / bw * 1e3
            row["fwd_pct_floor"] = 100 * row["fwd_floor_ms"] / row["fused_fwd_kernel_ms"]
            row["bwd_pct_floor"] = 100 * row["bwd_floor_ms"] / row["fused_bwd_kernel_ms"]
            row["fwd_achieved_tb_s"] = fwd_bytes / (row["fused_fwd_kernel_ms"] * 1e-3) / 1e12
            row["bwd_achieved_tb_s"] = bwd_bytes / (row["fused_bwd_kernel_ms"] * 1e-3) / 1e12
        try:
            row["kernel_resources"] = rt.kernel_resources()
        except Exception:
            pass
        rows.append(row)
        log(f"  router N={N:2d}: fused fwd {row['fused_fwd_ms']:.3f} ms (kernel {row['fused_fwd_kernel_ms']:.3f})"
            + (f" ({row.get('fwd_pct_floor', 0):.0f}% floor)" if bw else "")
            + f", bwd kernel {row['fused_bwd_kernel_ms']:.3f} ms"
            + (f" ({row.get('bwd_pct_floor', 0):.0f}% floor)" if bw else "")
            + f", fwd+bwd {row['fused_fwdbwd_ms']:.3f} ms (GPU {row['fused_fwdbwd_gpu_ms']:.3f}, host"
            + f" {row['fused_fwdbwd_host_ms']:.3f})"
            + f" [fwd train {row['fused_fwd_train_ms']:.3f} ms; {row.get('kernel_resources')}]"
            + (f" | ref fwd {row['ref_fwd_ms']:.2f} fwd+bwd {row['ref_fwdbwd_ms']:.2f} ms | GPU-time speedups fwd /"
               f" bwd / fwd+bwd {row['speedup_fwd']:.1f}x / {row['speedup_bwd']:.1f}x / {row['speedup_fwdbwd']:.1f}x"
               f" (host-bound {row['speedup_fwd_wall']:.1f}x / {row['speedup_bwd_wall']:.1f}x /"
               f" {row['speedup_fwdbwd_wall']:.1f}x)" if "speedup_bwd" in row else ""))
        ref_fwd = ref_fwdbwd = None                 # the reference's closures hold the sources too
        del srcs, q, gain, dh, h_, lse_, h32_, hb, Pb
        _cleanup()
    return rows


BWD_SWEEP_WIDE = (
    # (block_r, rows, num_warps, split, prefetch, unroll): rows of one program, D split into two tiles or not,
    # the next sources' loads issued early or not, one or two sources per loop iteration
    [(1, r, w, 1, 1, 2) for r in (4, 8, 16) for w in (1, 2, 4)]
    + [(1, 8, w, 0, 1, 2) for w in (2, 4, 8)] + [(1, 8, 2, 1, 0, 2), (1, 8, 4, 0, 0, 2)]
    + [(1, 8, w, s, 0, 1) for w in (1, 2, 4) for s in (0, 1)]
    + [(2, r, w, s, 1, 2) for r in (8, 16) for w in (2, 4) for s in (0, 1)]
    + [(4, 16, w, 0, p, 2) for w in (4, 8) for p in (0, 1)]
)


# the backward with the LayerNorm + modulate fused in: (rows, num_warps, split, unroll, prefetch, ln_slot,
# part_slot). Session 6's first sweep (warps 1/2/4 x split x unroll x ln_slot) found one warp, split tiles, ln_slot
# best at both model shapes; this grid varies what freeing registers (part_slot) might change.
BWD_SWEEP_LN = ([(8, 1, 1, u, pf, 1, ps) for u in (1, 2) for pf in (0, 1) for ps in (0, 1)]
                + [(8, 2, 0, 1, 0, 1, ps) for ps in (0, 1)] + [(8, 1, 1, 1, 0, 0, 0)])


def config_sweep(N: int = 57, B: int = 32, T: int = 256, D: int = 1152, bw: float | None = None,
                 model_dtypes: bool = False, wide: bool = False, fwd: bool = True, ln: bool = False) -> dict:
    """Time the launch configurations of both kernels; returns the table and the best of each.

    ``model_dtypes``: lay the inputs out as a bf16-autocast model step does (v_0, h and dh in float32, the
    other sources bf16; gradients returned, not accumulated, as under torch.compile) and count the floor's
    bytes that way. ``wide``: the larger backward grid (``BWD_SWEEP_WIDE``). ``fwd=False``: backward only.
    ``ln``: the kernels with the LayerNorm + modulate fused in (forward writes h fp32 and y bf16; backward
    reads dy bf16 and h fp32), backward grid ``BWD_SWEEP_LN`` (with and without ``ln_slot``)."""
    from .kernels import router_triton as rt

    srcs, q, gain, dh = _router_inputs(N, B, T, D, "static")
    if model_dtypes:
        srcs[0] = srcs[0].detach().float().requires_grad_()
        dh = dh.float()
    u = B * T * D * 2                                  # bytes of one bf16 [B, T, D] tensor
    src_bytes = sum(s.numel() * s.element_size() for s in srcs)
    h_bytes = u * (2 if srcs[0].dtype == torch.float32 else 1)
    fwd_bytes = src_bytes + h_bytes                    # sources once, h written
    bwd_bytes = 2 * src_bytes + 2 * h_bytes            # sources read, their gradients written; dh and h read
    if ln:                                             # h fp32 (+ y bf16) written; dy bf16 and h fp32 read
        fwd_bytes, bwd_bytes = src_bytes + 3 * u, 2 * src_bytes + 3 * u
        shift, mscale = (torch.randn(B, D, device=srcs[0].device) * s for s in (1.0, 0.3))
        dy = dh.to(torch.bfloat16)
    fwd_rows, bwd_rows = [], []
    fwd_cfgs = [dict(block_r=br, num_warps=nw, num_stages=1, split=sp, unroll=2, prefetch=pf)
                for sp, br, nw in ((0, 1, 2), (0, 1, 4), (1, 1, 1), (1, 1, 2), (1, 2, 2), (1, 2, 4))
                for pf in (1, 0)] if fwd else []
    if ln:
        bwd_cfgs = [dict(block_r=1, rows=r, num_warps=nw, num_stages=1, split=sp, unroll=un, prefetch=pf, ln_slot=sl,
                         part_slot=ps) for r, nw, sp, un, pf, sl, ps in BWD_SWEEP_LN]
    elif wide:
        bwd_cfgs = [dict(block_r=br, rows=r, num_warps=nw, num_stages=1, split=sp, unroll=un, prefetch=pf)
                    for br, r, nw, sp, pf, un in BWD_SWEEP_WIDE]
    else:
        bwd_cfgs = [dict(block_r=br, rows=8, num_warps=nw, num_stages=1, split=sp, unroll=2, prefetch=pf)
                    for sp, br, nw in ((0, 1, 2), (0, 1, 4), (1, 1, 1), (1, 1, 2), (1, 2, 4)) for pf in (1, 0)]
        bwd_cfgs += [dict(block_r=1, rows=8, num_warps=1, num_stages=1, split=1, unroll=1, prefetch=0),
                     dict(block_r=1, rows=32, num_warps=2, num_stages=1, split=0, unroll=2, prefetch=1)]
    default_b = rt.bwd_config(N, D)                     # what the model's step would launch at this shape
    for cfg in fwd_cfgs:
        with rt.configs(fwd=cfg):
            try:
                Pf = rt._fwd_prepare(srcs, q, gain, 1e-6, False, False,
                                     ln=(shift, mscale, 1e-6, torch.bfloat16) if ln else None)
                ms = bench_ms(lambda: rt._fwd_launch(Pf), 10, 50)
                del Pf
                fwd_rows.append(dict(cfg, ms=ms, pct_floor=100 * fwd_bytes / bw / (ms * 1e-3) if bw else None))
            except Exception as e:
                fwd_rows.append(dict(cfg, error=f"{type(e).__name__}: {str(e)[:100]}"))
    if ln:
        _, hb, lse_ = rt._fwd_ln_impl(srcs, q, gain, 1e-6, shift, mscale, 1e-6, torch.bfloat16)
    else:
        h_, lse_, _, h32_ = rt.router_fwd(srcs, q, gain, 1e-6, False, True)
        hb = h32_ if h32_.numel() else h_
    for cfg in bwd_cfgs:
        with rt.configs(bwd=cfg):
            try:
                Pb = (rt._bwd_prepare(dy, srcs, q, gain, hb, lse_, 1e-6, ln=(mscale, 1e-6)) if ln else
                      rt._bwd_prepare(dh, srcs, q, gain, hb, lse_, 1e-6))
                ms = bench_ms(lambda: rt._bwd_launch(Pb), 10, 50)
                del Pb
                bwd_rows.append(dict(cfg, ms=ms, pct_floor=100 * bwd_bytes / bw / (ms * 1e-3) if bw else None))
            except Exception as e:
                bwd_rows.append(dict(cfg, error=f"{type(e).__name__}: {str(e)[:100]}"))
    default_f = rt.fwd_config(N, D)                    # what the model's step would launch at this shape
    best_f = min((r for r in fwd_rows if "ms" in r), key=lambda r: r["ms"], default=None)
    best_b = min((r for r in bwd_rows if "ms" in r), key=lambda r: r["ms"], default=None)
    for name, rows_, best in (("fwd", fwd_rows, best_f), ("bwd", bwd_rows, best_b)):
        for r in sorted((r for r in rows_ if "ms" in r), key=lambda r: r["ms"])[:6]:
            log(f"  sweep {name} {r}")
        errs = [r for r in rows_ if "error" in r]
        if errs:
            log(f"  sweep {name}: {len(errs)} configs failed, e.g. {errs[0]}")
    del srcs, q, gain, dh
    _cleanup()
    return dict(N=N, B=B, T=T, D=D, model_dtypes=model_dtypes, ln=ln, fwd_floor_bytes=fwd_bytes,
                bwd_floor_bytes=bwd_bytes, default_fwd=default_f, default_bwd=default_b,
                fwd=fwd_rows, bwd=bwd_rows, best_fwd=best_f, best_bwd=best_b)


# --------------------------------------------------------------------------------------------------
# End-to-end training step and sampling
# --------------------------------------------------------------------------------------------------


NOISE_INPUTS = "Gaussian-noise latents (4 x 32 x 32, 1,000 classes)"
# A run's ``res["stream"]``: its models' hidden state is contiguous [B, T, D] whatever the input's layout (commit
# 54ac41b). Runs without it fed NCHW noise to a residual whose stream then stayed transposed: that compiled step was
# ~5 % slow (SiT-XL/2 b32 68 against 65 ms, H200, session 21), so their DAR / residual ratios read low: by
# 0.03-0.05 compiled and ~0.10 eager (B/2 b256 eager residual 158 against 139 ms).
STREAM_LAYOUT = "contiguous"
OLD_STREAM_NOTE = ("These training steps ran before commit 54ac41b made the model's hidden state contiguous: from "
                   "NCHW inputs (the bench's noise latents) the residual's stream stayed transposed and its compiled "
                   "step was ~5 % slow (SiT-XL/2 b32, H200, session 21), so DAR's ratios here read low: by 0.03-0.05 "
                   "compiled and ~0.10 eager.")


class BenchInputs:
    """The training-step rows' inputs when ``--data`` is given: a dataset's first images at 32 x 32 (256 tokens at
    patch 2, as the bench's latents) with their labels, instead of Gaussian-noise latents. The models are then built
    with the dataset's channels and classes. Session 20 saw SiT-XL/2 b32 DAR static c4 at 1.12x the residual on
    CIFAR-10 images against 1.08x on noise; session 21 traced it to the input's memory layout (HWC images arrive
    channels-last, noise NCHW), which no longer reaches the model's stream: now 1.123 on images, 1.114 on noise."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, classes: int, label: str) -> None:
        self.x, self.y, self.classes, self.label = x, y, int(classes), label    # x: [N, C, 32, 32] in [-1, 1]

    @property
    def channels(self) -> int:
        return int(self.x.shape[1])

    def batch(self, k: int, batch: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The k-th fixed batch: images k*batch ... (k+1)*batch - 1, wrapping around the images held."""
        idx = (torch.arange(batch) + k * batch) % len(self.x)
        return self.x[idx].to(device), self.y[idx].to(device)

    def model_overrides(self) -> dict:
        return dict(in_channels=self.channels, num_classes=self.classes)


def load_inputs(path: "str | Path", n: int = 512) -> BenchInputs:
    """The first ``n`` images of the dataset at ``path`` (anything ``dartool train --data`` takes, pixels or
    latents at 32 x 32) as :class:`BenchInputs`; a path that is not a dataset raises a one-line BenchError."""
    import numpy as np

    from .data import DataError, load_dataset

    try:
        ds = load_dataset(str(path))
        if ds.kind == "latents" and ds.size != 32:
            raise DataError(f"latents are {ds.size} px; the bench's models take 32 x 32 (256 tokens at patch 2)")
        x, y = ds.batch(np.arange(min(n, len(ds))), 32)
    except DataError as e:
        raise BenchError(f"--data {path}: {e}") from None
    kind = "latents" if ds.kind == "latents" else "images"
    return BenchInputs(x.float(), y, ds.num_classes,
                       f"{kind} of {Path(path).name} ({x.shape[1]} x 32 x 32, {ds.num_classes:,} classes)")


def _build(size: str, routing: str, query: str, chunk: int, device: str, inputs: "BenchInputs | None" = None):
    from .models import SiT, model_config

    cfg = model_config(size, 2, routing=routing, query=query, chunk_size=chunk,
                       **(inputs.model_overrides() if inputs is not None else {}))
    with torch.device(device):
        model = SiT(cfg)
    return model, cfg


def dar_flops_ratio(size: str, chunk: int = 4, query: str = "dynamic", tokens: int = 256) -> float:
    """Extra matmul FLOPs of DAR over residual, per token (dynamic: one D x D query projection per router)."""
    from .models import SIZES

    depth, D, _ = SIZES[size]
    base = depth * (12 * D * D + 2 * tokens * D)          # qkv+proj 4D^2, MLP 8D^2, attention 2TD (MACs)
    if query != "dynamic":
        return 0.0
    return (2 * depth + 1) * D * D / base


def router_traffic_bytes(size: str, batch: int, chunk: int, tokens: int = 256) -> dict[str, float]:
    """Bytes every DAR router of one training step must move if each reads its own sources and the LayerNorm after
    it runs apart (:func:`dartool.kernels.traffic.router_bytes`' plain layout: v_0 and each h float32, the other
    sources bf16), summed over the routers, with the number of source reads. The routers as built move less
    (shared prefixes, the fused LayerNorm: :func:`dartool.kernels.traffic.as_built`)."""
    from .kernels.traffic import router_bytes
    from .models import SIZES
    from .models.sit import dar_source_plan

    counts, head = dar_source_plan(2 * SIZES[size][0], chunk)
    return dict(router_bytes(size, batch, chunk, tokens), sources_read=float(sum(counts) + head))


def _floors(rows: list[dict], bytes_per_s: float | None) -> None:
    """Per DAR row: the routers' byte floor per step (ms, at the measured copy rate) next to what DAR adds, twice:
    ``router_floor_ms`` for routers that each read their own sources with the LayerNorm apart, and
    ``router_floor_built_ms`` for the routers as this process runs them (:func:`dartool.kernels.traffic.as_built`);
    ``floor_ratio`` / ``floor_built_ratio``: the residual's step plus that floor, over the residual's step."""
    from .kernels.traffic import as_built

    if not bytes_per_s:
        return
    for r in rows:
        if r.get("routing") != "dar" or "step_ms" not in r:
            continue
        size = r["model"].split("-")[1].split("/")[0]
        r["router_floor_ms"] = router_traffic_bytes(size, r["batch"], r["chunk"])["total"] / bytes_per_s * 1e3
        r["router_floor_built_ms"] = (as_built(size, r["batch"], r["chunk"], r.get("query", "static"))["total"]
                                      / bytes_per_s * 1e3)
        base = _residual_row(rows, r)
        if base:
            r["extra_ms"] = r["step_ms"] - base["step_ms"]
            r["floor_ratio"] = (base["step_ms"] + r["router_floor_ms"]) / base["step_ms"]
            r["floor_built_ratio"] = (base["step_ms"] + r["router_floor_built_ms"]) / base["step_ms"]


def _train_step(model, cfg, batch: int, compiled: bool, device: str = "cuda", compile_mode: str = "full",
                inputs: "BenchInputs | None" = None):
    """One AdamW training step of ``model`` (bf16 autocast on CUDA, the SiT velocity loss) on two fixed random
    batches, alternating: ``(step(i), opt)``. ``compile_mode``: :func:`dartool.models.compiling.compile_model`'s.
    ``inputs``: the batches' x and labels are its images (:class:`BenchInputs`), not Gaussian noise."""
    from .diffusion import diffusion_loss
    from .models.compiling import compile_model

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    # dynamic=False: static shapes even when another model of the same class was compiled first in this process
    # (paired_step_bench); otherwise Dynamo's recompile may mark sizes dynamic and slow the second model down
    fwd = compile_model(model, compile_mode, dynamic=False) if compiled else model
    gen = torch.Generator(device=device).manual_seed(0)
    batches = [(torch.randn(batch, cfg.in_channels, cfg.input_size, cfg.input_size, device=device, generator=gen),
                torch.randint(0, cfg.num_classes, (batch,), device=device, generator=gen),
                torch.rand(batch, device=device, generator=gen),
                torch.rand(batch, device=device, generator=gen) < 0.1) for _ in range(2)]
    if inputs is not None:     # the dataset's x and labels; the noise levels and label drops stay the same draws
        batches = [inputs.batch(k, batch, device) + b[2:] for k, b in enumerate(batches)]

    graphs = compiled and compile_mode == "cudagraphs"

    def step(i: int) -> None:
        x, y, s, drop = batches[i % len(batches)]
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()     # the last step's graph outputs may be overwritten now
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = diffusion_loss(fwd, x, y, s, drop_labels=drop)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step, opt


def _queued_step_ms(step, steps: int) -> list[float]:
    """ms of ``steps`` CUDA training steps queued back to back as in training (no sync between them), each between
    its own pair of events; sorted."""
    ev = []
    for i in range(steps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        step(i)
        b.record()
        ev.append((a, b))
    torch.cuda.synchronize()
    return sorted(a.elapsed_time(b) for a, b in ev)


def host_step_ms(model, cfg, steps: int = 6, inputs: "BenchInputs | None" = None) -> float:
    """The host's work per eager training step of ``model``: the median step at batch 1, where the GPU has little
    to do (SiT-XL/2 on an H100: about 50 ms of GPU time against 60-80 ms of host work for the residual, 150-220 ms
    for DAR c4; session 17). At any batch whose GPU time per step is below this, the step waits for the host."""
    step, opt = _train_step(model, cfg, 1, False, inputs=inputs)
    for i in range(2):
        step(i)
    torch.cuda.synchronize()
    ms = _queued_step_ms(step, steps)
    del step, opt
    return ms[len(ms) // 2]


def train_step_bench(size: str, batch: int, variants: list[tuple[str, str, int, bool]], compiled: bool,
                     steps: int = 10, warmup: int = 3, deadline: float | None = None,
                     compile_est_s: float = 0.0, compile_mode: str = "full", host_probe: bool = True,
                     inputs: "BenchInputs | None" = None) -> list[dict]:
    """variants: (routing, query, chunk, fused). Returns one row per variant. ``compile_mode``: how a compiled model
    is compiled (:func:`dartool.models.compiling.compile_model`). ``host_probe``: eager rows also get ``host_ms``
    (:func:`host_step_ms`), measured after the row's time and memory."""
    from .kernels import dispatch

    rows = []
    for routing, query, chunk, fused in variants:
        name = _variant_name((routing, query, chunk, fused))
        row: dict[str, Any] = dict(model=f"SiT-{size}/2", batch=batch, variant=name, routing=routing, query=query,
                                   chunk=chunk, fused=fused, compiled=compiled,
                                   mode=MODE_OF.get(compile_mode, compile_mode) if compiled else "eager")
        if deadline is not None and time.time() + compile_est_s > deadline:
            row["skipped"] = "time budget"
            rows.append(row)
            log(f"  skip {row['model']} b{batch} {name} {row['mode']}: time budget")
            continue
        t_start = time.time()
        model = opt = None
        try:
            _cleanup()
            model, cfg = _build(size, routing, query, chunk, "cuda", inputs)
            step, opt = _train_step(model, cfg, batch, compiled, compile_mode=compile_mode, inputs=inputs)

            # CUDA graphs' replays allocate nothing (the graphs' pool was laid out while recording): their rows'
            # peak covers the warm-up and recording steps too, where the step's memory is allocated
            graphs = compiled and compile_mode == "cudagraphs"
            with dispatch.fused(fused):
                if graphs:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    row["peak_over"] = "warm-up, recording and replays"
                t0 = time.time()
                step(0)
                torch.cuda.synchronize()
                row["first_step_s"] = time.time() - t0
                for i in range(1, warmup):
                    step(i)
                torch.cuda.synchronize()
                if not graphs:
                    torch.cuda.reset_peak_memory_stats()
                ms = _queued_step_ms(step, steps)
            row["step_ms"] = ms[len(ms) // 2]
            row["step_ms_min"] = ms[0]
            row["img_per_s"] = batch / (row["step_ms"] * 1e-3)
            row["peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
            row["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
            if not compiled and host_probe:
                del step, opt
                opt = None
                try:                            # the row's time and memory stand whatever happens here
                    with dispatch.fused(fused):
                        row["host_ms"] = host_step_ms(model, cfg, inputs=inputs)
                except Exception as e:
                    row["host_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                    log(f"  host work per step not measured: {row['host_error']}")
        except torch.cuda.OutOfMemoryError:
            row["error"] = "OOM"
        except Exception as e:  # keep going: report the failure in the table
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        finally:
            del model, opt
            if compiled:
                torch._dynamo.reset()         # (and CUDA graphs' trees with their memory pool)
            _cleanup()
        row["wall_s"] = time.time() - t_start
        rows.append(row)
        log(f"  {row['model']} b{batch} {name:24s} {row['mode']:10s} "
            + (f"{row['step_ms']:7.1f} ms/step {row['peak_gb']:6.1f} GB (first step {row['first_step_s']:.1f} s)"
               + (f", host {row['host_ms']:.1f} ms/step at b1" if "host_ms" in row else "")
               if "step_ms" in row else row.get("error", "")))
    _ratios(rows)
    return rows


@contextlib.contextmanager
def _environ(env: dict[str, str]):
    """These environment variables set inside the block (read per call by the kernels' launch configurations,
    e.g. DARTOOL_PREFIX_GRAD), the caller's values restored after it."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def paired_step_bench(size: str, batch: int, variant: tuple[str, str, int, bool], compiled: bool,
                      rounds: int = 6, steps: int = 5, warmup: int = 3, device: str = "cuda",
                      overrides: dict | None = None) -> dict:
    """DAR / residual step-time ratio measured in interleaved rounds, both models alive in one process: one
    DAR variant of :func:`paired_steps_bench` (which times several against one residual model)."""
    return paired_steps_bench(size, batch, [variant], compiled, rounds=rounds, steps=steps, warmup=warmup,
                              device=device, overrides=overrides)[0]


def paired_steps_bench(size: str, batch: int, variants: list[tuple[str, str, int, bool]], compiled: bool,
                       rounds: int = 6, steps: int = 5, warmup: int = 3, device: str = "cuda",
                       overrides: dict | None = None, envs: dict[str, dict[str, str]] | None = None,
                       inputs: "BenchInputs | None" = None, compile_mode: str = "full") -> list[dict]:
    """DAR / residual step-time ratios measured in interleaved rounds, the residual and every DAR variant alive
    in one process.

    Separate runs of :func:`train_step_bench` put the two steps minutes apart; the compiled residual step alone
    moved by 4 % between such runs on one H200 (benchmarks/KERNEL_NOTES.md, session 6), which is as much as a
    ratio's distance to its target. Here each round times ``steps`` steps of every model in turn (the order
    rotates by one model per round; with one DAR variant: ABBA), and each DAR variant's ratio is taken against
    the residual of the same round; every round's ratio is kept, with their median, min and max. Peak memory is
    not attributable with all models resident: use train_step_bench. variants: (routing, query, chunk, fused)
    of each DAR model. ``overrides``: config fields (small test models). ``envs``: label -> environment
    variables; each DAR model is then timed once per label with those set around its steps (one compiled model,
    several kernel launch configurations: an A/B of kernel code paths in one process), as variant
    "NAME [label]". ``inputs``: the steps' images (:class:`BenchInputs`) instead of Gaussian noise.
    ``compile_mode``: how a compiled model is compiled (``full``, or ``cudagraphs``: every model's step replayed as
    CUDA graphs, each step opened by ``cudagraph_mark_step_begin``); the result's ``mode`` names it. Returns one
    result per variant (and label)."""
    from .kernels import dispatch
    from .models import SiT, model_config

    cuda = device == "cuda"

    def runner(rt_: str, query: str, chunk: int):
        cfg = model_config(size, 2, routing=rt_, query=query, chunk_size=chunk,
                           **(inputs.model_overrides() if inputs is not None else {}))
        if overrides:
            cfg = cfg.replace(**overrides)
        torch.manual_seed(0)
        with torch.device(device):
            model = SiT(cfg)
        return _train_step(model, cfg, batch, compiled, device, compile_mode=compile_mode, inputs=inputs)[0]

    def block(step) -> float:
        """Median ms of ``steps`` steps, after one untimed step: the first step after another model ran was
        several per cent slower (H200, 2026-11-26). Steps are queued back to back as in training (no sync
        between them), each between its own pair of events, as in :func:`train_step_bench`."""
        step(-1)
        if not cuda:
            ms = []
            for i in range(steps):
                t0 = time.perf_counter()
                step(i)
                ms.append((time.perf_counter() - t0) * 1e3)
            return sorted(ms)[len(ms) // 2]
        ms = _queued_step_ms(step, steps)
        return ms[len(ms) // 2]

    def median(xs: list[float]) -> float:
        xs = sorted(xs)
        n = len(xs)
        return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])

    names = [_variant_name(v) for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"paired_steps_bench: variants repeat: {names}")
    if envs and compiled and compile_mode == "cudagraphs":
        raise ValueError("paired_steps_bench: envs under CUDA graphs would replay the launches recorded under the "
                         "first label; A/B kernel settings with compile_mode='full' (or one process per setting)")
    # what is timed: name -> (step, fused, environment); a DAR model appears once per envs label
    models: dict[str, tuple[Any, bool, dict[str, str]]] = {}
    with dispatch.fused(variants[0][3]):
        models["residual"] = (runner("residual", variants[0][1], variants[0][2]), variants[0][3], {})
    for n, (routing, query, chunk, fused) in zip(names, variants):
        with dispatch.fused(fused):
            step = runner(routing, query, chunk)
        for label, env in (envs or {"": {}}).items():
            models[f"{n} [{label}]" if envs else n] = (step, fused, env)
    names = [k for k in models if k != "residual"]
    mode = MODE_OF.get(compile_mode, compile_mode) if compiled else "eager"
    order0 = list(models)
    for k in order0:                  # compile and warm every model (and configuration) before any timing
        step, fused, env = models[k]
        with dispatch.fused(fused), _environ(env):
            for i in range(warmup):
                step(i)
    if cuda:
        torch.cuda.synchronize()
    per_round = []
    for r in range(rounds):
        order = order0[r % len(order0):] + order0[:r % len(order0)]
        t = {}
        for k in order:
            step, fused, env = models[k]
            with dispatch.fused(fused), _environ(env):
                t[k] = block(step)
        per_round.append(t)
    graphs = int(torch._dynamo.utils.counters["stats"].get("unique_graphs", 0)) if compiled else None
    results = []
    for n in names:
        rr = [dict(residual_ms=t["residual"], dar_ms=t[n], ratio=t[n] / t["residual"]) for t in per_round]
        ratios = [x["ratio"] for x in rr]
        out: dict[str, Any] = dict(model=f"SiT-{size}/2", batch=batch, variant=n, compiled=compiled, mode=mode,
                                   rounds=rr,
                                   steps_per_round=steps, models_in_process=len(models),
                                   ratio_median=median(ratios), ratio_min=min(ratios), ratio_max=max(ratios),
                                   residual_ms=median([x["residual_ms"] for x in rr]),
                                   dar_ms=median([x["dar_ms"] for x in rr]))
        if envs:
            out["env"] = models[n][2]
        if graphs is not None:   # one graph per model (a recompile for each further model's guards), no more
            out["dynamo_graphs"] = graphs
        log(f"  paired {out['model']} b{batch} {n} {mode}: ratio "
            f"{out['ratio_median']:.3f} (min {out['ratio_min']:.3f}, max {out['ratio_max']:.3f}, {rounds} rounds)")
        results.append(out)
    del models
    if compiled:
        torch._dynamo.reset()
    _cleanup()
    return results


def paired_steps_bench_many(size: str, batch: int, rounds: int, inputs: "BenchInputs | None" = None,
                            compile_mode: str = "full") -> list[dict]:
    """The compiled static c4 and dynamic c4 steps against the compiled residual, interleaved (``dartool bench
    --paired-rounds``; ``compile_mode`` ``cudagraphs``: all three under CUDA graphs, ``--paired-mode cudagraphs``)."""
    return paired_steps_bench(size, batch, [("dar", "static", 4, True), ("dar", "dynamic", 4, True)], compiled=True,
                              rounds=rounds, steps=5, inputs=inputs, compile_mode=compile_mode)


def paired_mode(p: dict) -> str:
    """The mode of a paired entry's steps: ``compiled`` or ``cudagraphs`` (results before session 23: compiled)."""
    return p.get("mode", "compiled")


def _residual_row(rows: list[dict], r: dict) -> dict | None:
    """The measured residual row of r's model, batch and mode (the baseline of every ratio)."""
    return next((b for b in rows if b["routing"] == "residual" and "step_ms" in b and b["model"] == r["model"]
                 and b["batch"] == r["batch"] and row_mode(b) == row_mode(r)), None)


def _ratios(rows: list[dict]) -> None:
    """time / memory ratios against the residual row of the same model, batch and mode."""
    for r in rows:
        if "step_ms" not in r:
            continue
        base = _residual_row(rows, r)
        if base:
            r["time_ratio"] = r["step_ms"] / base["step_ms"]
            r["mem_ratio"] = r["peak_gb"] / base["peak_gb"]


@torch.no_grad()
def sampling_bench(size: str = "B", batch: int = 256, steps: int = 50,
                   variants=(("residual", "static", 4, True), ("dar", "static", 4, True),
                             ("dar", "static", 4, False))) -> list[dict]:
    from .kernels import dispatch

    rows = []
    for routing, query, chunk, fused in variants:
        name = _variant_name((routing, query, chunk, fused))
        row: dict[str, Any] = dict(model=f"SiT-{size}/2", batch=batch, steps=steps, variant=name, fused=fused)
        model = None
        try:
            _cleanup()
            model, cfg = _build(size, routing, query, chunk, "cuda")
            model.eval()
            gen = torch.Generator(device="cuda").manual_seed(0)
            with torch.no_grad():  # away from the zero init (gates, head)
                for p in model.parameters():
                    p.add_(0.01 * torch.randn(p.shape, device="cuda", generator=gen))
            y = torch.randint(0, cfg.num_classes, (batch,), device="cuda", generator=gen)

            def sample():
                x = torch.randn(batch, cfg.in_channels, cfg.input_size, cfg.input_size, device="cuda", generator=gen)
                dt = 1.0 / steps
                for k in range(steps):  # SiT: t = 0 noise -> 1 data, Euler on the velocity
                    t = torch.full((batch,), k * dt, device="cuda")
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        v = model(x, t, y)[:, : cfg.in_channels]
                    x = x + dt * v.float()
                return x

            with dispatch.fused(fused):
                sample()  # warm-up (compiles kernels)
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                row["ms"] = event_ms(sample, reps=2, warmup=0, best=True)
            row["img_per_s"] = batch / (row["ms"] * 1e-3)
            row["peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
        except torch.cuda.OutOfMemoryError:
            row["error"] = "OOM"
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
        finally:
            del model
            _cleanup()
        rows.append(row)
        log(f"  sampling {row['model']} {name:24s} " +
            (f"{row['img_per_s']:8.1f} img/s ({row['ms'] / 1e3:.2f} s for {batch} images, {steps} steps)"
             if "ms" in row else row.get("error", "")))
    base = next((r for r in rows if r["variant"] == "residual" and "ms" in r), None)
    if base:
        for r in rows:
            if "ms" in r:
                r["time_ratio"] = r["ms"] / base["ms"]
    return rows


# --------------------------------------------------------------------------------------------------
# CPU bench (no CUDA)
# --------------------------------------------------------------------------------------------------


def cpu_bench() -> dict:
    from .diffusion import diffusion_loss
    from .models.sit import Router

    res: dict[str, Any] = {"note": "no CUDA device: the fused router kernels need CUDA; this is the PyTorch "
                                   "reference path on the CPU."}
    rows = []
    B, T, D = 4, 64, 384
    for N in (9, 18):
        srcs = [torch.randn(B, T, D).requires_grad_() for _ in range(N)]
        r = Router(D, "static")
        q = torch.randn(D)
        for _ in range(2):  # warm-up
            h = r(srcs, q)
            torch.autograd.grad(h.sum(), srcs)
        t0 = time.perf_counter()
        for _ in range(5):
            with torch.no_grad():
                r(srcs, q)
        fwd = (time.perf_counter() - t0) / 5 * 1e3
        t0 = time.perf_counter()
        for _ in range(3):
            h = r(srcs, q)
            torch.autograd.grad(h.sum(), srcs)
        fb = (time.perf_counter() - t0) / 3 * 1e3
        rows.append(dict(N=N, B=B, T=T, D=D, dtype="fp32", ref_fwd_ms=fwd, ref_fwdbwd_ms=fb))
        log(f"  cpu reference router N={N} B={B} T={T} D={D}: fwd {fwd:.1f} ms, fwd+bwd {fb:.1f} ms")
    res["router"] = rows
    steps = []
    from .models import SiT, model_config

    for routing, query in (("residual", "static"), ("dar", "static"), ("dar", "dynamic")):
        cfg = model_config("S", 2, input_size=16, routing=routing, query=query, chunk_size=4).replace(depth=2)
        torch.manual_seed(0)
        model = SiT(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randn(8, 4, 16, 16)
        y = torch.randint(0, 1000, (8,))
        s = torch.rand(8)
        ts = []
        for i in range(4):
            t0 = time.perf_counter()
            loss = diffusion_loss(model, x, y, s)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            ts.append((time.perf_counter() - t0) * 1e3)
        ms = sorted(ts[1:])[1]
        steps.append(dict(model="SiT-S/2 depth 2, 16x16 input", batch=8, variant=cfg.label, step_ms=ms))
        log(f"  cpu training step {cfg.label:28s} batch 8: {ms:.1f} ms")
    res["train"] = steps
    return res


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------

TARGETS = {
    "router_fwd_pct_floor": 70.0,
    "router_bwd_pct_floor": 50.0,
    "router_speedup_n57": 12.0,
    "static_c4_time_ratio": 1.10,
    "mem_ratio": 1.15,
    "dynamic_extra": 0.10,
}


def _f(x, fmt="{:.2f}") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return fmt.format(x)


def _gpu_timed(r: dict) -> bool:
    """Whether a router row's speedups are GPU times (since session 13); older results hold host-bound ones in the
    same keys, with no ``_wall`` keys."""
    return "fused_fwdbwd_gpu_ms" in r


def evaluate_targets(res: dict) -> list[dict]:
    out = []
    micro = {r["N"]: r for r in res.get("router", [])}
    r57 = micro.get(57)
    if r57:
        out.append(dict(target="router fwd >= 70% of byte floor (N=57)", value=r57.get("fwd_pct_floor"),
                        ok=(r57.get("fwd_pct_floor") or 0) >= TARGETS["router_fwd_pct_floor"]))
        out.append(dict(target="router bwd >= 50% of byte floor (N=57)", value=r57.get("bwd_pct_floor"),
                        ok=(r57.get("bwd_pct_floor") or 0) >= TARGETS["router_bwd_pct_floor"]))
        how = "GPU time" if _gpu_timed(r57) else "host-bound"
        for k, lab in (("speedup_fwd", "fwd"), ("speedup_fwdbwd", "fwd+bwd"), ("speedup_bwd", "bwd")):
            out.append(dict(target=f"router {lab} >= 12x over unfused (N=57, {how})", value=r57.get(k),
                            ok=(r57.get(k) or 0) >= TARGETS["router_speedup_n57"]))
    paired = {(p["model"], p["batch"], p["variant"], paired_mode(p)): p for p in res.get("paired", [])
              if "ratio_median" in p}

    def time_target(tag: str, model: str, query: str, ratio: float, how: str) -> None:
        if query == "static":
            out.append(dict(target=f"{tag}: step / residual <= 1.10{how}", value=ratio,
                            ok=ratio <= TARGETS["static_c4_time_ratio"]))
        elif query == "dynamic":
            lim = 1 + dar_flops_ratio(model.split("-")[1].split("/")[0]) + TARGETS["dynamic_extra"]
            out.append(dict(target=f"{tag}: step / residual <= {lim:.2f} (1 + extra FLOPs + 0.10){how}",
                            value=ratio, ok=ratio <= lim))

    judged = set()
    for r in res.get("train", []):
        if "time_ratio" not in r or r["routing"] == "residual" or not r["fused"]:
            continue
        tag = _row_tag(r)
        ratio, how = r["time_ratio"], ""
        key = (r["model"], r["batch"], r["variant"], row_mode(r))
        p = paired.get(key)
        if p is not None:   # compiled time: the median of interleaved rounds rather than one run against one
            ratio, how = p["ratio_median"], f" (paired, median of {len(p['rounds'])} rounds)"
            judged.add(key)
        if r["chunk"] == 4:
            time_target(tag, r["model"], r["query"], ratio, how)
            out.append(dict(target=f"{tag}: peak memory / residual <= 1.15", value=r["mem_ratio"],
                            ok=r["mem_ratio"] <= TARGETS["mem_ratio"]))
    for (model, batch, variant, mode), p in paired.items():   # paired rounds without rows of their mode: time only
        if (model, batch, variant, mode) in judged or not variant.endswith(" c4"):
            continue
        query = variant.split()[1]                    # "DAR static c4" -> static
        time_target(f"{model} b{batch} {variant} {mode}", model, query, p["ratio_median"],
                    f" (paired, median of {len(p['rounds'])} rounds; no {mode} row for memory)")
    chk = res.get("check")
    if chk:
        out.append(dict(target="fused router matches float64 reference (every shape class)", value=None,
                        ok=bool(chk.get("ok"))))
    return out


def _floor_cell(r: dict, own: str, built: str, fmt: str) -> str:
    """'own / as built' where the row has both floors (results before session 21 have the first only)."""
    if r.get(built) is None:
        return _f(r.get(own), fmt)
    return f"{_f(r.get(own), fmt)} / **{_f(r.get(built), fmt)}**"


def _kept_queries(ca: dict, ln_h: str) -> str:
    """The Markdown's words for which dynamic routers kept q for the backward (``compiled_accum``; '' before
    session 29)."""
    sq = ca.get("save_query_last")
    if sq is None:
        return ""
    if not ca.get("recompute_query", True):
        which = "every one (DARTOOL_RECOMPUTE_DYNAMIC_QUERY=0)"
    elif sq.strip().lower() not in ("", "auto"):
        which = f"the last {sq} (DARTOOL_SAVE_QUERY_LAST)"
    elif ln_h == "auto":
        which = "all at widths >= 1024, the last two thirds below (auto)"
    else:
        which = "none (auto with h in float32)"
    return "; dynamic routers keep q for the backward: " + which


def markdown(res: dict) -> str:
    e = res["env"]
    L = [f"# dartool bench — {e.get('card')} — {e['date']}", "",
         f"commit `{e['commit']}` · torch {e['torch']} · triton {e.get('triton')} · python {e['python']}"
         + (f" · CUDA {e.get('cuda')} · {e.get('sms')} SMs · {e.get('memory_gb')} GB" if e.get("sms") else ""), ""]
    if e.get("switches"):
        L += ["Switches set for this run: " + ", ".join(f"`{k}={v}`" for k, v in e["switches"].items()), ""]
    if res.get("note"):
        L += [f"> {res['note']}", ""]
    for r in res.get("resumed", []):
        L += [f"Continued (`--resume`) from a run on the same card at commit `{r['env'].get('commit')}`, "
              f"{r['env'].get('date')}; kept from it: {', '.join(r['parts']) or 'nothing'}"
              + (f"; run again: {', '.join(r['run_again'])}" if r.get("run_again") else "")
              + " (ratios compare rows of one run: a training-step group with a row missing was timed again whole).",
              ""]
    mg = res.get("merged")
    if mg:
        L += [f"Combined (`--merge`) from {len(mg)} runs on this card; each ratio and byte floor is its own run's "
              f"(the copy rate below is the first run's):", ""]
        L += [f"- `{m.get('file')}`: {m['env'].get('card')}, commit `{m['env'].get('commit')}`, {m['env'].get('date')};"
              f" parts: {', '.join(m.get('parts') or []) or 'nothing'}"
              + ("; switches " + ", ".join(f"`{k}={v}`" for k, v in m["env"]["switches"].items())
                 if m["env"].get("switches") else "") for m in mg] + [""]
    if res.get("skipped"):
        L += ["Skipped: " + "; ".join(res["skipped"]), ""]
    bw = res.get("copy")
    if bw:
        L += [f"Device-to-device copy (bytes read + written): **{bw['tb_per_s']:.2f} TB/s** "
              f"({bw['bytes_moved'] / 1e9:.1f} GB in {bw['ms']:.3f} ms). Byte floor = bytes that must move / this rate.", ""]
    rc = res.get("router_config")
    if rc and "fuse_ln" in rc:
        L += ["LayerNorm + modulate fused into the routers (every query kind and the head's; eager and compiled): "
              + ("on" if rc["fuse_ln"] else "off (DARTOOL_FUSE_LN=0)")
              + (f"; backward partials in memory slots (ln_slot = {rc['bwd'].get('ln_slot')})" if rc["fuse_ln"] else "")
              + ".", ""]
    sp = (rc or {}).get("shared_prefix")
    if sp:
        L += ["Shared prefixes (static / static_t chunks read their summaries once, `prefix_triton`): "
              + ("on " + (f"for widths below {sp['max_width']}" if sp["max_width"] < 1 << 30 else "at every width")
                 + f" and chunks with at least {sp['min_summaries']} summaries"
                 + (f", partials in {sp['partial']}" if sp.get("partial") else "")
                 if sp["on"] else "off (DARTOOL_SHARED_PREFIX=0)") + ".", ""]
    ca = res.get("compiled_accum")
    if ca:
        where = (f" and at least {ca['min_pending']} gradients would wait for a sum; at the defaults S = 1, and "
                 "dynamic c4 at SiT-XL/2" if "min_pending" in ca else ", i.e. S = 1")    # results before session 28
        L += ["Compiled source-gradient sums in the graph (`compiled_slots`, graphs where a source has at least "
              f"{ca['min_readers']} reading router ops{where}): "
              + ("on" if ca["on"] else "off (DARTOOL_COMPILED_ACCUM=0)") + ".", ""]
    ln_h = (rc or {}).get("ln_h") or (ca or {}).get("ln_h")
    if ln_h:                                                             # results from session 29 on
        L += ["LayerNorm-fused routers keep their output h for the backward "
              + ("in the LayerNorm output's dtype (bf16 under bf16 autocast)" if ln_h == "auto"
                 else "in float32 (DARTOOL_ROUTER_H=fp32)") + _kept_queries(ca or {}, ln_h) + ".", ""]
    if ca and "dq_over_q" in ca:                                         # results from session 30 on
        L += ["Dynamic routers that recompute q write dq "
              + ("over it (DARTOOL_DQ_OVER_Q=1)" if ca["dq_over_q"] else "into a fresh buffer")
              + "; launches that add into gradient sums "
              + ("may take the row-pipelined backward (DARTOOL_ROW_PIPE_ACCUM=1)" if ca.get("row_pipe_accum")
                 else "stay off the row-pipelined backward")
              + (f", launched with {ca['accum_bwd']} (DARTOOL_ROUTER_BWD_ACCUM)." if ca.get("accum_bwd") else "."), ""]
    chk = res.get("check")
    if chk:
        n_ok = sum(c["ok"] for c in chk["cases"]) + sum(m["ok"] for m in chk.get("models", []))
        n = len(chk["cases"]) + len(chk.get("models", []))
        L += [f"Correctness (fused vs float64 reference, `python -m dartool.kernels.check`): "
              f"**{'PASS' if chk['ok'] else 'FAIL'}** ({n_ok}/{n} cases).", ""]
    rt = res.get("router")
    if rt:
        L += ["## Router (B=32, T=256, D=1152, bf16, static query)", "",
              "| N | fused fwd ms (kernel) | % floor | fused bwd ms (kernel) | % floor | fused fwd / bwd ms (GPU) | "
              "unfused fwd / bwd ms (GPU) | speedup fwd / bwd / fwd+bwd (GPU) | fused fwd+bwd ms: host-bound / "
              "host issue | speedup fwd / bwd / fwd+bwd (host-bound) | peak MB fused / unfused |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rt:
            if not _gpu_timed(r):   # older results: their speedups are the host-bound ones
                r = {**r, **{f"{k}_wall": r.get(k) for k in ("speedup_fwd", "speedup_bwd", "speedup_fwdbwd")},
                     "speedup_fwd": None, "speedup_bwd": None, "speedup_fwdbwd": None}
            gpu_mark = "" if r.get("fused_gpu_valid", True) else " (host not ahead)"
            L.append(f"| {r['N']} | {_f(r.get('fused_fwd_kernel_ms', r['fused_fwd_ms']), '{:.3f}')} | "
                     f"{_f(r.get('fwd_pct_floor'), '{:.0f}')} | "
                     f"{_f(r['fused_bwd_kernel_ms'], '{:.3f}')} | {_f(r.get('bwd_pct_floor'), '{:.0f}')} | "
                     f"{_f(r.get('fused_fwd_gpu_ms'), '{:.3f}')} / {_f(r.get('fused_bwd_gpu_ms'), '{:.3f}')}{gpu_mark} | "
                     f"{_f(r.get('ref_fwd_gpu_ms'))} / {_f(r.get('ref_bwd_gpu_ms'))} | "
                     f"{_f(r.get('speedup_fwd'), '{:.1f}')} / {_f(r.get('speedup_bwd'), '{:.1f}')} / "
                     f"{_f(r.get('speedup_fwdbwd'), '{:.1f}')} | {_f(r['fused_fwdbwd_ms'], '{:.3f}')} / "
                     f"{_f(r.get('fused_fwdbwd_host_ms'), '{:.3f}')} | "
                     f"{_f(r.get('speedup_fwd_wall'), '{:.1f}')} / {_f(r.get('speedup_bwd_wall'), '{:.1f}')} / "
                     f"{_f(r.get('speedup_fwdbwd_wall'), '{:.1f}')} | {_f(r['fused_peak_mb'], '{:.0f}')} / "
                     f"{_f(r.get('ref_peak_mb'), '{:.0f}')} |")
        L += ["", "Floors: forward reads N sources and writes h; backward reads N sources and dh and writes N "
                  "gradients (the kernel also reads h and the per-row log-sum-exp). Kernel columns time the launch "
                  "alone. GPU columns time the calls through Python and autograd (every launch they make: "
                  "allocations' fills, the finishing kernel) with the host's overhead hidden: a sleeping stream lets "
                  "the host queue all calls first (`bench.host_gpu_ms`); bwd = fwd+bwd - fwd. The speedups the "
                  "targets judge are unfused / fused of these GPU times, as inside a training step, where the "
                  "router's host overhead overlaps GPU work. The host-bound columns time the same calls one after "
                  "another: at N = 57 the fused forward + backward is bound by its Python and autograd overhead "
                  "(host issue), which depends on the host's CPU more than on the card (the same code measured "
                  "1.8 and 2.5 ms on two H200 hosts).", ""]
    tr = res.get("train")
    if tr:
        L += ["## Training step (AdamW, bf16 autocast, SiT velocity loss)", "",
              f"Inputs: two fixed batches of {res.get('inputs', NOISE_INPUTS)}. "
              + (OLD_STREAM_NOTE if res.get("stream") != STREAM_LAYOUT else
                 "The models' hidden state is contiguous whatever the inputs' memory layout, so noise and a "
                 "dataset's images (`--data PATH`) give the same ratios within ~1 % (SiT-XL/2 b32 DAR static c4: "
                 "1.114 on noise, 1.123 on CIFAR-10 pixels; H200, session 21). What remains is power, not "
                 "work: a card at its power cap clocks ~1 % higher on images, whose GEMMs draw less power, and the "
                 "GEMM-heavier residual gains more from it (SiT-B/2 b256, H100: the residual's cycles per step equal "
                 "on noise and images to 0.1 %, DAR / residual 1.074 on noise, 1.084 on images; session 25)."),
              "",
              "| model | batch | variant | mode | ms / step | img / s | peak GB | time / residual | memory / residual | "
              "DAR adds ms | router byte floor ms, own reads / as built | residual + floor | host ms / step |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in tr:
            mode = row_mode(r)
            if "step_ms" in r:
                L.append(f"| {r['model']} | {r['batch']} | {r['variant']} | {mode} | {r['step_ms']:.1f} | "
                         f"{r['img_per_s']:.0f} | {r['peak_gb']:.1f} | {_f(r.get('time_ratio'), '{:.3f}')} | "
                         f"{_f(r.get('mem_ratio'), '{:.3f}')} | {_f(r.get('extra_ms'), '{:.1f}')} | "
                         f"{_floor_cell(r, 'router_floor_ms', 'router_floor_built_ms', '{:.1f}')} | "
                         f"{_floor_cell(r, 'floor_ratio', 'floor_built_ratio', '{:.3f}')} | "
                         f"{_f(r.get('host_ms'), '{:.1f}')} |")
            else:
                L.append(f"| {r['model']} | {r['batch']} | {r['variant']} | {mode} | "
                         f"{r.get('error') or r.get('skipped')} | | | | | | | | |")
        L += ["", "Modes: eager; compiled = `torch.compile` of the whole model (`--compile-mode full` of `dartool "
                  "train`); cudagraphs = the same, replayed as CUDA graphs (`torch.compile(mode=\"reduce-overhead\")`, "
                  "`--compile-mode cudagraphs`), which removes the step's host work. Each ratio is against the residual "
                  "of the same model, batch and mode in the same run. A cudagraphs row's peak memory is the peak over "
                  "its warm-up, recording and timed steps (replays allocate nothing).",
              "", "Host ms / step (eager rows): the same model's eager step at batch 1, where the GPU has little to "
                  "do, i.e. the host's work per step (Python, autograd, launches). At any batch whose GPU time per step "
                  "is below it the step waits for the host: DAR's routers are many small launches (session 17: SiT-XL/2 "
                  "DAR c4 is host-bound at 32 images per GPU on an H100, eager and compiled; "
                  "`benchmarks/step_host.py` measures a compiled step against its GPU time).",
              "", "Router byte floor: the bytes DAR's routers must move per step at the copy rate above, from a traffic "
                  "model (`dartool.kernels.traffic`). Own reads: every router reads its own sources and writes h, and "
                  "its backward reads the sources, dh and h and writes the source gradients, with the LayerNorm after "
                  "it a kernel of its own. As built: the LayerNorm + adaLN modulate computed in the router "
                  "(DARTOOL_FUSE_LN) and, for static / static_t queries, the routers of a chunk reading its summaries "
                  "once between them (shared prefixes, partials in bf16), as this run's switches had them. "
                  "'residual + floor' is the best ratio those bytes allow where DAR's other kernels cost what the "
                  "residual's do (session 3, `benchmarks/step_profile.py --compiled`; measured before session 21 "
                  "made the residual's stream contiguous); in eager mode DAR also saves the residual stream's unfused "
                  "adds. Other layouts: `benchmarks/floor_options.py`.", ""]
    pr = res.get("paired")
    if pr:
        L += ["## Compiled steps, paired (interleaved rounds, one process)", "",
              "| model | batch | variant | mode | rounds | median DAR / residual | min | max | residual ms | DAR ms |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for p in pr:
            L.append(f"| {p['model']} | {p['batch']} | {p['variant']} | {paired_mode(p)} | {len(p['rounds'])} | "
                     f"**{p['ratio_median']:.3f}** | {p['ratio_min']:.3f} | {p['ratio_max']:.3f} | "
                     f"{p['residual_ms']:.1f} | {p['dar_ms']:.1f} |")
        L += ["", "Each round times 5 steps of every model in turn (one untimed step first; the order rotates), and "
                  "each ratio is against the residual of the same round. The time targets of the rows of the same mode "
                  "(compiled, or cudagraphs with --paired-mode cudagraphs) use these medians; memory comes from the "
                  "separate rows above (all models are resident here).", ""]
    sp = res.get("sampling")
    if sp:
        L += ["## Sampling (50 Euler steps, bf16 autocast, no guidance)", "",
              "| model | batch | variant | s / batch | img / s | time / residual |", "|---|---|---|---|---|---|"]
        for r in sp:
            if "ms" in r:
                L.append(f"| {r['model']} | {r['batch']} | {r['variant']} | {r['ms'] / 1e3:.2f} | "
                         f"{r['img_per_s']:.1f} | {_f(r.get('time_ratio'), '{:.3f}')} |")
            else:
                L.append(f"| {r['model']} | {r['batch']} | {r['variant']} | {r.get('error')} | | |")
        L.append("")
    cpu = res.get("cpu")
    if cpu:
        L += ["## CPU (reference path only)", "", "| what | ms |", "|---|---|"]
        for r in cpu["router"]:
            L.append(f"| reference router N={r['N']} B={r['B']} T={r['T']} D={r['D']} fwd / fwd+bwd | "
                     f"{r['ref_fwd_ms']:.1f} / {r['ref_fwdbwd_ms']:.1f} |")
        for r in cpu["train"]:
            L.append(f"| training step {r['variant']} ({r['model']}, batch {r['batch']}) | {r['step_ms']:.1f} |")
        L.append("")
    tg = res.get("targets")
    if tg:
        L += ["## Targets (issue #6)", "", "| target | value | met |", "|---|---|---|"]
        for t in tg:
            L.append(f"| {t['target']} | {_f(t['value'], '{:.3f}')} | {'yes' if t['ok'] else '**no**'} |")
        L.append("")
    return "\n".join(L)


def summary_lines(res: dict) -> list[str]:
    out = [f"card {res['env'].get('card')} | commit {res['env']['commit']} | {res['env']['date']}"]
    if res.get("copy"):
        out.append(f"copy bandwidth {res['copy']['tb_per_s']:.2f} TB/s")
    if res.get("check"):
        out.append(f"correctness: {'PASS' if res['check']['ok'] else 'FAIL'}")
    for r in res.get("router", []):
        out.append(f"router N={r['N']:2d}: fwd {r['fused_fwd_ms']:.3f} ms ({_f(r.get('fwd_pct_floor'), '{:.0f}')}% floor, "
                   f"{_f(r.get('speedup_fwd'), '{:.1f}')}x) bwd {r['fused_bwd_kernel_ms']:.3f} ms "
                   f"({_f(r.get('bwd_pct_floor'), '{:.0f}')}% floor, {_f(r.get('speedup_bwd'), '{:.1f}')}x) "
                   f"fwd+bwd {_f(r.get('speedup_fwdbwd'), '{:.1f}')}x (host-bound {_f(r.get('speedup_bwd_wall'), '{:.1f}')}x"
                   f" / {_f(r.get('speedup_fwdbwd_wall'), '{:.1f}')}x) "
                   f"peak {r['fused_peak_mb']:.0f}/{_f(r.get('ref_peak_mb'), '{:.0f}')} MB")
    for r in res.get("train", []):
        mode = row_mode(r)
        if "step_ms" in r:
            out.append(f"{r['model']} b{r['batch']} {r['variant']:22s} {mode:10s} {r['step_ms']:7.1f} ms "
                       f"x{_f(r.get('time_ratio'), '{:.3f}')} mem x{_f(r.get('mem_ratio'), '{:.3f}')} ({r['peak_gb']:.1f} GB)")
        else:
            out.append(f"{r['model']} b{r['batch']} {r['variant']:22s} {mode:10s} {r.get('error') or r.get('skipped')}")
    for p in res.get("paired", []):
        out.append(f"{p['model']} b{p['batch']} {p['variant']:22s} {paired_mode(p)} paired x{p['ratio_median']:.3f} "
                   f"({p['ratio_min']:.3f}-{p['ratio_max']:.3f}, {len(p['rounds'])} rounds)")
    for r in res.get("sampling", []):
        if "img_per_s" in r:
            out.append(f"sampling {r['model']} {r['variant']:22s} {r['img_per_s']:.0f} img/s x{_f(r.get('time_ratio'), '{:.3f}')}")
    for t in res.get("targets", []):
        out.append(f"[{'met' if t['ok'] else 'MISSED'}] {t['target']}: {_f(t['value'], '{:.3f}')}")
    return out


def results_stem(card: "str | None", suffix: str = "") -> str:
    """``bench-<card>-<UTC minute>[-<suffix>]``, the results files' name. A suffix (the ``--parts`` of a partial run,
    ``merged``) keeps apart runs started in the same minute on the same card, e.g. parts run at once on the GPUs
    of one host."""
    slug = "".join(ch if ch.isalnum() else "-" for ch in str(card or "cpu")).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    stem = f"bench-{slug}-{_dt.datetime.now(_dt.timezone.utc).strftime('%Y%m%d-%H%M')}"
    return f"{stem}-{suffix}" if suffix else stem


def write_results(res: dict, out: Path) -> tuple[Path, Path]:
    """Write (or rewrite: called after every section, so a run cut short keeps what it measured)."""
    out.mkdir(parents=True, exist_ok=True)
    stem = res.setdefault("_stem", results_stem(res["env"].get("card", "cpu")))
    res["targets"] = evaluate_targets(res)
    jp, mp = out / f"{stem}.json", out / f"{stem}.md"
    for path, text in ((jp, json.dumps({k: v for k, v in res.items() if k != "_stem"}, indent=1, default=str)),
                       (mp, markdown(res))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)           # atomic: a run killed mid-write leaves the previous complete file
    return jp, mp


class BenchError(ValueError):
    """Input ``dartool bench`` cannot use (message: one line, what to do); the CLI prints it and exits 2."""


class ResumeError(BenchError):
    """A results file that ``--resume`` cannot continue (message: one line, what to do)."""


class MergeError(BenchError):
    """Results files that ``--merge`` cannot combine, or an option it cannot honour (message: one line)."""


_PARTS = ("check", "copy", "sweep", "router", "router_dynamic", "train", "paired", "sampling")

# what ``--parts`` selects, in the order a run measures them (the copy bandwidth always runs: floors need it)
BENCH_PARTS = ("check", "router", "eager", "compiled", "graphs", "paired", "sampling")
# a training-step row's mode (``row["mode"]``) for each compile mode of :func:`dartool.models.compiling.compile_model`
MODE_OF = {"full": "compiled"}
COMPILE_MODE_OF = {"compiled": "full", "cudagraphs": "cudagraphs"}   # --paired-mode -> compile_model's mode
PAIRED_MODES = tuple(COMPILE_MODE_OF)
MODES = ("eager", "compiled", "cudagraphs")          # the modes the bench's parts time, in run order
NOT_IN_PARTS = " (not in --parts)"      # the skipped entry of a part --parts left out: "sampling (not in --parts)"
# the model sizes of the training-step parts (eager, compiled, paired), as ``--sizes`` names them
BENCH_SIZES = ("B", "XL")
NOT_IN_SIZES = " (not in --sizes)"      # "SiT-XL/2 training steps (not in --sizes)"


def _parse_subset(spec: "str | Iterable[str]", valid: tuple[str, ...], flag: str, noun: str, norm,
                  hint: str = "") -> tuple[str, ...]:
    """The names of ``valid`` a comma-separated ``flag`` value selects (each read through ``norm``), in ``valid``'s
    order; an unknown or empty list is a one-line :class:`BenchError` naming the valid ones."""
    names = [norm(n.strip()) for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    bad = [n for n in names if n not in valid]
    if bad or not names:
        what = f"unknown {noun}{'s' if len(bad) > 1 else ''} {', '.join(bad)}" if bad else f"no {noun} named"
        raise BenchError(f"{flag} {spec if isinstance(spec, str) else ','.join(spec)}: {what}; give a "
                         f"comma-separated subset of {','.join(valid)}{hint}")
    return tuple(v for v in valid if v in names)


def parse_sizes(spec: "str | Iterable[str] | None") -> tuple[str, ...]:
    """The model sizes a ``--sizes`` value selects (comma-separated, of :data:`BENCH_SIZES`; ``XL/2`` and
    ``SiT-XL/2`` are read as ``XL``), in run order; None: both. Bad names are a one-line :class:`BenchError`."""
    if spec is None:
        return BENCH_SIZES
    return _parse_subset(spec, BENCH_SIZES, "--sizes", "size",
                         lambda n: n.upper().removeprefix("SIT-").removesuffix("/2"), " (SiT-B/2, SiT-XL/2)")


# the DAR variants of the training-step parts (routing, query, chunk, fused), by their --variants names; the
# residual is always timed (every ratio is against it)
BENCH_VARIANTS = {"static-c4": ("dar", "static", 4, True), "static_t-c4": ("dar", "static_t", 4, True),
                  "dynamic-c4": ("dar", "dynamic", 4, True), "static-c1": ("dar", "static", 1, True),
                  "static-c8": ("dar", "static", 8, True)}


def parse_variants(spec: "str | Iterable[str] | None") -> "tuple[str, ...] | None":
    """The DAR variants a ``--variants`` value selects (comma-separated names of :data:`BENCH_VARIANTS`; ``DAR
    static c8``, ``dar:static:c8`` and ``static c8`` read as ``static-c8``), in the bench's order; None: all.
    Bad names are a one-line :class:`BenchError`."""
    if spec is None or spec == "":
        return None

    def norm(n: str) -> str:
        n = n.strip().lower().replace(":", "-").replace(" ", "-")
        return n.removeprefix("dar-")

    return _parse_subset(spec, tuple(BENCH_VARIANTS), "--variants", "variant", norm,
                         " (the residual is always timed)")


RECIPE_BATCH = 32      # images per GPU in the DiT / SiT recipe (256 over 8 GPUs): where DAR's host work shows


def parse_xl_batches(spec: "int | str | Iterable[int] | None", big: bool = False) -> tuple[int, ...]:
    """The SiT-XL/2 batches of the training-step parts from ``--xl-batch`` (an int, or comma-separated ints);
    None, 0 or "": the card's large batch (128 where it has > 100 GB, else 64) and the recipe's 32 images per GPU.
    Bad values are a one-line :class:`BenchError`."""
    if spec is None or spec == 0 or spec == "":
        return (128 if big else 64, RECIPE_BATCH)
    items = [spec] if isinstance(spec, int) else (spec.split(",") if isinstance(spec, str) else list(spec))
    out: list[int] = []
    for it in items:
        try:
            b = int(str(it).strip())
        except ValueError:
            b = 0
        if b < 1:
            raise BenchError(f"--xl-batch {spec}: {str(it).strip()!r} is not a positive batch; give one or more "
                             f"comma-separated batch sizes, e.g. 64,32")
        if b not in out:
            out.append(b)
    return tuple(out)


def parse_parts(spec: "str | Iterable[str] | None") -> tuple[str, ...]:
    """The parts a ``--parts`` value selects (comma-separated names of :data:`BENCH_PARTS`), in run order; None:
    every part (a plain run). An unknown or empty name list is a one-line :class:`BenchError` naming the valid
    ones, raised before anything is measured."""
    if spec is None:
        return BENCH_PARTS
    return _parse_subset(spec, BENCH_PARTS, "--parts", "part", str.lower)


def measured_parts(res: dict) -> list[str]:
    """The parts of :data:`BENCH_PARTS` that a results dict holds measurements of, read from the data (so files
    written before ``--parts`` existed say it too): provenance of ``--merge`` and which skipped entries a merge
    drops."""
    train = [r for r in res.get("train", []) if "step_ms" in r]
    have = dict(check="check" in res, router=bool(res.get("router")),
                eager=any(row_mode(r) == "eager" for r in train), compiled=any(row_mode(r) == "compiled" for r in train),
                graphs=any(row_mode(r) == "cudagraphs" for r in train),
                paired=any("ratio_median" in p for p in res.get("paired", [])), sampling=bool(res.get("sampling")))
    return [p for p in BENCH_PARTS if have[p]]


def row_mode(r: dict) -> str:
    """A training-step row's mode: ``eager``, ``compiled`` (torch.compile, mode full) or ``cudagraphs``; rows of
    results written before modes were recorded have only the flag ``compiled``."""
    return r.get("mode") or ("compiled" if r.get("compiled") else "eager")


def _mode_rank(r: dict) -> int:
    m = row_mode(r)
    return MODES.index(m) if m in MODES else len(MODES)


def _row_tag(r: dict) -> str:
    """A training-step row as the skipped list and the targets name it: ``SiT-XL/2 b32 DAR dynamic c4 compiled``."""
    return f"{r['model']} b{r['batch']} {r['variant']} {row_mode(r)}"


def read_results(path: Path, flag: str = "--merge", error: type = MergeError) -> dict:
    """A results JSON that an earlier ``dartool bench`` wrote, checked to be one: a missing file, one that is not
    JSON or one without ``env`` raises ``error`` with a one-line message that starts with ``flag PATH:``."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{flag} {path}: no such file; give the .json a previous `dartool bench` wrote")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise error(f"{flag} {path}: not readable as JSON ({type(e).__name__}); give the .json a previous "
                    f"`dartool bench` wrote") from None
    if not isinstance(data, dict) or not isinstance(data.get("env"), dict):
        raise error(f"{flag} {path}: not a `dartool bench` results file (no env); give the .json it wrote")
    return data


def load_resume(path: Path, card: "str | None") -> dict:
    """The results of an earlier ``dartool bench`` run to continue: every part it measured is kept and not run
    again. Refuses another card's results (ratios and floors compare only within one card)."""
    path = Path(path)
    prev = read_results(path, "--resume", ResumeError)
    if card is not None and prev["env"].get("card") != card:
        raise ResumeError(f"--resume {path}: measured on {prev['env'].get('card')}, this is {card}; ratios compare "
                          f"only within one card, so run without --resume")
    prev.pop("targets", None)
    again = []
    if not prev.get("check", {"ok": True}).get("ok", False):  # a failed correctness check is run again, not kept
        prev.pop("check")
        again.append("check (it had failed)")
    if prev.get("stream") != STREAM_LAYOUT and (prev.get("train") or prev.get("paired")):
        prev.pop("train", None)               # timed against a residual whose stream was transposed: slow
        prev.pop("paired", None)
        again.append("training steps (timed before commit 54ac41b made the stream contiguous)")
    prev["resumed"] = prev.get("resumed", []) + [dict(env=prev["env"], seconds=prev.get("seconds"),
                                                      parts=sorted(k for k in prev if k in _PARTS), run_again=again)]
    prev["_stem"] = path.stem
    prev["skipped"] = []
    return prev


# parts that ``--merge`` takes whole from the first input that has them (the first file's copy rate stays)
_MERGE_WHOLE = ("check", "copy", "router", "router_config", "router_dynamic", "sweep", "sampling", "cpu")


def _union_train(base: list[dict], more: list[dict], source: str) -> list[dict]:
    """``base``'s training-step rows plus those of ``more`` that base lacks, keyed (model, batch, variant, mode)
    like :func:`_keep_group`; a measured row also replaces base's skipped or failed one. Each row keeps the ratios
    and floors its own run computed (nothing is recomputed across runs), and a taken row is marked
    ``merged_from``. Rows stay in mode order (eager, compiled, cudagraphs), as a run writes them."""
    rows = list(base)
    at = {(r["model"], r["batch"], r["variant"], row_mode(r)): i for i, r in enumerate(rows)}
    for r in more:
        k = (r["model"], r["batch"], r["variant"], row_mode(r))
        if k not in at:
            at[k] = len(rows)
            rows.append(dict(r, merged_from=source))
        elif "step_ms" in r and "step_ms" not in rows[at[k]]:
            rows[at[k]] = dict(r, merged_from=source)
    return sorted(rows, key=_mode_rank)      # stable: each run's order within a mode


def _prune_skipped(entries: list[str], res: dict) -> list[str]:
    """The skipped entries of merged runs, without repeats and without what another merged run measured: a part
    skipped for --parts, a size left out by --sizes, the time budget or --no-compile, a paired model, or the rows
    of a 'time budget: ...' list (the list keeps the rows still unmeasured)."""
    parts = set(measured_parts(res))
    rows = {_row_tag(r) for r in res.get("train", []) if "step_ms" in r}
    paired = {(p["model"], paired_mode(p)) for p in res.get("paired", []) if "ratio_median" in p}
    models = {m for m, _ in paired} | {r["model"] for r in res.get("train", []) if "step_ms" in r}
    out: list[str] = []
    for e in entries:
        if e.startswith("time budget: "):
            left = [x for x in e[len("time budget: "):].split(", ") if x not in rows]
            e = "time budget: " + ", ".join(left) if left else ""
        elif e.endswith(NOT_IN_PARTS) and e[:-len(NOT_IN_PARTS)] in parts:
            e = ""
        elif e.startswith("sampling") and "sampling" in parts:
            e = ""
        elif e.startswith("torch.compile") and parts & {"compiled", "graphs", "paired"}:
            e = ""
        elif (e.startswith(("paired compiled ", "paired cudagraphs "))
              and (e.split()[2].rstrip(":"), e.split()[1]) in paired):
            e = ""
        elif e.endswith(NOT_IN_SIZES) and e.split()[0] in models:
            e = ""
        if e and e not in out:
            out.append(e)
    return out


def combine_results(runs: list[tuple[str, dict]]) -> dict:
    """One results dict from several runs on one card, ``runs`` = (file name, results) with the first as the base:
    from each later run, every part the base lacks (:data:`_MERGE_WHOLE`), its training-step rows the base lacks
    (:func:`_union_train`) and its paired entries for models the base has none of. Skipped entries are joined
    (:func:`_prune_skipped`); ``merged`` names every input (its env, seconds and the parts it holds; an input that
    was itself merged contributes its own inputs), ``parts`` what the result holds. The inputs are not changed."""
    res = _copy.deepcopy(runs[0][1])
    for k in ("targets", "seconds", "_stem"):
        res.pop(k, None)
    merged: list[dict] = []
    for name, d in runs:
        merged += d.get("merged") or [dict(file=name, env=d["env"], seconds=d.get("seconds"),
                                           parts=measured_parts(d))]
    skipped = list(res.get("skipped", []))
    for name, d in runs[1:]:
        d = _copy.deepcopy(d)
        for k in _MERGE_WHOLE:
            if not res.get(k) and d.get(k):
                res[k] = d[k]
        if d.get("train"):
            res["train"] = _union_train(res.get("train", []), d["train"], name)
        have = {(p["model"], paired_mode(p)) for p in res.get("paired", []) if "ratio_median" in p}
        more = [p for p in d.get("paired", []) if (p["model"], paired_mode(p)) not in have]
        if more:
            res["paired"] = res.get("paired", []) + more
        for r in d.get("resumed", []):
            if r not in res.setdefault("resumed", []):
                res["resumed"].append(r)
        skipped += d.get("skipped", [])
    res["skipped"] = _prune_skipped(skipped, res)
    res["merged"] = merged
    res["parts"] = measured_parts(res)
    return res


def merge_bench(paths: "list[Path]", out: Path) -> dict:
    """``dartool bench --merge``: measure nothing; combine the results JSONs of runs on one card (e.g. ``--parts``
    run at once on several GPUs of a host) with :func:`combine_results`, judge the targets on the whole and write
    ``bench-<card>-<date>-merged.json`` / ``.md`` under ``out``. Refuses runs of different cards (ratios and
    floors compare only within one card)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise MergeError("--merge: no results file given; give --merge once per results JSON to combine")
    runs = [(p.name, read_results(p, "--merge", MergeError)) for p in paths]
    card = runs[0][1]["env"].get("card")
    for p, (_, d) in zip(paths[1:], runs[1:]):
        if d["env"].get("card") != card:
            raise MergeError(f"--merge {p}: measured on {d['env'].get('card')}, {paths[0]} on {card}; ratios compare "
                             f"only within one card, so merge runs of one card")
    inputs = runs[0][1].get("inputs", NOISE_INPUTS)
    for p, (_, d) in zip(paths[1:], runs[1:]):
        if d.get("inputs", NOISE_INPUTS) != inputs:
            raise MergeError(f"--merge {p}: its training steps ran on {d.get('inputs', NOISE_INPUTS)}, {paths[0]}'s "
                             f"on {inputs}; merge runs of the same inputs")
    streams = {d.get("stream") for _, d in runs if d.get("train") or d.get("paired")}
    if len(streams) > 1:
        raise MergeError("--merge: some of these runs timed their training steps before commit 54ac41b made the "
                         "model's stream contiguous (their residual steps were slow) and some after; merge runs of "
                         "one side, or run the old parts again")
    commits = sorted({str(d["env"].get("commit")) for _, d in runs})
    if len(commits) > 1:
        log(f"note: the merged runs are of different commits ({', '.join(commits)})")
    res = combine_results(runs)
    if streams:                            # the one layout the merged training steps ran with
        (stream,) = streams
        res.pop("stream", None)
        if stream is not None:
            res["stream"] = stream
    res["_stem"] = results_stem(card, "merged")
    res["targets"] = evaluate_targets(res)
    jp, mp = write_results(res, out)
    for m in res["merged"]:
        log(f"merged {m['file']}: {', '.join(m['parts']) or 'nothing'} (commit {m['env'].get('commit')}, "
            f"{m['env'].get('date')})")
    log(f"wrote {jp} and {mp}")
    log("=" * 100)
    for line in summary_lines(res):
        log(line)
    return res


def _keep_group(res: dict, size: str, batch: int, mode: str, variants: list) -> bool:
    """Whether a resumed run already has every training-step row of this size, batch and mode (then they are
    kept); if any is missing, the group's rows are dropped and all are timed again, so a ratio never compares
    steps timed in two runs."""
    model = f"SiT-{size}/2"

    def group(r: dict) -> bool:
        return r["model"] == model and r["batch"] == batch and row_mode(r) == mode

    have = {r["variant"] for r in res.get("train", []) if group(r) and not r.get("skipped") and not r.get("error")}
    if all(_variant_name(v) in have for v in variants):
        return True
    res["train"] = [r for r in res.get("train", []) if not group(r)]
    return False


def _variant_name(v: tuple) -> str:
    routing, query, chunk, fused = v
    return "residual" if routing == "residual" else f"DAR {query} c{chunk}" + ("" if fused else " (unfused)")


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------


def run_bench(out: Path, *, quick: bool = False, compile: bool = True, compile_budget_s: float = 600.0,
              sweep: bool = False, check: bool = True, train: bool = True, sampling: bool = True,
              router: bool = True, xl_batch: "int | str | None" = None, time_budget_s: float = 2400.0,
              paired_rounds: int = 0, resume: "Path | None" = None,
              parts: "str | Iterable[str] | None" = None, sizes: "str | Iterable[str] | None" = None,
              variants: "str | Iterable[str] | None" = None, data: "str | Path | None" = None,
              paired_mode: str = "compiled") -> dict:
    """Everything ``dartool bench`` measures. ``resume``: a results JSON of an earlier run on the same card, whose
    measured parts are kept and not run again (a run that outgrew one machine slot continues in the next).
    ``paired_rounds`` > 0: time the compiled residual, static c4 and dynamic c4 steps of each size in that many
    interleaved rounds in one process (:func:`paired_steps_bench`); the compiled time targets then use those medians
    (single compiled runs minutes apart moved by a few per cent on one card), memory targets the separate rows.
    ``paired_mode`` ``cudagraphs``: those rounds under CUDA graphs instead, judging the graphs rows' time targets.
    ``parts``: which of :data:`BENCH_PARTS` to run (comma-separated or a list; None: all). A part runs only where
    its switch allows it too (``eager`` / ``compiled`` / ``paired`` need ``train``; ``compiled`` / ``paired``
    ``compile``). Independent parts can then run at once on several GPUs and be joined by :func:`merge_bench`;
    the results name their parts (``bench-<card>-<date>-check_paired``; no "+", which some file tools refuse) and
    record those that ran in ``res["parts"]``. The copy bandwidth always runs (floors need it).
    ``sizes``: which of :data:`BENCH_SIZES` the training-step parts measure (None: both), so that one size's
    compiled rows can run on one GPU and the other's on another; the file name then names them too.
    ``variants``: which DAR variants of :data:`BENCH_VARIANTS` the eager, compiled and graphs rows time (None:
    all; the residual always runs); the file name then names them. The paired rounds and sampling keep theirs.
    Not ``quick``: the compiled rows cover the eager rows' variants (static, static_t, dynamic c4; static c1, c8),
    residual and static c4 first, then dynamic c4, then the rest while ``compile_budget_s`` lasts.
    ``data``: a dataset (``dartool train --data``'s forms) whose first images the training-step rows (eager,
    compiled, graphs, paired) train on, with models of its channels and classes (:class:`BenchInputs`), instead of
    Gaussian-noise latents; recorded as ``res["inputs"]``, named in the file name (``-data``), and a resumed or
    merged run must have the same inputs."""
    t_begin = time.time()
    selected = parse_parts(parts)
    chosen = parse_sizes(sizes)
    xl_batches = parse_xl_batches(xl_batch)     # bad batches fail here, before anything is measured
    xl_given = xl_batch not in (None, 0, "")
    chosen_variants = parse_variants(variants)
    if parts is not None and "paired" in selected and paired_rounds <= 0:
        raise BenchError("--parts paired needs --paired-rounds N (N > 0; 6 is a good choice)")
    if paired_mode not in PAIRED_MODES:
        raise BenchError(f"--paired-mode {paired_mode!r}: use one of {', '.join(PAIRED_MODES)}")
    inputs = load_inputs(data) if data is not None else None        # a bad path fails before anything runs
    inputs_label = inputs.label if inputs is not None else NOISE_INPUTS
    env = env_info()
    res: dict[str, Any] = {"env": env, "skipped": []}
    if resume is not None:
        res = load_resume(resume, env.get("card") if torch.cuda.is_available() else None)
        log(f"resuming {resume}: keeping {', '.join(res['resumed'][-1]['parts']) or 'nothing'} "
            f"(commit {res['env'].get('commit')}, {res['env'].get('date')})"
            + "".join(f"; running again: {x}" for x in res["resumed"][-1]["run_again"]))
        res["env"] = env
        if res.get("inputs", NOISE_INPUTS) != inputs_label:
            raise ResumeError(f"--resume {resume}: its training steps ran on {res.get('inputs', NOISE_INPUTS)}, this "
                              f"run's on {inputs_label}; give the same --data (or none), or run without --resume")
    elif (parts is not None or sizes is not None or xl_given or chosen_variants
          or inputs is not None or (paired_mode != "compiled" and paired_rounds > 0)):   # partial runs: own files
        named = chosen if sizes is not None or xl_given else ()
        if xl_given:         # runs of one part and size apart by their batches (-graphs_XL64, -graphs_XL32)
            named = tuple(z + "-".join(map(str, xl_batches)) if z == "XL" else z for z in named)
        if chosen_variants:  # and by their variants (-graphs_XL32_static-c8)
            named += tuple(chosen_variants)
        if inputs is not None:   # and by their inputs (-graphs_XL32_data)
            named += ("data",)
        shown = selected if parts is not None else ()
        if paired_mode == "cudagraphs" and paired_rounds > 0:   # and by their paired rounds' mode (-paired-graphs)
            shown = tuple("paired-graphs" if x == "paired" else x for x in shown) if "paired" in shown \
                else shown + ("paired-graphs",)
        res["_stem"] = results_stem(env.get("card"), "_".join(shown + named))
    ran: list[str] = []        # the parts this run measured (not those kept from --resume), in run order
    res["parts"] = ran
    res["inputs"] = inputs_label
    res["stream"] = STREAM_LAYOUT
    log(f"dartool bench on {res['env'].get('card')} (torch {res['env']['torch']}, triton {res['env'].get('triton')}, "
        f"commit {res['env']['commit']})" + (f", parts {','.join(selected)}" if parts is not None else "")
        + (f", training steps on {inputs_label}" if inputs is not None else ""))
    if not torch.cuda.is_available():
        from .kernels import why_not_fused

        res["note"] = f"No CUDA device, so the fused kernels were not run ({why_not_fused()}). CPU reference only."
        if inputs is not None:
            res["note"] += " --data applies to the GPU's training-step parts; the CPU bench's step trains on noise."
            res["inputs"] = NOISE_INPUTS
        log(res["note"])
        res["cpu"] = cpu_bench()
        jp, mp = write_results(res, out)
        log(f"wrote {jp} and {mp}")
        return res
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    deadline = t_begin + time_budget_s

    from .kernels import why_not_fused

    reason = why_not_fused()
    if reason:
        res["note"] = f"fused router unavailable: {reason}"
        log(res["note"])

    if check and "check" in selected and not reason and "check" not in res:
        log("[1/5] correctness of the fused router (float64 reference)")
        from .kernels.check import run_all

        res["check"] = run_all(device="cuda", model=True)
        ran.append("check")
        log(f"  correctness: {'PASS' if res['check']['ok'] else 'FAIL'} ({res['check']['seconds']:.0f} s)")
        write_results(res, out)
    log("[2/5] copy bandwidth")
    if "copy" not in res:      # a resumed run keeps the rate its floors were computed with
        res["copy"] = copy_bandwidth()
    bw = res["copy"]["bytes_per_s"]
    log(f"  {res['copy']['tb_per_s']:.2f} TB/s")
    if sweep and not reason and "sweep" not in res:
        log("  launch-configuration sweep (N=57)")
        res["sweep"] = config_sweep(bw=bw)
        from .kernels import router_triton as rt

        if res["sweep"]["best_fwd"]:
            rt.set_configs(fwd={k: res["sweep"]["best_fwd"][k]
                                for k in ("block_r", "num_warps", "num_stages", "split", "unroll", "prefetch")})
        if res["sweep"]["best_bwd"]:
            rt.set_configs(bwd={k: res["sweep"]["best_bwd"][k]
                                for k in ("block_r", "rows", "num_warps", "num_stages", "split", "unroll",
                                          "prefetch")})
        log(f"  using fwd {rt.FWD_CONFIG} bwd {rt.BWD_CONFIG}")
    if router and "router" in selected and not reason and "router" not in res:
        log("[3/5] router microbench")
        from .kernels import dispatch
        from .kernels import router_triton as rt

        res["router_config"] = dict(fwd=dict(rt.FWD_CONFIG), bwd=dict(rt.BWD_CONFIG), bwd_per_shape=rt._AUTO["bwd"],
                                    fwd_per_shape=rt._AUTO["fwd"], fuse_ln=dispatch.FUSE_LN, ln_h=rt.LN_H,
                                    shared_prefix=dict(on=dispatch.SHARED_PREFIX, min_summaries=dispatch.SHARED_PREFIX_MIN,
                                                       max_width=dispatch.SHARED_PREFIX_MAX_D,
                                                       partial={"auto": "the model's compute dtype",
                                                                "fp32": "float32"}.get(dispatch.PREFIX_PARTIAL,
                                                                                       dispatch.PREFIX_PARTIAL)))
        res["router"] = router_microbench(ns=(9, 57) if quick else (9, 18, 57), bw=bw)
        if not quick:
            res["router_dynamic"] = router_microbench(ns=(57,), query="dynamic", bw=bw, with_reference=False)
        ran.append("router")
        write_results(res, out)
    eager = train and "eager" in selected
    compiled = train and compile and "compiled" in selected
    graphs = train and compile and "graphs" in selected
    paired = train and compile and paired_rounds > 0 and "paired" in selected
    if eager or compiled or graphs or paired:
        log("[4/5] training step: residual vs DAR")
        big = torch.cuda.get_device_properties(0).total_memory > 100e9
        xlbs = xl_batches if xl_given else parse_xl_batches(None, big)
        full = [("residual", "static", 4, True)] + list(BENCH_VARIANTS.values())
        if reason:
            full = [v for v in full if v[0] == "residual"] + [("dar", "static", 4, False)]
        sizes_b = [(z, b) for z, bs in (("B", (256,)), ("XL", xlbs)) if z in chosen for b in bs]
        if quick:
            full = full[:2] + [full[3]]
        if chosen_variants:
            keep = {BENCH_VARIANTS[n] for n in chosen_variants}
            full = [v for v in full if v[0] == "residual" or v in keep or (not v[3] and v[:3] + (True,) in keep)]
        res["train"] = [r for r in res.get("train", []) if not r.get("skipped") and not r.get("error")]
        if eager:
            _eager_rows(res, out, sizes_b, full, deadline, ran, inputs)
        if compiled or graphs or paired:
            from .envflags import env_flag
            from .kernels import compiled_slots, dispatch

            rt_mod = sys.modules.get("dartool.kernels.router_triton")   # loaded with the models; else its env

            def rt_flag(name: str, var: str, default: bool) -> bool:
                return bool(getattr(rt_mod, name, env_flag(var, default)))

            res["compiled_accum"] = dict(
                on=compiled_slots.ENABLED, min_readers=compiled_slots.MIN_READERS,
                min_pending=compiled_slots.MIN_PENDING, ops_version=compiled_slots.OPS_VERSION,
                ln_h=compiled_slots.ln_h_mode(), save_query_last=str(dispatch.SAVE_QUERY_LAST),
                recompute_query=rt_flag("RECOMPUTE_DYNAMIC_QUERY", "DARTOOL_RECOMPUTE_DYNAMIC_QUERY", True),
                dq_over_q=rt_flag("DQ_OVER_Q", "DARTOOL_DQ_OVER_Q", False),
                row_pipe_accum=rt_flag("ROW_PIPE_ACCUM", "DARTOOL_ROW_PIPE_ACCUM", False),
                accum_bwd=rt_mod.accum_bwd_text() if rt_mod else os.environ.get("DARTOOL_ROUTER_BWD_ACCUM", ""))
        only = full if chosen_variants else None
        if compiled:
            _compiled_rows(res, out, sizes_b, min(deadline, time.time() + compile_budget_s), ran,
                           full if not quick and not reason else None, only=only, inputs=inputs)
        if graphs:
            _compiled_rows(res, out, sizes_b, min(deadline, time.time() + compile_budget_s), ran,
                           full if not quick and not reason else None, compile_mode="cudagraphs", only=only,
                           inputs=inputs)
        if paired:
            _paired_rounds(res, out, sizes_b, paired_rounds, deadline, ran, inputs, mode=paired_mode)
        if sizes is not None:
            res["skipped"] += [f"SiT-{z}/2 training steps{NOT_IN_SIZES}" for z in BENCH_SIZES if z not in chosen]
    if train and not compile and {"compiled", "graphs", "paired"} & set(selected):
        res["skipped"].append("torch.compile (--no-compile)")
    if not sampling or "sampling" not in selected or "sampling" in res:     # off, or kept from the resumed run
        pass
    elif time.time() < deadline:
        log("[5/5] sampling")
        res["sampling"] = sampling_bench(variants=(("residual", "static", 4, True), ("dar", "static", 4, True),
                                                   ("dar", "static", 4, False)) if not reason else
                                         (("residual", "static", 4, True), ("dar", "static", 4, False)))
        ran.append("sampling")
    else:
        res["skipped"].append("sampling (time budget)")
    skipped_train = [_row_tag(r) for r in res.get("train", []) if r.get("skipped")]
    if skipped_train:
        res["skipped"].append("time budget: " + ", ".join(skipped_train))
    if parts is not None:      # what --parts left out and no resumed run holds (a merge drops what another has)
        have = set(measured_parts(res))
        res["skipped"] += [p + NOT_IN_PARTS for p in BENCH_PARTS if p not in selected and p not in have
                           and (p != "paired" or paired_rounds > 0)]
    res["targets"] = evaluate_targets(res)
    res["seconds"] = time.time() - t_begin
    jp, mp = write_results(res, out)
    log("")
    log(f"wrote {jp} and {mp} ({res['seconds']:.0f} s)")
    log("=" * 100)
    for line in summary_lines(res):
        log(line)
    return res


def _eager_rows(res: dict, out: Path, sizes: list, variants: list, deadline: float, ran: list[str],
                inputs: "BenchInputs | None" = None) -> None:
    """The eager training-step rows of every (size, batch) (``--parts eager``); a group a resumed run holds whole
    is kept."""
    for size, batch in sizes:
        if _keep_group(res, size, batch, "eager", variants):
            continue
        res["train"] += train_step_bench(size, batch, variants, compiled=False, deadline=deadline, inputs=inputs)
        _floors(res["train"], res["copy"]["bytes_per_s"])
        if "eager" not in ran:
            ran.append("eager")
        write_results(res, out)


def _compiled_rows(res: dict, out: Path, sizes: list, cdead: float, ran: list[str],
                   full: "list | None" = None, compile_mode: str = "full", only: "list | None" = None,
                   inputs: "BenchInputs | None" = None) -> None:
    """The separately timed compiled training-step rows, bounded by ``cdead``: residual + static c4 of every
    (size, batch) first, then dynamic c4, then (``full``: the variant list of a full run) the other variants of
    ``full``, while the budget lasts. ``compile_mode`` ``full``: the ``compiled`` part; ``cudagraphs``: the
    ``graphs`` part (CUDA graphs; the offset tables' caching, off while it runs, is switched back on after it).
    ``only`` (``--variants``): time no variant outside it."""
    mode = MODE_OF.get(compile_mode, compile_mode)
    part = "graphs" if compile_mode == "cudagraphs" else "compiled"
    first = [("residual", "static", 4, True), ("dar", "static", 4, True)]
    dyn = [("dar", "dynamic", 4, True)]
    rest = [v for v in full or [] if v not in first + dyn]
    if only is not None:
        first, dyn, rest = ([v for v in vs if v in only] for vs in (first, dyn, rest))
    todo = [(size, batch) for size, batch in sizes if not _keep_group(res, size, batch, mode, first + dyn + rest)]
    plan = [(size, batch, first) for size, batch in todo]
    plan += [(size, batch, dyn) for size, batch in todo if dyn]
    plan += [(size, batch, rest) for size, batch in todo if rest]
    try:
        for size, batch, cvars in plan:
            est = (40.0 if size == "B" else 60.0) * (1.5 if compile_mode == "cudagraphs" else 1.0)
            rows_c = train_step_bench(size, batch, cvars, compiled=True, deadline=cdead, compile_est_s=est, steps=8,
                                      compile_mode=compile_mode, inputs=inputs)
            res["train"] += rows_c
            res["train"].sort(key=_mode_rank)
            _ratios(res["train"])
            _floors(res["train"], res["copy"]["bytes_per_s"])
            if part not in ran:
                ran.append(part)
            write_results(res, out)
    finally:
        if compile_mode == "cudagraphs":
            from .kernels import tables

            tables.set_graph_safe(False)


def _paired_rounds(res: dict, out: Path, sizes: list, rounds: int, deadline: float, ran: list[str],
                   inputs: "BenchInputs | None" = None, mode: str = "compiled") -> None:
    """The interleaved paired rounds of every size (``--parts paired``, ``--paired-rounds``) at its first batch,
    compiled or (``mode`` ``cudagraphs``, ``--paired-mode``) under CUDA graphs; needs no eager or compiled rows of
    this run (the targets pair them with whichever rows of that model, batch and mode the results hold)."""
    res.setdefault("paired", [])
    firsts = {}
    for size, batch in sizes:
        firsts.setdefault(size, batch)
    for size, batch in firsts.items():
        if any(p["model"] == f"SiT-{size}/2" and paired_mode(p) == mode and "ratio_median" in p
               for p in res["paired"]):
            continue
        est = (3 * (40.0 if size == "B" else 60.0) * (1.5 if mode == "cudagraphs" else 1.0)
               + rounds * 3 * 6 * 0.2)
        left = deadline - time.time()
        if est > left:   # say what it needed: a budget set too low for the rounds should not pass unnoticed
            msg = (f"paired {mode} SiT-{size}/2 (time budget: ~{est:.0f} s needed, {max(left, 0):.0f} s left; "
                   "raise --time-budget)")
            log(f"  skip {msg}")
            res["skipped"].append(msg)
            continue
        try:
            res["paired"] += paired_steps_bench_many(size, batch, rounds, inputs=inputs,
                                                     compile_mode=COMPILE_MODE_OF[mode])
            if "paired" not in ran:
                ran.append("paired")
        except Exception as e:  # keep going: report it
            res["skipped"].append(f"paired {mode} SiT-{size}/2: {type(e).__name__}: {str(e)[:120]}")
        write_results(res, out)


# the flags of run_bench's keywords where they are not ``--`` + the keyword (switches: the flag that turns them off)
_FLAGS = {"compile": "--no-compile", "check": "--no-check", "train": "--no-train", "sampling": "--no-sampling",
          "router": "--no-router", "compile_budget_s": "--compile-budget", "time_budget_s": "--time-budget"}


def merge_conflicts(**run_kw: Any) -> list[str]:
    """The measuring options among ``run_kw`` (keywords of :func:`run_bench`) that are set away from their
    defaults, named as their flags: ``--merge`` measures nothing, so each of them would be silently ignored."""
    import inspect

    params = inspect.signature(run_bench).parameters
    return [_FLAGS.get(k, "--" + k.replace("_", "-")) for k, v in run_kw.items() if v != params[k].default]


def bench_or_merge(out: Path, merge: "list[Path] | None" = None, **run_kw: Any) -> dict:
    """What the CLI runs: :func:`merge_bench` of ``merge`` when given (refusing measuring options next to it,
    :func:`merge_conflicts`), else :func:`run_bench` with ``run_kw``. Bad input raises :class:`BenchError`."""
    if merge:
        bad = merge_conflicts(**run_kw)
        if bad:
            raise MergeError(f"--merge measures nothing, so {', '.join(bad)} would be ignored; measure with "
                             f"{'it' if len(bad) == 1 else 'them'} in a run of its own, then merge its results")
        return merge_bench(list(merge), out)
    return run_bench(out, **run_kw)


PARTS_HELP = (f"Run only these parts, comma-separated: {','.join(BENCH_PARTS)} (default: all; a switch such as "
              "--no-sampling still turns its part off; the copy bandwidth always runs). Parts run at once on "
              "several GPUs of a host (CUDA_VISIBLE_DEVICES) are then joined with --merge.")
XL_BATCH_HELP = ("SiT-XL/2 batches of the training-step parts, comma-separated (default: 128 on cards with > 100 GB, "
                 "else 64, and 32, the DiT/SiT recipe's images per GPU, where DAR's host work shows).")
SIZES_HELP = (f"Model sizes of the training-step parts, comma-separated: {','.join(BENCH_SIZES)} (default: both; "
              "SiT-B/2 at batch 256, SiT-XL/2 at --xl-batch). One size per GPU splits a full compiled run.")
VARIANTS_HELP = (f"DAR variants of the eager, compiled and graphs rows, comma-separated: {','.join(BENCH_VARIANTS)} "
                 "(default: all; the residual always runs, and the paired rounds and sampling keep theirs).")
DATA_HELP = ("Train the training-step rows on this dataset's first images (what dartool train --data takes: an npz, "
             "an image folder, fashion-mnist) at 32 x 32, with models of its channels and classes, instead of "
             "Gaussian-noise latents (session 21: the same ratios within ~1 %).")
PAIRED_MODE_HELP = ("How the paired rounds compile their models: compiled (torch.compile) or cudagraphs (the same, "
                    "replayed as CUDA graphs, the mode dartool train --compile uses on CUDA); their medians judge "
                    "the time targets of that mode's rows.")
MERGE_HELP = ("Measure nothing: combine these results JSONs of runs on one card (give it once per file; the first "
              "is the base, later ones add the parts, training-step rows and paired models it lacks) into "
              "bench-<card>-<date>-merged.json / .md under --out.")


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="dartool bench: fused DAR router and DAR vs residual costs")
    ap.add_argument("--out", default="benchmarks/results", help="directory for the JSON + Markdown results")
    ap.add_argument("--quick", action="store_true", help="fewer sizes and variants")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--compile-budget", type=float, default=600.0,
                    help="seconds allowed for each compiled part (compiled, graphs)")
    ap.add_argument("--time-budget", type=float, default=2400.0, help="overall seconds; later parts are skipped")
    ap.add_argument("--sweep", action="store_true", help="sweep kernel launch configurations first")
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--no-sampling", action="store_true")
    ap.add_argument("--no-router", action="store_true")
    ap.add_argument("--xl-batch", default=None, help=XL_BATCH_HELP)
    ap.add_argument("--paired-rounds", type=int, default=0,
                    help="also time the compiled steps in interleaved rounds (see dartool bench --help)")
    ap.add_argument("--paired-mode", default="compiled", choices=PAIRED_MODES, help=PAIRED_MODE_HELP)
    ap.add_argument("--resume", default=None, help="continue an earlier run's results JSON (see dartool bench --help)")
    ap.add_argument("--parts", default=None, help=PARTS_HELP.replace("%", "%%"))
    ap.add_argument("--merge", action="append", default=None, metavar="JSON", help=MERGE_HELP.replace("%", "%%"))
    ap.add_argument("--sizes", default=None, help=SIZES_HELP)
    ap.add_argument("--variants", default=None, help=VARIANTS_HELP)
    ap.add_argument("--data", default=None, help=DATA_HELP)
    a = ap.parse_args(argv)
    try:
        res = bench_or_merge(Path(a.out), [Path(m) for m in a.merge or []], quick=a.quick, compile=not a.no_compile,
                             compile_budget_s=a.compile_budget, sweep=a.sweep, check=not a.no_check,
                             train=not a.no_train, sampling=not a.no_sampling, router=not a.no_router,
                             xl_batch=a.xl_batch, time_budget_s=a.time_budget, paired_rounds=a.paired_rounds,
                             resume=Path(a.resume) if a.resume else None, parts=a.parts, sizes=a.sizes,
                             variants=a.variants, data=a.data, paired_mode=a.paired_mode)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ok = res.get("check", {}).get("ok", True)
    return 0 if ok else 1


try:  # the typer verb (``dartool bench``); absent typer leaves run_bench / main usable
    import typer

    def bench_command(
        out: Path = typer.Option(Path("benchmarks/results"), "--out", help="Directory for JSON + Markdown results."),
        quick: bool = typer.Option(False, help="Fewer sizes and variants."),
        compile: bool = typer.Option(True, "--compile/--no-compile", help="Also time torch.compile (time-bounded)."),
        compile_budget: float = typer.Option(600.0, help="Seconds allowed for each compiled part (compiled, graphs)."),
        time_budget: float = typer.Option(2400.0, help="Overall seconds; later parts are skipped past it."),
        sweep: bool = typer.Option(False, help="Sweep the kernels' launch configurations first."),
        check: bool = typer.Option(True, "--check/--no-check", help="Correctness against float64 first."),
        train: bool = typer.Option(True, "--train/--no-train"),
        sampling: bool = typer.Option(True, "--sampling/--no-sampling"),
        router: bool = typer.Option(True, "--router/--no-router"),
        xl_batch: str = typer.Option("", metavar="N,...", help=XL_BATCH_HELP),
        paired_rounds: int = typer.Option(0, help="Also time the compiled steps in this many interleaved rounds "
                                                  "(residual, static c4, dynamic c4 in one process; 6 is a good "
                                                  "choice) and judge compiled time targets on their medians."),
        paired_mode: str = typer.Option("compiled", metavar="MODE", help=PAIRED_MODE_HELP),
        resume: Optional[Path] = typer.Option(None, help="Continue an earlier run on the same card: its results JSON "
                                                         "(rewritten in place, under --out); the parts it measured "
                                                         "are kept, the rest run (a training-step group with a row "
                                                         "missing is timed again whole)."),
        parts: Optional[str] = typer.Option(None, metavar="PART,...", help=PARTS_HELP),
        merge: Optional[List[Path]] = typer.Option(None, "--merge", metavar="JSON", help=MERGE_HELP),
        sizes: Optional[str] = typer.Option(None, metavar="SIZE,...", help=SIZES_HELP),
        variants: Optional[str] = typer.Option(None, metavar="VARIANT,...", help=VARIANTS_HELP),
        data: Optional[str] = typer.Option(None, metavar="PATH", help=DATA_HELP),
    ) -> None:
        """Benchmark the fused DAR router and what DAR costs against the residual baseline (JSON + Markdown).

        Split over two GPUs of one host, at the same time: CUDA_VISIBLE_DEVICES=0 dartool bench --parts
        check,paired --paired-rounds 6, and CUDA_VISIBLE_DEVICES=1 dartool bench --parts
        router,eager,compiled,sampling; then join their results with dartool bench --merge A.json --merge B.json.
        A full (not --quick) run's compiled rows take longest: give each size and batch a GPU of its own, e.g.
        --parts compiled,graphs --sizes B, --parts compiled,graphs --sizes XL --xl-batch 64 and --parts
        compiled,graphs --sizes XL --xl-batch 32."""
        try:
            res = bench_or_merge(out, merge, quick=quick, compile=compile, compile_budget_s=compile_budget,
                                 sweep=sweep, check=check, train=train, sampling=sampling, router=router,
                                 xl_batch=xl_batch or None, time_budget_s=time_budget, paired_rounds=paired_rounds,
                                 resume=resume, parts=parts, sizes=sizes, variants=variants, data=data,
                                 paired_mode=paired_mode)
        except BenchError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2)
        if not res.get("check", {}).get("ok", True):
            raise typer.Exit(1)
except ImportError:  # pragma: no cover
    pass


if __name__ == "__main__":
    sys.exit(main())
