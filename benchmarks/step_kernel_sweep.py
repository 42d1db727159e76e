#!/usr/bin/env python3
"""The router and shared-prefix kernels' launch configurations, timed inside a training step: GPU time per kernel
kind over one eager bf16 SiT step with DAR, one row per configuration, all in one process on one card.

    PYTHONPATH=$PWD python3 benchmarks/step_kernel_sweep.py --size XL --batch 32 --json /tmp/sweep.json
    PYTHONPATH=$PWD python3 benchmarks/step_kernel_sweep.py --size B --batch 256 --variant "bwd.rows=4" \\
        --variant "bwd.pipe=1 bwd.unroll=2 bwd.prefetch=1"

Why in a step: the per-shape configurations (``router_triton.fwd_config`` / ``bwd_config``,
``prefix_triton.prefix_config`` / ``grad_config``) were chosen on the kernels alone at source counts of an
unshared model (N = 6 / 9 / 17 / 57) and at SiT-XL/2 b64 / b128, while a c4 model with shared prefixes runs
routers of 1-4 sources (a partial plus up to three raw outputs) and, at 32 images per GPU, half the rows. The
compiled step's profile (``step_profile.py --compiled``, session 22) has the routers + prefix passes at 30-34 % of
their as-built byte floor. Kernel time does not depend on how the step is driven, so the step here is eager and
host time is ignored: each row is the summed device time of the kernels of one kind, median over ``--steps``
profiled steps. Source taps are off unless ``--taps``: every backward launch writes fresh gradients, as the compiled
step's do where ``compiled_slots`` does not accumulate (static c4, SiT-B/2 dynamic c4). Where it does (S = 1,
SiT-XL/2 dynamic c4) and in the eager default the launches add into running sums (about 40 % more bytes: session
28 found session 27's "compiled is 28 % slower" to be exactly that): pass ``--taps`` to time those.

A variant is a space-separated list of ``KERNEL.KEY=INT`` settings over the per-shape default at N = 9 of the
model's width (applied to every router of the step): ``fwd.`` / ``bwd.`` (the router kernels: ``router_triton``'s
configuration keys; ``pipe`` > 1 also sets unroll 1, prefetch 0 unless given), ``pfwd.`` / ``pbwd.``
(``prefix_config``'s keys, forward / backward pass 1 or one-pass), ``pgrad.`` (``grad_config``'s keys, the two-pass
backward's pass 2), ``rt.few`` / ``rt.rpipe`` / ``rt.rslot`` (``router_triton.FEW_SOURCES``, the per-shape rule's
source count / ``ROW_PIPE``, the row-pipelined few-source backward's depth / ``ROW_SLOTS``, its partials in slots;
``rt.dynrpipe``: ``DYN_ROW_PIPE_N``, dynamic routers of at most this many sources row-pipelined too; with ``fwd.`` /
``bwd.`` settings the per-shape choice is off), ``rt.hmax`` / ``rt.prh`` (``RECOMPUTE_H_MAX_N``:
LN-fused routers of at most this many sources recompute h in the backward, over the per-width rule
``recompute_h_max`` / ``RECOMPUTE_H_PREFIX``: routers over a shared prefix do so too, 0 or 1), ``rt.lean``
(``LEAN``, the backward's registers held across its row loop, a bit mask), ``rt.maxnreg`` (``MAXNREG``, the
backward's register cap). Each row also gives the step's peak memory (GB). Without ``--variant`` a built-in grid for
the model's width runs; ``--json`` is rewritten after every row. ``--by-launch`` also splits the router kernels'
time by what each launch reads: every ``_router_fwd_kernel`` / ``_router_bwd_kernel`` launch runs inside a
profiler range named for its source count and layout (``launch_label``: ``fwd N1 prefix`` is the first router of a
shared chunk, which reads only its partial; ``noh``: the backward recomputes h), printed per variant and kept in the
JSON (``by_launch``: device ms per step and launches per step), with the ranges' sum against the router kinds' time
as a check that the profiler put every kernel in its range (first run in session 26 on an H100: the sums agreed
within 0.1 %). ``--ncu K`` only runs K steps, for Nsight Compute (``reports/jobs/next_s26_ncu.sh``). Needs CUDA."""
import argparse
import contextlib
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KINDS = (("router fwd", "_router_fwd_kernel"), ("router bwd", "_router_bwd_kernel"), ("qg finish", "_qg_finish"),
         ("prefix fwd", "_prefix_fwd_kernel"), ("prefix coef", "_prefix_coef_kernel"),
         ("prefix grad", "_prefix_grad_kernel"), ("prefix bwd", "_prefix_bwd_kernel"))

