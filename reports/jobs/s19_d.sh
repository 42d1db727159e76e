#!/usr/bin/env bash
# Session 19: where a compiled DAR arm spends its warm-up. s19_c's summary showed DAR B/2 under CUDA graphs at
# 864 img/s while its log windows after the first ran at 1,770: about 7 s beyond the 54 s first step. One GPU, SiT-B/2
# pair, 12 steps logged one by one, Dynamo's recompiles logged. Carry the zarr wheels, the test npz and .commit.
# First run: DAR recompiled at its second step (a guard on dispatch._triton_ok); run again after the fix.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
R=/tmp/r; mkdir -p $R
TORCH_LOGS="recompiles,cudagraphs" timeout 400 python3 -m dartool train --pair --data .carry/data/cifar10jpgbytes_test.npz \
  --size B --patch 2 --batch-size 64 --compile --steps 12 --log-every 1 --ckpt-every 100 --final-eval-samples 0 \
  --no-probe --no-report --quiet --out $R/run > $R/run.log 2>&1; echo "rc $?"
python3 - <<'PY'
import json
from pathlib import Path
for arm in ("residual", "dar-static-c4"):
    recs = [json.loads(l) for l in Path(f"/tmp/r/run/{arm}/log.jsonl").read_text().splitlines() if '"train"' in l]
    print(arm, [round(64 / r["img_per_s"], 3) for r in recs], "s per step")
s = json.loads(Path("/tmp/r/run/summary.json").read_text())
for r in s["runs"]:
    print(r["run"], "summary img/s", round(r["img_per_s"] or 0), "first step", r["first_step_s"])
PY
grep -iv "^\s*$" $R/run.log | grep -i "recompil\|cudagraph\|guard\|skipping\|warn" | cut -c1-300 | head -40
cp $R/run.log $OUT/
