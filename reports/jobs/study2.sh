#!/usr/bin/env bash
# The reference studies (issues 7 and 8) as tasks placed on the GPUs of one host, ONE command (<= 9.5 min).
#
#   bash reports/jobs/study2.sh "seed0,fmnist" "seed1,speed"          # GPU 0 runs seed0 then fmnist; GPU 1 ...
#
# Tasks (each packs its results into $OUT/<task>.tgz.partNN as soon as it ends, so a later timeout loses nothing; at most
# 8 tasks per call, since 8 files come back):
#   seed<N>   CIFAR-10, SiT-S/2, seed N: residual | DAR static_t c4 | DAR dynamic c4 | DAR static c4 in lockstep,
#             600 steps, FD at steps 300 and 600 (10K samples each), final probe (32 noise levels x 128 samples)
#   chunks    CIFAR-10, seed $CHUNK_SEED (default 2): DAR static c1 | c8, same schedule (c4 is in seed<N>)
#   fmnist    Fashion-MNIST (20K-image subset): residual | DAR static_t c4, seed 0, 600 steps, FD at 300 and 600
#   repa      CIFAR-10, REPA (EfficientNet-Lite0 target, weight 0.5, block 4): residual | DAR static_t c4,
#             seeds 0, 1, 2 in lockstep, 400 steps, FD at 200 and 400
#   retrofit  CIFAR-10: train a residual SiT-S/2 alone (1,000 steps), then fine-tune it 400 steps as it is and
#             converted to dense DAR static_t (c1, same function at step 0), paired, lr 1e-4; FD + detail ratio
#             of the pretrained model and of both fine-tuned arms at 200 and 400 steps
#   refit     the retrofit fine-tune alone, from the residual arm of seed$REFIT_SEED (default 2) after 600 steps
#             (place it after that seed task on the same GPU): as it is vs converted to dense DAR static_t c1,
#             paired, lr 1e-4, up to 400 steps in the time left, final FD + detail ratio + probe
#   speed     benchmarks/train_speed.py: the trainer's step, SiT-B/2 b256 and SiT-XL/2 b64, bf16, residual and DAR
#
# Common to every arm: batch 256, AdamW lr 3e-4 (one value for every arm, not tuned), EMA 0.9999 with warm-up,
# bf16 autocast, label dropout 0.1; FD / precision / recall in EfficientNet-Lite0 features, 10K samples (ODE
# Euler 16 steps, no guidance) vs 10K training images; the hf_energy_ratio detail measure on the same samples.
# --time-budget guards every training (mid evaluations included) so the final evaluation and probe always run;
# if it bites, all arms of that process stop at the same step (the summary says so).
#
# Sizing (H100, 2026-11-26, reports/jobs/bench_gpu.sh): 4 arms of SiT-S/2 in lockstep 0.33 s per step; one 10K
# evaluation ~20 s per arm (sampling 18 s); so a seed task ~450 s.
[ -n "${DRYRUN:-}" ] || source reports/jobs/gpu_env.sh
X=(${STUDY_OVERRIDES:-})        # CPU dry run: "--depth 2 --hidden 64 --heads 4 --patch 4" plus STEPS_SCALE
SC=${STEPS_SCALE:-1}             # divide step counts (CPU dry run)
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
C=${STUDY_CIFAR:-.carry/data/cifar10jpgbytes_train.npz}
F=${STUDY_FMNIST:-.carry/data/fmnist20k.npz}
R=${STUDY_ROOT:-/tmp/study}; mkdir -p $R
DEADLINE=$(( $(date +%s) + ${STUDY_SECONDS:-555} ))
left() { echo $(( DEADLINE - $(date +%s) )); }
EV=(--eval-samples 10000 --final-eval-samples 10000 --eval-steps 16 --eval-batch 1000 --ref-samples 10000
    --pr-samples 5000 --grid-images 64)
[ -n "${DRYRUN:-}" ] && EV=(--eval-samples 200 --final-eval-samples 200 --eval-steps 2 --eval-batch 100
    --ref-samples 200 --pr-samples 100 --grid-images 16)
COMMON=(--size S --patch 2 --batch-size 256 --lr 3e-4 --ema-warmup --log-every 50 --ckpt-every 100000 "${EV[@]}"
        --probe --probe-final-samples 128 --probe-pooled-samples 64 --probe-projection-dim 32 --quiet)
ARMS4=residual,dar:static_t:c4,dar:dynamic:c4,dar:static:c4

