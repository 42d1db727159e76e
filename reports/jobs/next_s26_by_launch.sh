#!/usr/bin/env bash
# Written in session 25; ran in session 26 (benchmarks/results/s26_a-by-launch: the ranges' sum matched). Where the
# router kernels' time goes by source count and layout inside the SiT-XL/2 static c4 step (step_kernel_sweep.py
# --by-launch, new in session 25), to decide whether folding each shared chunk's first router (fwd N1 prefix / bwd
# N1 prefix noh: it reads only its partial) into the prefix passes is worth building (KERNEL_NOTES session 25, Next
# 1). First check the printed "sum of the ranges" against router fwd + bwd: if they disagree, the profiler did not
# put the kernels in their ranges and the split is not to be read. One GPU (nvidia-h100-x1), ~3 min. Carry the zarr
# wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
timeout 250 python3 benchmarks/step_kernel_sweep.py --size XL --batch 32 --by-launch --json $R/by_launch_XL32.json \
  --variant "" > $R/by_launch_XL32.log 2>&1
echo "XL32 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
timeout $(( 540 - ($(date +%s) - T0) )) python3 benchmarks/step_kernel_sweep.py --size B --batch 256 --by-launch \
  --json $R/by_launch_B256.json --variant "" > $R/by_launch_B256.log 2>&1
echo "B256 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
cat $R/status; nvidia-smi -L
grep -hv "Warning\|_warn_once" $R/by_launch_*.log | cut -c1-220
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s26_by_launch.tgz status *.log *.json)
echo "done after $(( $(date +%s) - T0 )) s"
