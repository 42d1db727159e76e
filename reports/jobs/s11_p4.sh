#!/usr/bin/env bash
# Session 11, call 4 (one GPU, about 8 min): the new pass 2 (cv from pass 1, 2-row blocks, one warp) and the
# two-pass backward at D = 768 too — float64 checks on CUDA, then compiled c4 static steps paired against the
# residual, new defaults against the old in the same process: XL/2 b128 (old pass 2) and B/2 b256 (one-pass).
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 150 python3 - <<'PY' 2>&1 | tee $OUT/s11_p4_check.txt | tail -4
import torch
from dartool.kernels import check
torch.backends.cuda.matmul.allow_tf32 = False
rows = check.prefix_check("cuda", False) + check.shared_model_check("cuda", False)
for r in rows:
    if not r["ok"]:
        print(r, flush=True)
print(f"{sum(r['ok'] for r in rows)}/{len(rows)} ok;", "ALL OK" if all(r["ok"] for r in rows) else "FAIL")
PY
echo "after $(( $(date +%s) - T0 )) s"
timeout 280 python3 reports/jobs/s11_paired.py XL 128 s11_p4_paired_XL 4 static \
  "old=DARTOOL_PREFIX_GRAD:16,4,128,2,3,0" "new=" 2>&1 | grep -E "round|ratio|Error|error" | tail -12
echo "after $(( $(date +%s) - T0 )) s"
timeout 200 python3 reports/jobs/s11_paired.py B 256 s11_p4_paired_B 4 static \
  "old=DARTOOL_PREFIX_CONFIG:8,1,3,1,0;8,2,3,1,0,1" "new=" 2>&1 | grep -E "round|ratio|Error|error" | tail -12
echo "done after $(( $(date +%s) - T0 )) s"
