#!/usr/bin/env bash
# Session 15, call 4 (one H100, about 9 min): the H100's eager rows for every variant (the full bench's eager part:
# static_t c4, static c1 and c8 were never run eager on an H100 at the current kernels; eager c1 is what compile
# modes "blocks" / "regions" must beat), then paired compiled rounds of static_t c4 against static c4 at B/2 b256
# (the bench judges static_t from one unpaired row).
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
export PYTHONPATH=$PYTHONPATH:$PWD
left() { echo $(( 585 - ($(date +%s) - T0) )); }
timeout 300 python3 -m dartool.cli bench --parts eager --time-budget 290 --out $OUT > $OUT/s15_d_eager.log 2>&1
echo "eager rc $? after $(( $(date +%s) - T0 )) s"; grep -E "eager +[0-9.]+ ms" $OUT/s15_d_eager.log | cut -c1-160
timeout $(left) python3 benchmarks/paired_step.py --size B --batch 256 --compiled --query static --query static_t \
  --chunk 4 --rounds 6 --out $OUT > $OUT/s15_d_paired_b.txt 2>&1
echo "paired rc $?"; tail -12 $OUT/s15_d_paired_b.txt | cut -c1-200
echo "done after $(( $(date +%s) - T0 )) s"
