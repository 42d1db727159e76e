#!/usr/bin/env bash
# Session 6, call 1 (one GPU, <= 9.5 min): CUDA tests at HEAD (PendingRoute holding q, the ln_slot backward),
# then the ln_slot A/B under torch.compile, same run, same card:
#   SiT-XL/2 b64: residual / static c4 LN separate / LN fused (partials in registers) / LN fused (ln_slot)
#   SiT-B/2 b256: residual / static c4 LN fused (registers) / LN fused (ln_slot)
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
echo "== CUDA tests"
timeout 170 python3 -m pytest -p no:cacheprovider tests/test_router_kernel.py tests/test_probe.py -k "cuda" -rs 2>&1 | grep -E "passed|failed|error|FAIL|\[FAIL\]" | tail -8
echo "after $(( $(date +%s) - T0 )) s"
export ELAPSED=$(( $(date +%s) - T0 ))
timeout $(( 570 - ELAPSED )) python3 - <<'PY' 2>&1 | grep -vE "Warning|warn\(" | tail -40
import json, os, time, torch
from dartool import bench
from dartool.kernels import dispatch, router_triton as rt
torch.backends.cuda.matmul.allow_tf32 = True
bw = bench.copy_bandwidth()
rows = []
dead = time.time() + 555 - float(os.environ["ELAPSED"])
plan = [("XL", 64, "residual", None), ("XL", 64, "dar", "separate"), ("XL", 64, "dar", "regs"), ("XL", 64, "dar", "slot"),
        ("B", 256, "residual", None), ("B", 256, "dar", "regs"), ("B", 256, "dar", "slot")]
for size, batch, routing, ln in plan:
    dispatch.FUSE_LN = ln != "separate"
    dispatch.FUSE_LN_WIDE = True
    rt.BWD_CONFIG["ln_slot"] = int(ln == "slot")
    r = bench.train_step_bench(size, batch, [(routing, "static", 4, True)], compiled=True, steps=8, deadline=dead,
                               compile_est_s=35 if size == "B" else 60)
    for x in r:
        x["ln"] = ln
        if routing == "dar":
            x["variant"] += f" LN {ln}"
            x["kernels"] = rt.kernel_resources()
    rows += r
    bench._ratios(rows); bench._floors(rows, bw["bytes_per_s"])
    json.dump(dict(env=bench.env_info(), copy=bw, rows=rows), open(os.environ["OUT"] + "/slot_ab.json", "w"),
              indent=1, default=str)
    for x in r:
        print(x.get("model"), x.get("batch"), x.get("variant"), {k: round(x[k], 3) for k in ("step_ms", "peak_gb",
              "time_ratio", "mem_ratio", "floor_ratio") if isinstance(x.get(k), float)}, x.get("kernels", ""),
              x.get("error", x.get("skipped", "")), flush=True)
PY
echo "done after $(( $(date +%s) - T0 )) s"
