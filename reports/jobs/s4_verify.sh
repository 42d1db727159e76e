#!/usr/bin/env bash
# Session 4, call 3 (two GPUs of one host, <= 6 min).
# GPU 0: the CUDA tests (incl. the compiled-dynamic saved-bytes check and compile of a dynamic model), then where the
#        peak memory of a compiled step sits (benchmarks/step_memory.py), SiT-B/2 b256: residual, static c4,
#        dynamic c4 recomputing q, dynamic c4 saving q; eager for reference.
# GPU 1: the backward sweep at SiT-XL/2 shapes with the unroll-1 configurations added.
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; R=/tmp/res; mkdir -p $OUT $R
T0=$(date +%s)
(
  export CUDA_VISIBLE_DEVICES=1
  timeout 330 python3 benchmarks/router_sweep.py --out $R/sweep --shape XL:64:4 --shape XL:64:9 --shape XL:64:17 \
    --shape XL:128:9 --shape B:256:6 > $OUT/sweep.txt 2>&1
  cp $R/sweep/* $OUT/ 2>/dev/null
) &
{
export CUDA_VISIBLE_DEVICES=0
echo "== CUDA tests (GPU 0)"
timeout 200 python3 -m pytest -p no:cacheprovider tests/test_router_kernel.py tests/test_probe.py -k "cuda" -rs 2>&1 | grep -v "Warning\|warn" | tail -5
python3 -c "
from dartool.kernels.check import compiled_saved_check
print(compiled_saved_check('cuda', False))" 2>&1 | tail -1
echo "after $(( $(date +%s) - T0 )) s"
echo "== step memory (GPU 0)"
timeout 200 python3 benchmarks/step_memory.py --size B --batch 256 --compiled --variant residual --variant static --variant dynamic --json $OUT/mem_compiled.json 2>&1 | grep "SiT-"
DARTOOL_RECOMPUTE_DYNAMIC_QUERY=0 timeout 60 python3 benchmarks/step_memory.py --size B --batch 256 --compiled --variant dynamic 2>&1 | grep "SiT-" | sed 's/$/ [q saved]/'
timeout 60 python3 benchmarks/step_memory.py --size B --batch 256 --variant residual --variant static --variant dynamic --json $OUT/mem_eager.json 2>&1 | grep "SiT-"
echo "done after $(( $(date +%s) - T0 )) s"
} 2>&1 | tee $OUT/log.txt
wait
grep -v "sweep bwd {" $OUT/sweep.txt | tail -80
ls $OUT
