#!/usr/bin/env bash
# For the next session (written in session 14, not run; one GPU, about 9.5 min): dartool.models.compiling's modes
# "regions" (one graph per block: the autograd engine sums the sources' gradients between blocks as they come) and
# "blocks" (the blocks' attention and MLP compiled, the routers eager with their in-kernel gradient sums) against the
# whole-model compile, each against one whole-model-compiled residual in the same process.
# Question: do they bring compiled c1's memory (1.35x at B/2) down to eager's (0.97x), and at what time?
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
export PYTHONPATH=$PYTHONPATH:$PWD
timeout 360 python3 benchmarks/compile_options.py --size B --batch 256 --variant static:1 --variant static:1:regions=1 \
  --variant static:1:blocks=1 --variant static:4:regions=1 --variant static:4:blocks=1 --variant dynamic:4:regions=1 \
  --out $OUT > $OUT/s15_blocks_b.txt 2>&1
echo "b rc $? after $(( $(date +%s) - T0 )) s"; grep -A7 "against the residual" $OUT/s15_blocks_b.txt | cut -c1-200
timeout $(( 585 - ($(date +%s) - T0) )) python3 benchmarks/compile_options.py --size XL --batch 64 \
  --variant static:1:regions=1 --variant static:8 --variant static:8:group=0 --out $OUT > $OUT/s15_xl.txt 2>&1
echo "xl rc $?"; grep -E "compiled .*ms/step" $OUT/s15_xl.txt | cut -c1-200; grep -A4 "against the residual" $OUT/s15_xl.txt | cut -c1-200
echo "done after $(( $(date +%s) - T0 )) s"
