#!/usr/bin/env bash
# Session 25. The residual's noise / images gap at SiT-B/2 b256 (session 21: residual 93.5 ms on noise, 91.3 on
# CIFAR-10 images, 92.6 on their shuffled pixels; DAR 102.8 / 101.9 / 102.6). Reading session 21's smi log again:
# every timed block ran at the 700 W cap except the first images block, which had compiled the images' graph
# inside it (fixed: step_parts now warms every kind of x first). Hypothesis: data-dependent power. Images with
# spatial structure toggle fewer bits in the GEMMs, so a power-capped card clocks higher; DAR's memory-bound
# routers draw less power, so it gains less. Per-kernel profile per x plus a 50 ms clock / power log, one GPU, ~5 min.
# Carry the zarr wheels, .carry/data/cifar10jpgbytes_train.npz and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
DATA=.carry/data/cifar10jpgbytes_train.npz
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu \
  --format=csv,noheader,nounits -lms 50 > $R/smi.csv 2>&1 &
SMI=$!; sleep 1
timeout 520 python3 benchmarks/step_parts.py --size B --batch 256 --data $DATA --x noise,images,shuffled \
  --variants train --rounds 4 --steps 20 --profile 2 --smi-log $R/smi.csv --out $R > $R/B.log 2>&1
echo "parts B rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
kill $SMI; gzip -f $R/smi.csv
cat $R/status; nvidia-smi -L; nvidia-smi --query-gpu=power.limit,clocks.max.sm --format=csv
grep -v "Warning\|_warn_once" $R/B.log | tail -60 | cut -c1-220
(cd $R && tar czf $OUT/s25_gap.tgz status B.log smi.csv.gz step_parts-*)
echo "done after $(( $(date +%s) - T0 )) s"
