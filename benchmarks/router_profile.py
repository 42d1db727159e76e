#!/usr/bin/env python3
"""Where the fused router's time goes (torch.profiler): kernels vs host overhead, for one N and query.

    PYTHONPATH=$PWD python3 benchmarks/router_profile.py --n 9 --query static
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=9)
    ap.add_argument("--query", default="static")
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args()
    from dartool.bench import _router_inputs
    from dartool.kernels import router_triton as rt

    srcs, q, gain, dh = _router_inputs(a.n, 32, 256, 1152, a.query)
    leaves = srcs + [q, gain]

    def fb():
        h = rt.fused_router(srcs, q, gain, 1e-6)
        return torch.autograd.grad(h, leaves, dh)

    for _ in range(5):
        fb()
    torch.cuda.synchronize()
    # host issue rate: wall time per call with the GPU kept busy
    t0 = time.perf_counter()
    for _ in range(a.reps):
        fb()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    print(f"N={a.n} {a.query}: host issue {1e3 * (t1 - t0) / a.reps:.3f} ms/call, "
          f"wall incl. drain {1e3 * (t2 - t0) / a.reps:.3f} ms/call")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            fb()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=14, max_name_column_width=50))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10, max_name_column_width=50))
    return 0


if __name__ == "__main__":
    sys.exit(main())
