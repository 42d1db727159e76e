#!/usr/bin/env bash
# Session 20: after s20_a (optimizer_step itself gives the bench's ratio at SiT-XL/2 b32, 1.074-1.081), what in
# dartool train's loop made DAR static c4 1.11x (pair) / 1.14x (alone)? Batches now reach the GPU through pinned
# memory without a host sync. 1) the s19_e pair again (one process, both arms) under the new data path; 2)
# step_parts.py on real CIFAR images, with the old (pageable copy, one sync per step) and new (pinned) data paths
# timed in the same rounds; 3) each arm alone, one after the other on this GPU (s19_g ran them on two GPUs).
# One H100/H200 (about 8 min). Carry the zarr wheels, the test npz and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
DATA=.carry/data/cifar10jpgbytes_test.npz
TRAIN="python3 -m dartool train --data $DATA --size XL --patch 2 --batch-size 32 --compile --steps 60 --log-every 10
  --ckpt-every 1000 --final-eval-samples 0 --no-probe --no-report --quiet"
timeout 200 $TRAIN --arms residual,dar --out $R/pair > $R/pair.log 2>&1
echo "pair rc $? at $(( $(date +%s) - T0 )) s"
timeout 200 python3 benchmarks/step_parts.py --size XL --batch 32 --data $DATA --rounds 3 --out $R > $R/step_parts.log 2>&1
echo "step_parts rc $? at $(( $(date +%s) - T0 )) s"
for arm in residual dar; do
  left=$(( 570 - ($(date +%s) - T0) )); [ $left -gt 60 ] || { echo "no time for $arm alone"; continue; }
  timeout $left $TRAIN --arms $arm --out $R/$arm > $R/$arm.log 2>&1
  echo "$arm alone rc $? at $(( $(date +%s) - T0 )) s"
done
for f in $R/*/*/log.jsonl; do
  python3 -c "
import json, sys
rs = [json.loads(l) for l in open('$f')]
tr = [r for r in rs if r.get('kind') == 'train']
print('$f'.split('/r/')[1], ' '.join(f\"{r['step']}:{32e3 / r['img_per_s']:.2f}ms\" for r in tr),
      'wall/step (steps 20-60):', f\"{(tr[-1]['elapsed_s'] - tr[1]['elapsed_s']) / (tr[-1]['step'] - tr[1]['step']) * 1e3:.2f} ms\")"
done
grep -h "peak\|img/s" $R/*/summary.md | head -12
grep -h "^| [rdb]" $R/step_parts.log
grep -h "Traceback\|Error\|error:" $R/*.log | head -10
(cd $R && tar czf $OUT/results.tgz *.log *.json *.md */config.json */summary.* */*/log.jsonl 2>/dev/null)
echo "done after $(( $(date +%s) - T0 )) s"
