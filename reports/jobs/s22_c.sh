#!/usr/bin/env bash
# Session 22: FEW_SOURCES (routers of <= 4 sources at D >= 1024 unpipelined; s22_b's in-step sweep) checked and
# timed. One nvidia-h100-x4 call (H200s may come; the card is recorded), four jobs at once, ~8 min:
#   GPU 0: step_kernel_sweep.py SiT-XL/2 b32: FEW_SOURCES 0 / 2 / 3 / 4 (new default) / 5 / 8 and two fixed
#          configurations; then b64: 0 / 4; then the float64 check on the GPU (dartool.kernels.check)
#   GPU 1: dartool bench --parts graphs SiT-XL/2 b32, residual + static c4, new default
#   GPU 2: the same with DARTOOL_ROUTER_FEW=0 (session 21's kernels' configuration)
#   GPU 3: dartool bench --parts graphs SiT-XL/2 b64, residual + static c4, new default
# Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R/bench_xl32 $R/bench_xl32_few0 $R/bench_xl64
( export CUDA_VISIBLE_DEVICES=0
  timeout 300 python3 benchmarks/step_kernel_sweep.py --size XL --batch 32 --json $R/sweep_XL32.json \
    --variant "" --variant "rt.few=0" --variant "rt.few=2" --variant "rt.few=3" --variant "rt.few=5" \
    --variant "rt.few=8" --variant "bwd.pipe=1 bwd.part_slot=0" --variant "bwd.pipe=1 fwd.pipe=1" \
    > $R/sweep_XL32.log 2>&1; echo "sweep XL32 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  timeout 150 python3 benchmarks/step_kernel_sweep.py --size XL --batch 64 --json $R/sweep_XL64.json \
    --variant "" --variant "rt.few=0" > $R/sweep_XL64.log 2>&1; echo "sweep XL64 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  timeout $(( 540 - ($(date +%s) - T0) )) python3 -m dartool.kernels.check --json $R/check.json > $R/check.log 2>&1
  echo "check rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( CUDA_VISIBLE_DEVICES=1 timeout 540 python3 -m dartool bench --parts graphs --sizes XL --xl-batch 32 --variants static-c4 \
    --compile-budget 500 --out $R/bench_xl32 > $R/bench_xl32.log 2>&1; echo "bench XL32 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( CUDA_VISIBLE_DEVICES=2 DARTOOL_ROUTER_FEW=0 timeout 540 python3 -m dartool bench --parts graphs --sizes XL --xl-batch 32 \
    --variants static-c4 --compile-budget 500 --out $R/bench_xl32_few0 > $R/bench_xl32_few0.log 2>&1
  echo "bench XL32 few0 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( CUDA_VISIBLE_DEVICES=3 timeout 540 python3 -m dartool bench --parts graphs --sizes XL --xl-batch 64 --variants static-c4 \
    --compile-budget 500 --out $R/bench_xl64 > $R/bench_xl64.log 2>&1; echo "bench XL64 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
wait
cat $R/status
nvidia-smi -L
grep -hv "Warning\|_warn_once" $R/sweep_*.log | cut -c1-200
tail -5 $R/check.log
for d in bench_xl32 bench_xl32_few0 bench_xl64; do echo "== $d"; grep -h "ms x" $R/$d.log | cut -c1-160; done
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s22_c.tgz status *.log *.json bench_*)
echo "done after $(( $(date +%s) - T0 )) s"
