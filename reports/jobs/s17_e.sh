#!/usr/bin/env bash
# Session 17's next call, written but NOT run (device time ran out; one H100, about 9.5 min).
# Call 4 (s17_d) ran the residual under CUDA graphs (cudagraph_check PASS; XL/2 b32 80.0 ms) but the DAR model
# failed in the graph trees' warm-up: "Detected 54 tensor(s) in the cudagraph pool not tracked as outputs" (the
# cached offset tables). Fixed without a GPU (dartool.kernels.tables.GRAPH_SAFE: no cache under cudagraphs; captured
# tables copy from a pinned arena). 0) the bench's new host probe once; 1) cudagraph_check for DAR static and
# dynamic c4 (about 150 s per variant: the first try timed out at 150 s with all three). Then s17_f.sh: XL/2 b32.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
# 0) the bench's new host probe (eager rows' host_ms, not yet run on a GPU): B/2 b256 residual and DAR static c4
timeout 100 python3 - > $OUT/s17_e_hostprobe.txt 2>&1 <<'PY'
from dartool import bench
for r in bench.train_step_bench("B", 256, [("residual", "static", 4, True), ("dar", "static", 4, True)], compiled=False, steps=6):
    print(r["variant"], round(r.get("step_ms", -1), 1), "ms/step; host", r.get("host_ms"), r.get("host_error", ""))
PY
echo "host probe rc $?"; tail -3 $OUT/s17_e_hostprobe.txt
timeout $(( 580 - ($(date +%s) - T0) )) python3 benchmarks/cudagraph_check.py --no-residual --query static --query dynamic \
  --out $OUT > $OUT/s17_e_check.txt 2>&1
echo "check rc $? after $(( $(date +%s) - T0 )) s"; grep -E "PASS|FAIL|ALL OK|Error" $OUT/s17_e_check.txt | head -8 | cut -c1-400
echo "done after $(( $(date +%s) - T0 )) s"
