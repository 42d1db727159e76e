#!/usr/bin/env python3
"""Eager training steps with the offset tables' two miss paths (``dartool.kernels.tables``): the pinned ring
(``ARENA = True``, the default) against one pinned tensor and copy per miss (``ARENA = False``), before and after
other models ran in the same process (which is how ``dartool bench`` runs them: eager SiT-XL/2 static c4 read
205-227 ms after the SiT-B/2 rows on an H100, 168 ms on its own; H100, 2026-11-27, session 15).

    PYTHONPATH=$PWD python3 benchmarks/offset_tables.py --out /tmp/tables

Prints, per phase, ms per step (median of queued steps, ``dartool.bench.train_step_bench``) and the tables made and
missed per step, and writes offset_tables-CARD-DATE.json. Needs CUDA.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="XL")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--query", default="static")
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--others", default="B:256", help="SIZE:BATCH of the models run in between (residual, "
                    "static c4, dynamic c4, as the quick bench's eager rows)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)

    import torch

    from dartool import bench
    from dartool.kernels import tables

    if not torch.cuda.is_available():
        print("offset_tables.py needs CUDA", file=sys.stderr)
        return 2
    warmup = 3
    variant = ("dar", a.query, a.chunk, True)
    phases = []

    def phase(label: str, arena: bool) -> None:
        tables.ARENA = arena
        tables.STATS.update(calls=0, misses=0)
        (row,) = bench.train_step_bench(a.size, a.batch, [variant], compiled=False, steps=a.steps, warmup=warmup)
        n = warmup + a.steps          # steps run by train_step_bench after the first
        rec = dict(phase=label, arena=arena, step_ms=row.get("step_ms"), peak_gb=row.get("peak_gb"),
                   tables_per_step=tables.STATS["calls"] / n, misses_per_step=tables.STATS["misses"] / n,
                   error=row.get("error"))
        phases.append(rec)
        print(f"{label:34s} arena={'on ' if arena else 'off'} {rec['step_ms'] or float('nan'):7.1f} ms/step   "
              f"tables/step {rec['tables_per_step']:6.1f}  misses/step {rec['misses_per_step']:6.1f}", flush=True)

    (res,) = bench.train_step_bench(a.size, a.batch, [("residual", "static", 0, False)], compiled=False,
                                    steps=a.steps)
    print(f"SiT-{a.size}/2 b{a.batch} residual eager {res.get('step_ms', float('nan')):.1f} ms/step", flush=True)
    phase("alone", False)
    phase("alone", True)
    osize, obatch = a.others.split(":")
    tables.ARENA = False
    bench.train_step_bench(osize, int(obatch), [("residual", "static", 0, False), ("dar", "static", 4, True),
                                                ("dar", "dynamic", 4, True)], compiled=False, steps=a.steps)
    print(f"(ran SiT-{osize}/2 b{obatch} residual, static c4, dynamic c4)", flush=True)
    for arena in (False, True, False, True):
        phase(f"after SiT-{osize}/2", arena)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    card = torch.cuda.get_device_name().replace(" ", "-")
    f = out / f"offset_tables-{card}-{time.strftime('%Y%m%d-%H%M')}.json"
    f.write_text(json.dumps(dict(env=bench.env_info(), size=a.size, batch=a.batch, query=a.query, chunk=a.chunk,
                                 residual_ms=res.get("step_ms"), phases=phases), indent=1))
    print(f"wrote {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
