#!/usr/bin/env bash
# Session 15, call 3 (one H100, about 9 min): compile mode "blocks" for SiT-XL/2 c1, whose whole-model compile holds
# 1.93x the residual's memory (H200 b128); "regions" there cost 2.19x the time (call 1). Plus XL/2 b64 static c8
# under the default compile (prefix groups of four) on the H100.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
export PYTHONPATH=$PYTHONPATH:$PWD
timeout 570 python3 benchmarks/compile_options.py --size XL --batch 64 --variant static:1:blocks=1 --variant static:1 \
  --variant static:8 --out $OUT > $OUT/s15_c_xl.txt 2>&1
echo "xl rc $?"; grep -E "compiled .*ms/step" $OUT/s15_c_xl.txt | cut -c1-200; grep -A4 "against the residual" $OUT/s15_c_xl.txt | cut -c1-200
echo "done after $(( $(date +%s) - T0 )) s"
