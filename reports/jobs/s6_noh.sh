#!/usr/bin/env bash
# Session 6, call 4 (one GPU, <= 9.5 min): h recomputed in the backward instead of kept (keep_h_for /
# DARTOOL_RECOMPUTE_H = auto | all | none). CUDA tests (ln_check's noh paths on CUDA), then compiled rows at
# SiT-B/2 b256 (or args: size batch), same run, same card:
#   residual / static c4 h: auto, none, all / dynamic c4 (q recomputed) h auto / dynamic c4 q saved, h all /
#   dynamic c4 q saved, h auto
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
SIZE=${1:-B}; BATCH=${2:-256}; TESTS=${3:-1}
T0=$(date +%s)
if [ "$TESTS" = 1 ]; then
echo "== CUDA tests"
timeout 180 python3 -m pytest -s -p no:cacheprovider tests/test_router_kernel.py tests/test_probe.py -k "cuda" -rs 2>&1 | grep -E "passed|failed|Error|FAIL|noh|model-|compiled-|recompute" | tail -30
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
plan = [("residual", "static", True, "auto"), ("dar", "static", True, "auto"), ("dar", "dynamic", False, "all"),
        ("dar", "dynamic", True, "auto"), ("dar", "static", True, "none"), ("dar", "static", True, "all"),
        ("dar", "dynamic", False, "auto")]
for routing, query, recompute_q, rh in plan:
    rt.RECOMPUTE_DYNAMIC_QUERY, rt.RECOMPUTE_H = recompute_q, rh
    r = bench.train_step_bench(size, batch, [(routing, query, 4, True)], compiled=True, steps=8, deadline=dead,
                               compile_est_s=30 if size == "B" else 60)
    for x in r:
        x["recompute_q"], x["recompute_h"] = recompute_q, rh
        if routing == "dar":
            x["variant"] += f" h {rh}" + ("" if query != "dynamic" else (" q recomputed" if recompute_q else " q saved"))
    rows += r
    bench._ratios(rows); bench._floors(rows, bw["bytes_per_s"])
    json.dump(dict(env=bench.env_info(), copy=bw, rows=rows), open(os.environ["OUT"] + f"/noh_{size}.json", "w"),
              indent=1, default=str)
    for x in r:
        print(x.get("model"), x.get("batch"), x.get("variant"), {k: round(x[k], 3) for k in ("step_ms", "peak_gb",
              "time_ratio", "mem_ratio") if isinstance(x.get(k), float)}, x.get("error", x.get("skipped", "")),
              flush=True)
PY
echo "done after $(( $(date +%s) - T0 )) s"
