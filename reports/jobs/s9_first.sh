#!/usr/bin/env bash
# Session 9, first call: shared prefixes on the GPU. Their float64 check (and the model check, which shares prefixes
# in its c2 models), then compiled SiT-B/2 b256 and SiT-XL/2 (b128 on an H200, b64 on an H100): residual, static c4
# without and with shared prefixes, paired rounds.
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 150 python3 - <<'PY' 2>&1 | tee $OUT/prefix_check.txt | tail -20
import torch
from dartool.kernels import check
torch.backends.cuda.matmul.allow_tf32 = False
for r in check.prefix_check("cuda", False) + check.model_check("cuda", False):
    print(r, flush=True)
PY
echo "after $(( $(date +%s) - T0 )) s"
XLB=$(python3 -c "import torch; print(128 if torch.cuda.get_device_properties(0).total_memory > 100e9 else 64)")
timeout 220 python3 reports/jobs/s9_shared.py B 256 shared_B 4 2>&1 | grep -vE "^\s*$|Warning|warn" | cut -c1-200 | tail -12
echo "after $(( $(date +%s) - T0 )) s"
timeout $(( 590 - ($(date +%s) - T0) )) python3 reports/jobs/s9_shared.py XL $XLB shared_XL 4 2>&1 | grep -vE "^\s*$|Warning|warn" | cut -c1-200 | tail -12
echo "done after $(( $(date +%s) - T0 )) s"
