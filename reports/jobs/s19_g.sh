#!/usr/bin/env bash
# Session 19: why is DAR static c4 1.11x the residual in a `dartool train` XL/2 pair at 32 images per GPU (s19_e)
# but 1.076x in the bench? Each arm alone in its own process (GPU 0 residual, GPU 1 DAR), same settings as s19_e:
# if the ratio falls to the bench's, the pair's two graph sets in one process cost it; if not, dartool train's
# step (EMA, meters, gradient norm) does. One nvidia-h100-x2 call (about 4 min). Carry the zarr wheels, the test
# npz and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
for g in 0 1; do
  ( arm=$([ $g = 0 ] && echo residual || echo dar)
    CUDA_VISIBLE_DEVICES=$g timeout 420 python3 -m dartool train --arms $arm --data .carry/data/cifar10jpgbytes_test.npz \
      --size XL --patch 2 --batch-size 32 --compile --steps 40 --log-every 10 --ckpt-every 1000 \
      --final-eval-samples 0 --no-probe --no-report --quiet --out $R/$arm > $R/$arm.log 2>&1
    echo "$arm rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
done
wait
cat $R/status
for a in residual dar; do grep -v "^$" $R/$a/summary.md | sed -n 3,3p; grep -h "^| [rd]" $R/$a/summary.md | grep -v "^| run"; done
grep -h "Traceback\|Error\|error:" $R/*.log | head -10
(cd $R && tar czf $OUT/results.tgz status *.log */config.json */summary.* */*/log.jsonl 2>/dev/null)
echo "done after $(( $(date +%s) - T0 )) s"
