#!/usr/bin/env bash
# Session 5, call 5 (two GPUs of one host, <= 6.5 min): the final code, with the LayerNorm + modulate fused in.
# GPU 0: CUDA tests (float64 correctness, incl. the ln-fused check), then dartool bench --quick --no-check
#        --no-compile (router vs floor, eager steps, sampling).
# GPU 1: compiled steps: SiT-B/2 b256 residual / static c4 (LN fused) / dynamic c4; SiT-XL/2 b64 residual /
#        static c4 (LN separate: the default at D >= 1024 under compile) / static c4 with DARTOOL_FUSE_LN_WIDE
#        (LN fused anyway; kernel registers and spills printed).
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT/bench
T0=$(date +%s)
(
  export CUDA_VISIBLE_DEVICES=1
  timeout 330 python3 - <<'PY' > $OUT/compiled.txt 2>&1
import json, os, time, torch
from dartool import bench
from dartool.kernels import dispatch, router_triton as rt
torch.backends.cuda.matmul.allow_tf32 = True
bw = bench.copy_bandwidth()
rows = []
dead = time.time() + 315
plan = [("B", 256, "residual", "static", False), ("B", 256, "dar", "static", False), ("B", 256, "dar", "dynamic", False),
        ("XL", 64, "residual", "static", False), ("XL", 64, "dar", "static", False), ("XL", 64, "dar", "static", True)]
for size, batch, routing, query, wide in plan:
    dispatch.FUSE_LN_WIDE = wide
    r = bench.train_step_bench(size, batch, [(routing, query, 4, True)], compiled=True, steps=8, deadline=dead,
                               compile_est_s=35 if size == "B" else 60)
    for x in r:
        x["fuse_ln"] = dispatch.FUSE_LN and query != "dynamic" and routing == "dar" and (size == "B" or wide)
        if routing == "dar" and query == "static":
            x["variant"] += " (LN fused)" if x["fuse_ln"] else " (LN separate)"
        if wide:
            x["kernels"] = rt.kernel_resources()
            print("kernel resources, LN fused at D = 1152:", x["kernels"])
    rows += r
    bench._ratios(rows); bench._floors(rows, bw["bytes_per_s"])
    json.dump(dict(env=bench.env_info(), copy=bw, rows=rows), open(os.environ["OUT"] + "/compiled.json", "w"), indent=1, default=str)
for r in rows:
    print(r.get("model"), r.get("variant"), {k: round(r[k], 3) for k in ("step_ms", "peak_gb", "time_ratio", "mem_ratio",
          "router_floor_ms", "floor_ratio", "first_step_s") if isinstance(r.get(k), float)}, r.get("error", r.get("skipped", "")))
PY
) &
{
export CUDA_VISIBLE_DEVICES=0
echo "== CUDA tests (GPU 0)"
timeout 170 python3 -m pytest -p no:cacheprovider tests/test_router_kernel.py tests/test_probe.py -k "cuda" -rs 2>&1 | grep -E "passed|failed|error|FAIL|SKIP" | tail -8
echo "after $(( $(date +%s) - T0 )) s"
echo "== dartool bench --quick --no-check --no-compile (GPU 0)"
timeout 170 python3 -m dartool bench --quick --no-check --no-compile --out $OUT/bench --time-budget 160 2>&1 | grep -v "^\s*$" | tail -28
echo "done after $(( $(date +%s) - T0 )) s"
} 2>&1 | tee $OUT/log.txt
wait
grep -E "^SiT|Error|error|kernel resources" $OUT/compiled.txt | tail -9
ls -R $OUT
