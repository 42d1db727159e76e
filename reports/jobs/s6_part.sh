#!/usr/bin/env bash
# Session 6, call 7 (one GPU, <= 9.5 min): part_slot (the backward's query / gain gradient partial in the
# program's memory slot, g re-read per row: frees ~2 row vectors of registers; ptxas on CPU: LN-fused backward
# at D = 1152 248 -> 24 stack bytes). Float64 checks on CUDA with it on (the default in this commit), then
# compiled static c4, same run: SiT-XL/2 b64 and SiT-B/2 b256, residual / part_slot 1 / part_slot 0; then the
# LN backward sweep with part_slot.
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 120 python3 - <<'PY' 2>&1 | grep -E "FAIL|ok\]|Error" | grep -vE "^\s*$" | tail -40
from dartool.kernels import check
res = check.ln_check("cuda", False) + check.model_check("cuda", False)
for r in res:
    print(f"  [{'ok' if r['ok'] else 'FAIL'}] {r['name']} " + " ".join(f"{k}={v}" for k, v in r.items() if k not in ("name", "ok")))
print("ALL ok]" if all(r["ok"] for r in res) else "SOME FAIL")
PY
echo "after $(( $(date +%s) - T0 )) s"
timeout 240 python3 reports/jobs/s6_rows.py XL 64 part_XL 230 residual/static/recompute/auto \
  dar/static/recompute/auto/ps1 dar/static/recompute/auto/ps0 2>&1 | grep -E "^SiT|Error"
echo "after $(( $(date +%s) - T0 )) s"
timeout 150 python3 reports/jobs/s6_rows.py B 256 part_B 140 residual/static/recompute/auto \
  dar/static/recompute/auto/ps1 dar/static/recompute/auto/ps0 2>&1 | grep -E "^SiT|Error"
echo "after $(( $(date +%s) - T0 )) s"
timeout $(( 575 - ($(date +%s) - T0) )) python3 benchmarks/router_sweep.py --ln --out $OUT/sweep --shape XL:64:9 --shape B:256:6 2>&1 | grep -E "^\||^##|Error" | tail -30
echo "done after $(( $(date +%s) - T0 )) s"
