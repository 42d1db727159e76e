#!/usr/bin/env bash
# Session 26: Nsight Compute over every DAR kernel of one eager SiT-XL/2 b32 static c4 step (the first step after
# one warm-up step: 57 router forwards, 12 prefix forwards, 57 router backwards, 12 coef + 12 grad passes), to see
# why the few-source router backward runs at 50-65 % of its bytes' rate (s26_a: N4 prefix 117 us, N2 prefix noh
# 62 us a launch) while the forward reaches 80-95 %: occupancy, issue stalls, spills, DRAM and L2 traffic per launch.
# One GPU (nvidia-h100-x1), ~4 min. Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
NCU=/usr/local/cuda/bin/ncu
SKIP=${SKIP:-150}     # the warm-up step's DAR launches (150 a step at XL/2 c4)
timeout 480 $NCU --clock-control none --set full --target-processes all \
  -k regex:"_router_(fwd|bwd)_kernel|_prefix_(fwd|coef|grad)_kernel" --launch-skip $SKIP --launch-count 150 \
  -o $R/step -f python3 benchmarks/step_kernel_sweep.py --size XL --batch 32 --ncu 2 > $R/ncu_run.log 2>&1
echo "ncu rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
$NCU --import $R/step.ncu-rep --page raw --csv > $R/raw.csv 2> $R/raw.err
$NCU --import $R/step.ncu-rep --page details --print-units base > $R/details.txt 2>> $R/raw.err
echo "export at $(( $(date +%s) - T0 )) s: $(wc -l < $R/raw.csv) csv lines, $(wc -l < $R/details.txt) detail lines" >> $R/status
cat $R/status; nvidia-smi -L
tail -5 $R/ncu_run.log; head -3 $R/raw.err
(cd $R && tar czf $OUT/s26_ncu.tgz status ncu_run.log raw.csv raw.err details.txt)
ls -la $OUT; echo "done after $(( $(date +%s) - T0 )) s"
