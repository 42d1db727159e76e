#!/usr/bin/env bash
# Session 21: why is the residual's step faster on CIFAR images than on Gaussian noise (s20: 64.4 vs 68.1 ms at
# SiT-XL/2 b32, DAR unchanged)? step_parts.py in one process per size, on one compiled model per arm: x = noise,
# images, shuffled (the images' pixels permuted: values without structure), matched (Gaussian of the images' channel
# means and deviations); the `train` step and its parts per x, a kernel profile per x, and the SM clock / power per
# block from nvidia-smi (cycles per step). SiT-XL/2 b32 first, then SiT-B/2 b256. One H100/H200, at most 560 s.
# Carry the zarr wheels, the test npz and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=$OUT/r; mkdir -p $R
DATA=.carry/data/cifar10jpgbytes_test.npz
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu \
  --format=csv,noheader,nounits -lms 100 > $R/smi.csv 2>&1 &
SMI=$!
sleep 1
X=noise,images,shuffled,matched
timeout 300 python3 benchmarks/step_parts.py --size XL --batch 32 --data $DATA --x $X --variants train,bench \
  --rounds 3 --profile 3 --smi-log $R/smi.csv --out $R > $R/XL.log 2>&1
echo "XL rc $? at $(( $(date +%s) - T0 )) s"
timeout $(( 550 - ($(date +%s) - T0) )) python3 benchmarks/step_parts.py --size B --batch 256 --data $DATA --x $X \
  --variants train --rounds 3 --profile 2 --smi-log $R/smi.csv --out $R > $R/B.log 2>&1
echo "B rc $? at $(( $(date +%s) - T0 )) s"
kill $SMI
gzip -f $R/smi.csv
grep -h "^residual\|^dar" $R/*.log
grep -h "Traceback\|Error\|error:" $R/*.log | head -10
cd $R && tar czf $OUT/s21_a.tgz . && cd - >/dev/null
ls -la $OUT
echo "done after $(( $(date +%s) - T0 )) s"
