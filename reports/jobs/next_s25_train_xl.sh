#!/usr/bin/env bash
# Session 25. What `dartool train` users pay at SiT-XL/2 b32 on an H100: the bench's step (foreach AdamW) against
# dartool train's own optimizer_step (fused AdamW, gradient norm, EMA), residual and DAR static c4, on noise and
# CIFAR-10 images, one compiled model per arm (step_parts.py), with the SM clock / power. One GPU, ~6 min.
# Carry the zarr wheels, .carry/data/cifar10jpgbytes_train.npz and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
DATA=.carry/data/cifar10jpgbytes_train.npz
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv,noheader,nounits \
  -lms 50 > $R/smi.csv 2>&1 &
SMI=$!; sleep 1
timeout 540 python3 benchmarks/step_parts.py --size XL --batch 32 --data $DATA --x noise,images \
  --variants bench,train --rounds 4 --steps 20 --smi-log $R/smi.csv --out $R > $R/XL.log 2>&1
echo "parts XL rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
kill $SMI; gzip -f $R/smi.csv
cat $R/status; nvidia-smi -L
grep -v "Warning\|_warn_once" $R/XL.log | tail -45 | cut -c1-220
(cd $R && tar czf $OUT/s25_train_xl.tgz status XL.log smi.csv.gz step_parts-*)
echo "done after $(( $(date +%s) - T0 )) s"
