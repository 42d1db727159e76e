#!/usr/bin/env bash
# Session 17, call 3 (one H100, about 9.5 min). Call 2 found eager SiT-XL/2 static c4's host time at batch 1
# (GPU nearly idle) 168-198 ms a step against the residual's 68 ms: at b64 (GPU busy 182 ms) the host and the GPU
# are even, hence the slow "instances". At the DiT recipe's per-GPU batch (256 over 8 GPUs = 32) the host would
# lead: measure b32 eager and compiled (residual, static c4, dynamic c4), then compiled b1 (host time under compile).
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
left() { echo $(( 585 - ($(date +%s) - T0) )); }
mkdir -p /tmp/e32 /tmp/c32 /tmp/c1
timeout 120 python3 benchmarks/step_host.py --batch 32 --instances 1 --query-also dynamic --others none --out /tmp/e32 > $OUT/s17_c_eager32.txt 2>&1
echo "eager b32 rc $? after $(( $(date +%s) - T0 )) s"; grep -E "step .* GPU busy|Error" $OUT/s17_c_eager32.txt | cut -c1-200
timeout 360 python3 benchmarks/step_host.py --compiled --batch 32 --instances 1 --query-also dynamic --others none --out /tmp/c32 > $OUT/s17_c_comp32.txt 2>&1
echo "compiled b32 rc $? after $(( $(date +%s) - T0 )) s"; grep -E "step .* GPU busy|Error" $OUT/s17_c_comp32.txt | cut -c1-200
(cd /tmp && tar czf $OUT/s17_c_host.tgz e32 c32)
if [ $(left) -gt 150 ]; then
  timeout $(( $(left) - 10 )) python3 benchmarks/step_host.py --compiled --batch 1 --instances 1 --others none --out /tmp/c1 > $OUT/s17_c_comp1.txt 2>&1
  echo "compiled b1 rc $? after $(( $(date +%s) - T0 )) s"; grep -E "step .* GPU busy|Error" $OUT/s17_c_comp1.txt | cut -c1-200
  (cd /tmp && tar czf $OUT/s17_c_host1.tgz c1)
fi
echo "done after $(( $(date +%s) - T0 )) s"
