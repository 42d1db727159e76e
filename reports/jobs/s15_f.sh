#!/usr/bin/env bash
# Session 15, call 6 (one H100, about 9 min): the offset tables' pinned ring (dartool.kernels.tables) on the GPU.
# Call 5 showed eager SiT-XL/2 b64 static c4 at 168 ms alone but 205-227 ms after the SiT-B/2 rows in one process,
# whichever commit: the hypothesis is that its 231 tables per step stop hitting the cache and each miss costs a
# pinned tensor and a copy of host time. 1) the CUDA tests of the tables and the router, 2) misses per step and
# ms per step with and without the ring, alone and after SiT-B/2, 3) the quick bench's eager rows (B/2 then XL/2).
# (benchmarks/offset_tables.py and the ring were removed after this run: misses were ~1 step's worth; see commit 2cc10ca)
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
left() { echo $(( 585 - ($(date +%s) - T0) )); }
timeout 170 python3 -m pytest -x -q tests/test_offset_tables.py tests/test_router_kernel.py -k "cuda or arena or offset" \
  > $OUT/s15_f_tests.txt 2>&1; echo "tests rc $?"; tail -2 $OUT/s15_f_tests.txt
timeout 220 python3 benchmarks/offset_tables.py --out $OUT > $OUT/s15_f_tables.txt 2>&1
echo "tables rc $? after $(( $(date +%s) - T0 )) s"; grep -vE "^\s*SiT-.* (eager|compiled) " $OUT/s15_f_tables.txt | tail -12 | cut -c1-160
timeout $(left) python3 -m dartool.cli bench --quick --parts eager --time-budget $(( $(left) - 10 )) --out $OUT \
  > $OUT/s15_f_eager.log 2>&1; echo "eager rc $?"
grep -E "eager +[0-9.]+ ms x" $OUT/s15_f_eager.log | cut -c1-120
echo "done after $(( $(date +%s) - T0 )) s"
