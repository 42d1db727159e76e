#!/usr/bin/env bash
# Session 7, call 2 (one GPU, about 8 min): where the compiled dynamic c4 step's extra time goes (kernel time by
# kind, DAR vs residual) at SiT-XL/2 b64 and SiT-B/2 b256; then the paired B/2 static ratio with the fixed harness
# (static shapes, one untimed step per block, steps queued back to back).
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
(which ncu nsys; ls -d /usr/local/cuda*/bin /opt/nvidia/nsight* 2>/dev/null; ls /usr/local/cuda/bin 2>/dev/null | tr "\n" " ") | head -c 600; echo
timeout 200 python3 benchmarks/step_profile.py --size XL --batch 64 --query dynamic --compiled --rows 24 \
  > $OUT/profile_dyn_XL.txt 2>&1
tail -45 $OUT/profile_dyn_XL.txt
echo "after $(( $(date +%s) - T0 )) s"
timeout 150 python3 benchmarks/step_profile.py --size B --batch 256 --query dynamic --compiled --rows 24 \
  > $OUT/profile_dyn_B.txt 2>&1
tail -12 $OUT/profile_dyn_B.txt
timeout 170 python3 benchmarks/paired_step.py --size B --batch 256 --query static --compiled --rounds 8 \
  --out $OUT/paired 2>&1 | grep -E "^\||Median|Error|graphs" | tail -12
echo "done after $(( $(date +%s) - T0 )) s"