GRID_WIDE = [  # D >= 1024 (SiT-XL/2): the choice at N = 9 rows=8, one warp, pipe 4, part_slot 1
    "", "bwd.pipe=1", "bwd.pipe=2", "bwd.pipe=3", "bwd.pipe=1 bwd.unroll=2 bwd.prefetch=1",
    "bwd.rows=2", "bwd.rows=4", "bwd.rows=16", "bwd.part_slot=0", "bwd.num_warps=2",
    "fwd.pipe=1", "fwd.pipe=2", "fwd.pipe=3", "fwd.num_warps=2",
    "pfwd.rows=4", "pfwd.rows=16", "pfwd.group=4", "pfwd.group=4 pfwd.num_warps=2", "pfwd.pipe=2",
    "pbwd.rows=2", "pbwd.rows=8", "pbwd.pipe=2", "pgrad.rows=8", "pgrad.rows=32", "pgrad.num_warps=2",
    "pgrad.pipe=2",
]
GRID_NARROW = [  # D < 1024 (SiT-B/2): per-shape default rows=8, one warp, unroll 2 + prefetch, part_slot 0
    "", "bwd.pipe=3", "bwd.pipe=4", "bwd.unroll=1 bwd.prefetch=0", "bwd.rows=2", "bwd.rows=4", "bwd.rows=16",
    "bwd.part_slot=1", "bwd.num_warps=2",
    "fwd.pipe=1", "fwd.pipe=2", "fwd.pipe=3", "fwd.num_warps=2",
    "pfwd.rows=4", "pfwd.rows=16", "pfwd.num_warps=2", "pfwd.pipe=1",
    "pbwd.rows=4", "pbwd.rows=16", "pbwd.num_warps=1", "pbwd.num_warps=4", "pbwd.passes=2",
]


# rt.KEY: the router_triton module setting it sets
RT_KEYS = {"few": "FEW_SOURCES", "rpipe": "ROW_PIPE", "rslot": "ROW_SLOTS", "dynrpipe": "DYN_ROW_PIPE_N",
           "hmax": "RECOMPUTE_H_MAX_N", "prh": "RECOMPUTE_H_PREFIX", "lean": "LEAN", "maxnreg": "MAXNREG"}


def parse_variant(text: str) -> dict:
    """'bwd.rows=4 pfwd.group=2' -> {'bwd': {'rows': 4}, 'pfwd': {'group': 2}} (clear errors for typos)."""
    out: dict = {}
    for item in text.split():
        key, sep, val = item.partition("=")
        kern, dot, k = key.partition(".")
        if not (sep and dot) or kern not in ("fwd", "bwd", "pfwd", "pbwd", "pgrad", "rt"):
            raise SystemExit(f"variant setting {item!r}: write KERNEL.KEY=INT with KERNEL one of fwd, bwd, pfwd, "
                             "pbwd, pgrad, rt")
        if kern == "rt" and k not in RT_KEYS:
            raise SystemExit(f"variant setting {item!r}: the rt. settings are {', '.join('rt.' + x for x in RT_KEYS)}")
        out.setdefault(kern, {})[k] = int(val)
    return out


def launch_label(kind: str, P: dict, n_index: int) -> str:
    """A router kernel launch's profiler range: kind (fwd / bwd), its source count N (a shared prefix's partial
    counted as one), ``prefix`` where source 0 is a partial, ``noh`` where the backward recomputes h."""
    meta = P["meta"]
    return (f"{kind} N{int(P['args'][n_index])}" + (" prefix" if meta.get("PREFIX") else "")
            + (" noh" if meta.get("RECOMPUTE_H") else ""))


