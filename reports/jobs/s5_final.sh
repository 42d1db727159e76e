#!/usr/bin/env bash
# Session 5, call 3 (two GPUs of one host, <= 7.5 min): the final code.
# GPU 0: CUDA tests (float64 correctness), then dartool bench --quick --no-check --no-compile (router vs floor,
#        eager steps, sampling).
# GPU 1: compiled steps, residual / static c4 / dynamic c4, SiT-B/2 b256 and SiT-XL/2 b64.
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT/bench
T0=$(date +%s)
(
  export CUDA_VISIBLE_DEVICES=1
  timeout 420 python3 - <<'PY' > $OUT/compiled.txt 2>&1
import json, os, time, torch
from dartool import bench
torch.backends.cuda.matmul.allow_tf32 = True
bw = bench.copy_bandwidth()
rows = []
dead = time.time() + 400
for size, batch in (("B", 256), ("XL", 64)):
    rows += bench.train_step_bench(size, batch, [("residual", "static", 4, True), ("dar", "static", 4, True),
                                                 ("dar", "dynamic", 4, True)], compiled=True, steps=8,
                                   deadline=dead, compile_est_s=40 if size == "B" else 70)
    bench._ratios(rows); bench._floors(rows, bw["bytes_per_s"])
    json.dump(dict(env=bench.env_info(), copy=bw, rows=rows), open(os.environ["OUT"] + "/compiled.json", "w"), indent=1, default=str)
for r in rows:
    print(r.get("model"), r.get("variant"), {k: round(r[k], 3) for k in ("step_ms", "peak_gb", "time_ratio", "mem_ratio",
          "router_floor_ms", "floor_ratio", "first_step_s") if isinstance(r.get(k), float)}, r.get("error", r.get("skipped", "")))
PY
) &
{
export CUDA_VISIBLE_DEVICES=0
echo "== CUDA tests (GPU 0)"
timeout 170 python3 -m pytest -p no:cacheprovider tests/test_router_kernel.py tests/test_probe.py -k "cuda" -rs 2>&1 | grep -E "passed|failed|error|FAIL|SKIP" | tail -8
echo "after $(( $(date +%s) - T0 )) s"
echo "== dartool bench --quick --no-check --no-compile (GPU 0)"
timeout 230 python3 -m dartool bench --quick --no-check --no-compile --out $OUT/bench --time-budget 220 2>&1 | grep -v "^\s*$" | tail -30
echo "done after $(( $(date +%s) - T0 )) s"
} 2>&1 | tee $OUT/log.txt
wait
grep -E "^SiT|Error|error" $OUT/compiled.txt | tail -8
ls -R $OUT
