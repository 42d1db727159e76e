#!/usr/bin/env bash
# Session 10, last sweep: the two-pass backward's second pass with bf16 partials (the model's default) at SiT-XL/2
# b128 (P = 14, K = 4); then compiled SiT-XL/2 static c4 shared off / on at the best, paired, 4 rounds.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
XLB=$(python3 -c "import torch; print(128 if torch.cuda.get_device_properties(0).total_memory > 100e9 else 64)")
G="--grad 16,2,256,2,3 --grad 16,4,128,2,3 --grad 16,2,128,1,3 --grad 32,2,256,2,3 --grad 16,2,256,2,4 --grad 16,4,256,4,3 --grad 16,1,256,1,3 --grad 8,2,256,2,3"
timeout 120 python3 benchmarks/prefix_bench.py --size XL --batch $XLB --P 14 --K 4 --partial bf16 $G --json $OUT/s10_margin_XL.json 2>&1 | grep -v Warn | cut -c1-330
echo "after $(( $(date +%s) - T0 )) s"
GB=$(python3 - <<'PY'
import json, os
d = json.load(open(os.environ["OUT"] + "/s10_margin_XL.json"))
print(",".join(str(v) for v in min(d["rows"], key=lambda r: r["bwd_ms"])["grad_config"].values()))
PY
)
echo "best grad: $GB"
DARTOOL_PREFIX_GRAD="$GB" timeout $(( 590 - ($(date +%s) - T0) )) python3 reports/jobs/s9_shared.py XL $XLB s10_margin_shared_XL 4 2>&1 | grep -vE "^\s*$|Warning|warn" | cut -c1-200 | tail -6
echo "done after $(( $(date +%s) - T0 )) s"
