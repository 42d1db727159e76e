#!/usr/bin/env bash
# Session 29: where SiT-XL/2 b32 dynamic c4's step goes at the new defaults (h bf16, every q saved; paired 1.324)
# and why recomputing q cost 0.087 of ratio there (1.425 vs 1.338, s29_b) against ~0.03 of GEMM FLOPs:
# benchmarks/step_profile.py --compiled (GPU time per kernel, residual vs DAR) with the defaults (GPU 0) and with
# every router recomputing q (DARTOOL_SAVE_QUERY_LAST=0, GPU 1). One nvidia-h200-x2 call, ~5 min.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
for G in 0 1; do
  ( [ $G = 1 ] && export DARTOOL_SAVE_QUERY_LAST=0; CUDA_VISIBLE_DEVICES=$G timeout 420 python3 \
      benchmarks/step_profile.py --size XL --batch 32 --compiled --query dynamic --rows 30 > $R/profile_g$G.log 2>&1
    echo "profile GPU $G (SAVE_QUERY_LAST ${DARTOOL_SAVE_QUERY_LAST:-auto}) rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
done
wait
cat $R/status; nvidia-smi -L
grep -h "=== \|extra\|by kind" $R/profile_g*.log | cut -c1-200
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s29_d.tgz status *.log)
echo "done after $(( $(date +%s) - T0 )) s"
