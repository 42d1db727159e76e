#!/usr/bin/env bash
# Session 19: SiT-XL/2 DAR static c8 under CUDA graphs (the one XL/2 chunk size no graphs run reached: the compile
# budget cut it in session 18), with the new `dartool bench --variants`. One nvidia-h100-x2 call (about 5 min):
# GPU 0 at 32 images per GPU, GPU 1 at 64; each times the residual and c8. Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R/bench
for g in 0 1; do
  ( b=$([ $g = 0 ] && echo 32 || echo 64)
    CUDA_VISIBLE_DEVICES=$g timeout 500 python3 -m dartool bench --parts graphs --sizes XL --xl-batch $b \
      --variants static-c8 --compile-budget 450 --out $R/bench > $R/bench_XL$b.log 2>&1
    echo "XL b$b rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
done
wait
cat $R/status
grep -h "ms x\|time budget\|error" $R/bench_XL*.log | cut -c1-160
(cd $R && tar czf $OUT/results.tgz status *.log bench 2>/dev/null)
echo "done after $(( $(date +%s) - T0 )) s"
