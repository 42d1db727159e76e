#!/usr/bin/env bash
# Session 23: the row-pipelined few-source backward is the default (router_triton.ROW_PIPE = 2). Confirm it:
# full float64 check on the GPU at the new defaults, and same-card A/B under CUDA graphs against
# DARTOOL_ROUTER_RPIPE=1 (dartool bench --parts graphs, residual + static c4), both orders at XL/2 b32.
# One nvidia-h100-x4 call, ~8 min:
#   GPU 0: B/2 b256 RPIPE=1 then default, then python -m dartool.kernels.check (every part)
#   GPU 1: XL/2 b32 default, then RPIPE=1
#   GPU 2: XL/2 b32 RPIPE=1, then default
#   GPU 3: XL/2 b64 default, then RPIPE=1
# Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
left() { echo $(( 540 - ($(date +%s) - T0) )); }
bench() {  # GPU SIZE BATCH RPIPE NAME
  local bflag="--xl-batch $3"; [ "$2" = B ] && bflag=""   # B/2 runs at batch 256
  CUDA_VISIBLE_DEVICES=$1 DARTOOL_ROUTER_RPIPE=$4 timeout $(( $(left) / ${6:-1} )) python3 -m dartool bench --parts graphs \
    --sizes $2 $bflag --variants static-c4 --compile-budget 300 --out $R/$5 > $R/$5.log 2>&1
  echo "$5 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
}
( bench 0 B 256 1 g0_b256_rp1 3; bench 0 B 256 2 g0_b256_rp2 2
  CUDA_VISIBLE_DEVICES=0 timeout $(left) python3 -m dartool.kernels.check --json $R/check.json > $R/check.log 2>&1
  echo "check rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( bench 1 XL 32 2 g1_xl32_rp2 2; bench 1 XL 32 1 g1_xl32_rp1 ) &
( bench 2 XL 32 1 g2_xl32_rp1 2; bench 2 XL 32 2 g2_xl32_rp2 ) &
( bench 3 XL 64 2 g3_xl64_rp2 2; bench 3 XL 64 1 g3_xl64_rp1 ) &
wait
cat $R/status
nvidia-smi -L
grep -h "\[FAIL\]\|router check" $R/check.log | head
for d in g0_b256_rp1 g0_b256_rp2 g1_xl32_rp2 g1_xl32_rp1 g2_xl32_rp1 g2_xl32_rp2 g3_xl64_rp2 g3_xl64_rp1; do
  echo "== $d"; grep -h "ms x" $R/$d.log | cut -c1-160; done
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s23_b.tgz status *.log *.json g*_*)
echo "done after $(( $(date +%s) - T0 )) s"
