#!/usr/bin/env bash
# Written in session 22, NOT yet run. The experimental row-pipelined few-source backward (router_triton.ROW_PIPE,
# DARTOOL_ROUTER_RPIPE=k; KERNEL_NOTES session 22): built and checked on the CPU only (interpreter against float64,
# sm_90 AOT: the row loop gets 32-66 async copies; 0-24 stack bytes at D = 768, 464-584 at D = 1152).
# One nvidia-h100-x2 call, ~7 min:
#   GPU 0: step_kernel_sweep.py SiT-B/2 b256 and SiT-XL/2 b32: default / rt.rpipe=2 / rt.rpipe=3 / rpipe 2 with two
#          warps a row (every router of <= 8 sources; AOT: no spills at D = 1152); then the float64
#          check's router, LayerNorm-fused and shared-prefix parts with DARTOOL_ROUTER_RPIPE=2 on the GPU
#   GPU 1: dartool bench --parts graphs SiT-B/2 b256, residual + static c4: DARTOOL_ROUTER_RPIPE=2, then 1 (A/B on
#          one card; B/2 b256 static c4 was 1.113 in session 22)
# Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
left() { echo $(( 540 - ($(date +%s) - T0) )); }
( export CUDA_VISIBLE_DEVICES=0
  for sb in B:256 XL:32; do
    timeout 150 python3 benchmarks/step_kernel_sweep.py --size ${sb%:*} --batch ${sb#*:} --json $R/sweep_${sb/:/}.json \
      --variant "" --variant "rt.rpipe=2" --variant "rt.rpipe=3" --variant "bwd.rpipe=2 bwd.num_warps=2" \
      > $R/sweep_${sb/:/}.log 2>&1
    echo "sweep $sb rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  done
  DARTOOL_ROUTER_RPIPE=2 timeout $(left) python3 -m dartool.kernels.check --only router,ln-fused,shared-prefix,shared-prefix-model \
    --json $R/check_rpipe2.json > $R/check_rpipe2.log 2>&1; echo "check rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( export CUDA_VISIBLE_DEVICES=1
  for rp in 2 1; do
    DARTOOL_ROUTER_RPIPE=$rp timeout $(( $(left) / 2 + 20 )) python3 -m dartool bench --parts graphs --sizes B \
      --variants static-c4 --compile-budget 240 --out $R/bench_B_rpipe$rp > $R/bench_B_rpipe$rp.log 2>&1
    echo "bench B rpipe $rp rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  done ) &
wait
cat $R/status; nvidia-smi -L
grep -hv "Warning\|_warn_once" $R/sweep_*.log | cut -c1-200
grep -h "\[FAIL\]\|router check" $R/check_rpipe2.log | head
for rp in 2 1; do echo "== rpipe $rp"; grep -h "ms x" $R/bench_B_rpipe$rp.log | cut -c1-160; done
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s23_rowpipe.tgz status *.log *.json bench_*)
echo "done after $(( $(date +%s) - T0 )) s"
