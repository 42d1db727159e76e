#!/usr/bin/env bash
# Written in session 18, NOT yet run: the open checks of CUDA graphs in one nvidia-h100-x4 call (about 9.5 min;
# carry the zarr wheels, .carry/data/cifar10jpgbytes_train.npz and .commit, as s18_d / s18_e did):
#   GPUs 0,1: `dartool train` under torchrun, --compile-mode cudagraphs then full (SiT-S/2 pair, CIFAR-10 pixels,
#             global batch 64, 100 steps each): the losses must agree, and the checkpoint at step 100 checks that
#             both ranks hold the same weights (Trainer.check_in_step; "weights differ" would stop the run)
#   GPU 2:    cudagraph_check.py for c1 (compiled_slots' mutated buffers under capture) and c8, with 8 training steps
#   GPU 3:    dartool bench --parts graphs --sizes B (every variant, c1 and c8 included, under CUDA graphs)
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R/bench
( for mode in cudagraphs full; do
    CUDA_VISIBLE_DEVICES=0,1 DARTOOL_CUDAGRAPHS_DDP=1 timeout $(( 560 - ($(date +%s) - T0) )) python3 -m \
      torch.distributed.run --standalone --nproc_per_node 2 -m dartool train --pair \
      --data .carry/data/cifar10jpgbytes_train.npz --size S --patch 2 --batch-size 64 --compile --compile-mode $mode \
      --steps 100 --log-every 25 --ckpt-every 100 --final-eval-samples 0 --quiet --out $R/ddp_$mode > $R/ddp_$mode.log 2>&1
    echo "ddp $mode rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  done ) &
( for c in 1 8; do
    CUDA_VISIBLE_DEVICES=2 timeout $(( 560 - ($(date +%s) - T0) )) python3 benchmarks/cudagraph_check.py --no-residual \
      --query static --chunk $c --train-steps 8 --out $R/check_c$c > $R/check_c$c.log 2>&1
    echo "check c$c rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  done ) &
( CUDA_VISIBLE_DEVICES=3 timeout 560 python3 -m dartool bench --parts graphs --sizes B --compile-budget 500 \
    --out $R/bench > $R/bench_B.log 2>&1; echo "bench B rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
wait
cat $R/status
grep -h "PASS\|FAIL\|ALL OK\|SOME" $R/check_c*.log | cut -c1-250
grep -h "ms x\|time budget" $R/bench_B.log | cut -c1-160
grep -h "weights differ\|TrainError" $R/ddp_*.log | head -3
for mode in cudagraphs full; do echo "== $mode"; for a in $R/ddp_$mode/*/log.jsonl; do echo $a; grep '"train"' $a | python3 -c "
import sys, json
for l in sys.stdin:
    r = json.loads(l); print(r['step'], round(r['loss'], 5), round(r['grad_norm'], 4), round(r['img_per_s'], 1))"; done; done
(cd $R && tar czf $OUT/results.tgz status *.log bench check_c* ddp_*/summary.* ddp_*/*/log.jsonl 2>/dev/null)
echo "done after $(( $(date +%s) - T0 )) s"
