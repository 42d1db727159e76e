#!/usr/bin/env bash
# Session 9, after the review refactor of the prefix kernels: their float64 checks on the GPU and the B/2 kernels
# alone at the default configuration (should match s9-prefix_B_*).
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
timeout 200 python3 - <<'PY' 2>&1 | tee $OUT/review_check.txt | tail -14
import torch
from dartool.kernels import check
torch.backends.cuda.matmul.allow_tf32 = False
rows = check.prefix_check("cuda", False) + check.shared_model_check("cuda", False) + check.model_check("cuda", False)
for r in rows:
    print(r, flush=True)
print("ALL OK" if all(r["ok"] for r in rows) else "FAIL")
PY
timeout 100 python3 benchmarks/prefix_bench.py --size B --batch 256 --P 6 --K 4 --json $OUT/prefix_B_review.json 2>&1 | grep -v Warn | cut -c1-220
