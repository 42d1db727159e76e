#!/usr/bin/env bash
# Session 17's second next call, written but NOT run (one H100, about 9.5 min), after s17_e.sh passes: SiT-XL/2 b32
# under CUDA graphs (residual, DAR static c4, DAR dynamic c4) against call 3's compiled 81.3 / 181.6 / 194.1 ms.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
mkdir -p /tmp/g32
timeout 575 python3 benchmarks/step_host.py --compiled --compile-mode cudagraphs --batch 32 --instances 1 \
  --query-also dynamic --others none --out /tmp/g32 > $OUT/s17_f_graphs32.txt 2>&1
echo "graphs b32 rc $? after $(( $(date +%s) - T0 )) s"; grep -E "step .* GPU|Error|failed" $OUT/s17_f_graphs32.txt | head -6 | cut -c1-300
cp /tmp/g32/*.json $OUT/ 2>/dev/null
echo "done after $(( $(date +%s) - T0 )) s"
