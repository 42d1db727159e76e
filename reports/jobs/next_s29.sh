#!/usr/bin/env bash
# Written in session 29, not run (its device time was spent): the session's "Next" 1 and 2, one nvidia-h200-x2
# call, ~6 min. Carry the zarr wheels and .commit.
#   GPU 0: where SiT-B/2 b256 dynamic c4's compiled peak sits with every query kept (1.169 of the residual's memory;
#          the default keeps 17 of 25 at 1.116): step_memory.py --peak-buffers, DARTOOL_SAVE_QUERY_LAST=all, then
#          the default for comparison.
#   GPU 1: why the dynamic router backward kernel costs 3.5 ms more per SiT-XL/2 b32 step when q is recomputed
#          (s29_d: 17.9 vs 14.4 ms over 57 launches): launch_inputs.py --replays on the compiled step with every q
#          recomputed (DARTOOL_SAVE_QUERY_LAST=0) and at the default (every q kept); compare per launch.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
( for SQ in all auto; do
    DARTOOL_SAVE_QUERY_LAST=$SQ CUDA_VISIBLE_DEVICES=0 timeout 240 python3 benchmarks/step_memory.py --size B \
      --batch 256 --compiled --variant dynamic --peak-buffers 16 --json $R/memory_B_$SQ.json > $R/memory_B_$SQ.log 2>&1
    echo "memory B SAVE_QUERY_LAST=$SQ rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  done ) &
( for SQ in 0 auto; do
    DARTOOL_SAVE_QUERY_LAST=$SQ CUDA_VISIBLE_DEVICES=1 timeout 260 python3 benchmarks/launch_inputs.py --size XL \
      --batch 32 --query dynamic --modes compiled --replays 3 --json $R/inputs_XL_$SQ.json > $R/inputs_XL_$SQ.log 2>&1
    echo "inputs XL SAVE_QUERY_LAST=$SQ rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  done ) &
wait
cat $R/status; nvidia-smi -L
grep -h "peak\|GB" $R/memory_B_*.log | head -20
grep -v "^  " $R/inputs_XL_*.log | grep -iv warn | head -20
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/next_s29.tgz status *.log *.json)
echo "done after $(( $(date +%s) - T0 )) s"
