#!/usr/bin/env python3
"""Is an eager training step bound by the GPU or by the host? Per model instance: the step as ``dartool bench``
times it (steps queued back to back, CUDA events), the GPU's busy time per step (the profiler's device time:
kernels, copies, memsets), their difference (time the GPU waited for the host), and the number of synchronizing
calls in one step (``torch.cuda.set_sync_debug_mode``); while timed, also the Triton variants compiled, the
caching allocator's driver calls and Python's GC runs per step. Several instances, before and after other
models ran in the same process (eager SiT-XL/2 b64 static c4 read 168 ms in some runs and 176-227 ms in others on
one H100, session 15). At batch 1 the GPU's work is small and the step time is the host's.

    PYTHONPATH=$PWD python3 benchmarks/step_host.py --out /tmp/host
    PYTHONPATH=$PWD python3 benchmarks/step_host.py --batch 1 --others none --cprofile --out /tmp/host1

Needs CUDA. Writes step_host-CARD-DATE.json.
"""
import argparse
import gc
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def jit_variants() -> int:
    """Compiled variants held by dartool's Triton kernels (all devices): a count that grows during timed steps
    means kernels were specialised (and compiled or loaded from Triton's disk cache) while being timed."""
    from dartool.kernels import prefix_triton, router_triton

    n = 0
    for mod in (router_triton, prefix_triton):
        for obj in vars(mod).values():
            for cache in getattr(obj, "device_caches", {}).values():
                n += len(cache[0]) if isinstance(cache, tuple) else len(cache)
    return n


