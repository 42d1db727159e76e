#!/usr/bin/env python3
"""What the fused routers' backward launches are given in an eager and in a torch.compile'd training step: per
launch its source count, the dtype / contiguity / 16-byte alignment of dy (or dh), h and the sources, whether h is
recomputed, the row pipeline (NC, RPIPE), in-kernel accumulation, and how many of its inputs the host side had to
copy first (``_aligned``: non-contiguous or misaligned tensors), with the launches that differ between the modes.

Why (session 27): at SiT-B/2 b256 dynamic c4 on an H200 the same backward kernels took 25.6 ms a step compiled and
19.9 ms eager, with the SM clock the same, and the compiled step had 26 device-to-device copies the eager one did
not show. On the CPU (Triton's interpreter, tiny model) the inputs were alike; this runs the real shapes on CUDA.
Found (session 28, ``--replays 5``): the launches differ only in ACCUM — under torch.compile 24 of 25 added into
running gradient sums in the kernel (``compiled_slots``), where the eager sweep's wrote fresh ones; the copies are
the finished sums leaving through ``dartool::grad_out``.

    PYTHONPATH=$PWD python3 benchmarks/launch_inputs.py --size B --batch 256 --query dynamic
    TRITON_INTERPRET=1 PYTHONPATH=$PWD python3 benchmarks/launch_inputs.py --size S --batch 2 --depth 4 \\
        --hidden 64 --input-size 8 --device cpu --modes eager      # a smoke run without a GPU
"""
import argparse
import contextlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def describe(t: torch.Tensor) -> str:
    """dtype, contiguity and 16-byte alignment of one tensor, e.g. 'bf16 c a' ('-' for empty)."""
    if t.numel() == 0:
        return "-"
    short = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}.get(t.dtype, str(t.dtype))
    return f"{short} {'c' if t.is_contiguous() else 'nc'} {'a' if t.data_ptr() % 16 == 0 else 'u'}"


