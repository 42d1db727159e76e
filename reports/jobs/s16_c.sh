#!/usr/bin/env bash
# Session 16, call 4 (one H100, about 6 min): is in-graph accumulation (dartool.kernels.compiled_slots) free at c4?
# Call 3 (H200, single unpaired runs) had B/2 static c4 1.084 with it against 1.069 without, dynamic 1.325 / 1.293,
# XL/2 static c4 1.100 / 1.177: within the unpaired runs' spread. Paired rounds (residual, static c4, dynamic c4 in
# one process) with accumulation on, then in a second process off (it is decided when the graph is traced).
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
for acc in 1 0; do
  mkdir -p $OUT/acc$acc
  DARTOOL_COMPILED_ACCUM=$acc timeout 280 python3 benchmarks/paired_step.py --size B --batch 256 --compiled \
    --query static --query dynamic --chunk 4 --rounds 6 --out $OUT/acc$acc > $OUT/s16_c_acc$acc.txt 2>&1
  echo "accum $acc rc $? after $(( $(date +%s) - T0 )) s"; grep -iE "median|ratio|Error" $OUT/s16_c_acc$acc.txt | tail -6 | cut -c1-200
done
for acc in 1 0; do for f in $OUT/acc$acc/*.md; do mv $f $OUT/s16_c_acc${acc}_$(basename $f); done; rm -rf $OUT/acc$acc; done
echo "done after $(( $(date +%s) - T0 )) s"
