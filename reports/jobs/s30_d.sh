#!/usr/bin/env bash
# Session 30, one nvidia-h200 call (~4 min). Carry the zarr wheels and .commit.
# s30_b: a dynamic backward launch writing dq over q ran ~20 % slower than the same launch writing a fresh buffer;
# s30_c: in-kernel accumulation (ACCUM, compiled_slots) costs SiT-B/2 dynamic c4 ~0.04 of step ratio. Both load and
# store the same addresses in one kernel. router_kernels_bench.py --writes times one launch per way of writing
# (fresh, over-q, into = given buffers started, accum = added into them), same inputs, same card; then Nsight
# Compute's memory counters for the same launches (XL/2 b32, N = 10, dynamic).
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
timeout 200 python3 benchmarks/router_kernels_bench.py --shape XL:32:10 --shape XL:32:18 --shape B:256:6 \
  --shape B:256:10 --query dynamic --query static --writes fresh,over-q,into,accum --json $R/writes.json \
  > $R/writes.log 2>&1
echo "writes rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
timeout 240 $NCU --clock-control none -k regex:_router_bwd_kernel --csv --metrics \
gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sectors_op_read.sum,lts__t_sectors_op_write.sum,lts__t_sector_op_read_hit_rate.pct,lts__t_sector_op_write_hit_rate.pct,l1tex__t_sector_hit_rate.pct,l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum,l1tex__t_sectors_pipe_lsu_mem_global_op_st.sum,smsp__warp_issue_stalled_lg_throttle_per_warp_active.pct,smsp__warp_issue_stalled_long_scoreboard_per_warp_active.pct,smsp__warp_issue_stalled_membar_per_warp_active.pct,smsp__warp_issue_stalled_drain_per_warp_active.pct \
  python3 benchmarks/router_kernels_bench.py --shape XL:32:10 --query dynamic --writes fresh,over-q,into,accum --ncu \
  > $R/ncu.csv 2> $R/ncu.err
echo "ncu rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
cat $R/status; nvidia-smi -L
grep -v "^ *$" $R/writes.log | grep -iv warn | head -40
grep -c "_router_bwd_kernel" $R/ncu.csv; tail -3 $R/ncu.err
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s30_d.tgz status *.log *.json ncu.csv ncu.err)
echo "done after $(( $(date +%s) - T0 )) s"
