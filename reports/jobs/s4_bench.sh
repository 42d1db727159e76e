#!/usr/bin/env bash
# Session 4, call 2 (two GPUs of one host, <= 9.5 min).
# GPU 0: dartool bench --quick (correctness, copy rate, router vs floor, eager + compiled static c4 steps, sampling)
#        with the per-shape backward configuration.
# GPU 1: the CUDA tests (router kernel incl. compile of static and dynamic models, probe), then compiled steps:
#        residual, static c4 (per-shape config and session 3's single config, in one run), dynamic c4 (the
#        router_fwd_dynamic op that recomputes q) for SiT-B/2 b256 and SiT-XL/2 b64.
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; R=/tmp/res; mkdir -p $OUT $R
T0=$(date +%s)
(
  export CUDA_VISIBLE_DEVICES=1
  {
  echo "== CUDA tests (GPU 1)"
  timeout 200 python3 -m pytest -p no:cacheprovider tests/test_router_kernel.py tests/test_probe.py -k "cuda" -rs 2>&1 | tail -6
  echo "after $(( $(date +%s) - T0 )) s"
  echo "== compiled steps (GPU 1)"
  timeout $(( 565 - ($(date +%s) - T0) )) python3 - <<'PY' 2>&1 | grep -v "^\s*$"
import json, time, torch
from dartool import bench
from dartool.kernels import router_triton as rt
torch.backends.cuda.matmul.allow_tf32 = True
bw = bench.copy_bandwidth()
old = dict(block_r=1, rows=8, num_warps=2, num_stages=1, split=1, unroll=2, prefetch=1)   # session 3's single config
rows = []
dead = time.time() + 560 - 150
for size, batch in (("B", 256), ("XL", 64)):
    rs = bench.train_step_bench(size, batch, [("residual", "static", 4, True), ("dar", "static", 4, True),
                                              ("dar", "dynamic", 4, True)], compiled=True, steps=8,
                                deadline=dead, compile_est_s=60)
    with rt.configs(bwd=old):
        o = bench.train_step_bench(size, batch, [("dar", "static", 4, True)], compiled=True, steps=8,
                                   deadline=dead, compile_est_s=60)
    for r in o:
        r["variant"] += " (one bwd config)"
    rows += rs + o
    bench._ratios(rows); bench._floors(rows, bw["bytes_per_s"])
    json.dump(dict(env=bench.env_info(), copy=bw, rows=rows), open("/tmp/res/compiled.json", "w"), indent=1, default=str)
for r in rows:
    print(r.get("model"), r.get("variant"), {k: round(r[k], 3) for k in ("step_ms", "peak_gb", "time_ratio", "mem_ratio",
          "router_floor_ms", "floor_ratio", "first_step_s") if isinstance(r.get(k), float)}, r.get("error", r.get("skipped", "")))
PY
  } > $OUT/gpu1.txt 2>&1
  cp $R/compiled.json $OUT/ 2>/dev/null
) &
{
echo "== dartool bench --quick (GPU 0)"
export CUDA_VISIBLE_DEVICES=0
timeout 560 python3 -m dartool bench --quick --out $R/bench --time-budget 520 --compile-budget 300 2>&1 | grep -v "^\s*$" | tail -70
cp $R/bench/bench-* $OUT/ 2>/dev/null
echo "done after $(( $(date +%s) - T0 )) s"
} 2>&1 | tee $OUT/log.txt
wait
cat $OUT/gpu1.txt
ls $OUT