@contextlib.contextmanager
def launch_ranges(rt):
    """Inside the block every router kernel launch of ``rt`` (router_triton) runs in a
    ``torch.profiler.record_function`` range named 'dar ' + :func:`launch_label`; yields the launches per label
    (counted as they happen). The launchers are put back on leaving, whatever happened."""
    from torch.profiler import record_function

    old = {"_fwd_launch": (rt._fwd_launch, "fwd", 3), "_bwd_launch": (rt._bwd_launch, "bwd", 6)}
    counts: dict = {}

    def ranged(fn, kind, n_index):
        def launch(P):
            label = launch_label(kind, P, n_index)
            counts[label] = counts.get(label, 0) + 1
            with record_function("dar " + label):
                return fn(P)
        return launch

    try:
        for name, (fn, kind, n_index) in old.items():
            setattr(rt, name, ranged(fn, kind, n_index))
        yield counts
    finally:
        for name, (fn, _, _) in old.items():
            setattr(rt, name, fn)


def launch_times(events) -> dict:
    """Device ms of the kernels inside each 'dar ...' range (label -> ms), from the profiler's key averages. A range
    may come twice: the host-side range (its device time is its kernels') and, in newer PyTorch, a device-side
    annotation spanning them; the host side counts where it has device time, else the annotation (never both)."""
    host: dict = {}
    dev: dict = {}
    for e in events:
        if e.key.startswith("dar "):
            on_device = getattr(getattr(e, "device_type", None), "name", "CPU") != "CPU"
            into = dev if on_device else host
            into[e.key[4:]] = into.get(e.key[4:], 0.0) + e.device_time_total / 1e3
    return {k: host.get(k) or dev.get(k, 0.0) for k in set(host) | set(dev)}


