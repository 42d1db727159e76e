"""Compiled training-step rows for one model size, same run, same card (session 6 GPU jobs).

    python3 reports/jobs/s6_rows.py SIZE BATCH NAME BUDGET_S VARIANT...

VARIANT = routing/query/q/h[/psN][/sqK][/v4N][/pN][/b.KEY=V...]: routing residual | dar, query static | dynamic, q = recompute | saved (dynamic
routers: DARTOOL_RECOMPUTE_DYNAMIC_QUERY), h = auto | all | none (DARTOOL_RECOMPUTE_H), ps = ps0 | ps1 (the
backward's part_slot; default: the code's), sqK = the last K dynamic routers save q (dispatch.SAVE_QUERY_LAST),
v4N = the backward's vec4 on / off (router_triton.VEC4), pN = both kernels' source loop pipelined N deep
(router_triton.PIPE), b.KEY=V = one backward launch-configuration key over the per-shape choice.
Writes $OUT/NAME.json.
"""
import json
import os
import sys
import time

import torch

from dartool import bench
from dartool.kernels import dispatch
from dartool.kernels import router_triton as rt

torch.backends.cuda.matmul.allow_tf32 = True
size, batch, name, budget = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
dead = time.time() + budget
bw = bench.copy_bandwidth()
rows = []
default_ps = rt.BWD_CONFIG.get("part_slot", 0)
default_sq = dispatch.SAVE_QUERY_LAST
default_v4 = rt.VEC4
default_pipe = rt.PIPE
bwd_config = rt.bwd_config
for spec in sys.argv[5:]:
    routing, query, qmode, rh, *extra = spec.split("/")
    ps = [x for x in extra if x.startswith("ps")]
    sq = [x for x in extra if x.startswith("sq")]
    v4 = [x for x in extra if x.startswith("v4")]
    pp = [x for x in extra if x.startswith("p") and x[1:].isdigit()]
    rt.PIPE = int(pp[0][1:]) if pp else default_pipe
    bov = {x[2:].split("=")[0]: int(x.split("=")[1]) for x in extra if x.startswith("b.")}
    rt.bwd_config = (lambda N, D, dynamic=False, _ov=bov: dict(bwd_config(N, D, dynamic), **_ov)) if bov else bwd_config
    rt.VEC4 = int(v4[0][2:]) if v4 else default_v4
    dispatch.SAVE_QUERY_LAST = int(sq[0][2:]) if sq else default_sq
    rt.RECOMPUTE_DYNAMIC_QUERY, rt.RECOMPUTE_H = qmode == "recompute", rh
    rt.BWD_CONFIG["part_slot"] = int(ps[0][2:]) if ps else default_ps
    r = bench.train_step_bench(size, batch, [(routing, query, 4, True)], compiled=True, steps=8, deadline=dead,
                               compile_est_s=30 if size == "B" else 60)
    for x in r:
        x["recompute_q"], x["recompute_h"], x["part_slot"] = qmode == "recompute", rh, rt.BWD_CONFIG["part_slot"]
        if routing == "dar":
            x["variant"] += (f" (h {rh}" + (f", q {qmode}" if query == "dynamic" else "")
                             + (f", q saved by the last {dispatch.SAVE_QUERY_LAST}" if dispatch.SAVE_QUERY_LAST else "")
                             + (f", vec4 {rt.VEC4}" if rt.VEC4 is not None else "")
                             + (f", pipe {rt.PIPE}" if rt.PIPE is not None else "")
                             + "".join(f", bwd {k} {v}" for k, v in bov.items()) + ")")
    rows += r
    bench._ratios(rows)
    bench._floors(rows, bw["bytes_per_s"])
    with open(os.path.join(os.environ["OUT"], f"{name}.json"), "w") as f:
        json.dump(dict(env=bench.env_info(), copy=bw, rows=rows), f, indent=1, default=str)
    for x in r:
        print(x.get("model"), x.get("batch"), x.get("variant"), {k: round(x[k], 3) for k in (
              "step_ms", "peak_gb", "time_ratio", "mem_ratio", "floor_ratio") if isinstance(x.get(k), float)},
              x.get("error", x.get("skipped", "")), flush=True)
