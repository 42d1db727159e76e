#!/usr/bin/env bash
# Session 16, call 1 (one H100, about 9 min): the shared-prefix kernels' eager path through torch.autograd.Function
# (commit 014f0a8; their custom ops' eager dispatch cost 0.7 ms of host time per call, 83 ms per eager SiT-XL/2 b64
# static c4 step in session 15). 1) the float64 check's shared-prefix model part (eager Function against the custom
# ops, both against unshared), 2) step against the GPU's busy time, residual and two DAR instances, 3) the full
# (not quick) eager bench rows at B/2 b256 and XL/2 b64, for the README's H100 column.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
left() { echo $(( 585 - ($(date +%s) - T0) )); }
timeout 100 python3 -m dartool.kernels.check --only shared-prefix-model > $OUT/s16_a_check.txt 2>&1; echo "check rc $?"
grep -E "shared-model|PASS|FAIL" $OUT/s16_a_check.txt | cut -c1-220
timeout 150 python3 benchmarks/step_host.py --instances 2 --others none --out $OUT > $OUT/s16_a_host.txt 2>&1
echo "host rc $? after $(( $(date +%s) - T0 )) s"; grep -E "step .* GPU busy|Error|wrote" $OUT/s16_a_host.txt | cut -c1-200
timeout $(left) python3 -m dartool.cli bench --parts eager --no-check --time-budget $(( $(left) - 10 )) --out $OUT \
  > $OUT/s16_a_eager.log 2>&1; echo "eager rc $?"
grep -E "eager +[0-9.]+ ms" $OUT/s16_a_eager.log | cut -c1-140
echo "done after $(( $(date +%s) - T0 )) s"
