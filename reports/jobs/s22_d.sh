#!/usr/bin/env bash
# Session 22: FEW_SOURCES with part_slot 0 (routers of <= 4 sources at D >= 1024: unpipelined loops, the backward's
# query-gradient partial in registers) timed against DARTOOL_ROUTER_FEW=0 on the same card, in both orders.
# One nvidia-h100-x4 call, ~6 min:
#   GPU 0: step_kernel_sweep.py SiT-XL/2 b32 and b64: default / rt.few=0; then the float64 check's router,
#          LayerNorm-fused and shared-prefix parts (dartool.kernels.check --only ...)
#   GPU 1: dartool bench --parts graphs SiT-XL/2 b32 residual + static c4: default, then DARTOOL_ROUTER_FEW=0
#   GPU 2: the same, FEW=0 first
#   GPU 3: the same at SiT-XL/2 b64, default first
# Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
left() { echo $(( 330 - ($(date +%s) - T0) )); }
bench() {  # GPU BATCH FEW NAME
  CUDA_VISIBLE_DEVICES=$1 DARTOOL_ROUTER_FEW=$3 timeout $(left) python3 -m dartool bench --parts graphs --sizes XL \
    --xl-batch $2 --variants static-c4 --compile-budget 300 --out $R/$4 > $R/$4.log 2>&1
  echo "$4 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
}
( export CUDA_VISIBLE_DEVICES=0
  for b in 32 64; do
    timeout 150 python3 benchmarks/step_kernel_sweep.py --size XL --batch $b --json $R/sweep_XL$b.json \
      --variant "" --variant "rt.few=0" > $R/sweep_XL$b.log 2>&1; echo "sweep XL$b rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  done
  timeout $(left) python3 -m dartool.kernels.check --only router,ln-fused,shared-prefix,shared-prefix-model \
    --json $R/check.json > $R/check.log 2>&1; echo "check rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( bench 1 32 4 g1_xl32_few4; bench 1 32 0 g1_xl32_few0 ) &
( bench 2 32 0 g2_xl32_few0; bench 2 32 4 g2_xl32_few4 ) &
( bench 3 64 4 g3_xl64_few4; bench 3 64 0 g3_xl64_few0 ) &
wait
cat $R/status
nvidia-smi -L
grep -hv "Warning\|_warn_once" $R/sweep_*.log | cut -c1-200
grep -h "\[FAIL\]\|router check" $R/check.log | head
for d in g1_xl32_few4 g1_xl32_few0 g2_xl32_few0 g2_xl32_few4 g3_xl64_few4 g3_xl64_few0; do echo "== $d"; grep -h "ms x" $R/$d.log | cut -c1-160; done
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s22_d.tgz status *.log *.json g*_xl*)
echo "done after $(( $(date +%s) - T0 )) s"
