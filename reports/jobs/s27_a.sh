#!/usr/bin/env bash
# Session 27: where SiT-XL/2 b32 DAR dynamic c4's extra step time goes (1.455 paired under CUDA graphs on an H100,
# s26_d: 110.9 ms vs static c4 83.1, residual 76.2). (1) benchmarks/step_profile.py --compiled: GPU time per kernel
# kind (GEMMs, routers, Inductor, other) for the residual, static c4 and dynamic c4 in one process; (2)
# step_kernel_sweep.py --query dynamic --by-launch: the dynamic routers' kernel time by source count, and their
# launch configurations swept inside the step (they were tuned on the kernels alone at N = 9 / 17, session 8, and
# never in a step). One nvidia-h100-x1 call, ~9 min. Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
timeout 300 python3 benchmarks/step_profile.py --size XL --batch 32 --compiled --query static --query dynamic \
  --rows 40 > $R/profile_XL32.log 2>&1
echo "profile rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
timeout $(( 555 - ($(date +%s) - T0) )) python3 benchmarks/step_kernel_sweep.py --size XL --batch 32 --query dynamic \
  --by-launch --json $R/dyn_sweep_XL32.json --variant "" --variant "bwd.pipe=1" --variant "bwd.pipe=2" \
  --variant "bwd.pipe=4" --variant "bwd.part_slot=0" --variant "bwd.rows=4" --variant "bwd.rows=16" \
  --variant "fwd.pipe=1" --variant "fwd.pipe=2" --variant "bwd.num_warps=2" > $R/dyn_sweep_XL32.log 2>&1
echo "sweep rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
cat $R/status; nvidia-smi -L
grep -h "=== \|extra\|routers + prefix" $R/profile_XL32.log | cut -c1-220
grep -hv "Warning\|_warn_once" $R/dyn_sweep_XL32.log | grep -v "^    [bf]wd N" | cut -c1-220
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s27_a.tgz status *.log *.json)
echo "done after $(( $(date +%s) - T0 )) s"
