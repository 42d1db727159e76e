#!/usr/bin/env bash
# Session 23, last device minutes: the H100's rows at the current kernels (ROW_PIPE = 2 default): dartool bench
# --parts graphs, residual + static c4, SiT-B/2 b256, SiT-XL/2 b32 and b64. One nvidia-h100-x1 call, ~6 min.
# Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
left() { echo $(( 530 - ($(date +%s) - T0) )); }
bench() {  # SIZE BATCH NAME
  local bflag="--xl-batch $2"; [ "$1" = B ] && bflag=""   # B/2 runs at batch 256
  timeout $(left) python3 -m dartool bench --parts graphs --sizes $1 $bflag --variants static-c4 --compile-budget 300 \
    --out $R/$3 > $R/$3.log 2>&1
  echo "$3 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
}
bench B 256 b256; bench XL 32 xl32; bench XL 64 xl64
cat $R/status; nvidia-smi -L
for d in b256 xl32 xl64; do echo "== $d"; grep -h "ms x" $R/$d.log | cut -c1-160; done
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s23_c.tgz status *.log b256 xl32 xl64)
echo "done after $(( $(date +%s) - T0 )) s"
