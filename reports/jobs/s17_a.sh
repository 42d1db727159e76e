#!/usr/bin/env bash
# Session 17, call 1 (one H100, about 9 min).
# 1) Eager SiT-XL/2 b64 static c4: three model instances in one process, each with cProfile of 3 steps: session 16
#    saw one instance at 169 ms and another at 204 ms with the GPU idle 22 ms a step; compare the profiles.
# 2) Compiled SiT-XL/2 b64 static c8 with in-graph accumulation (reader threshold 10: c8's v_0 has 17 readers,
#    below the default 20) against without: c8's memory was 1.151 on the H200 at b128 (session 14).
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
left() { echo $(( 585 - ($(date +%s) - T0) )); }
mkdir -p /tmp/host
timeout 200 python3 benchmarks/step_host.py --instances 3 --others none --cprofile --out /tmp/host > $OUT/s17_a_host.txt 2>&1
echo "host rc $? after $(( $(date +%s) - T0 )) s"; grep -E "step .* GPU busy|Error|wrote" $OUT/s17_a_host.txt | cut -c1-220
(cd /tmp/host && tar czf $OUT/s17_a_cprofile.tgz cprofile-*.txt step_host-*.json)
timeout $(left) python3 benchmarks/compile_options.py --size XL --batch 64 --variant static:8 \
  --variant static:8:accmin=10 --out $OUT > $OUT/s17_a_c8.txt 2>&1
echo "c8 rc $? after $(( $(date +%s) - T0 )) s"; grep -E "^  DAR|against|Error" $OUT/s17_a_c8.txt | cut -c1-220
echo "done after $(( $(date +%s) - T0 )) s"
