#!/usr/bin/env bash
# Session 16, call 5 (one GPU, about 5 min): the defaults as committed (in-graph accumulation only in graphs with a
# source read by >= 20 router ops: S = 1 on, S = 4 off). The float64 check's compiled-accum part, then SiT-B/2 b256
# compiled c1 and c4 (static) over the compiled residual: c1 should keep session 16's lower memory, c4 its old time.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 170 python3 -m dartool.kernels.check --only compiled-accum > $OUT/s16_d_check.txt 2>&1; echo "check rc $?"
grep -E "compiled-accum|PASS|FAIL" $OUT/s16_d_check.txt | cut -c1-230
timeout $(( 560 - ($(date +%s) - T0) )) python3 benchmarks/compile_options.py --size B --batch 256 --variant static:1 \
  --variant static:4 --out $OUT > $OUT/s16_d_B.txt 2>&1; echo "B rc $?"
grep -E "against the residual|accum [01]|Error" $OUT/s16_d_B.txt | cut -c1-200
echo "done after $(( $(date +%s) - T0 )) s"
