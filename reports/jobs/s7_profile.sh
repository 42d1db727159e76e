#!/usr/bin/env bash
# Session 7, call 2 (one GPU, about 8 min): the CUDA tests at HEAD (the _ln_center refactor), then where the compiled
# dynamic c4 step's extra time goes (kernel time by kind, DAR vs residual) at SiT-XL/2 b64 and SiT-B/2 b256.
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
(which ncu nsys; ls -d /usr/local/cuda*/bin /opt/nvidia/nsight* 2>/dev/null; ls /usr/local/cuda/bin 2>/dev/null | tr "\n" " ") | head -c 600; echo
timeout 220 python3 -m pytest -q -x -s tests/test_router_kernel.py tests/test_probe.py -k cuda 2>&1 \
  | grep -E "passed|failed|Error|error" | tail -8
echo "tests after $(( $(date +%s) - T0 )) s"
timeout 200 python3 benchmarks/step_profile.py --size XL --batch 64 --query dynamic --compiled --rows 24 \
  > $OUT/profile_dyn_XL.txt 2>&1
tail -45 $OUT/profile_dyn_XL.txt
echo "after $(( $(date +%s) - T0 )) s"
timeout 150 python3 benchmarks/step_profile.py --size B --batch 256 --query dynamic --compiled --rows 24 \
  > $OUT/profile_dyn_B.txt 2>&1
tail -12 $OUT/profile_dyn_B.txt
echo "done after $(( $(date +%s) - T0 )) s"
