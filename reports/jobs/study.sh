#!/usr/bin/env bash
# The reference study (issue 7) in ONE command on a 4-GPU host (nvidia-h100-x4 / h200-x4), ~8 minutes.
#
#   GPU 0..2  CIFAR-10 (JPEG q75), SiT-S/2, seeds 0, 1, 2: residual | DAR static_t c4 | DAR dynamic c4 | DAR static c4
#   GPU 3     CIFAR-10 seed 0 chunk sweep: DAR static c1 | c8 (c4 is on GPU 0, same seed and steps => paired),
#             then Fashion-MNIST (20K-image subset): residual | DAR static_t c4
#   GPU 2+3   first: torchrun on 2 GPUs vs 1 GPU (GPU 1), same global batch, for the scaling efficiency
#
# Every arm: batch 256, AdamW lr 3e-4 (one fixed value for all arms, not tuned), EMA 0.9999 with warm-up,
# bf16 autocast, 700 steps (or fewer if the 280 s training budget runs out; all arms of a process stop at the
# same step), FD / precision / recall in EfficientNet-Lite0 features on 10K samples (Euler, 16 steps, no
# guidance) at step 350 and at the end, against 10K training images; final probe: 32 noise levels x 128 samples.
# Outputs (under $OUT): one tgz per GPU process with logs, summaries, sample grids and probe stores.
#
# Measured on 4 x H200, 2026-11-26 (commit 84308d2; reports/study-2026-11-26-partial): 4 arms in lockstep ran
# ~3,000-3,900 img/s each, so step 350 came at ~115 s; but each 10K-sample evaluation took 33-70 s per arm, the
# mid-run evaluation alone used 240 s, and the process limit stopped every run before its final evaluation and
# probe. Since then the final probe runs before the final evaluation, the FD square root is 3.5x faster and
# CPU thread pools are capped per process. Before rerunning: time one 10K evaluation, then size --steps,
# --eval-every and the budgets (or give each arm its own GPU).
[ -n "${DRYRUN:-}" ] || source reports/jobs/gpu_env.sh   # DRYRUN=1: check the script on a CPU with tiny overrides
X=(${STUDY_OVERRIDES:-})   # e.g. "--depth 2 --hidden 64 --heads 4 --patch 4 --steps 4" for a CPU dry run
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
C=${STUDY_CIFAR:-.carry/data/cifar10jpgbytes_train.npz}
F=${STUDY_FMNIST:-.carry/data/fmnist20k.npz}
R=/tmp/study
COMMON=(--size S --patch 2 --batch-size 256 --lr 3e-4 --ema-warmup --log-every 50 --ckpt-every 100000
        --eval-samples 10000 --final-eval-samples 10000 --eval-steps 16 --eval-batch 1000 --ref-samples 10000
        --pr-samples 5000 --grid-images 64 --probe --probe-final-samples 128 --probe-pooled-samples 64
        --probe-projection-dim 32 --quiet)
ARMS4=residual,dar:static_t:c4,dar:dynamic:c4,dar:static:c4

pack() {  # pack a run folder without checkpoints and sample npz files
  (cd $R && tar czf $OUT/$1.tgz --exclude='*.pt' --exclude='*.npz' --exclude='report' $2 2>/dev/null)
}

# -------------------------------------------------------------- scaling: 1 GPU vs torchrun on 2 GPUs
scaling() {
  local S=(--size S --patch 2 --batch-size 256 --lr 3e-4 --steps 60 --log-every 20 --ckpt-every 100000 --quiet
           --arms residual --data $C --data-limit 10000)
  CUDA_VISIBLE_DEVICES=1 python3 -m dartool train "${S[@]}" "${X[@]}" --out $R/scale1 > $R/scale1.log 2>&1 &
  CUDA_VISIBLE_DEVICES=2,3 python3 -m torch.distributed.run --standalone --nproc_per_node 2 -m dartool train \
    "${S[@]}" "${X[@]}" --out $R/scale2 \
    > $R/scale2.log 2>&1
  wait
}

seed_run() {  # $1 = gpu, $2 = seed
  CUDA_VISIBLE_DEVICES=$1 timeout 440 python3 -m dartool train --arms $ARMS4 --seeds $2 --data $C \
    --out $R/cifar-seed$2 --steps 700 --eval-every 350 --time-budget 280 "${COMMON[@]}" "${X[@]}" > $R/cifar-seed$2.log 2>&1
  echo "seed $2 rc=$?" >> $R/status.txt
  pack cifar-seed$2 "cifar-seed$2 cifar-seed$2.log"
}

gpu3_run() {
  CUDA_VISIBLE_DEVICES=3 timeout 250 python3 -m dartool train --arms dar:static:c1,dar:static:c8 --seeds 0 --data $C \
    --out $R/cifar-chunks --steps 700 --eval-every 350 --time-budget 200 "${COMMON[@]}" "${X[@]}" > $R/cifar-chunks.log 2>&1
  echo "chunks rc=$?" >> $R/status.txt
  CUDA_VISIBLE_DEVICES=3 timeout 150 python3 -m dartool train --arms residual,dar:static_t:c4 --seeds 0 --data $F \
    --out $R/fmnist --steps 600 --eval-every 300 --time-budget 90 "${COMMON[@]}" "${X[@]}" > $R/fmnist.log 2>&1
  echo "fmnist rc=$?" >> $R/status.txt
  pack gpu3 "cifar-chunks cifar-chunks.log fmnist fmnist.log scale1 scale2 scale1.log scale2.log status.txt"
}

mkdir -p $R
seed_run 0 0 &
(scaling; echo "scaling done" >> $R/status.txt; seed_run 1 1) &
(while ! grep -q "scaling done" $R/status.txt 2>/dev/null; do sleep 2; done; seed_run 2 2) &
(while ! grep -q "scaling done" $R/status.txt 2>/dev/null; do sleep 2; done; gpu3_run) &
wait
cat $R/status.txt
for f in $R/*/summary.md; do echo "== $f"; cat $f; done
for f in $R/scale1/*/log.jsonl $R/scale2/*/log.jsonl; do echo "== $f"; grep '"train"' $f | tail -1; done
ls -la $OUT