def measure(step, steps: int) -> dict:
    import torch

    from dartool import bench

    for i in range(3):
        step(i)
    torch.cuda.synchronize()
    jit0 = jit_variants()
    mem0 = torch.cuda.memory_stats()
    gc0 = [g["collections"] for g in gc.get_stats()]
    queued = bench._queued_step_ms(step, steps)
    gcs = [(g["collections"] - c) / steps for g, c in zip(gc.get_stats(), gc0)]   # Python GC runs per step, per generation
    jit1 = jit_variants()
    mem1 = torch.cuda.memory_stats()
    # the caching allocator's calls into the driver while timed (cudaFree synchronizes the device; a retry frees
    # cached blocks first): per step
    alloc = {k: (mem1.get(k, 0) - mem0.get(k, 0)) / steps
             for k in ("num_device_alloc", "num_device_free", "num_alloc_retries", "num_sync_all_streams")}
    # the GPU's busy time per step: the profiler's device time (kernels, copies, memsets) summed over a few steps
    from torch.profiler import ProfilerActivity, profile

    n_prof = 3
    from torch.autograd import DeviceType

    try:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for i in range(n_prof):
                step(i)
            torch.cuda.synchronize()
        busy_us = sum(e.time_range.elapsed_us() for e in prof.events() if e.device_type == DeviceType.CUDA)
    except Exception as e:                              # e.g. a profiler that cannot trace CUDA-graph replays
        print(f"profiler failed ({type(e).__name__}: {e}); GPU busy time unknown", flush=True)
        busy_us = float("nan")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step(0)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    syncs = [str(x.message).splitlines()[0][:120] for x in w if "synchroniz" in str(x.message).lower()]
    q = queued[len(queued) // 2]
    busy = busy_us / 1e3 / n_prof
    return dict(queued_ms=q, queued_sorted_ms=queued, jit_new_in_timed=jit1 - jit0, jit_variants=jit1,
                allocator_per_step=alloc, gc_per_step=gcs,
                gpu_busy_ms=busy, gpu_idle_ms=q - busy, syncs=len(syncs), sync_examples=sorted(set(syncs))[:5])


def host_profile(step, path: Path, steps: int = 3) -> dict:
    """cProfile of ``steps`` steps (host time; the GPU is behind whenever the host is the bottleneck): the top
    functions by own and by cumulative time to ``path``; returns the profiled host ms per step."""
    import cProfile
    import io
    import pstats

    import torch

    torch.cuda.synchronize()
    pr = cProfile.Profile()
    t0 = time.perf_counter()
    pr.enable()
    for i in range(steps):
        step(i)
    pr.disable()
    host = 1e3 * (time.perf_counter() - t0) / steps
    torch.cuda.synchronize()
    buf = io.StringIO()
    st = pstats.Stats(pr, stream=buf)
    st.sort_stats("tottime").print_stats(45)
    st.sort_stats("cumtime").print_stats(35)
    path.write_text(f"host ms per step under cProfile: {host:.1f}\n" + buf.getvalue())
    return dict(host_ms_profiled=host, file=path.name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="XL")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--query", default="static")
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--instances", type=int, default=2, help="model instances per phase")
    ap.add_argument("--others", default="B:256", help="SIZE:BATCH of models run in between, or 'none'")
    ap.add_argument("--cprofile", action="store_true", help="also profile 3 steps of each model on the host "
                    "(cProfile; the top functions go to cprofile-MODEL-N.txt under --out)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--compiled", action="store_true", help="torch.compile the models (whole model, as the bench)")
    ap.add_argument("--compile-mode", default="full", help="dartool.models.compiling mode with --compiled "
                    "(full, or cudagraphs: CUDA graphs, no host work per kernel)")
    ap.add_argument("--query-also", default=None, help="a second DAR query type to run after --query's instances")
    ap.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after building each model (Python's "
                    "collector then skips every object that existed before the steps)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)

    import torch

    from dartool import bench

    if not torch.cuda.is_available():
        print("step_host.py needs CUDA", file=sys.stderr)
        return 2
    rows = []
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    def run(label: str, routing: str, query: str, chunk: int, size: str, batch: int) -> None:
        bench._cleanup()
        model, cfg = bench._build(size, routing, query, chunk, "cuda")
        step, opt = bench._train_step(model, cfg, batch, a.compiled, compile_mode=a.compile_mode)
        if a.gc_freeze:
            gc.collect()
            gc.freeze()
        r = dict(phase=label, model=f"SiT-{size}/2", batch=batch, routing=routing, query=query, chunk=chunk,
                 compiled=a.compiled, compile_mode=a.compile_mode if a.compiled else None,
                 **measure(step, a.steps))
        if a.cprofile:
            r["cprofile"] = host_profile(step, out / f"cprofile-{size}-{routing}-{query}-{len(rows)}.txt")
        del model, opt, step
        if a.gc_freeze:
            gc.unfreeze()
        bench._cleanup()
        rows.append(r)
        print(f"{label:14s} {a.compile_mode + ' ' if a.compiled else ''}{r['model']} b{batch} {routing:8s} {query if routing == 'dar' else '':8s} "
              f"step {r['queued_ms']:7.1f}  GPU busy {r['gpu_busy_ms']:7.1f}  GPU idle {r['gpu_idle_ms']:6.1f} ms"
              f"  syncs/step {r['syncs']}  steps {min(r['queued_sorted_ms']):.0f}-{max(r['queued_sorted_ms']):.0f}"
              f"  Triton variants {r['jit_variants']} (+{r['jit_new_in_timed']} while timed)"
              f"  driver allocs/frees/retries per step {r['allocator_per_step']['num_device_alloc']:.1f}/"
              f"{r['allocator_per_step']['num_device_free']:.1f}/{r['allocator_per_step']['num_alloc_retries']:.1f}"
              f"  GC runs per step (gen 0/1/2) {'/'.join(f'{x:.1f}' for x in r['gc_per_step'])}"
              + (f"  e.g. {r['sync_examples'][0]}" if r['syncs'] else "")
              + (f"  host under cProfile {r['cprofile']['host_ms_profiled']:.1f} ms" if "cprofile" in r else ""),
              flush=True)

    run("alone", "residual", "static", 4, a.size, a.batch)
    for _ in range(a.instances):
        run("alone", "dar", a.query, a.chunk, a.size, a.batch)
    if a.query_also:
        run("alone", "dar", a.query_also, a.chunk, a.size, a.batch)
    if a.others != "none":
        osize, obatch = a.others.split(":")
        for routing, query in (("residual", "static"), ("dar", "static"), ("dar", "dynamic")):
            run("other", routing, query, 4, osize, int(obatch))
        for _ in range(a.instances):
            run("after others", "dar", a.query, a.chunk, a.size, a.batch)
        run("after others", "residual", "static", 4, a.size, a.batch)
    card = torch.cuda.get_device_name().replace(" ", "-")
    f = out / f"step_host-{card}-{time.strftime('%Y%m%d-%H%M')}.json"
    f.write_text(json.dumps(dict(env=bench.env_info(), rows=rows), indent=1))
    print(f"wrote {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
