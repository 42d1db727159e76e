#!/usr/bin/env bash
# Session 28: why the compiled SiT-B/2 b256 dynamic c4 step's router backwards take 25.6 ms against 19.9 ms eager
# for the same kernels (H200, s27_d / s27_e; not the SM clock). (1) benchmarks/launch_inputs.py: what every backward
# launch is given in each mode, and each launch's kernel time in the step and replayed at once on the same
# arguments (CUDA events): if the compiled launches are slow in place but fast replayed, it is the step's state
# (what ran before), not the inputs; if slow both ways, the inputs (addresses, layout). (2) the same with the eager
# default (tapped sources accumulated in the kernel). (3) Nsight Compute (memory, warp-state, launch sections) on
# the first launches of a step in each mode. One GPU, ~6 min. Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
st() { echo "$1 at $(( $(date +%s) - T0 )) s" >> $OUT/status; }
timeout 240 python3 benchmarks/launch_inputs.py --size B --batch 256 --query dynamic --replays 5 \
  --json $OUT/inputs.json > $OUT/inputs.log 2>&1
st "inputs rc $?"
timeout 90 python3 benchmarks/launch_inputs.py --size B --batch 256 --query dynamic --replays 5 --modes eager \
  --eager-taps --json $OUT/taps.json > $OUT/taps.log 2>&1
st "taps rc $?"
L=$(python3 -c "import json; print(len(json.load(open('$OUT/inputs.json'))['eager']))" 2>/dev/null || echo 25)
NCU=/usr/local/cuda/bin/ncu
for m in compiled eager; do
  left=$(( 560 - ($(date +%s) - T0) )); [ $left -lt 40 ] && break
  timeout $(( left < 150 ? left : 150 )) $NCU --clock-control none --section SpeedOfLight \
    --section MemoryWorkloadAnalysis --section WarpStateStats --section LaunchStats --section Occupancy \
    --section SchedulerStats --target-processes all -k regex:"_router_bwd_kernel" --launch-skip $L \
    --launch-count 6 -o /tmp/ncu_$m -f python3 benchmarks/launch_inputs.py --size B --batch 256 --query dynamic \
    --modes $m > /tmp/ncu_$m.log 2>&1
  st "ncu $m rc $? (skip $L)"
  $NCU --import /tmp/ncu_$m.ncu-rep --page raw --csv 2>/dev/null | gzip > $OUT/ncu_$m.csv.gz
  tail -5 /tmp/ncu_$m.log >> $OUT/status
done
cat $OUT/status; nvidia-smi -L
grep -v "^  " $OUT/inputs.log | grep -v -i warn | tail -20; grep -A2 "kernel time in" $OUT/inputs.log $OUT/taps.log
echo "done after $(( $(date +%s) - T0 )) s"
