#!/usr/bin/env bash
# Session 13, call 4 (asked for two H100s; it ran on two H200s of one host, a replication of call 2: check, eager, sampling, compiled rows; the merge with the H100 results was refused, as it must be): the rest of the H100 bench at the current kernels
# (call 3 measured the router and the paired rounds): GPU 0 the float64 check, then the eager rows and sampling;
# GPU 1 the compiled rows. Joined with call 3's results (committed) by --merge.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
W=/tmp/s13d; mkdir -p $W/c0 $W/c0b $W/c1
T0=$(date +%s)
B="python3 -m dartool.cli bench --quick"
( export CUDA_VISIBLE_DEVICES=0
  timeout 330 $B --parts check --out $W/c0 > $W/c0.log 2>&1
  timeout $(( 565 - ($(date +%s) - T0) )) $B --parts eager,sampling --time-budget $(( 550 - ($(date +%s) - T0) )) \
    --out $W/c0b > $W/c0b.log 2>&1 ) &
( export CUDA_VISIBLE_DEVICES=1
  timeout 565 $B --parts compiled --time-budget 550 --compile-budget 540 --out $W/c1 > $W/c1.log 2>&1 ) &
wait
echo "parts done after $(( $(date +%s) - T0 )) s"
M="--merge benchmarks/results/bench-NVIDIA-H100-80GB-HBM3-20261126-2259-router_paired.json"
for d in c0b c1 c0; do for j in $W/$d/*.json; do [ -f "$j" ] && M="$M --merge $j"; done; done
python3 -m dartool.cli bench $M --out $W/merged >> $W/merge.log 2>&1
tail -32 $W/merge.log | cut -c1-220
cp $W/merged/*.md $OUT/ 2>/dev/null
tar czf $OUT/s13_d_all.tgz -C $W .
echo "done after $(( $(date +%s) - T0 )) s"
