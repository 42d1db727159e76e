#!/usr/bin/env bash
# Session 22: the router / prefix kernels' launch configurations timed inside a training step
# (benchmarks/step_kernel_sweep.py, eager, device time per kernel kind). s22_a's compiled profile had the routers +
# prefix passes at 30-34 % of their as-built byte floor; the per-shape configurations were chosen on the kernels
# alone at unshared source counts and at b64 / b128. One nvidia-h100-x2 call, ~6 min:
#   GPU 0: SiT-XL/2 b32 static c4, the D >= 1024 grid;  GPU 1: SiT-B/2 b256 static c4, the D < 1024 grid.
# Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
( CUDA_VISIBLE_DEVICES=0 timeout 540 python3 benchmarks/step_kernel_sweep.py --size XL --batch 32 \
    --json $R/sweep_XL32.json > $R/sweep_XL32.log 2>&1; echo "XL rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( CUDA_VISIBLE_DEVICES=1 timeout 540 python3 benchmarks/step_kernel_sweep.py --size B --batch 256 \
    --json $R/sweep_B256.json > $R/sweep_B256.log 2>&1; echo "B rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
wait
cat $R/status
nvidia-smi -L
grep -v Warning $R/sweep_*.log | grep -v "_warn_once" | cut -c1-220
(cd $R && tar czf $OUT/s22_b.tgz status *.log *.json)
echo "done after $(( $(date +%s) - T0 )) s"
