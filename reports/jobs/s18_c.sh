#!/usr/bin/env bash
# Session 18, one nvidia-h100-x4 call (about 9.5 min; the host's time counts once). After s17_e / s17_f passed
# (benchmarks/results/s18_a_*, s18_b_*: DAR under CUDA graphs computes as under full; XL/2 b32 static c4 1.08x):
#   GPU 0: dartool bench --parts graphs --sizes B, then `dartool train --compile --compile-mode cudagraphs` (SiT-B/2
#          pair on CIFAR-10 pixels, 32 images per step, 45 s of training; no evaluation: the feature net's wheel
#          does not fit the 64 MiB carry beside the data, so only zarr's wheels and the training npz are carried)
#   GPU 1: dartool bench --parts graphs --sizes XL --xl-batch 64
#   GPU 2: dartool bench --parts graphs --sizes XL --xl-batch 32
#   GPU 3: cudagraph_check.py (DAR static and dynamic c4, also 8 training steps with dartool train's step), then the
#          same `dartool train` as GPU 0 with --compile-mode full (its images/s against GPU 0's)
# Everything comes back in one archive (results.tgz) and a log.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R/bench
TRAIN=(--pair --data .carry/data/cifar10jpgbytes_train.npz --size B --patch 2 --batch-size 32 --compile
       --steps 100000 --time-budget 45 --log-every 50 --ckpt-every 100000 --final-eval-samples 0 --quiet)
( CUDA_VISIBLE_DEVICES=0 timeout 290 python3 -m dartool bench --parts graphs --sizes B --compile-budget 240 \
    --out $R/bench > $R/gpu0_bench.log 2>&1; echo "gpu0 bench rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  CUDA_VISIBLE_DEVICES=0 timeout $(( 575 - ($(date +%s) - T0) )) python3 -m dartool train "${TRAIN[@]}" \
    --compile-mode cudagraphs --out $R/train_graphs > $R/gpu0_train.log 2>&1
  echo "gpu0 train rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( CUDA_VISIBLE_DEVICES=1 timeout 570 python3 -m dartool bench --parts graphs --sizes XL --xl-batch 64 \
    --compile-budget 450 --out $R/bench > $R/gpu1_bench.log 2>&1; echo "gpu1 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( sleep 20; CUDA_VISIBLE_DEVICES=2 timeout 550 python3 -m dartool bench --parts graphs --sizes XL --xl-batch 32 \
    --compile-budget 430 --out $R/bench > $R/gpu2_bench.log 2>&1; echo "gpu2 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( CUDA_VISIBLE_DEVICES=3 timeout 330 python3 benchmarks/cudagraph_check.py --no-residual --query static \
    --query dynamic --train-steps 8 --out $R > $R/gpu3_check.log 2>&1
  echo "gpu3 check rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  CUDA_VISIBLE_DEVICES=3 timeout $(( 575 - ($(date +%s) - T0) )) python3 -m dartool train "${TRAIN[@]}" \
    --compile-mode full --out $R/train_full > $R/gpu3_train.log 2>&1
  echo "gpu3 train rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
wait
cat $R/status
grep -hE "PASS|FAIL|ALL OK|SOME" $R/gpu3_check.log | cut -c1-300
grep -h "ms x\|time budget\|Error" $R/gpu*_bench.log | cut -c1-200
for d in $R/train_graphs $R/train_full; do echo "== $d"; tail -3 $d/summary.md 2>/dev/null; \
  for a in $d/*/log.jsonl; do tail -1 $a | cut -c1-300; done; done
tail -5 $R/gpu0_train.log $R/gpu3_train.log
(cd $R && tar czf $OUT/results.tgz bench status *.log *.json train_*/summary.* train_*/*/log.jsonl train_*/config.json 2>/dev/null)
ls -la $OUT; echo "done after $(( $(date +%s) - T0 )) s"
