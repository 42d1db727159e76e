#!/usr/bin/env bash
# Session 15, call 9 (one H100, about 2.5 min): the shared-prefix kernels' eager path through torch.autograd.Function
# instead of their custom ops (whose eager dispatch cost 0.7 ms of host time per call, 83 ms per eager SiT-XL/2 b64
# static c4 step, call 8). 1) the float64 check's shared-prefix model part (eager Function against the custom ops,
# both against unshared), 2) step against the GPU's busy time, residual and two DAR instances.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 100 python3 -m dartool.kernels.check --only shared-prefix-model > $OUT/s15_i_check.txt 2>&1; echo "check rc $?"
grep -E "shared-model|PASS|FAIL" $OUT/s15_i_check.txt | cut -c1-220
timeout 150 python3 benchmarks/step_host.py --instances 2 --others none --out $OUT > $OUT/s15_i_host.txt 2>&1
echo "host rc $?"; grep -E "step .* GPU busy|Error|wrote" $OUT/s15_i_host.txt | cut -c1-200
echo "done after $(( $(date +%s) - T0 )) s"
