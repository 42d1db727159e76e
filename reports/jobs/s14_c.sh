#!/usr/bin/env bash
# Session 14, call 3 (one GPU, about 8 min): (1) compiled SiT-XL/2 b128 static c8 with the chunk's routers sharing
# prefixes in groups of 4 (dispatch.SHARED_PREFIX_GROUP; the full bench had 1.246 with one group of 8);
# (2) compiled SiT-B/2 b256 static c1 memory (full bench: 1.351x) under Inductor options that realize gradient
# accumulation chains early, and static c4 under the same option.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
export PYTHONPATH=$PYTHONPATH:$PWD
timeout 230 python3 benchmarks/compile_options.py --size XL --batch 128 --variant static:8 --out $OUT \
  > $OUT/s14_c_xl.txt 2>&1
echo "xl rc $? after $(( $(date +%s) - T0 )) s"; grep -A5 "against the residual" $OUT/s14_c_xl.txt | cut -c1-200
timeout $(( 580 - ($(date +%s) - T0) )) python3 benchmarks/compile_options.py --size B --batch 256 \
  --variant static:1 --variant static:1:realize_acc_reads_threshold=2 \
  --variant static:1:realize_acc_reads_size_threshold=1 --variant static:4 \
  --variant static:4:realize_acc_reads_threshold=2 --out $OUT > $OUT/s14_c_b.txt 2>&1
echo "b rc $?"; grep -E "compiled .*ms/step|skip|Error" $OUT/s14_c_b.txt | cut -c1-200; grep -A8 "against the residual" $OUT/s14_c_b.txt | cut -c1-200
echo "done after $(( $(date +%s) - T0 )) s"
