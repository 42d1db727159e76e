#!/usr/bin/env bash
# Session 18: does `dartool train --compile --compile-mode cudagraphs` train under torchrun (DDP, 2 GPUs) as
# --compile-mode full does? SiT-S/2 pair on CIFAR-10 pixels, global batch 64, 100 steps each, same seeds: the
# losses must agree, and since session 18's last commit every checkpoint checks that the two ranks' weights are
# equal bit for bit (Trainer.check_in_step; a difference stops training with "weights differ").
# DARTOOL_CUDAGRAPHS_DDP=1 lifts the refusal for this check. Run in session 18 with 225 s for both runs: the
# cudagraphs run finished (before check_in_step existed), the full one was cut; give it about 6 min of device time.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
for mode in cudagraphs full; do
  DARTOOL_CUDAGRAPHS_DDP=1 timeout $(( 480 - ($(date +%s) - T0) )) python3 -m torch.distributed.run --standalone \
    --nproc_per_node 2 -m dartool train --pair --data .carry/data/cifar10jpgbytes_train.npz --size S --patch 2 \
    --batch-size 64 --compile --compile-mode $mode --steps 100 --log-every 25 --ckpt-every 100 \
    --final-eval-samples 0 --quiet --out $R/ddp_$mode > $R/ddp_$mode.log 2>&1
  echo "ddp $mode rc $? at $(( $(date +%s) - T0 )) s"
done
for mode in cudagraphs full; do echo "== $mode"; for a in $R/ddp_$mode/*/log.jsonl; do echo $a; grep '"train"' $a | python3 -c "
import sys, json
for l in sys.stdin:
    r = json.loads(l); print(r['step'], round(r['loss'], 5), round(r['grad_norm'], 4), round(r['img_per_s'], 1))"; done; done
grep -h "Error\|error" $R/*.log | head -5
(cd $R && tar czf $OUT/ddp.tgz *.log ddp_*/summary.* ddp_*/*/log.jsonl 2>/dev/null)
echo "done after $(( $(date +%s) - T0 )) s"
