#!/usr/bin/env bash
# Session 10, fifth call: the new defaults (D >= 1024: grouped forward, two-pass backward; shared prefixes at every
# width; partials in the model's dtype): float64 checks on the GPU (prefix, shared model, models), the prefix
# kernels at SiT-XL/2 b128 chunk shapes, then compiled SiT-XL/2 static c4 shared off / on, paired.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 200 python3 - <<'PY' 2>&1 | tee $OUT/s10_defaults_check.txt | tail -8
import torch
from dartool.kernels import check
torch.backends.cuda.matmul.allow_tf32 = False
rows = check.prefix_check("cuda", False) + check.shared_model_check("cuda", False) + check.model_check("cuda", False)
for r in rows:
    if not r["ok"] or r["name"].startswith("prefix-xl"):
        print({k: (f"{v:.2e}" if isinstance(v, float) else v) for k, v in r.items()}, flush=True)
print(f"{sum(r['ok'] for r in rows)}/{len(rows)} ok;", "ALL OK" if all(r["ok"] for r in rows) else "FAIL")
PY
echo "after $(( $(date +%s) - T0 )) s"
XLB=$(python3 -c "import torch; print(128 if torch.cuda.get_device_properties(0).total_memory > 100e9 else 64)")
for P in 14 6 3; do
  timeout 60 python3 benchmarks/prefix_bench.py --size XL --batch $XLB --P $P --K 4 --json $OUT/s10_defaults_XL_P$P.json 2>&1 | grep -v Warn | cut -c1-330
done
echo "after $(( $(date +%s) - T0 )) s"
timeout $(( 590 - ($(date +%s) - T0) )) python3 reports/jobs/s9_shared.py XL $XLB s10_shared5_XL 4 2>&1 | grep -vE "^\s*$|Warning|warn" | cut -c1-200 | tail -12
echo "done after $(( $(date +%s) - T0 )) s"
