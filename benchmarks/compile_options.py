#!/usr/bin/env python3
"""Compiled training steps of DAR variants under several Inductor option sets, each against the default-compiled
residual of the same size in the same process: step time and peak memory (``dartool.bench.train_step_bench``).

    PYTHONPATH=$PWD python3 benchmarks/compile_options.py --size B --batch 256 \\
        --variant static:1 --variant static:1:realize_acc_reads_threshold=2 --out /tmp/copts

A variant is QUERY:CHUNK[:KEY=VALUE[,KEY=VALUE]] (Inductor config keys, ints), optionally with
``group=N`` (dispatch.SHARED_PREFIX_GROUP, routers per shared prefix pass), ``regions=1`` (one graph per block) or
``blocks=1`` (the blocks' attention and MLP compiled only): ``dartool.models.compiling``'s modes, or ``accum=0``
(no in-graph gradient accumulation, ``dartool.kernels.compiled_slots``; default on), or ``accmin=N`` /
``accpend=N`` (its thresholds, ``compiled_slots.MIN_READERS`` / ``MIN_PENDING``). Needs CUDA.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_variant(spec: str) -> tuple[str, int, dict, "int | None", str, bool, "int | None", "int | None"]:
    """QUERY:CHUNK[:K=V,...] -> (query, chunk, inductor options, prefix group or None, compile mode, in-graph
    accumulation, its reader threshold or None, its pending-gradient threshold or None)."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[1].isdigit():
        raise ValueError(f"--variant {spec!r}: write QUERY:CHUNK[:KEY=VALUE,...]")
    opts: dict = {}
    for kv in (parts[2].split(",") if len(parts) == 3 and parts[2] else []):
        k, eq, v = kv.partition("=")
        if not eq:
            raise ValueError(f"--variant {spec!r}: option {kv!r} is not KEY=VALUE")
        opts[k] = int(v)
    group = opts.pop("group", None)
    regions, blocks, accum = opts.pop("regions", 0), opts.pop("blocks", 0), bool(opts.pop("accum", 1))
    accmin, accpend = opts.pop("accmin", None), opts.pop("accpend", None)
    for name, v in (("accmin", accmin), ("accpend", accpend)):
        if v is not None and v < 1:
            raise ValueError(f"--variant {spec!r}: {name} must be >= 1")
    if regions and blocks:
        raise ValueError(f"--variant {spec!r}: regions=1 or blocks=1, not both")
    return (parts[0], int(parts[1]), opts, group, "regions" if regions else "blocks" if blocks else "full", accum,
            accmin, accpend)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="B")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--variant", action="append", required=True, help="QUERY:CHUNK[:KEY=VALUE,...] (repeatable)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--out", default=None, help="a folder for compile_options-SIZE-DATE.json")
    a = ap.parse_args(argv)
    try:
        variants = [parse_variant(v) for v in a.variant]
    except ValueError as e:
        ap.error(str(e))
    import torch

    from dartool import bench
    from dartool.kernels import compiled_slots, dispatch
    from dartool.models import compiling

    if not torch.cuda.is_available():
        print("compile_options.py needs CUDA", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = True
    env = bench.env_info()
    rows = bench.train_step_bench(a.size, a.batch, [("residual", "static", 4, True)], compiled=True, steps=a.steps)
    base = rows[0]
    old_group = dispatch.SHARED_PREFIX_GROUP
    old_accum, old_min, old_pend = compiled_slots.ENABLED, compiled_slots.MIN_READERS, compiled_slots.MIN_PENDING
    for query, chunk, opts, group, mode, accum, accmin, accpend in variants:
        compiling.OVERRIDE = opts
        dispatch.SHARED_PREFIX_GROUP = old_group if group is None else group
        compiled_slots.set_enabled(accum)
        compiled_slots.set_min_readers(old_min if accmin is None else accmin)
        compiled_slots.set_min_pending(old_pend if accpend is None else accpend)
        compiled_slots.COUNTS.update(ops=0, adds=0)
        try:
            (r,) = bench.train_step_bench(a.size, a.batch, [("dar", query, chunk, True)], compiled=True,
                                          steps=a.steps, compile_mode=mode)
        finally:
            compiling.OVERRIDE, dispatch.SHARED_PREFIX_GROUP = None, old_group
            compiled_slots.set_enabled(old_accum)
            compiled_slots.set_min_readers(old_min)
            compiled_slots.set_min_pending(old_pend)
        r["accum"], r["accum_min"] = accum, old_min if accmin is None else accmin
        r["accum_pending"] = old_pend if accpend is None else accpend
        r["accum_adds"] = dict(compiled_slots.COUNTS)     # calls of the *_into ops and the gradients they added
        r["inductor"], r["prefix_group"] = opts, dispatch.SHARED_PREFIX_GROUP if group is None else group
        r["compile_mode"] = mode
        if "step_ms" in r and "step_ms" in base:
            r["time_ratio"], r["mem_ratio"] = r["step_ms"] / base["step_ms"], r["peak_gb"] / base["peak_gb"]
        rows.append(r)
    print(f"\n{env.get('card')} {env['date']} commit {env['commit']}: SiT-{a.size}/2 b{a.batch} compiled, "
          f"against the residual {base.get('step_ms', float('nan')):.1f} ms {base.get('peak_gb', float('nan')):.1f} GB")
    for r in rows[1:]:
        print(f"  {r['variant']:16s} {r['compile_mode']:6s} accum {int(r['accum'])} (min {r['accum_min']}, "
              f"{r['accum_adds']['adds']} adds) group {r['prefix_group']} "
              f"{json.dumps(r['inductor']):40s} "
              + (f"{r['step_ms']:7.1f} ms x{r['time_ratio']:.3f}  {r['peak_gb']:6.1f} GB x{r['mem_ratio']:.3f}"
                 if "time_ratio" in r else str(r.get("error"))))
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        p = out / f"compile_options-{a.size}-{time.strftime('%Y%m%d-%H%M%S')}.json"
        p.write_text(json.dumps(dict(env=env, rows=rows), indent=1, default=str))
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
