#!/usr/bin/env bash
# Session 21, after the patch embedding was made contiguous (s21_a: from NCHW inputs the residual stream stayed
# transposed and the compiled residual step was ~5 % slower, which made DAR look cheaper on Gaussian noise).
# One nvidia-h100-x4 / h200-x4 call, four jobs at once, about 8 min:
#   GPU 0: dartool bench --parts graphs --sizes XL --xl-batch 32 (residual, static c4, static_t c4, dynamic c4), noise
#   GPU 1: the same for SiT-B/2 b256
#   GPU 2: dartool bench --parts graphs --sizes XL --xl-batch 32 --data CIFAR-10 (its first GPU run): residual,
#          static c4, dynamic c4
#   GPU 3: step_parts.py XL/2 b32 then B/2 b256, x = noise, images, shuffled (should now all be equal), with the
#          SM clock / power of GPU 3
# Carry the zarr wheels, .carry/data/cifar10jpgbytes_train.npz and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R/bench_xl $R/bench_b $R/bench_data $R/parts
DATA=.carry/data/cifar10jpgbytes_train.npz
V=static-c4,static_t-c4,dynamic-c4
( CUDA_VISIBLE_DEVICES=0 timeout 540 python3 -m dartool bench --parts graphs --sizes XL --xl-batch 32 --variants $V \
    --compile-budget 500 --out $R/bench_xl > $R/bench_xl.log 2>&1; echo "bench XL rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( CUDA_VISIBLE_DEVICES=1 timeout 540 python3 -m dartool bench --parts graphs --sizes B --variants $V \
    --compile-budget 500 --out $R/bench_b > $R/bench_b.log 2>&1; echo "bench B rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( CUDA_VISIBLE_DEVICES=2 timeout 540 python3 -m dartool bench --parts graphs --sizes XL --xl-batch 32 \
    --variants static-c4,dynamic-c4 --data $DATA --compile-budget 500 --out $R/bench_data > $R/bench_data.log 2>&1
  echo "bench XL data rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( nvidia-smi -i 3 --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv,noheader,nounits \
    -lms 100 > $R/parts/smi.csv 2>&1 &
  SMI=$!; sleep 1
  CUDA_VISIBLE_DEVICES=3 timeout 300 python3 benchmarks/step_parts.py --size XL --batch 32 --data $DATA \
    --x noise,images,shuffled --variants train --rounds 3 --smi-log $R/parts/smi.csv --out $R/parts > $R/parts/XL.log 2>&1
  echo "parts XL rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  CUDA_VISIBLE_DEVICES=3 timeout $(( 545 - ($(date +%s) - T0) )) python3 benchmarks/step_parts.py --size B --batch 256 \
    --data $DATA --x noise,images,shuffled --variants train --rounds 3 --smi-log $R/parts/smi.csv --out $R/parts \
    > $R/parts/B.log 2>&1
  echo "parts B rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  kill $SMI; gzip -f $R/parts/smi.csv ) &
wait
cat $R/status
grep -h "^residual\|^dar" $R/parts/*.log
grep -h "ms x\|time budget\|Error" $R/bench_*.log | cut -c1-200
for d in bench_xl bench_b bench_data; do grep -h "^| SiT" $R/$d/*.md; done
grep -h "Traceback" -A3 $R/*.log $R/parts/*.log | head -20
(cd $R && tar czf $OUT/s21_b.tgz status *.log bench_* parts)
echo "done after $(( $(date +%s) - T0 )) s"
