#!/usr/bin/env bash
# Session 19: REPA under torch.compile and CUDA graphs (z_k is now an output of the model, `return_block`, not a
# hook). One nvidia-h100-x2 call (about 5 min). Carry the zarr and EfficientNet wheels,
# .carry/data/cifar10jpgbytes_test.npz and .commit.
#   GPU 0: SiT-B/2 pair with REPA (EfficientNet-Lite0, block 4), --compile (default mode: cudagraphs), 200 steps
#   GPU 1: the same eagerly (--no-compile). The REPA and diffusion losses must follow the same path (GPU runs are not
#          bit-reproducible: session 19's s19_b), and the compiled run must be faster.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
COMMON="--pair --data .carry/data/cifar10jpgbytes_test.npz --size B --patch 2 --batch-size 64 --repa efficientnet-lite0
  --steps 200 --log-every 25 --ckpt-every 200 --final-eval-samples 0 --no-probe --no-report --quiet"
for g in 0 1; do
  ( if [ $g = 0 ]; then mode=compiled; flag=--compile; else mode=eager; flag=--no-compile; fi
    CUDA_VISIBLE_DEVICES=$g timeout 500 python3 -m dartool train $COMMON $flag --out $R/$mode > $R/$mode.log 2>&1
    echo "$mode rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
done
wait
cat $R/status
python3 - <<'PY'
import json
from pathlib import Path
R = Path("/tmp/r")
print({p.parent.name: (json.loads(p.read_text())["train"]["compile"], json.loads(p.read_text())["train"]["compile_mode"])
       for p in R.glob("*/config.json")})
for arm in ("residual", "dar-static-c4"):
    tr = {m: [json.loads(l) for l in (R / m / arm / "log.jsonl").read_text().splitlines() if '"train"' in l]
          for m in ("compiled", "eager") if (R / m / arm / "log.jsonl").exists()}
    for a, b in zip(tr.get("compiled", []), tr.get("eager", [])):
        print(f"{arm:14s} step {a['step']:4d} loss {a['loss']:.5f} / {b['loss']:.5f}  repa {a['loss_repa']:.5f} / "
              f"{b['loss_repa']:.5f}  img/s {a['img_per_s']:.0f} / {b['img_per_s']:.0f}  (compiled / eager)")
for m in ("compiled", "eager"):
    s = R / m / "summary.json"
    if s.exists():
        for r in json.loads(s.read_text())["runs"]:
            print(m, r["run"], "img/s", round(r["img_per_s"] or 0), "first step s", r.get("first_step_s"))
PY
grep -h "Traceback\|Error\|error:" $R/*.log | head -10
(cd $R && tar czf $OUT/results.tgz status *.log */config.json */summary.* */*/log.jsonl 2>/dev/null)
echo "done after $(( $(date +%s) - T0 )) s"
