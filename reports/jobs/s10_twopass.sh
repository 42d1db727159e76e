#!/usr/bin/env bash
# Session 10, second and third calls: the two-pass prefix backward (pass 1: per-source scalars with the K partial gradients
# held; pass 2: elementwise over column tiles) at SiT-XL/2 b128 and SiT-B/2 b256 chunk shapes against the one-pass
# kernel; its float64 check on the GPU; then compiled SiT-XL/2 static c4, shared prefixes off / on at the best
# forward + backward, paired against the residual.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 120 python3 - <<'PY' 2>&1 | tee $OUT/s10_prefix_check2.txt | tail -16
import torch
from dartool.kernels import check
torch.backends.cuda.matmul.allow_tf32 = False
rows = check.prefix_check("cuda", False)
for r in rows:
    print({k: (f"{v:.2e}" if isinstance(v, float) else v) for k, v in r.items()}, flush=True)
print("ALL OK" if all(r["ok"] for r in rows) else "FAIL")
PY
echo "after $(( $(date +%s) - T0 )) s"
XLB=$(python3 -c "import torch; print(128 if torch.cuda.get_device_properties(0).total_memory > 100e9 else 64)")
F=8,1,3,1,2
C=${C:-"--config $F;8,1,3,1,2,2 --config $F;8,1,3,1,4,2 --config $F;4,1,3,1,4,2 --config $F;8,2,3,1,4,2 --config $F;8,1,3,1,1,2"}
G=${G:-"--grad 16,4,128,2,2 --grad 16,2,128,1,2 --grad 32,4,128,4,2 --grad 16,4,128,4,1 --grad 16,4,256,4,2"}
timeout 220 python3 benchmarks/prefix_bench.py --size XL --batch $XLB --P 14 --K 4 $C $G --json $OUT/s10_2pass_XL.json 2>&1 | grep -v Warn | cut -c1-400
echo "after $(( $(date +%s) - T0 )) s"
timeout 80 python3 benchmarks/prefix_bench.py --size B --batch 256 --P 6 --K 4 --config "8,1,3,1,0;8,2,3,1,0" --config "8,1,3,1,0;8,1,3,1,4,2" \
  ${GB:-"--grad 16,4,128,2,2 --grad 16,4,256,4,2"} --json $OUT/s10_2pass_B.json 2>&1 | grep -v Warn | cut -c1-400
echo "after $(( $(date +%s) - T0 )) s"
CFG=$(python3 - <<'PY'
import json, os
d = json.load(open(os.environ["OUT"] + "/s10_2pass_XL.json"))
keys = ("rows", "num_warps", "pipe", "vec4", "group", "passes")
f = min(d["rows"], key=lambda r: r["fwd_ms"])["config"]
b = min(d["rows"], key=lambda r: r["bwd_ms"])
print(",".join(str(f[k]) for k in keys) + ";" + ",".join(str(b["bwd_config"][k]) for k in keys) + " "
      + ",".join(str(v) for v in (b["grad_config"] or {"r": 16, "rb": 4, "ct": 128, "w": 2, "p": 2}).values()))
PY
)
echo "best: $CFG"
set -- $CFG
DARTOOL_PREFIX_CONFIG="$1" DARTOOL_PREFIX_GRAD="$2" timeout $(( 590 - ($(date +%s) - T0) )) python3 reports/jobs/s9_shared.py XL $XLB ${NAME:-s10_shared2_XL} 4 2>&1 | grep -vE "^\s*$|Warning|warn" | cut -c1-200 | tail -12
echo "done after $(( $(date +%s) - T0 )) s"
