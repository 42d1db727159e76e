#!/usr/bin/env bash
# Session 14, call 4 (one H100, about 9.5 min): the float64 check at the current commit (shared prefixes in
# groups now checked too), then static c8 compiled with prefix groups of 4 (the new default) against one group of
# 8 (group=0), SiT-B/2 b256 (D = 768: the one-pass prefix backward either way) and SiT-XL/2 b64 as time allows.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
export PYTHONPATH=$PYTHONPATH:$PWD
timeout 300 python3 -m dartool.cli bench --quick --parts check --out $OUT > $OUT/s14_d_check.log 2>&1
echo "check rc $? after $(( $(date +%s) - T0 )) s"; grep -E "correctness|shared-model|FAIL" $OUT/s14_d_check.log | cut -c1-160
timeout 170 python3 benchmarks/compile_options.py --size B --batch 256 --variant static:8 --variant static:8:group=0 \
  --out $OUT > $OUT/s14_d_b.txt 2>&1
echo "b rc $? after $(( $(date +%s) - T0 )) s"; grep -A3 "against the residual" $OUT/s14_d_b.txt | cut -c1-200
timeout $(( 585 - ($(date +%s) - T0) )) python3 benchmarks/compile_options.py --size XL --batch 64 \
  --variant static:8 --variant static:8:group=0 --out $OUT > $OUT/s14_d_xl.txt 2>&1
echo "xl rc $?"; grep -E "compiled .*ms/step" $OUT/s14_d_xl.txt | cut -c1-200; grep -A3 "against the residual" $OUT/s14_d_xl.txt | cut -c1-200
echo "done after $(( $(date +%s) - T0 )) s"
