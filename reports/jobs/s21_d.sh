#!/usr/bin/env bash
# Session 21: eager and plain-compiled (full) figures after the contiguous patch embedding (54ac41b). Before it,
# the residual's stream stayed transposed on noise inputs, which in eager mode costs a copy before every LayerNorm;
# the README's eager ratios (DAR static c4 0.73-0.84x the residual) were measured that way. One GPU, about 4 min:
#   dartool bench --parts eager --sizes B,XL --xl-batch 64 --variants static-c4   (no compiles)
#   dartool bench --parts compiled --sizes B --variants static-c4                 (torch.compile, full)
# Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=$OUT/r; mkdir -p $R
timeout 100 python3 -m dartool bench --parts eager --sizes B,XL --xl-batch 64 --variants static-c4 --no-check \
  --out $R > $R/eager.log 2>&1
echo "eager rc $? at $(( $(date +%s) - T0 )) s"
timeout $(( 240 - ($(date +%s) - T0) )) python3 -m dartool bench --parts compiled --sizes B --variants static-c4 \
  --compile-budget 150 --out $R > $R/compiled.log 2>&1
echo "compiled rc $? at $(( $(date +%s) - T0 )) s"
grep -h "ms x\|time budget\|Error" $R/*.log | cut -c1-200
echo "done after $(( $(date +%s) - T0 )) s"
