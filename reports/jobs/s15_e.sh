#!/usr/bin/env bash
# Session 15, call 5 (one H100, about 8 min). Eager SiT-XL/2 b64 static c4 read 205 ms (x1.011 of the residual) in
# call 4, against 168 ms (x0.831) in session 13 (commit 50c9a01): a code regression, or a host that cannot launch an
# eager DAR step's kernels as fast as the GPU runs them? Both commits' quick eager XL/2 rows, one after the other on
# this host, new / old / new (the old tree from .carry/s13.tar.gz). Then paired compiled rounds of static c8 against the residual at B/2 b256.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
left() { echo $(( 585 - ($(date +%s) - T0) )); }
mkdir -p /tmp/old && tar xzf .carry/s13.tar.gz -C /tmp/old
run_tree() {   # $1 = new | old, $2 = label; the old tree has no --sizes (both sizes' quick eager rows run)
  if [ $1 = old ]; then
    ( cd /tmp && DARTOOL_COMMIT=50c9a01 PYTHONPATH=/tmp/site:/tmp/old/s13 timeout 200 python3 -m dartool.cli bench \
        --quick --parts eager --time-budget 190 --out /tmp/b_$2 > $OUT/s15_e_$2.log 2>&1 )
  else
    ( cd /tmp && PYTHONPATH=/tmp/site:$OLDPWD timeout 150 python3 -m dartool.cli bench --quick --parts eager --sizes XL \
        --time-budget 140 --out /tmp/b_$2 > $OUT/s15_e_$2.log 2>&1 )
  fi
  echo "$2:"; grep -E "XL/2 b[0-9]+ .*eager +[0-9.]+ ms/step" $OUT/s15_e_$2.log | cut -c1-120
}
run_tree new new1; run_tree old old1; run_tree new new2
export PYTHONPATH=/tmp/site:$PWD
timeout $(left) python3 benchmarks/paired_step.py --size B --batch 256 --compiled --query static --chunk 8 --rounds 6 \
  --out $OUT > $OUT/s15_e_paired_c8.txt 2>&1
echo "paired rc $?"; tail -3 $OUT/s15_e_paired_c8.txt | cut -c1-200
echo "done after $(( $(date +%s) - T0 )) s"