def kernel_kinds(events) -> dict:
    """Device ms per kind of DAR kernel (KINDS) and the step's total over all kernels."""
    out = {k: 0.0 for k, _ in KINDS}
    total = 0.0
    for e in events:
        ms = e.self_device_time_total / 1e3
        total += ms
        kind = next((k for k, name in KINDS if name in e.key), None)
        if kind:
            out[kind] += ms
    out["routers + prefix"] = sum(out[k] for k, _ in KINDS)
    out["all kernels"] = total
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="XL")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--query", default="static", choices=["static", "static_t", "dynamic"])
    ap.add_argument("--variant", action="append", default=None,
                    help="settings over the per-shape default, e.g. 'bwd.rows=4 bwd.pipe=1' (repeatable; "
                         "'' is the default itself; without any, the built-in grid for the width)")
    ap.add_argument("--steps", type=int, default=3, help="profiled steps per variant (median)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--by-launch", action="store_true",
                    help="also split the router kernels' time by source count and layout (launch_label)")
    ap.add_argument("--taps", action="store_true",
                    help="tapped sources (the eager default): shared sources' gradients accumulate in the kernels")
    ap.add_argument("--ncu", type=int, default=0, metavar="STEPS",
                    help="only run this many steps at the default configuration, no profiler, no timing: for Nsight "
                         "Compute to pick launches from (ncu -k regex:_router_bwd_kernel --launch-skip ...)")
    a = ap.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile

    if not torch.cuda.is_available():
        raise SystemExit("step_kernel_sweep needs a CUDA device (it times Triton kernels)")
    from dartool.bench import _train_step
    from dartool.kernels import dispatch
    from dartool.kernels import prefix_triton as pt
    from dartool.kernels import router_triton as rt
    from dartool.models import SIZES, SiT, model_config

    D = SIZES[a.size][1]
    variants = a.variant if a.variant is not None else (GRID_WIDE if D >= 1024 else GRID_NARROW)
    dispatch.TAP_SOURCES = a.taps
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    cfg = model_config(a.size, 2, routing="dar", query=a.query, chunk_size=a.chunk)
    with torch.device("cuda"):
        model = SiT(cfg)
    train_step, _ = _train_step(model, cfg, a.batch, compiled=False)   # the bench's step, eager
    count = itertools.count()

    def step():
        train_step(next(count))

    if a.ncu:
        for _ in range(a.ncu):
            step()
        torch.cuda.synchronize()
        print(f"ran {a.ncu} steps (SiT-{a.size}/2 b{a.batch} DAR {a.query} c{a.chunk}) for ncu", flush=True)
        return 0
    dyn = a.query == "dynamic"
    base_fwd, base_bwd = rt.fwd_config(9, D), rt.bwd_config(9, D, dyn)   # the choice at unshared source counts
    rows = []
    print(f"SiT-{a.size}/2 b{a.batch} DAR {a.query} c{a.chunk}, {torch.cuda.get_device_name()}, source taps "
          f"{'on' if a.taps else 'off'}: device ms per step")
    head = (f"{'variant':42s}" + "".join(f"{k:>12s}" for k, _ in KINDS) + f"{'routers+pfx':>12s}{'all':>9s}"
            + f"{'peak GB':>9s}")
    print(head)

    def save() -> None:   # after every row, atomically: a job cut by its time limit keeps the rows it timed
        if not a.json:
            return
        a.json.parent.mkdir(parents=True, exist_ok=True)
        meta = dict(size=a.size, batch=a.batch, chunk=a.chunk, query=a.query, taps=a.taps,
                    card=torch.cuda.get_device_name(),
                    date=time.strftime("%Y-%m-%d %H:%M"), commit=os.environ.get("DARTOOL_COMMIT", "unknown"),
                    base_fwd=base_fwd, base_bwd=base_bwd, prefix_fwd=pt.prefix_config(D, False),
                    prefix_bwd=pt.prefix_config(D, True), prefix_grad=pt.grad_config(D))
        tmp = a.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
        tmp.replace(a.json)

    for text in variants:
        v = parse_variant(text)
        f, b = dict(base_fwd), dict(base_bwd)
        for conf, key in ((f, "fwd"), (b, "bwd")):
            conf.update(v.get(key, {}))
            if v.get(key, {}).get("pipe", 1) > 1:
                conf.update({k: val for k, val in (("unroll", 1), ("prefetch", 0)) if k not in v[key]})
        old_rt = {name: getattr(rt, name) for name in RT_KEYS.values()}
        for k, val in v.get("rt", {}).items():
            setattr(rt, RT_KEYS[k], val)
        t0 = time.time()
        try:
            with rt.configs(fwd=f if "fwd" in v else None, bwd=b if "bwd" in v else None), \
                    pt.configured(fwd=v.get("pfwd", {}), bwd=v.get("pbwd", {}), grad=v.get("pgrad", {})):
                for _ in range(2):
                    step()
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                per, split, counts = [], [], {}
                acts = [ProfilerActivity.CUDA] + ([ProfilerActivity.CPU] if a.by_launch else [])
                for _ in range(a.steps):
                    with (launch_ranges(rt) if a.by_launch else contextlib.nullcontext({})) as counts, \
                            profile(activities=acts) as prof:
                        step()
                        torch.cuda.synchronize()
                    per.append(kernel_kinds(prof.key_averages()))
                    if a.by_launch:
                        split.append(launch_times(prof.key_averages()))
            row = {k: statistics.median(p[k] for p in per) for k in per[0]}
            row["peak GB"] = torch.cuda.max_memory_allocated() / 1e9
            if a.by_launch:
                labels = sorted(set().union(*split), key=lambda x: (x.split()[0], int(x.split()[1][1:]), x))
                row["by_launch"] = {lb: dict(ms=statistics.median(sp.get(lb, 0.0) for sp in split),
                                             launches=counts.get(lb, 0)) for lb in labels}
            err = ""
        except Exception as e:  # a configuration the kernels cannot compile (resources): recorded, sweep goes on
            row, err = {}, f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
            torch.cuda.synchronize()
        finally:
            for name, val in old_rt.items():
                setattr(rt, name, val)
        row.update(variant=text or "default", error=err, wall_s=round(time.time() - t0, 1))
        rows.append(row)
        if err:
            print(f"{row['variant']:42s} {err}")
        else:
            print(f"{row['variant']:42s}" + "".join(f"{row[k]:12.3f}" for k, _ in KINDS)
                  + f"{row['routers + prefix']:12.3f}{row['all kernels']:9.1f}{row['peak GB']:9.2f}", flush=True)
            for lb, v in row.get("by_launch", {}).items():
                print(f"    {lb:24s} {v['ms']:8.3f} ms / step  {v['launches']:3d} launches  "
                      f"{1e3 * v['ms'] / max(v['launches'], 1):7.1f} us each", flush=True)
            if "by_launch" in row:   # the ranges must account for the router kinds' time (else: attribution failed)
                print(f"    {'sum of the ranges':24s} {sum(v['ms'] for v in row['by_launch'].values()):8.3f} ms / "
                      f"step against router fwd + bwd {row['router fwd'] + row['router bwd']:.3f}", flush=True)
        save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
