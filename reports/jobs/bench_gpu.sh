#!/usr/bin/env bash
# Benchmarks of issues 3, 5 and 6 on ONE GPU in one command (~9 minutes), plus the timing of one study-sized
# evaluation (issue 7's sizing). Results: $OUT/bench.tgz (JSON + Markdown per benchmark, logs) and $OUT/log.txt.
#
#   1. CUDA tests: fused router vs float64 reference, probe alpha through the fused kernel vs the reference
#   2. eval timing: CIFAR-10 SiT-S/2, 4 arms in lockstep (the study's setting), 60 steps, then the final probe
#      (32 noise levels x 128 samples) and a 10K-sample evaluation per arm, with sampling / metric seconds
#   3. probe overhead + a full 32 x 1024 probe of SiT-XL/2 (residual, then DAR static c4)
#   4. training steps of the trainer (B/2 and XL/2; residual, DAR static / static_t / dynamic c4)
#   5. dartool bench --quick (router vs byte floor, step ratios eager + compiled) in the time left
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; R=/tmp/bench; mkdir -p $OUT $R
T0=$(date +%s); left() { echo $(( ${1} - ($(date +%s) - T0) )); }
{
echo "== 1. CUDA tests"
timeout 120 python3 -m pytest -p no:cacheprovider tests/test_router_kernel.py -k cuda 2>&1 | tail -15

echo "== 2. eval timing (study setting)"
timeout 200 python3 -m dartool train --arms residual,dar:static_t:c4,dar:dynamic:c4,dar:static:c4 --seeds 0 \
  --data .carry/data/cifar10jpgbytes_train.npz --out $R/evaltime --size S --patch 2 --batch-size 256 --lr 3e-4 \
  --ema-warmup --steps 60 --log-every 20 --ckpt-every 100000 --final-eval-samples 10000 --eval-steps 16 \
  --eval-batch 1000 --ref-samples 10000 --pr-samples 5000 --grid-images 16 --probe --probe-final-samples 128 \
  --probe-pooled-samples 64 --probe-projection-dim 32 2>&1 | grep -v "━" | grep -v "^\s*$" | tail -30
echo "rc=$? after $(( $(date +%s) - T0 )) s"

cat $R/evaltime/summary.md; grep -h '"probe"' $R/evaltime/*/log.jsonl | tail -4

echo "== 3. probe overhead, SiT-XL/2"
for routing in residual dar; do
  timeout 150 python3 benchmarks/probe_overhead.py --device cuda --size XL --batch 64 --samples 1024 --timesteps 32 \
    --full --routing $routing --chunk-size 4 --out $R/results 2>&1 | tail -12
  echo "rc=$? after $(( $(date +%s) - T0 )) s"
done

echo "== 4. trainer step speed"
timeout 150 python3 benchmarks/train_speed.py --sizes B,XL --routings residual,dar,dar:static_t,dar:dynamic \
  --out $R/results 2>&1 | tail -14
echo "rc=$? after $(( $(date +%s) - T0 )) s"

B=$(left 560)
echo "== 5. dartool bench --quick (${B} s left)"
if [ "$B" -gt 60 ]; then
  timeout $B python3 -m dartool bench --quick --out $R/results --time-budget $((B - 15)) --compile-budget $((B / 3)) 2>&1 | tail -40
fi
echo "done after $(( $(date +%s) - T0 )) s"
} 2>&1 | tee $OUT/log.txt
(cd $R && tar czf $OUT/bench.tgz --exclude='*.pt' --exclude='*.npz' --exclude='*.zarr' results evaltime 2>/dev/null)
ls -la $OUT
