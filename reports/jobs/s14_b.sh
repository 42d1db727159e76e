#!/usr/bin/env bash
# Session 14, call 2 (one GPU, about 7 min): why the full bench's compiled static c1 holds 1.35x (B/2) / 1.93x
# (XL/2) the residual's memory when eager c1 holds 0.99x, and why compiled XL/2 static c8 (1.246) is slower than c4.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
export PYTHONPATH=$PYTHONPATH:$PWD
timeout 60 python3 benchmarks/step_memory.py --size B --batch 256 --chunk 1 --variant residual --variant static \
  --json $OUT/s14_b_mem_eager.json > $OUT/s14_b_memory.txt 2>&1
timeout 240 python3 benchmarks/step_memory.py --size B --batch 256 --chunk 1 --compiled --variant static \
  --peak-buffers 16 --json $OUT/s14_b_mem_c1_compiled.json >> $OUT/s14_b_memory.txt 2>&1
echo "memory rc $? after $(( $(date +%s) - T0 )) s"; cut -c1-200 $OUT/s14_b_memory.txt | grep -v Warning | head -40
timeout $(( 585 - ($(date +%s) - T0) )) python3 benchmarks/step_profile.py --size XL --batch 128 --compiled \
  --chunk 4 --chunk 8 --rows 22 > $OUT/s14_b_profile_xl_c4_c8.txt 2>&1
echo "profile rc $?"; grep -E "===|by kind|extra|dynamo graphs" $OUT/s14_b_profile_xl_c4_c8.txt | cut -c1-200
echo "done after $(( $(date +%s) - T0 )) s"
