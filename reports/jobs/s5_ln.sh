#!/usr/bin/env bash
# Session 5, call 4 (two GPUs of one host, <= 7 min): the LayerNorm + modulate fused into static routers,
# A/B in the same run (dispatch.FUSE_LN on / off), compiled and eager.
# GPU 0: CUDA tests; SiT-B/2 b256 compiled then eager: residual / static c4 LN fused / static c4 LN separate.
# GPU 1: SiT-XL/2 compiled b64, then eager b128: the same three.
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
cat > /tmp/rows.py <<'PY'
import json, os, sys, time, torch
from dartool import bench
from dartool.kernels import dispatch
torch.backends.cuda.matmul.allow_tf32 = True
size, batch, name, budget, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), sys.argv[5]
compiled = mode == "compiled"
bw = bench.copy_bandwidth()
rows = []
dead = time.time() + budget
for routing, ln in (("residual", True), ("dar", True), ("dar", False)):
    dispatch.FUSE_LN = ln
    r = bench.train_step_bench(size, batch, [(routing, "static", 4, True)], compiled=compiled, steps=8,
                               deadline=dead, compile_est_s=(40 if size == "B" else 70) if compiled else 5)
    for x in r:
        x["fuse_ln"] = ln
        if routing == "dar":
            x["variant"] += " LN fused" if ln else " LN separate"
    rows += r
    bench._ratios(rows); bench._floors(rows, bw["bytes_per_s"])
    json.dump(dict(env=bench.env_info(), copy=bw, rows=rows), open(os.environ["OUT"] + f"/{name}.json", "w"),
              indent=1, default=str)
for r in rows:
    print(r.get("model"), r.get("batch"), r.get("variant"), "compiled" if compiled else "eager",
          {k: round(r[k], 3) for k in ("step_ms", "peak_gb", "time_ratio", "mem_ratio", "router_floor_ms",
          "floor_ratio", "first_step_s") if isinstance(r.get(k), float)}, r.get("error", r.get("skipped", "")))
PY
(
  export CUDA_VISIBLE_DEVICES=1
  { timeout 250 python3 /tmp/rows.py XL 64 xl_compiled 240 compiled
    timeout 120 python3 /tmp/rows.py XL 128 xl_eager 110 eager; } > $OUT/xl.txt 2>&1
) &
{
export CUDA_VISIBLE_DEVICES=0
echo "== CUDA tests (GPU 0)"
timeout 170 python3 -m pytest -p no:cacheprovider tests/test_router_kernel.py tests/test_probe.py -k "cuda" -rs 2>&1 | grep -E "passed|failed|error|FAIL|SKIP|\[FAIL\]" | tail -8
echo "after $(( $(date +%s) - T0 )) s"
timeout 170 python3 /tmp/rows.py B 256 b_compiled 160 compiled 2>&1 | grep -E "^SiT|Error|error" | tail -4
timeout 90 python3 /tmp/rows.py B 256 b_eager 80 eager 2>&1 | grep -E "^SiT|Error|error" | tail -4
echo "done after $(( $(date +%s) - T0 )) s"
} 2>&1 | tee $OUT/log.txt
wait
grep -E "^SiT|Error|error" $OUT/xl.txt | tail -8
ls $OUT
