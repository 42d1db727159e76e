#!/usr/bin/env bash
# Session 30, one nvidia-h200-x2 call (~7 min): session 29's "Next" 1 and 2 (was next_s29.sh), plus the Inductor
# modules the peak sites name. Carry the zarr wheels and .commit.
#   GPU 0: where SiT-B/2 b256 dynamic c4's compiled peak sits with every query kept (1.169 of the residual's memory;
#          the default keeps 17 of 25 at 1.116): step_memory.py --peak-buffers, residual + DARTOOL_SAVE_QUERY_LAST=all,
#          then the default.
#   GPU 1: why the dynamic router backward kernel costs 3.5 ms more per SiT-XL/2 b32 step when q is recomputed
#          (s29_d: 17.9 vs 14.4 ms over 57 launches): launch_inputs.py --replays on the compiled step with every q
#          recomputed (DARTOOL_SAVE_QUERY_LAST=0) and at the default (every q kept); compare per launch.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
( for SQ in all auto; do
    V="--variant dynamic"; [ $SQ = all ] && V="--variant residual --variant dynamic"
    TORCHINDUCTOR_CACHE_DIR=$R/ind_$SQ DARTOOL_SAVE_QUERY_LAST=$SQ CUDA_VISIBLE_DEVICES=0 timeout 260 \
      python3 benchmarks/step_memory.py --size B --batch 256 --compiled $V --peak-buffers 16 \
      --json $R/memory_B_$SQ.json > $R/memory_B_$SQ.log 2>&1
    echo "memory B SAVE_QUERY_LAST=$SQ rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  done ) &
( for SQ in 0 auto; do
    DARTOOL_SAVE_QUERY_LAST=$SQ CUDA_VISIBLE_DEVICES=1 timeout 260 python3 benchmarks/launch_inputs.py --size XL \
      --batch 32 --query dynamic --modes compiled --replays 3 --json $R/inputs_XL_$SQ.json > $R/inputs_XL_$SQ.log 2>&1
    echo "inputs XL SAVE_QUERY_LAST=$SQ rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  done ) &
wait
cat $R/status; nvidia-smi -L
grep -h "peak\|GB" $R/memory_B_*.log | head -60
grep -v "^  " $R/inputs_XL_*.log | grep -iv warn | head -20
grep -h "Traceback" -A3 $R/*.log | head -20
# the Inductor modules (output code) the peak's sites name: the large generated .py files
find $R/ind_* -name "*.py" -size +200k > $R/modules.txt 2>/dev/null; wc -l < $R/modules.txt
(cd $R && tar czf $OUT/s30_a.tgz status *.log *.json modules.txt)
(cd / && tar czf $OUT/s30_a_modules.tgz $(cat $R/modules.txt) 2>/dev/null); ls -la $OUT
echo "done after $(( $(date +%s) - T0 )) s"
