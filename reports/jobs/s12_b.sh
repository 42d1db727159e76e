#!/usr/bin/env bash
# Session 12, call 2 (one GPU, about 9 min): after call 1 the finishing kernel (69 launches, 2.1 ms per XL/2 b64
# step: a serial row loop) was tiled, and shift / scale are read in place (strided) instead of copied per router and
# pass. Float64 checks on CUDA (the parts these touch), the compiled XL/2 b64 static c4 step paired against the
# residual with atomics on and off, and its profile.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 200 python3 -m dartool.kernels.check --only router,ln-fused,shared-prefix,model > $OUT/s12_b_check.txt 2>&1
echo "check rc $? after $(( $(date +%s) - T0 )) s"; grep -v "\[ok\]" $OUT/s12_b_check.txt | tail -4
timeout 240 python3 benchmarks/paired_step.py --size XL --batch 64 --query static --compiled --rounds 6 \
  --env "atomic=" --env "sums=DARTOOL_ROUTER_ATOMIC:0" --out $OUT/s12_b_paired_XL > $OUT/s12_b_paired_XL.log 2>&1
grep -E "median|Error" $OUT/s12_b_paired_XL.log | tail -4
echo "after $(( $(date +%s) - T0 )) s"
timeout $(( 585 - ($(date +%s) - T0) )) python3 benchmarks/step_profile.py --size XL --batch 64 --query static \
  --compiled --rows 45 > $OUT/s12_b_profile_XL64.txt 2>&1
tail -8 $OUT/s12_b_profile_XL64.txt
echo "done after $(( $(date +%s) - T0 )) s"
