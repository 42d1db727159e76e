#!/usr/bin/env bash
# Session 14, call 1 (four GPUs of one host, about 10 min): the full (not --quick) `dartool bench` at the current
# kernels, split over the GPUs with --parts / --sizes, joined with --merge; one GPU also times dynamic c4 with the
# last K routers saving q (DARTOOL_SAVE_QUERY_LAST, a memory budget; read at import, so one process per K).
#   GPU 0: float64 check, router (N = 9, 18, 57 + dynamic N = 57), sampling
#   GPU 1: eager rows (both sizes, six variants), then compiled B/2 --quick with K = 12 of 25 routers saving q
#   GPU 2: compiled rows of SiT-B/2 (six variants), then compiled B/2 --quick with K = 25 (every router)
#   GPU 3: compiled rows of SiT-XL/2 (six variants)
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
W=/tmp/s14a; mkdir -p $W/c0 $W/c1 $W/c2 $W/c3 $W/k12 $W/k25
T0=$(date +%s)
B="python3 -m dartool.cli bench"
left() { echo $(( 565 - ($(date +%s) - T0) )); }
( export CUDA_VISIBLE_DEVICES=0
  timeout 560 $B --parts check,router,sampling --time-budget 550 --out $W/c0 > $W/c0.log 2>&1 ) &
( export CUDA_VISIBLE_DEVICES=1
  timeout 330 $B --parts eager --time-budget 320 --out $W/c1 > $W/c1.log 2>&1
  DARTOOL_SAVE_QUERY_LAST=12 timeout $(left) $B --quick --parts compiled --sizes B --time-budget $(( $(left) - 10 )) \
    --compile-budget $(( $(left) - 15 )) --out $W/k12 > $W/k12.log 2>&1 ) &
( export CUDA_VISIBLE_DEVICES=2
  timeout 380 $B --parts compiled --sizes B --time-budget 370 --compile-budget 365 --out $W/c2 > $W/c2.log 2>&1
  DARTOOL_SAVE_QUERY_LAST=25 timeout $(left) $B --quick --parts compiled --sizes B --time-budget $(( $(left) - 10 )) \
    --compile-budget $(( $(left) - 15 )) --out $W/k25 > $W/k25.log 2>&1 ) &
( export CUDA_VISIBLE_DEVICES=3
  timeout 560 $B --parts compiled --sizes XL --time-budget 550 --compile-budget 545 --out $W/c3 > $W/c3.log 2>&1 ) &
wait
echo "parts done after $(( $(date +%s) - T0 )) s"
M=""; for d in c0 c1 c2 c3; do for j in $W/$d/*.json; do [ -f "$j" ] && M="$M --merge $j"; done; done
python3 -m dartool.cli bench $M --out $W/merged >> $W/merge.log 2>&1
tail -45 $W/merge.log | cut -c1-200
for k in k12 k25; do echo "== $k"; grep -E "compiled .*ms/step|MISSED|met\]" $W/$k.log | cut -c1-160; done
grep -hE "Traceback|Error" $W/*.log | head -5
cp $W/merged/*.md $OUT/ 2>/dev/null
tar czf $OUT/s14_a_all.tgz -C $W .
echo "done after $(( $(date +%s) - T0 )) s"
