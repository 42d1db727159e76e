#!/usr/bin/env bash
# Session 19: `dartool train --compile` under the new default compile mode (auto = cudagraphs on CUDA) with every
# training feature that works with --compile on: periodic eval and probes, resume, final eval, probe and report
# (REPA refuses --compile: its hook is invisible to torch.compile; the first try of this call stopped there).
# One nvidia-h100-x2 call (about 8 min). Carry the zarr and EfficientNet wheels, .carry/data/cifar10jpgbytes_test.npz
# (10,000 CIFAR-10 images: the training set of this check) and .commit.
#   GPU 0: SiT-B/2 pair, 150 steps, then --resume to 300 with the final eval, probe and report
#   GPU 1: the same 300 steps in one go. The residual arm is deterministic, so its losses must match GPU 0's bit for
#          bit; DAR's backward sums with atomics, so its losses must only stay close.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
COMMON="--pair --data .carry/data/cifar10jpgbytes_test.npz --size B --patch 2 --batch-size 64 --compile
  --log-every 25 --ckpt-every 150 --eval-every 100 --eval-samples 500 --eval-batch 250
  --eval-steps 25 --ref-samples 5000 --pr-samples 1000 --probe-every 100 --probe-samples 32 --quiet"
FINAL="--final-eval-samples 1000 --probe-final-samples 64 --probe-pooled-samples 64 --report"
left() { echo $(( 570 - ($(date +%s) - T0) )); }
( CUDA_VISIBLE_DEVICES=0 timeout $(left) python3 -m dartool train $COMMON --steps 150 --final-eval-samples 0 \
    --no-probe --no-report --out $R/split > $R/split_1.log 2>&1
  echo "split part 1 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  CUDA_VISIBLE_DEVICES=0 timeout $(left) python3 -m dartool train $COMMON --steps 300 $FINAL --resume \
    --out $R/split > $R/split_2.log 2>&1
  echo "split part 2 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( CUDA_VISIBLE_DEVICES=1 timeout $(left) python3 -m dartool train $COMMON --steps 300 $FINAL --out $R/whole \
    > $R/whole.log 2>&1
  echo "whole rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
wait
cat $R/status
python3 - <<'PY'
import json
from pathlib import Path
R = Path("/tmp/r")
print("compile_mode in config.json:", {p.parent.name: json.loads(p.read_text())["train"]["compile_mode"]
                                       for p in R.glob("*/config.json")})
for arm in ("residual", "dar-static-c4"):
    logs = {}
    for run in ("split", "whole"):
        f = R / run / arm / "log.jsonl"
        logs[run] = [json.loads(l) for l in f.read_text().splitlines()] if f.exists() else []
    trains = {run: {r["step"]: r for r in v if r.get("kind") == "train"} for run, v in logs.items()}
    for step in sorted(set(trains["split"]) | set(trains["whole"])):
        a, b = trains["split"].get(step, {}), trains["whole"].get(step, {})
        print(f"{arm:14s} step {step:4d} loss split {a.get('loss', float('nan')):.7f} whole "
              f"{b.get('loss', float('nan')):.7f} same={a.get('loss') == b.get('loss')} "
              f"repa {a.get('repa', '-')} img/s {a.get('img_per_s', 0):.0f} / {b.get('img_per_s', 0):.0f}")
    for run, v in logs.items():
        for r in v:
            if r.get("kind") == "eval":
                print(arm, run, "eval", {k: r[k] for k in r if k not in ("kind",)})
PY
grep -h "Traceback\|Error\|error:" $R/*.log | head -10
for d in split whole; do echo "== $d"; ls $R/$d $R/$d/* | head -40; done
(cd $R && tar czf $OUT/results.tgz status *.log */config.json */summary.* */*/log.jsonl */report/summary.csv */report/findings.csv */report/figures 2>/dev/null)
ls -la $OUT
echo "done after $(( $(date +%s) - T0 )) s"
