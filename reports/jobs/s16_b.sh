#!/usr/bin/env bash
# Session 16, calls 2-3 (two H100s or H200s of one host, about 9 min): in-graph gradient accumulation under torch.compile
# (dartool.kernels.compiled_slots: the routers' backward ops add each shared source's gradient into one buffer, as
# the eager kernels do). GPU 0: the float64 check's compiled-accum part (compiled on / off against eager), then
# SiT-B/2 b256 c1, c4 and dynamic c4 with accumulation on and off against the compiled residual. GPU 1: SiT-XL/2 b64
# c1 and c4, on and off. Time and peak memory over the compiled residual of the same process.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
(
  CUDA_VISIBLE_DEVICES=0 timeout 150 python3 -m dartool.kernels.check --only compiled-accum,model > $OUT/s16_b_check.txt 2>&1
  echo "check rc $?" >> $OUT/s16_b_check.txt
  CUDA_VISIBLE_DEVICES=0 timeout $(( 570 - ($(date +%s) - T0) )) python3 benchmarks/compile_options.py --size B \
    --batch 256 --variant static:1 --variant static:1:accum=0 --variant static:4 --variant static:4:accum=0 \
    --variant dynamic:4 --variant dynamic:4:accum=0 --out $OUT > $OUT/s16_b_B.txt 2>&1
  echo "B rc $?" >> $OUT/s16_b_B.txt
) &
CUDA_VISIBLE_DEVICES=1 timeout 570 python3 benchmarks/compile_options.py --size XL --batch 64 --variant static:1 \
  --variant static:1:accum=0 --variant static:4 --variant static:4:accum=0 --out $OUT > $OUT/s16_b_XL.txt 2>&1
echo "XL rc $?" >> $OUT/s16_b_XL.txt
wait
grep -E "compiled-accum|model-|PASS|FAIL|rc " $OUT/s16_b_check.txt | cut -c1-230
for f in $OUT/s16_b_B.txt $OUT/s16_b_XL.txt; do grep -E "against the residual|accum [01]|rc |Error" $f | cut -c1-200; done
echo "done after $(( $(date +%s) - T0 )) s"
