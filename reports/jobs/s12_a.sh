#!/usr/bin/env bash
# Session 12, call 1 (two GPUs of one host, about 9 min): atomic reductions of the router / prefix backwards' query,
# gain and modulation partials (router_triton.atomic_reduce) — float64 checks on CUDA, then compiled static c4 steps
# paired against the residual with the atomics on and off (DARTOOL_ROUTER_ATOMIC=0) in one process each:
# GPU 0: the full check, then SiT-B/2 b256; GPU 1: SiT-XL/2 b64, then the XL/2 b64 step profile.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
(
  export CUDA_VISIBLE_DEVICES=0
  timeout 260 python3 -m dartool.kernels.check > $OUT/s12_a_check.txt 2>&1
  echo "gpu0 check rc $? after $(( $(date +%s) - T0 )) s" >> $OUT/s12_a_check.txt
  timeout 280 python3 benchmarks/paired_step.py --size B --batch 256 --query static --compiled --rounds 4 \
    --env "atomic=" --env "sums=DARTOOL_ROUTER_ATOMIC:0" --out $OUT/s12_a_paired_B > $OUT/s12_a_paired_B.log 2>&1
  echo "gpu0 done after $(( $(date +%s) - T0 )) s" >> $OUT/s12_a_paired_B.log
) &
(
  export CUDA_VISIBLE_DEVICES=1
  timeout 330 python3 benchmarks/paired_step.py --size XL --batch 64 --query static --compiled --rounds 6 \
    --env "atomic=" --env "sums=DARTOOL_ROUTER_ATOMIC:0" --out $OUT/s12_a_paired_XL > $OUT/s12_a_paired_XL.log 2>&1
  echo "gpu1 paired done after $(( $(date +%s) - T0 )) s" >> $OUT/s12_a_paired_XL.log
  timeout $(( 560 - ($(date +%s) - T0) )) python3 benchmarks/step_profile.py --size XL --batch 64 --query static \
    --compiled --rows 40 > $OUT/s12_a_profile_XL64.txt 2>&1
  echo "gpu1 done after $(( $(date +%s) - T0 )) s" >> $OUT/s12_a_profile_XL64.txt
) &
wait
tail -3 $OUT/s12_a_check.txt
grep -E "paired|ratio|Error|done" $OUT/s12_a_paired_B.log | tail -5
grep -E "paired|ratio|Error|done" $OUT/s12_a_paired_XL.log | tail -5
tail -12 $OUT/s12_a_profile_XL64.txt
echo "all done after $(( $(date +%s) - T0 )) s"
