#!/usr/bin/env bash
# Session 20: does the input data change DAR's cost? step_parts.py times the bench's step and dartool train's on
# Gaussian noise and on CIFAR images in the same rounds on one compiled model: SiT-B/2 b256 first (never timed on
# images), then SiT-XL/2 b32 (s20_b/c: 1.12x on images, 1.08x on noise, not yet in one process). SM clock and
# power logged. One H100/H200, at most 300 s. Carry the zarr wheels, the test npz and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=$OUT/r; mkdir -p $R
DATA=.carry/data/cifar10jpgbytes_test.npz
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv,noheader,nounits \
  -lms 100 > $R/smi.csv 2>&1 &
SMI=$!
timeout 160 python3 benchmarks/step_parts.py --size B --batch 256 --data $DATA --x noise,images \
  --variants bench,train,train+copy --rounds 3 --out $R > $R/B.log 2>&1
echo "B rc $? at $(( $(date +%s) - T0 )) s"
timeout $(( 295 - ($(date +%s) - T0) )) python3 benchmarks/step_parts.py --size XL --batch 32 --data $DATA \
  --x noise,images --variants bench,train --rounds 2 --out $R > $R/XL.log 2>&1
echo "XL rc $? at $(( $(date +%s) - T0 )) s"
kill $SMI
grep -h "^residual\|^dar" $R/*.log
grep -h "Traceback\|Error\|error:" $R/*.log | head -10
echo "done after $(( $(date +%s) - T0 )) s"
