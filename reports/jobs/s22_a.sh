#!/usr/bin/env bash
# Session 22. One nvidia-h100-x4 call (H200s may come instead; the card is recorded), four jobs at once, ~8 min:
#   GPU 0: step_profile.py --compiled SiT-XL/2 b32 then SiT-B/2 b256: GPU time per kernel kind, residual vs DAR c4,
#          routers + prefix passes against their as-built byte floor (where are the 3.4-4.7 ms above the floor?)
#   GPU 1: dartool bench --parts graphs --sizes XL --xl-batch 32 (residual, static c4, dynamic c4), noise
#   GPU 2: the same for SiT-B/2 b256
#   GPU 3: the same for SiT-XL/2 b64 (not measured since the contiguous-stream fix)
# Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R/bench_xl32 $R/bench_b $R/bench_xl64
V=static-c4,dynamic-c4
( CUDA_VISIBLE_DEVICES=0 timeout 300 python3 benchmarks/step_profile.py --size XL --batch 32 --compiled --rows 40 \
    > $R/profile_XL32.txt 2>&1; echo "profile XL rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  CUDA_VISIBLE_DEVICES=0 timeout $(( 540 - ($(date +%s) - T0) )) python3 benchmarks/step_profile.py --size B \
    --batch 256 --compiled --rows 40 > $R/profile_B256.txt 2>&1; echo "profile B rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( CUDA_VISIBLE_DEVICES=1 timeout 540 python3 -m dartool bench --parts graphs --sizes XL --xl-batch 32 --variants $V \
    --compile-budget 500 --out $R/bench_xl32 > $R/bench_xl32.log 2>&1; echo "bench XL32 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( CUDA_VISIBLE_DEVICES=2 timeout 540 python3 -m dartool bench --parts graphs --sizes B --variants $V \
    --compile-budget 500 --out $R/bench_b > $R/bench_b.log 2>&1; echo "bench B rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( CUDA_VISIBLE_DEVICES=3 timeout 540 python3 -m dartool bench --parts graphs --sizes XL --xl-batch 64 --variants $V \
    --compile-budget 500 --out $R/bench_xl64 > $R/bench_xl64.log 2>&1; echo "bench XL64 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
wait
cat $R/status
nvidia-smi -L
grep -h "routers + prefix\|extra\|=== " $R/profile_*.txt
grep -h "ms x\|time budget\|Error" $R/bench_*.log | cut -c1-200
for d in bench_xl32 bench_b bench_xl64; do grep -h "^| SiT" $R/$d/*.md; done
grep -h "Traceback" -A3 $R/*.log $R/*.txt | head -20
(cd $R && tar czf $OUT/s22_a.tgz status *.log *.txt bench_*)
echo "done after $(( $(date +%s) - T0 )) s"
