#!/usr/bin/env bash
# Session 26: the backward with fewer registers held across its row loop (router_triton.LEAN, new): timed inside
# the static c4 step (step_kernel_sweep.py, rt.lean=1 / 3, and 3 with a three-deep row pipeline or registers capped at 168) at SiT-XL/2
# b32 and SiT-B/2 b256, then the float64 check's router, LayerNorm-fused and shared-prefix parts with LEAN=3 on
# the GPU. One GPU (nvidia-h100-x1), ~8 min. Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
timeout 280 python3 benchmarks/step_kernel_sweep.py --size XL --batch 32 --json $R/lean_XL32.json \
  --variant "" --variant "rt.lean=1" --variant "rt.lean=3" --variant "rt.lean=3 rt.rpipe=3" \
  --variant "rt.lean=3 rt.maxnreg=168" > $R/lean_XL32.log 2>&1
echo "XL32 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
timeout $(( 430 - ($(date +%s) - T0) )) python3 benchmarks/step_kernel_sweep.py --size B --batch 256 \
  --json $R/lean_B256.json --variant "" --variant "rt.lean=3" --variant "rt.lean=3 rt.maxnreg=168" \
  > $R/lean_B256.log 2>&1
echo "B256 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
DARTOOL_ROUTER_LEAN=3 timeout $(( 560 - ($(date +%s) - T0) )) python3 -m dartool.kernels.check \
  --only router,ln-fused,shared-prefix --json $R/check_lean3.json > $R/check_lean3.log 2>&1
echo "check rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
cat $R/status; nvidia-smi -L
grep -hv "Warning\|_warn_once" $R/lean_*.log | cut -c1-200
tail -4 $R/check_lean3.log
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s26_lean.tgz status *.log *.json)
echo "done after $(( $(date +%s) - T0 )) s"
