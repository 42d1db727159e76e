#!/usr/bin/env bash
# Session 28: SiT-XL/2 at b64 on H200s (session 26's Next: b64 had been measured on H100s only), at the session 28
# defaults: GPU 0 the bench's graphs part (residual, static c4, dynamic c4 under CUDA graphs: time and peak
# memory), GPU 1 its paired rounds (both at once do not fit one command's time). One nvidia-h200-x2 call, ~5 min.
# Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
for G in 0 1; do
  P=graphs; [ $G = 1 ] && P=paired
  ( CUDA_VISIBLE_DEVICES=$G timeout 400 python3 -m dartool bench --parts $P --paired-rounds 6 \
      --paired-mode cudagraphs --sizes XL --xl-batch 64 --variants static-c4,dynamic-c4 --compile-budget 380 \
      --time-budget 390 --out $R/XL64_g$G > $R/XL64_g$G.log 2>&1
    echo "XL64 $P GPU $G rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
done
wait
cat $R/status; nvidia-smi -L
grep -h "paired\|ms/step\|mem x\|met\]\|MISSED" $R/*.log | cut -c1-200
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s28_f.tgz status *.log */*.json */*.md)
echo "done after $(( $(date +%s) - T0 )) s"
