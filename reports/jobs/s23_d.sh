#!/usr/bin/env bash
# Session 23, last device minutes: the row-pipelined backward with its partials in slots read by inline asm
# (router_triton.ROW_SLOTS, DARTOOL_ROUTER_RSLOT=k; experimental, off by default). sm_90 AOT: D = 1152 stack
# 464 -> 0 bytes with both partials in slots (244 registers); D = 768 168 registers. One nvidia-h100-x1 call, ~7 min:
# in-step sweep at SiT-XL/2 b32 (default / rt.rslot=1 / rt.rslot=3) and SiT-B/2 b256 (default / rt.rslot=3), then
# the float64 check's router, LayerNorm-fused and shared-prefix parts with DARTOOL_ROUTER_RSLOT=3 (the slot loads'
# order is only exercised on a GPU: the interpreter has no inline asm and no pipeline).
# Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
python3 benchmarks/step_kernel_sweep.py --size XL --batch 32 --json $R/sweep_XL32.json \
  --variant "" --variant "rt.rslot=1" --variant "rt.rslot=3" > $R/sweep_XL32.log 2>&1
echo "sweep XL32 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
timeout 120 python3 benchmarks/step_kernel_sweep.py --size B --batch 256 --json $R/sweep_B256.json \
  --variant "" --variant "rt.rslot=3" > $R/sweep_B256.log 2>&1
echo "sweep B256 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
DARTOOL_ROUTER_RSLOT=3 timeout $(( 470 - ($(date +%s) - T0) )) python3 -m dartool.kernels.check \
  --only router,ln-fused,shared-prefix --json $R/check_rslot3.json > $R/check_rslot3.log 2>&1
echo "check rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
cat $R/status; nvidia-smi -L
grep -hv "Warning\|_warn_once" $R/sweep_*.log | cut -c1-200
grep -h "\[FAIL\]\|router check\|\[ok\]" $R/check_rslot3.log | head -30
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s23_d.tgz status *.log *.json)
echo "done after $(( $(date +%s) - T0 )) s"
