#!/usr/bin/env bash
# Session 30, one nvidia-h200-x2 call (~4 min): s30_a again with the tools' new columns. Carry the zarr wheels and
# .commit.
#   GPU 0: SiT-B/2 b256 dynamic c4 compiled, every query kept (DARTOOL_SAVE_QUERY_LAST=all) and the default:
#          step_memory.py --peak-buffers now splits the blocks alive at the peak into saved-by-the-forward and
#          allocated-by-the-backward, and names the allocation that reached the peak.
#   GPU 1: SiT-XL/2 b32 dynamic c4 compiled, every q recomputed (0) and kept (auto): launch_inputs.py --replays
#          now also replays each dynamic launch with dq the other way (over q / into a fresh buffer), to see whether
#          writing dq over the recomputed q is what makes those launches ~20 % slower (s30_a).
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
( for SQ in all auto; do
    DARTOOL_SAVE_QUERY_LAST=$SQ CUDA_VISIBLE_DEVICES=0 timeout 200 python3 benchmarks/step_memory.py --size B \
      --batch 256 --compiled --variant dynamic --peak-buffers 16 --json $R/memory_B_$SQ.json > $R/memory_B_$SQ.log 2>&1
    echo "memory B SAVE_QUERY_LAST=$SQ rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  done ) &
( for SQ in 0 auto; do
    DARTOOL_SAVE_QUERY_LAST=$SQ CUDA_VISIBLE_DEVICES=1 timeout 200 python3 benchmarks/launch_inputs.py --size XL \
      --batch 32 --query dynamic --modes compiled --replays 3 --json $R/inputs_XL_$SQ.json > $R/inputs_XL_$SQ.log 2>&1
    echo "inputs XL SAVE_QUERY_LAST=$SQ rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  done ) &
wait
cat $R/status; nvidia-smi -L
grep -h -A40 "^  reached" $R/memory_B_*.log | head -60
grep -h "kernel time\|dynamic launches" $R/inputs_XL_*.log
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s30_b.tgz status *.log *.json)
echo "done after $(( $(date +%s) - T0 )) s"
