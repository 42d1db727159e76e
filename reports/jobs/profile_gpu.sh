#!/usr/bin/env bash
# Session 3, call 1 (one GPU, ~8 min): profiles that decide the next changes for issues 3 and 6, and the
# measurements left open by session 2. Everything is printed; $OUT/log.txt is the record.
#   1. probe step profile, SiT-XL/2 batch 64 bf16, residual and DAR static c4 (issue 3)
#   2. probe overhead (no full run), residual and DAR (issue 3; after the batched time-cosine change)
#   3. eager training step: residual vs DAR dynamic c4 memory after the query recompute, B/2 and XL/2 (issue 6)
#   4. compiled training step profile, SiT-XL/2, residual vs DAR static c4, graph breaks (issue 6)
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; R=/tmp/res; mkdir -p $OUT $R
T0=$(date +%s)
{
for routing in residual dar; do
  echo "== 1. probe profile $routing"
  timeout 100 python3 benchmarks/probe_profile.py --size XL --batch 64 --device cuda --precision bf16 --routing $routing --rows 25 2>&1 | tail -32
  echo "after $(( $(date +%s) - T0 )) s"
done
for routing in residual dar; do
  echo "== 2. probe overhead $routing"
  timeout 100 python3 benchmarks/probe_overhead.py --device cuda --size XL --batch 64 --routing $routing --chunk-size 4 --out $R 2>&1 | tail -9
  echo "after $(( $(date +%s) - T0 )) s"
done
echo "== 3. eager step, dynamic c4 memory"
timeout 120 python3 - <<'PY' 2>&1 | grep -v "^\s*$"
import torch
from dartool.bench import train_step_bench
torch.backends.cuda.matmul.allow_tf32 = True
for size, b in (("B", 256), ("XL", 128)):
    rows = train_step_bench(size, b, [("residual", "static", 4, True), ("dar", "static", 4, True), ("dar", "dynamic", 4, True)], compiled=False, steps=8)
    for r in rows:
        print(r["model"], r["variant"], f"{r.get('step_ms', 0):.1f} ms", f"{r.get('peak_gb', 0):.2f} GB", f"t {r.get('time_ratio', 0):.3f}", f"mem {r.get('mem_ratio', 0):.3f}", r.get("error", ""))
PY
echo "after $(( $(date +%s) - T0 )) s"
echo "== 4. compiled step profile XL b128"
timeout $(( 570 - ($(date +%s) - T0) )) python3 benchmarks/step_profile.py --size XL --batch 128 --compiled --rows 25 2>&1 | grep -v "^\s*$" | tail -70
echo "done after $(( $(date +%s) - T0 )) s"
} 2>&1 | tee $OUT/log.txt
cp $R/*.md $OUT/ 2>/dev/null; ls $OUT
