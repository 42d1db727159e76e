#!/usr/bin/env bash
# Session 4, call 1 (two GPUs, <= 9.5 min). GPU 0: the CUDA tests (router kernel + probe), then the backward
# launch-configuration sweep at the shapes compiled training steps run (benchmarks/router_sweep.py).
# GPU 1: compiled training steps, residual vs DAR static c4 vs dynamic c4, SiT-B/2 b256 and SiT-XL/2 b64, at the
# current (single) launch configuration: the baseline for the sweep, and the first compiled dynamic c4 figures.
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; R=/tmp/res; mkdir -p $OUT $R
T0=$(date +%s)
(
  export CUDA_VISIBLE_DEVICES=1
  timeout 540 python3 - <<'PY' 2>&1 | grep -v "^\s*$" > $OUT/compiled.txt
import json, time, torch
from dartool import bench
torch.backends.cuda.matmul.allow_tf32 = True
bw = bench.copy_bandwidth()
rows = []
dead = time.time() + 520
for size, batch in (("B", 256), ("XL", 64)):
    rows += bench.train_step_bench(size, batch, [("residual", "static", 4, True), ("dar", "static", 4, True),
                                                 ("dar", "dynamic", 4, True)], compiled=True, steps=8,
                                   deadline=dead, compile_est_s=60)
    bench._ratios(rows); bench._floors(rows, bw["bytes_per_s"])
    json.dump(dict(env=bench.env_info(), copy=bw, rows=rows), open("/tmp/res/compiled.json", "w"), indent=1, default=str)
for r in rows:
    print(r.get("model"), r.get("variant"), {k: round(r[k], 3) for k in ("step_ms", "peak_gb", "time_ratio", "mem_ratio",
          "router_floor_ms", "floor_ratio", "first_step_s") if isinstance(r.get(k), float)}, r.get("error", ""))
PY
  cp $R/compiled.json $OUT/ 2>/dev/null
) &
{
echo "== CUDA tests (GPU 0)"
export CUDA_VISIBLE_DEVICES=0
timeout 200 python3 -m pytest -p no:cacheprovider tests/test_router_kernel.py tests/test_probe.py -k "cuda" -rs 2>&1 | tail -8
echo "after $(( $(date +%s) - T0 )) s"
echo "== backward sweep"
timeout $(( 560 - ($(date +%s) - T0) )) python3 benchmarks/router_sweep.py --out $R/sweep \
  --shape B:256:3 --shape B:256:6 --shape B:256:10 --shape XL:64:4 --shape XL:64:9 --shape XL:64:17 2>&1 | grep -v "sweep bwd {" | tail -90
cp $R/sweep/* $OUT/ 2>/dev/null
echo "done after $(( $(date +%s) - T0 )) s"
} 2>&1 | tee $OUT/log.txt
wait
cat $OUT/compiled.txt
ls $OUT
