#!/usr/bin/env bash
# Session 10: the prefix kernels with query groups (KP queries per program; the forward's groups adjacent in the
# launch order so later groups read the sources from L2; the backward's groups in sequence, accumulating) at
# SiT-XL/2 chunk shapes; their float64 check on the GPU; then compiled SiT-XL/2 static c4 with shared prefixes
# off / on at the best forward and backward configuration, paired against the residual.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 120 python3 - <<'PY' 2>&1 | tee $OUT/s10_prefix_check.txt | tail -12
import torch
from dartool.kernels import check
torch.backends.cuda.matmul.allow_tf32 = False
rows = check.prefix_check("cuda", False)
for r in rows:
    print(r, flush=True)
print("ALL OK" if all(r["ok"] for r in rows) else "FAIL")
PY
echo "after $(( $(date +%s) - T0 )) s"
XLB=$(python3 -c "import torch; print(128 if torch.cuda.get_device_properties(0).total_memory > 100e9 else 64)")
C="--config 8,2,3,1,0;8,4,3,1,0 --config 8,1,3,1,1 --config 8,1,3,1,2 --config 8,2,3,1,2 --config 8,2,3,1,1 --config 4,1,3,1,2 --config 16,1,3,1,1 --config 8,1,4,1,1 --config 8,4,3,1,2"
timeout 200 python3 benchmarks/prefix_bench.py --size XL --batch $XLB --P 14 --K 4 $C --json $OUT/s10_prefix_XL.json 2>&1 | grep -v Warn | cut -c1-230
echo "after $(( $(date +%s) - T0 )) s"
CFG=$(python3 - <<'PY'
import json, os
d = json.load(open(os.environ["OUT"] + "/s10_prefix_XL.json"))
keys = ("rows", "num_warps", "pipe", "vec4", "group")
f = min(d["rows"], key=lambda r: r["fwd_ms"])["config"]
b = min(d["rows"], key=lambda r: r["bwd_ms"])["bwd_config"]
print(",".join(str(f[k]) for k in keys) + ";" + ",".join(str(b[k]) for k in keys))
PY
)
echo "best: $CFG"
timeout 60 python3 benchmarks/prefix_bench.py --size XL --batch $XLB --P 5 --K 4 --config "$CFG" --json $OUT/s10_prefix_XL_P5.json 2>&1 | grep -v Warn | cut -c1-230
echo "after $(( $(date +%s) - T0 )) s"
DARTOOL_PREFIX_CONFIG="$CFG" timeout $(( 590 - ($(date +%s) - T0) )) python3 reports/jobs/s9_shared.py XL $XLB s10_shared_XL 4 2>&1 | grep -vE "^\s*$|Warning|warn" | cut -c1-200 | tail -12
echo "done after $(( $(date +%s) - T0 )) s"