# train TASKNAME RESERVE_S ARGS...: run `dartool train` with --time-budget = time left - RESERVE_S (final eval,
# probe, report), inside a timeout of the time left
train() {
  local name=$1 reserve=$2; shift 2
  local t=$(left); local tb=$(( t - reserve ))
  if [ $tb -lt 30 ]; then echo "$name: skipped (only $t s left)" >> $R/status.txt; return 0; fi
  echo "$name: start, $t s left, training budget $tb s" >> $R/status.txt
  echo "$name $name.log" >> $LIST
  timeout $t python3 -m dartool train "$@" --time-budget $tb "${X[@]}" > $R/$name.log 2>&1
  echo "$name: rc=$? at $(( $(date +%s) - T0 )) s" >> $R/status.txt
}
steps() { echo $(( $1 / SC )); }

task() {  # task NAME
  case $1 in
    seed*) local s=${1#seed}
      train cifar-seed$s 130 --arms $ARMS4 --seeds $s --data $C --out $R/cifar-seed$s --steps $(steps 600) \
        --eval-every $(steps 300) "${COMMON[@]}" ;;
    chunks) local s=${CHUNK_SEED:-2}
      train cifar-chunks-seed$s 75 --arms dar:static:c1,dar:static:c8 --seeds $s --data $C --out $R/cifar-chunks-seed$s \
        --steps $(steps 600) --eval-every $(steps 300) "${COMMON[@]}" ;;
    fmnist)
      train fmnist 75 --arms residual,dar:static_t:c4 --seeds 0 --data $F --out $R/fmnist --steps $(steps 600) \
        --eval-every $(steps 300) "${COMMON[@]}" ;;
    repa)
      # 3 seeds run one after the other, each with an equal training share; their final evaluations come on top
      train cifar-repa 200 --arms residual,dar:static_t:c4 --seeds 0,1,2 --data $C --out $R/cifar-repa \
        --repa efficientnet-lite0 --steps $(steps 400) --eval-every $(steps 200) "${COMMON[@]}" --no-probe ;;
    retrofit)
      train retrofit-pre 45 --arms residual --seeds 0 --data $C --out $R/retrofit-pre --steps $(steps 1000) \
        "${COMMON[@]}" --no-probe
      train retrofit-ft 75 --arms residual,dar:static_t:c1 --seeds 0 --data $C --out $R/retrofit-ft \
        --init-from $R/retrofit-pre/residual/checkpoints/last.pt --steps $(steps 400) --eval-every $(steps 200) \
        "${COMMON[@]}" --lr 1e-4 ;;
    refit) local s=${REFIT_SEED:-2}   # retrofit from the residual arm of task seed<s> (run it first on this GPU)
      train retrofit-seed$s 90 --arms residual,dar:static_t:c1 --seeds $s --data $C --out $R/retrofit-seed$s \
        --init-from $R/cifar-seed$s/residual/checkpoints/last.pt --steps $(steps 400) --eval-every 0 \
        "${COMMON[@]}" --lr 1e-4 --probe-final-samples 64 ;;
    speed)
      local t=$(left); [ $t -lt 40 ] && { echo "speed: skipped" >> $R/status.txt; return 0; }
      mkdir -p $R/speed; echo "speed speed.log" >> $LIST
      timeout $t python3 benchmarks/train_speed.py --sizes B,XL --routings residual,dar,dar:static_t,dar:dynamic \
        --steps 15 --warmup 5 --out $R/speed > $R/speed.log 2>&1
      echo "speed: rc=$? at $(( $(date +%s) - T0 )) s" >> $R/status.txt ;;
    *) echo "unknown task $1" >> $R/status.txt ;;
  esac
}

T0=$(date +%s)
gpu() {  # gpu INDEX "task1,task2"
  local i=$1; local tasks=(${2//,/ })
  for tk in "${tasks[@]}"; do
    rm -f $R/task-$tk.list
    GPU=$i LIST=$R/task-$tk.list CUDA_VISIBLE_DEVICES=$i task $tk
    # split into 15 MiB parts (16 MiB per returned file): cat $tk.tgz.part* | tar xz
    (cd $R && rm -f $OUT/$tk.tgz.part* && tar czf - --exclude='*.pt' --exclude='*.npz' --exclude='report' \
       $(cat task-$tk.list 2>/dev/null) status.txt 2>/dev/null | split -b 15m -d - $OUT/$tk.tgz.part)
  done
}
i=0
for plan in "$@"; do gpu $i "$plan" & i=$((i + 1)); done
wait
cat $R/status.txt
for f in $R/*/summary.md; do echo "== $f"; sed -n '/^|/p' $f; done
tail -3 $R/speed/*.md 2>/dev/null
ls -la $OUT
