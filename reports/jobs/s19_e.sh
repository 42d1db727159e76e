#!/usr/bin/env bash
# Session 19: does an SiT-XL/2 pair (residual + DAR static c4, one process) fit and run under the new default
# compile mode (cudagraphs) at the recipe's 32 images per GPU, and what does it hold against `full`? One
# nvidia-h100-x2 call (about 5 min): GPU 0 cudagraphs, GPU 1 full; CIFAR-10 pixels at 32 px with patch 2 give
# XL/2's 256 tokens. The summaries name the peak GPU memory of the training steps (new) and img/s after the first
# log window. Carry the zarr wheels, the test npz and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
for g in 0 1; do
  ( if [ $g = 0 ]; then mode=cudagraphs; else mode=full; fi
    CUDA_VISIBLE_DEVICES=$g timeout 500 python3 -m dartool train --pair --data .carry/data/cifar10jpgbytes_test.npz \
      --size XL --patch 2 --batch-size 32 --compile --compile-mode $mode --steps 40 --log-every 10 --ckpt-every 1000 \
      --final-eval-samples 0 --no-probe --no-report --quiet --out $R/$mode > $R/$mode.log 2>&1
    echo "$mode rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
done
wait
cat $R/status
for m in cudagraphs full; do echo "== $m"; cat $R/$m/summary.md 2>/dev/null | grep -v "^$"; for a in residual dar-static-c4; do
  grep '"train"' $R/$m/$a/log.jsonl 2>/dev/null | python3 -c "
import sys, json
print('$a', [(r['step'], round(r['loss'], 4), round(r['img_per_s'])) for r in map(json.loads, sys.stdin)])"; done; done
grep -h "Traceback\|Error\|error:" $R/*.log | head -10
(cd $R && tar czf $OUT/results.tgz status *.log */config.json */summary.* */*/log.jsonl 2>/dev/null)
echo "done after $(( $(date +%s) - T0 )) s"
