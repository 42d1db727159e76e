#!/usr/bin/env bash
# Session 18, one two-GPU call (about 7 min). s18_c's `dartool train` runs spent their 45 s budget compiling (one
# step each), so: the same SiT-B/2 pair on CIFAR-10 pixels, 32 images per step, for 300 steps, with
# --compile-mode cudagraphs (GPU 0) and full (GPU 1); then SiT-XL/2 at 32 images in all three modes on this host:
#   GPU 0: dartool bench --parts graphs --sizes XL --xl-batch 32 --quick
#   GPU 1: dartool bench --parts eager,compiled --sizes XL --xl-batch 32 --quick
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R/bench
TRAIN=(--pair --data .carry/data/cifar10jpgbytes_train.npz --size B --patch 2 --batch-size 32 --compile
       --steps 300 --log-every 50 --ckpt-every 150 --final-eval-samples 0 --quiet)
( CUDA_VISIBLE_DEVICES=0 timeout 250 python3 -m dartool train "${TRAIN[@]}" --compile-mode cudagraphs \
    --out $R/train_graphs > $R/gpu0_train.log 2>&1; echo "gpu0 train rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  CUDA_VISIBLE_DEVICES=0 timeout $(( 570 - ($(date +%s) - T0) )) python3 -m dartool bench --parts graphs --sizes XL \
    --xl-batch 32 --quick --out $R/bench > $R/gpu0_bench.log 2>&1; echo "gpu0 bench rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( CUDA_VISIBLE_DEVICES=1 timeout 250 python3 -m dartool train "${TRAIN[@]}" --compile-mode full \
    --out $R/train_full > $R/gpu1_train.log 2>&1; echo "gpu1 train rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  CUDA_VISIBLE_DEVICES=1 timeout $(( 570 - ($(date +%s) - T0) )) python3 -m dartool bench --parts eager,compiled \
    --sizes XL --xl-batch 32 --quick --out $R/bench > $R/gpu1_bench.log 2>&1; echo "gpu1 bench rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
wait
cat $R/status
grep -h "ms x\|time budget\|Error" $R/gpu*_bench.log | cut -c1-200
for d in $R/train_graphs $R/train_full; do echo "== $d"; ls $d/*/checkpoints 2>/dev/null | head -4
  for a in $d/*/log.jsonl; do echo $a; grep '"train"' $a | python3 -c "
import sys, json
for l in sys.stdin:
    r = json.loads(l); print(r['step'], round(r['loss'], 4), round(r['img_per_s'], 1))"; done; done
tail -n 4 $R/gpu0_train.log $R/gpu1_train.log
(cd $R && tar czf $OUT/results.tgz bench status *.log train_*/summary.* train_*/*/log.jsonl train_*/config.json 2>/dev/null)
ls -la $OUT; echo "done after $(( $(date +%s) - T0 )) s"
