#!/usr/bin/env bash
# Session 20: why does `dartool train` run SiT-XL/2 b32 DAR static c4 at 1.11-1.14x the residual, and the bench at
# 1.076x? benchmarks/step_parts.py times the bench's step, the bench's step with fused AdamW, with fused AdamW + the
# gradient norm + the EMA, and optimizer_step itself, per arm, in interleaved rounds on one compiled model, plus the
# train step's parts. Twice: the bench's model (4-channel latents, 1000 classes, variance output) and dartool
# train's in s19_g (3-channel pixels, 10 classes, no variance output). One H100/H200 (about 8 min). Carry the zarr
# wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
timeout 290 python3 benchmarks/step_parts.py --size XL --batch 32 --learn-sigma --out $R > $R/bench-model.log 2>&1
echo "bench model rc $? at $(( $(date +%s) - T0 )) s"
timeout $(( 560 - ($(date +%s) - T0) )) python3 benchmarks/step_parts.py --size XL --batch 32 --channels 3 --classes 10 \
  --out $R > $R/train-model.log 2>&1
echo "train model rc $? at $(( $(date +%s) - T0 )) s"
grep -h "^residual\|^dar\|^| \|Error\|error" $R/*.log | head -40
(cd $R && tar czf $OUT/results.tgz *.log *.json *.md 2>/dev/null)
echo "done after $(( $(date +%s) - T0 )) s"
