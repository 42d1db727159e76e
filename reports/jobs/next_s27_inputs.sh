#!/usr/bin/env bash
# Written in session 27, never run: superseded by s28_a.sh (session 28).
# Why the compiled SiT-B/2 b256 dynamic c4 step's router backwards take 25.6 ms
# against 19.9 ms eager for the same kernels (H200, s27_d / s27_e; not the SM clock): (1) benchmarks/launch_inputs.py
# prints what every backward launch is given in each mode (dtypes, contiguity, alignment, host-side copies, row
# pipeline) and the launches that differ; (2) Nsight Compute on one N = 6 dynamic backward launch in each mode
# (step_kernel_sweep --ncu for eager; the compiled step by step_profile's compiled loop is not ncu-friendly, so the
# eager one first). One GPU (nvidia-h100-x1 or nvidia-h200), ~5 min. Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
timeout 300 python3 benchmarks/launch_inputs.py --size B --batch 256 --query dynamic --json $R/inputs_B256.json \
  > $R/inputs_B256.log 2>&1
echo "inputs rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
NCU=/usr/local/cuda/bin/ncu
timeout 240 $NCU --clock-control none --set full --target-processes all -k regex:"_router_bwd_kernel" \
  --launch-skip 25 --launch-count 25 -o $R/eager -f python3 benchmarks/step_kernel_sweep.py --size B --batch 256 \
  --query dynamic --ncu 2 > $R/ncu_eager.log 2>&1
echo "ncu rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
$NCU --import $R/eager.ncu-rep --page raw --csv 2>/dev/null | gzip > $R/eager_raw.csv.gz
cat $R/status; nvidia-smi -L
grep -v "^  " $R/inputs_B256.log | tail -20; grep -A3 "differ" $R/inputs_B256.log | head -40
(cd $R && tar czf $OUT/next_s27_inputs.tgz status *.log *.json *.csv.gz)
echo "done after $(( $(date +%s) - T0 )) s"
