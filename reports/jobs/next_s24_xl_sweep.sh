#!/usr/bin/env bash
# Session 24. The recompute rule at D = 1152 and a few prefix-pass configurations not swept in-step before, inside the
# SiT-XL/2 DAR static c4 step (step_kernel_sweep.py; s24_b had, per step on an H200 at b32: prefix routers
# recomputing h 10.457 ms, keeping it 10.434, rt.hmax=2 10.290, rt.hmax=4 10.833). One GPU, ~5 min:
#   XL b32: default, rt.hmax=2 / 1 / 0, pass-2 (prefix grad) blocks of 4 rows, 256-column tiles on two warps,
#           source pipelines 4 deep in each prefix pass, forward rows 4, and the default again (noise)
#   XL b64: default, rt.hmax=2 / 1 / 0, rt.prh=0
# Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
timeout 280 python3 benchmarks/step_kernel_sweep.py --size XL --batch 32 --json $R/sweep_XL32.json \
  --variant "" --variant "rt.hmax=2" --variant "rt.hmax=1" --variant "rt.hmax=0" --variant "pgrad.rb=4" \
  --variant "pgrad.rb=4 pgrad.rows=32" --variant "pgrad.ct=256 pgrad.num_warps=2" --variant "pfwd.pipe=4" \
  --variant "pbwd.pipe=4" --variant "pgrad.pipe=4" --variant "pfwd.rows=4" --variant "rt.hmax=2" --variant "" \
  > $R/sweep_XL32.log 2>&1
echo "sweep XL32 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
timeout $(( 540 - ($(date +%s) - T0) )) python3 benchmarks/step_kernel_sweep.py --size XL --batch 64 \
  --json $R/sweep_XL64.json --variant "" --variant "rt.hmax=2" --variant "rt.hmax=1" --variant "rt.hmax=0" \
  --variant "rt.prh=0" > $R/sweep_XL64.log 2>&1
echo "sweep XL64 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
cat $R/status; nvidia-smi -L
grep -hv "Warning\|_warn_once" $R/sweep_*.log | cut -c1-220
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s24_xl_sweep.tgz status *.log *.json)
echo "done after $(( $(date +%s) - T0 )) s"
