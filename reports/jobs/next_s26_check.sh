#!/usr/bin/env bash
# Session 26: the full float64 check (every part) at the new default (LEAN 3 at D >= 1024), then, in the time
# left, the router kernels' split by launch at SiT-XL/2 b32 and a recompute-threshold re-sweep with the leaner
# backward (rt.hmax=3 / 1). One GPU, ~9 min. Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
timeout 450 python3 -m dartool.kernels.check --json $R/check_full.json > $R/check_full.log 2>&1
echo "check rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
left=$(( 570 - ($(date +%s) - T0) ))
if [ $left -gt 90 ]; then
  timeout $left python3 benchmarks/step_kernel_sweep.py --size XL --batch 32 --by-launch --json $R/lean_by_launch_XL32.json \
    --variant "" --variant "rt.hmax=3" --variant "rt.hmax=1" > $R/lean_by_launch_XL32.log 2>&1
  echo "sweep rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
fi
cat $R/status; nvidia-smi -L
tail -3 $R/check_full.log
grep -hv "Warning\|_warn_once" $R/lean_by_launch_XL32.log 2>/dev/null | cut -c1-200
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s26_check.tgz status *.log *.json)
echo "done after $(( $(date +%s) - T0 )) s"
