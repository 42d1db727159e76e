#!/usr/bin/env bash
# Session 15, call 7 (one H100, about 5 min): eager SiT-XL/2 b64 static c4 reads 168 ms in some model instances and
# 176-227 ms in others, with or without other models run first (calls 5 and 6), and its offset tables hit the
# cache. Is the slow instance's GPU busy for longer (layout-dependent kernel time), or idle waiting on the host?
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 60 python3 -m pytest -q tests/test_offset_tables.py > $OUT/s15_g_tests.txt 2>&1; echo "tests rc $?"
timeout 420 python3 benchmarks/step_host.py --instances 3 --out $OUT > $OUT/s15_g_host.txt 2>&1
echo "host rc $?"; grep -E "step .* GPU busy|Error|wrote" $OUT/s15_g_host.txt | cut -c1-220
echo "done after $(( $(date +%s) - T0 )) s"
