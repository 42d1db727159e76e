#!/usr/bin/env bash
# GPU smoke: the whole pipeline (paired train -> eval -> probe -> report) on CIFAR-10 for ~25 s of training,
# and the throughputs needed to size the reference study.
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
timeout 240 python3 -m dartool train --pair --data .carry/data/cifar10jpgbytes_train.npz --out /tmp/smoke \
  --size S --patch 2 --batch-size 256 --lr 3e-4 --ema-warmup --steps 100000 --time-budget 25 --log-every 25 \
  --ckpt-every 100000 --final-eval-samples 2000 --eval-steps 20 --eval-batch 500 --ref-samples 10000 \
  --pr-samples 2000 --probe --probe-samples 128 --report --quiet 2>&1 | tail -40
echo "train rc=$?"
for a in /tmp/smoke/*/; do tail -2 $a/log.jsonl; done
cp /tmp/smoke/summary.json /tmp/smoke/summary.md $OUT/ 2>/dev/null
(cd /tmp/smoke && tar czf $OUT/smoke_report.tgz report */log.jsonl 2>/dev/null); ls -la $OUT
