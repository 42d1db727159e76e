#!/usr/bin/env bash
# Session 17, call 2 (one H100, about 8 min). Call 1: three eager SiT-XL/2 b64 static c4 instances all at 203-209 ms
# (GPU busy 184 under the profiler, idle 20-25 ms a step), no Triton compiles while timed. Is the host the limit?
# 1) batch 1: the GPU's work is small, so the step time is the host's (residual vs DAR), with cProfile;
# 2) b64 again with the allocator's driver calls and Python's GC runs per step; 3) b64 with gc.freeze().
# 4) If time is left: the compiled SiT-XL/2 b64 static c1 row (in-graph sums) on the H100.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
left() { echo $(( 585 - ($(date +%s) - T0) )); }
mkdir -p /tmp/h1 /tmp/h64 /tmp/h64f
timeout 120 python3 benchmarks/step_host.py --batch 1 --instances 2 --others none --cprofile --out /tmp/h1 > $OUT/s17_b_host1.txt 2>&1
echo "b1 rc $? after $(( $(date +%s) - T0 )) s"; grep -E "step .* GPU busy|Error" $OUT/s17_b_host1.txt | cut -c1-330
timeout 120 python3 benchmarks/step_host.py --instances 2 --others none --out /tmp/h64 > $OUT/s17_b_host64.txt 2>&1
echo "b64 rc $? after $(( $(date +%s) - T0 )) s"; grep -E "step .* GPU busy|Error" $OUT/s17_b_host64.txt | cut -c1-330
timeout 120 python3 benchmarks/step_host.py --instances 2 --others none --gc-freeze --out /tmp/h64f > $OUT/s17_b_host64f.txt 2>&1
echo "b64 freeze rc $? after $(( $(date +%s) - T0 )) s"; grep -E "step .* GPU busy|Error" $OUT/s17_b_host64f.txt | cut -c1-330
(cd /tmp && tar czf $OUT/s17_b_host.tgz h1 h64 h64f)
if [ $(left) -gt 200 ]; then
  timeout $(left) python3 benchmarks/compile_options.py --size XL --batch 64 --variant static:1 --out $OUT > $OUT/s17_b_c1.txt 2>&1
  echo "c1 rc $? after $(( $(date +%s) - T0 )) s"; grep -E "^  DAR|against|Error" $OUT/s17_b_c1.txt | cut -c1-220
fi
echo "done after $(( $(date +%s) - T0 )) s"
