#!/usr/bin/env bash
# Session 6, call 2 (one GPU, <= 9.5 min): CUDA tests of the LayerNorm fused into dynamic routers and the head,
# then compiled rows, same run, same card (args: model size, batch):
#   residual / static c4 (LN fused, ln_slot) / dynamic c4 LN fused / dynamic c4 LN separate /
#   dynamic c4 LN fused with q saved instead of recomputed (DARTOOL_RECOMPUTE_DYNAMIC_QUERY=0: time vs memory)
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
SIZE=${1:-B}; BATCH=${2:-256}; TESTS=${3:-1}
T0=$(date +%s)
if [ "$TESTS" = 1 ]; then
echo "== CUDA tests"
timeout 170 python3 -m pytest -s -p no:cacheprovider tests/test_router_kernel.py tests/test_probe.py -k "cuda" -rs 2>&1 | grep -E "passed|failed|error|FAIL|ln-dyn|model-|compiled-|recompute" | tail -24
echo "after $(( $(date +%s) - T0 )) s"
fi
export ELAPSED=$(( $(date +%s) - T0 ))
timeout $(( ${BUDGET:-575} - ELAPSED )) python3 - $SIZE $BATCH <<'PY' 2>&1 | grep -vE "Warning|warn\(" | tail -40
import json, os, sys, time, torch
from dartool import bench
from dartool.kernels import dispatch, router_triton as rt
torch.backends.cuda.matmul.allow_tf32 = True
size, batch = sys.argv[1], int(sys.argv[2])
bw = bench.copy_bandwidth()
rows = []
dead = time.time() + float(os.environ.get("BUDGET", "575")) - 15 - float(os.environ["ELAPSED"])
plan = [("residual", "static", "fused", True), ("dar", "static", "fused", True), ("dar", "dynamic", "fused", True),
        ("dar", "dynamic", "separate", True), ("dar", "dynamic", "fused", False)]
for routing, query, ln, recompute in plan:
    dispatch.FUSE_LN = ln == "fused"
    rt.RECOMPUTE_DYNAMIC_QUERY = recompute
    r = bench.train_step_bench(size, batch, [(routing, query, 4, True)], compiled=True, steps=8, deadline=dead,
                               compile_est_s=35 if size == "B" else 60)
    for x in r:
        x["ln"], x["recompute_q"] = ln, recompute
        if routing == "dar":
            x["variant"] += f" LN {ln}" + ("" if recompute else " q saved")
            x["kernels"] = rt.kernel_resources()
    rows += r
    bench._ratios(rows); bench._floors(rows, bw["bytes_per_s"])
    json.dump(dict(env=bench.env_info(), copy=bw, rows=rows), open(os.environ["OUT"] + f"/dyn_{size}.json", "w"),
              indent=1, default=str)
    for x in r:
        print(x.get("model"), x.get("batch"), x.get("variant"), {k: round(x[k], 3) for k in ("step_ms", "peak_gb",
              "time_ratio", "mem_ratio", "floor_ratio") if isinstance(x.get(k), float)}, x.get("kernels", ""),
              x.get("error", x.get("skipped", "")), flush=True)
PY
echo "done after $(( $(date +%s) - T0 )) s"
