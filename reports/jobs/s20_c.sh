#!/usr/bin/env bash
# Session 20: s20_b timed SiT-XL/2 b32 DAR static c4 at 1.12x the residual on real CIFAR images (bench step and
# dartool train's alike), s20_a at 1.08x on Gaussian noise -- on two different H200s. Here both in one run on one
# card: step_parts.py on noise, then on images, with the SM clock and power logged (nvidia-smi, 100 ms) to tell a
# power-limited clock from anything else; then each arm alone in dartool train for 400 steps on images, to see
# whether the step time drifts as the weights leave their initialisation. One H100/H200 (about 7 min).
# Carry the zarr wheels, the test npz and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
DATA=.carry/data/cifar10jpgbytes_test.npz
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv,noheader,nounits \
  -lms 100 > $R/smi.csv 2>&1 &
SMI=$!
( nvidia-smi --query-gpu=timestamp,clocks_event_reasons.active --format=csv,noheader -lms 200 > $R/reasons.csv 2>&1 ||
  nvidia-smi --query-gpu=timestamp,clocks_throttle_reasons.active --format=csv,noheader -lms 200 > $R/reasons.csv 2>&1 ) &
SMI2=$!
timeout 220 python3 benchmarks/step_parts.py --size XL --batch 32 --channels 3 --classes 10 --rounds 3 --out $R > $R/step_parts_noise.log 2>&1
echo "noise rc $? at $(( $(date +%s) - T0 )) s"
timeout 150 python3 benchmarks/step_parts.py --size XL --batch 32 --data $DATA --rounds 3 --out $R > $R/step_parts_images.log 2>&1
echo "images rc $? at $(( $(date +%s) - T0 )) s"
for arm in residual dar; do
  left=$(( 560 - ($(date +%s) - T0) )); [ $left -gt 60 ] || { echo "no time for $arm alone"; continue; }
  timeout $left python3 -m dartool train --data $DATA --size XL --patch 2 --batch-size 32 --compile --steps 400 \
    --log-every 50 --ckpt-every 1000 --final-eval-samples 0 --no-probe --no-report --quiet --arms $arm --out $R/$arm \
    > $R/$arm.log 2>&1
  echo "$arm alone rc $? at $(( $(date +%s) - T0 )) s"
done
kill $SMI; pkill -f clocks_ || true
for f in $R/*/*/log.jsonl; do
  python3 -c "
import json
tr = [r for r in map(json.loads, open('$f')) if r.get('kind') == 'train']
print('$f'.split('/r/')[1], ' '.join(f\"{r['step']}:{32e3 / r['img_per_s']:.2f}\" for r in tr), 'ms; loss', ' '.join(f\"{r['loss']:.3f}\" for r in tr))"
done
grep -h "^| [rd]" $R/step_parts_*.log
grep -h "Traceback\|Error\|error:" $R/*.log | head -10
(cd $R && tar czf $OUT/results.tgz *.log *.json *.md smi.csv reasons.csv */config.json */summary.* */*/log.jsonl 2>/dev/null)
echo "done after $(( $(date +%s) - T0 )) s"
