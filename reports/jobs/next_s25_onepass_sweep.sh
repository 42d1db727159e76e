#!/usr/bin/env bash
# Session 25. Is the one-pass prefix backward (_prefix_bwd_kernel) faster than the two passes (coef + grad, 3.6 ms
# a step on an H100 at SiT-XL/2 b32) once a row is spread over 4-8 warps? Session 10 dropped it at D = 1152 with one
# or two warps a row (registers: the K dpart_k, w_k and query-gradient sums at once; 118 spilled at groups of two).
# With four warps a thread holds a quarter of each: ~108 fp32 for K = 4, at the price of cross-warp sums per source.
# step_kernel_sweep.py inside the XL/2 DAR static c4 step; one GPU, ~5 min. Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
P1="pbwd.passes=1 pbwd.group=4"
timeout 300 python3 benchmarks/step_kernel_sweep.py --size XL --batch 32 --json $R/sweep_XL32.json \
  --variant "" --variant "$P1 pbwd.num_warps=4 pbwd.rows=8" --variant "$P1 pbwd.num_warps=4 pbwd.rows=4" \
  --variant "$P1 pbwd.num_warps=4 pbwd.rows=16" --variant "$P1 pbwd.num_warps=8 pbwd.rows=8" \
  --variant "$P1 pbwd.num_warps=8 pbwd.rows=16" --variant "$P1 pbwd.num_warps=2 pbwd.rows=8" \
  --variant "pbwd.passes=1 pbwd.group=2 pbwd.num_warps=4 pbwd.rows=8" \
  --variant "$P1 pbwd.num_warps=4 pbwd.rows=8 pbwd.pipe=2" --variant "$P1 pbwd.num_warps=8 pbwd.rows=8 pbwd.pipe=4" \
  --variant "$P1 pbwd.num_warps=4 pbwd.rows=8 pbwd.vec4=0" --variant "" \
  > $R/sweep_XL32.log 2>&1
echo "sweep XL32 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
timeout $(( 540 - ($(date +%s) - T0) )) python3 benchmarks/step_kernel_sweep.py --size XL --batch 64 \
  --json $R/sweep_XL64.json --variant "" --variant "$P1 pbwd.num_warps=4 pbwd.rows=8" \
  --variant "$P1 pbwd.num_warps=8 pbwd.rows=8" --variant "$P1 pbwd.num_warps=4 pbwd.rows=16" --variant "" \
  > $R/sweep_XL64.log 2>&1
echo "sweep XL64 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
cat $R/status; nvidia-smi -L
grep -hv "Warning\|_warn_once" $R/sweep_*.log | cut -c1-220
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s25_onepass_sweep.tgz status *.log *.json)
echo "done after $(( $(date +%s) - T0 )) s"
