#!/usr/bin/env bash
# Session 10, after the review (w re-read option removed, pass-2 default 16,4,128,2,3): the float64 checks on the
# GPU and the XL/2 prefix kernels at the defaults with bf16 partials.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
timeout 200 python3 - <<'PY' 2>&1 | tee $OUT/s10_review_check.txt | tail -6
import torch
from dartool.kernels import check
torch.backends.cuda.matmul.allow_tf32 = False
rows = check.prefix_check("cuda", False) + check.shared_model_check("cuda", False) + check.model_check("cuda", False)
for r in rows:
    if not r["ok"]:
        print(r, flush=True)
print(f"{sum(r['ok'] for r in rows)}/{len(rows)} ok;", "ALL OK" if all(r["ok"] for r in rows) else "FAIL")
PY
XLB=$(python3 -c "import torch; print(128 if torch.cuda.get_device_properties(0).total_memory > 100e9 else 64)")
timeout 60 python3 benchmarks/prefix_bench.py --size XL --batch $XLB --P 14 --K 4 --partial bf16 --json $OUT/s10_review_XL.json 2>&1 | grep -v Warn | cut -c1-330
