#!/usr/bin/env bash
# Session 28: the new compiled-accumulation rule (compiled_slots.MIN_PENDING = 200: SiT-B/2 dynamic c4, 105
# gradients waiting, no longer accumulates; s28_c: off 1.344 against on 1.382 in the graphs part, H200) in paired
# rounds under CUDA graphs at SiT-B/2 b256, alone and with the row-pipelined dynamic backward
# (DARTOOL_ROUTER_DYN_RPIPE=12, which runs only on launches that do not accumulate), both on both cards in swapped
# order; then, time allowing, launch_inputs.py on the compiled step (every launch should now say ACCUM False).
# One nvidia-h200-x2 call, ~9 min. Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
arm() {   # arm GPU NAME ENV...
  local G=$1 N=$2; shift 2
  env "$@" CUDA_VISIBLE_DEVICES=$G timeout 245 python3 -m dartool bench --parts paired --paired-rounds 6 \
    --paired-mode cudagraphs --sizes B --variants dynamic-c4 --compile-budget 230 --time-budget 235 \
    --out $R/$N > $R/$N.log 2>&1
  echo "$N ($*) rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
}
( arm 0 rule_g0 DARTOOL_ROUTER_DYN_RPIPE=0
  arm 0 rule_rpipe12_g0 DARTOOL_ROUTER_DYN_RPIPE=12 ) &
( arm 1 rule_rpipe12_g1 DARTOOL_ROUTER_DYN_RPIPE=12
  arm 1 rule_g1 DARTOOL_ROUTER_DYN_RPIPE=0
  left=$(( 575 - ($(date +%s) - T0) ))
  if [ $left -gt 75 ]; then
    CUDA_VISIBLE_DEVICES=1 timeout $left python3 benchmarks/launch_inputs.py --size B --batch 256 --query dynamic \
      --modes compiled --json $R/inputs_compiled.json > $R/inputs_compiled.log 2>&1
    echo "inputs rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  fi ) &
wait
cat $R/status; nvidia-smi -L
grep -h "paired\|ms/step\|mem x" $R/*.log | cut -c1-200
grep -v "^  " $R/inputs_compiled.log 2>/dev/null | grep -iv warn | head -5
grep -c "True *0 *0" $R/inputs_compiled.log 2>/dev/null
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s28_d.tgz status *.log $(ls *.json 2>/dev/null) */*.json */*.md)
echo "done after $(( $(date +%s) - T0 )) s"
