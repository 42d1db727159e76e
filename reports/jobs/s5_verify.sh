#!/usr/bin/env bash
# Session 5, calls 1-2 (call 2: SWEEP=0 runs eager B/2 rows instead of the sweep) (two GPUs of one host, <= 8.5 min): verify the dynamic-router refactors on CUDA and measure
# the compiled steps with the projection gradient folded into v_prev's source gradient (DARTOOL_FOLD_PREV_GRAD)
# against the separate dv_prev, same run, same card.
# GPU 0: CUDA tests; compiled SiT-B/2 b256 residual / static c4 / dynamic c4 fold / dynamic c4 no fold; the
#        forward + backward launch sweep at two model shapes.
# GPU 1: compiled SiT-XL/2 b64 residual / static c4 / dynamic c4 fold / dynamic c4 no fold.
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
cat > /tmp/rows.py <<'PY'
import json, os, sys, time, torch
from dartool import bench
from dartool.kernels import router_triton
torch.backends.cuda.matmul.allow_tf32 = True
size, batch, name, budget = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
compiled = len(sys.argv) < 6 or sys.argv[5] != "eager"
bw = bench.copy_bandwidth()
rows = []
dead = time.time() + budget
plan = [("residual", "static", 4, True, True), ("dar", "static", 4, True, True), ("dar", "dynamic", 4, True, True),
        ("dar", "dynamic", 4, True, False)]
for routing, query, chunk, fused, fold in plan:
    router_triton.FOLD_PREV_GRAD = fold
    r = bench.train_step_bench(size, batch, [(routing, query, chunk, fused)], compiled=compiled, steps=8,
                               deadline=dead, compile_est_s=40 if size == "B" else 70)
    for x in r:
        x["fold_prev_grad"] = fold
        if routing == "dar" and query == "dynamic" and not fold:
            x["variant"] += " (dv_prev separate)"
    rows += r
    bench._ratios(rows); bench._floors(rows, bw["bytes_per_s"])
    json.dump(dict(env=bench.env_info(), copy=bw, rows=rows), open(os.environ["OUT"] + f"/{name}.json", "w"),
              indent=1, default=str)
for r in rows:
    print(r.get("model"), r.get("variant"), {k: round(r[k], 3) for k in ("step_ms", "peak_gb", "time_ratio", "mem_ratio",
          "router_floor_ms", "floor_ratio", "first_step_s") if isinstance(r.get(k), float)}, r.get("error", r.get("skipped", "")))
PY
(
  export CUDA_VISIBLE_DEVICES=1
  timeout 450 python3 /tmp/rows.py XL 64 compiled_xl 430 > $OUT/compiled_xl.txt 2>&1
) &
{
export CUDA_VISIBLE_DEVICES=0
echo "== CUDA tests (GPU 0)"
timeout 170 python3 -m pytest -p no:cacheprovider tests/test_router_kernel.py tests/test_probe.py -k "cuda" -rs 2>&1 | grep -E "passed|failed|error|FAIL|SKIP" | tail -8
echo "after $(( $(date +%s) - T0 )) s"
echo "== compiled B/2 (GPU 0)"
timeout 200 python3 /tmp/rows.py B 256 compiled_b 190 2>&1 | grep -E "^SiT|Error|error" | tail -8
echo "after $(( $(date +%s) - T0 )) s"
echo "== router sweep, forward + backward (GPU 0)"
if [ "${SWEEP:-1}" = 1 ]; then
  timeout $(( 500 - ($(date +%s) - T0) )) python3 benchmarks/router_sweep.py --out $OUT/sweep --fwd --shape B:256:6 --shape XL:64:9 2>&1 | tail -4
else
  echo "== eager B/2 (GPU 0)"
  timeout 150 python3 /tmp/rows.py B 256 eager_b 140 eager 2>&1 | grep -E "^SiT|Error|error" | tail -8
fi
echo "done after $(( $(date +%s) - T0 )) s"
} 2>&1 | tee $OUT/log.txt
wait
grep -E "^SiT|Error|error" $OUT/compiled_xl.txt | tail -8
ls -R $OUT
