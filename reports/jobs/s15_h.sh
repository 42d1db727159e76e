#!/usr/bin/env bash
# Session 15, call 8 (one H100, about 3 min): call 7 showed eager SiT-XL/2 b64 static c4 host-bound on the H100
# host (GPU busy 182 ms of a 237-290 ms step, no synchronizing calls; B/2 b256 is GPU-bound). On this machine's CPU
# the same model's Python costs about 22 ms a step more than the residual's (kernels as no-ops): where does the GPU
# host spend its time? cProfile of 3 steps of the residual and of DAR static c4.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 300 python3 benchmarks/step_host.py --instances 1 --others none --cprofile --out $OUT > $OUT/s15_h_host.txt 2>&1
echo "host rc $?"; grep -E "step .* GPU busy|Error|wrote" $OUT/s15_h_host.txt | cut -c1-240
for f in $OUT/cprofile-*dar*.txt; do head -40 $f | cut -c1-170; done
echo "done after $(( $(date +%s) - T0 )) s"
