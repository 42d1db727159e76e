#!/usr/bin/env bash
# Session 10, fourth call: the two-pass backward's second pass swept at SiT-XL/2 b128 (P = 14, K = 4; fewer rows per
# block for occupancy), the best one at P = 3 and 6 (does sharing pay for short prefixes at D = 1152?), then compiled
# SiT-XL/2 static c4 shared off / on at the best, paired against the residual.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
XLB=$(python3 -c "import torch; print(128 if torch.cuda.get_device_properties(0).total_memory > 100e9 else 64)")
F="8,1,3,1,2;4,1,3,1,4,2"
G="--grad 16,2,256,2,2 --grad 16,1,256,2,2 --grad 16,1,256,2,3 --grad 16,1,256,1,2 --grad 16,2,256,2,3 --grad 16,1,128,1,3 --grad 32,2,256,2,2 --grad 8,2,256,2,2 --grad 16,2,256,2,4 --grad 16,1,512,4,3 --grad 16,2,256,2,2,1 --grad 16,1,256,2,2,1"
timeout 150 python3 benchmarks/prefix_bench.py --size XL --batch $XLB --P 14 --K 4 --config "$F" $G --json $OUT/s10_grad_XL.json 2>&1 | grep -v Warn | cut -c1-330
echo "after $(( $(date +%s) - T0 )) s"
GB=$(python3 - <<'PY'
import json, os
d = json.load(open(os.environ["OUT"] + "/s10_grad_XL.json"))
print(",".join(str(v) for v in min(d["rows"], key=lambda r: r["bwd_ms"])["grad_config"].values()))
PY
)
echo "best grad: $GB"
for P in 3 6; do
  DARTOOL_PREFIX_GRAD=$GB timeout 60 python3 benchmarks/prefix_bench.py --size XL --batch $XLB --P $P --K 4 --config "$F" --json $OUT/s10_grad_XL_P$P.json 2>&1 | grep -v Warn | cut -c1-330
done
echo "after $(( $(date +%s) - T0 )) s"
DARTOOL_PREFIX_CONFIG="$F" DARTOOL_PREFIX_GRAD="$GB" timeout $(( 590 - ($(date +%s) - T0) )) python3 reports/jobs/s9_shared.py XL $XLB s10_shared4_XL 4 2>&1 | grep -vE "^\s*$|Warning|warn" | cut -c1-200 | tail -12
echo "done after $(( $(date +%s) - T0 )) s"
