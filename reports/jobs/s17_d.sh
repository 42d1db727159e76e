#!/usr/bin/env bash
# Session 17, call 4 (one H100, at most 7 min: the session's last device time). Call 3: at SiT-XL/2 b32 the DAR
# step waits for the host (compiled 181.6 ms against the residual's 81.3; GPU busy 102). CUDA graphs take the host
# out: 1) cudagraph_check: a small DAR model compiled full vs cudagraphs must give the same losses and gradients
# over warm-up, recording and replays (offset tables made under capture); 2) XL/2 b32 compiled with CUDA graphs,
# residual and DAR static c4.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
left() { echo $(( 420 - ($(date +%s) - T0) )); }
timeout 150 python3 benchmarks/cudagraph_check.py --out $OUT > $OUT/s17_d_check.txt 2>&1
echo "check rc $? after $(( $(date +%s) - T0 )) s"; grep -E "PASS|FAIL|ALL OK|Error|error" $OUT/s17_d_check.txt | head -8 | cut -c1-400
mkdir -p /tmp/g32
timeout $(left) python3 benchmarks/step_host.py --compiled --compile-mode cudagraphs --batch 32 --instances 1 --others none --out /tmp/g32 > $OUT/s17_d_graphs32.txt 2>&1
echo "graphs b32 rc $? after $(( $(date +%s) - T0 )) s"; grep -E "step .* GPU|Error|error|failed" $OUT/s17_d_graphs32.txt | head -6 | cut -c1-300
cp /tmp/g32/*.json $OUT/ 2>/dev/null
echo "done after $(( $(date +%s) - T0 )) s"
