#!/usr/bin/env bash
# Session 27: is the compiled step's slower dynamic router backward (25.5 ms against 19.9 ms eager for the same
# kernels, SiT-B/2 b256, H200, s27_b / s27_d) the SM clock? An nvidia-smi log (SM / memory clock, power, 100 ms)
# beside the eager in-step sweep (default only) and the compiled profile of residual + dynamic c4, with time marks.
# One GPU, ~3 min. Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_throttle_reasons.active \
  --format=csv,noheader,nounits -lms 100 > $OUT/smi.csv 2>&1 &
SMI=$!
mark() { echo "$(date +%Y/%m/%d\ %H:%M:%S.%N | cut -c1-23) $1" >> $OUT/marks.txt; }
mark "eager start"
timeout 90 python3 benchmarks/step_kernel_sweep.py --size B --batch 256 --query dynamic --variant "" --steps 5 \
  > $OUT/eager.log 2>&1
mark "eager end rc $?"
timeout 130 python3 benchmarks/step_profile.py --size B --batch 256 --compiled --query dynamic --rows 6 \
  > $OUT/compiled.log 2>&1
mark "compiled end rc $?"
kill $SMI
cat $OUT/marks.txt; nvidia-smi -L
grep -v "Warning\|_warn" $OUT/eager.log | head -4; grep -h "=== \|router bwd" $OUT/compiled.log
echo "done after $(( $(date +%s) - T0 )) s"