def timed_launch(launch, P, replays: int) -> tuple:
    """(in-situ ms, replay ms): the launch's kernel time where the step put it, then the median of ``replays``
    launches of the same kernel on the same arguments right after (CUDA events; a synchronize before each). A
    replay re-adds into accumulating buffers and overwrites dq again: the step's numbers are wrong afterwards, so
    only a step that is thrown away may be timed."""
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(2 * (replays + 1))]
    torch.cuda.synchronize()
    ev[0].record()
    launch(P)
    ev[1].record()
    for k in range(replays):
        ev[2 * k + 2].record()
        launch(P)
        ev[2 * k + 3].record()
    torch.cuda.synchronize()
    times = [ev[2 * k].elapsed_time(ev[2 * k + 1]) for k in range(replays + 1)]
    rep = sorted(times[1:])
    return times[0], (rep[len(rep) // 2] if rep else float("nan"))


_Q_ARG, _DQ_ARG = 7, 14          # positions of q (qc) and dq (dq_rows) in _bwd_prepare's kernel arguments


def dq_over_q(P: dict) -> bool:
    """Whether a prepared launch writes dq over its (dynamic) q."""
    return bool(P["meta"]["DYNAMIC"]) and P["args"][_DQ_ARG].data_ptr() == P["args"][_Q_ARG].data_ptr()


def dq_swapped(P: dict) -> "dict | None":
    """A dynamic launch's arguments with dq the other way round: written over q (``dq_into_q``, the recompute
    path) where the step gave a fresh buffer, or into a fresh buffer where it was written over q; None for
    static launches. Used to time the same launch both ways (session 30: the recompute path's launches ran ~20 %
    slower at SiT-XL/2 b32 with every other input alike). Writing dq over a kept q spoils the step."""
    if P.get("mode") != 2:
        return None
    args = list(P["args"])
    q, dq = args[_Q_ARG], args[_DQ_ARG]
    if dq.data_ptr() == q.data_ptr():
        args[_DQ_ARG] = torch.empty_like(dq)
    elif q.shape == dq.shape and q.dtype == dq.dtype and q.is_contiguous():
        args[_DQ_ARG] = q
    else:
        return None
    return dict(P, args=tuple(args))


@contextlib.contextmanager
def recording(rt, replays: int = -1):
    """Inside the block every ``router_triton._bwd_prepare`` call appends one record (dict) to the yielded list;
    ``_aligned`` copies made during it are counted. ``replays`` >= 0 (CUDA): each record also gets the launch's
    in-situ and replayed kernel times (:func:`timed_launch`). The originals are put back on leaving."""
    records: list = []
    prep, aligned, launch = rt._bwd_prepare, rt._aligned, rt._bwd_launch
    copies = [0]

    def counting_aligned(x):
        y = aligned(x)
        copies[0] += y is not x          # _aligned returns its argument unless it had to copy it
        return y

    def spy(dh, sources, q, g, h, lse, eps, *args, **kw):
        copies[0] = 0
        P = prep(dh, sources, q, g, h, lse, eps, *args, **kw)
        m = P["meta"]
        records.append(dict(N=len(sources), dy=describe(dh), h=describe(h), q=describe(q),
                            sources=" | ".join(describe(s) for s in sources), recompute_h=bool(m["RECOMPUTE_H"]),
                            NC=int(m["NC"]), RPIPE=int(m["RPIPE"]), ACCUM=bool(m["ACCUM"]), ln=bool(m["LN_MOD"]),
                            dq_over_q=dq_over_q(P),
                            copies=copies[0], post=len(P["post"]), grid="x".join(map(str, P["grid"])),
                            cfg=" ".join(f"{k}={v}" for k, v in sorted(m.items()) if not isinstance(v, bool)),
                            src_span_mb=round((max(s.data_ptr() for s in sources) - min(s.data_ptr() for s in sources))
                                              / 2**20, 1)))
        return P

    def timing_launch(P):
        records[-1]["ms"], records[-1]["replay_ms"] = timed_launch(launch, P, replays)
        if (S := dq_swapped(P)) is not None and replays > 0:      # the same launch with dq the other way
            records[-1]["swapped_dq_replay_ms"] = timed_launch(launch, S, replays)[1]

    rt._bwd_prepare, rt._aligned = spy, counting_aligned
    if replays >= 0:
        rt._bwd_launch = timing_launch
    try:
        yield records
    finally:
        rt._bwd_prepare, rt._aligned, rt._bwd_launch = prep, aligned, launch


def run_mode(mode: str, a) -> list:
    from dartool.bench import _train_step
    from dartool.kernels import dispatch
    from dartool.kernels import router_triton as rt
    from dartool.models import SiT, model_config

    cfg = model_config(a.size, 2, routing="dar", query=a.query, chunk_size=a.chunk)
    over = {k: v for k, v in (("depth", a.depth), ("hidden_size", a.hidden), ("input_size", a.input_size)) if v}
    if a.hidden:
        over["num_heads"] = max(1, a.hidden // 16)
    if over:
        cfg = cfg.replace(**over)
    torch.manual_seed(0)
    model = SiT(cfg).to(a.device)
    dispatch.TAP_SOURCES = a.eager_taps and mode == "eager"   # off: every launch writes fresh gradients
    step, _ = _train_step(model, cfg, a.batch, compiled=mode == "compiled", device=a.device)
    cpu = a.device == "cpu"
    with dispatch.fused(True, allow_cpu=True) if cpu else contextlib.nullcontext():
        step(0)                       # warm-up (and compile)
        with recording(rt) as records:
            step(1)
        if a.replays >= 0 and not cpu:
            step(0)
            with recording(rt, a.replays) as timed:
                step(1)               # its numbers are spoilt by the replays: the last step of this model
            for r, t in zip(records, timed):
                r["ms"], r["replay_ms"] = round(t["ms"], 4), round(t["replay_ms"], 4)
                if "swapped_dq_replay_ms" in t:
                    r["swapped_dq_replay_ms"] = round(t["swapped_dq_replay_ms"], 4)
    return records


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="B")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--query", default="dynamic", choices=["static", "static_t", "dynamic"])
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--modes", default="eager,compiled", help="comma-separated: eager, compiled")
    ap.add_argument("--depth", type=int, default=0, help="override (tiny CPU runs)")
    ap.add_argument("--hidden", type=int, default=0, help="override (tiny CPU runs)")
    ap.add_argument("--input-size", type=int, default=0, help="override (tiny CPU runs)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--replays", type=int, default=-1,
                    help=">= 0 (CUDA): one more step times every backward launch in place and replayed this often")
    ap.add_argument("--eager-taps", action="store_true",
                    help="eager steps accumulate tapped sources' gradients in the kernel (the eager default); "
                         "without it every launch writes fresh gradients, as under torch.compile")
    a = ap.parse_args(argv)
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    if bad := sorted(set(modes) - {"eager", "compiled"}):
        ap.error(f"--modes: unknown {', '.join(bad)}; choose eager, compiled")
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: pass --device cpu with TRITON_INTERPRET=1 for a smoke run")
    out = {m: run_mode(m, a) for m in modes}
    keys = ("N", "dy", "h", "q", "dq_over_q", "recompute_h", "NC", "RPIPE", "ACCUM", "copies", "post", "src_span_mb",
            "sources")
    if a.replays >= 0:
        keys = ("ms", "replay_ms", "swapped_dq_replay_ms") + keys
    for m, recs in out.items():
        print(f"\n{m}: {len(recs)} backward launches, {sum(r['copies'] for r in recs)} host-side input copies, "
              f"{sum(r['post'] for r in recs)} gradients through a temporary")
        if a.replays >= 0 and recs and "ms" in recs[0]:
            print(f"  kernel time in the step {sum(r['ms'] for r in recs):.2f} ms, replayed at once "
                  f"{sum(r['replay_ms'] for r in recs):.2f} ms (CUDA events, synchronized around each launch)")
            sw = [r for r in recs if "swapped_dq_replay_ms" in r]
            if sw:
                n_over = sum(r["dq_over_q"] for r in sw)
                print(f"  {len(sw)} dynamic launches ({n_over} writing dq over q) replayed with dq the other way: "
                      f"{sum(r['swapped_dq_replay_ms'] for r in sw):.2f} ms against "
                      f"{sum(r['replay_ms'] for r in sw):.2f} ms as the step had them")
        print("  " + "  ".join(f"{k:>11s}" for k in keys[:-1]) + "  sources")
        for r in recs:
            print("  " + "  ".join(f"{str(r.get(k, '-')):>11s}" for k in keys[:-1]) + "  " + r["sources"])
    if len(out) == 2:
        e, c = out["eager"], out["compiled"]
        timing = ("ms", "replay_ms", "swapped_dq_replay_ms", "src_span_mb")
        same = lambda x, y: {k: v for k, v in x.items() if k not in timing} == \
            {k: v for k, v in y.items() if k not in timing}
        diff = [i for i, (x, y) in enumerate(zip(e, c)) if not same(x, y)]
        print(f"\nlaunches that differ between eager and compiled: {len(diff)} of {min(len(e), len(c))}"
              + (f" (counts differ: {len(e)} / {len(c)})" if len(e) != len(c) else ""))
        for i in diff[:20]:
            print(f"  #{i}: eager {e[i]}\n       compiled {c[i]}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
