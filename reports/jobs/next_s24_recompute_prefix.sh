#!/usr/bin/env bash
# Session 24. Routers over a shared prefix recompute h in the backward from their bf16 partial and raw sources
# (router_triton.RECOMPUTE_H_PREFIX, on by default; DARTOOL_RECOMPUTE_H_PREFIX=0 keeps h, the session 9-23 layout):
# per such router (<= 3 sources) the forward no longer writes h (fp32) and the backward no longer reads it, but reads
# the partial and its raw sources again. One nvidia-h100-x2 call, ~8 min:
#   GPU 0: step_kernel_sweep.py SiT-XL/2 b32 and SiT-B/2 b256: default / rt.prh=0 (h kept) / rt.hmax=4 / rt.hmax=2;
#          then the float64 check's LayerNorm-fused, shared-prefix, shared-prefix-model, compiled-dynamic-saved
#          and model parts on the GPU
#   GPU 1: dartool bench --parts graphs,paired --paired-mode cudagraphs SiT-XL/2 b32 static c4 (6 rounds; the
#          session 24 run at d161408 had the paired median at 1.105)
# Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
left() { echo $(( 540 - ($(date +%s) - T0) )); }
( export CUDA_VISIBLE_DEVICES=0
  for sb in XL:32 B:256; do
    timeout 170 python3 benchmarks/step_kernel_sweep.py --size ${sb%:*} --batch ${sb#*:} --json $R/sweep_${sb/:/}.json \
      --variant "" --variant "rt.prh=0" --variant "rt.hmax=4" --variant "rt.hmax=2" > $R/sweep_${sb/:/}.log 2>&1
    echo "sweep $sb rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  done
  timeout $(left) python3 -m dartool.kernels.check \
    --only ln-fused,shared-prefix,shared-prefix-model,compiled-dynamic-saved,model \
    --json $R/check.json > $R/check.log 2>&1; echo "check rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( export CUDA_VISIBLE_DEVICES=1
  timeout 520 python3 -m dartool bench --parts graphs,paired --paired-rounds 6 --paired-mode cudagraphs \
    --sizes XL --xl-batch 32 --variants static-c4 --compile-budget 300 --time-budget 500 --out $R/xl32 \
    > $R/xl32.log 2>&1
  echo "xl32 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
wait
cat $R/status; nvidia-smi -L
grep -hv "Warning\|_warn_once" $R/sweep_*.log | cut -c1-220
grep -h "\[FAIL\]\|router check\|prefix-" $R/check.log | cut -c1-160 | head -40
grep -h "ms x\|paired" $R/xl32.log | cut -c1-180
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s24_recompute_prefix.tgz status *.log *.json xl32)
echo "done after $(( $(date +%s) - T0 )) s"
