#!/usr/bin/env python3
"""Where the fused router's time goes: kernels against host overhead, for one N and query.

    PYTHONPATH=$PWD python3 benchmarks/router_profile.py --n 57 --query static          # torch.profiler tables
    PYTHONPATH=$PWD python3 benchmarks/router_profile.py --n 57 --ab --cprofile          # atomics on / off, host

For each call path (forward alone; forward + backward through autograd) it prints three times per call:
``host`` (Python issue time with the GPU kept busy), ``wall`` (issue + drain, what a host-bound loop sees, as
``dartool bench``'s fwd+bwd column) and ``gpu`` (the GPU's own time: a sleep kernel holds the stream while the
host queues every call, so the events around the queued calls see no host gaps; flagged when the host did not
get ahead; ``dartool.bench.host_gpu_ms``). ``--ab`` interleaves the backward's atomic reductions on and off
(rounds A B A B ...) in one process; ``--cprofile`` prints the host functions of the forward + backward by own time.
"""
import argparse
import cProfile
import io
import json
import pstats
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=9)
    ap.add_argument("--query", default="static")
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ab", action="store_true", help="atomic reductions on / off, interleaved rounds")
    ap.add_argument("--cprofile", action="store_true", help="host functions of the forward + backward")
    ap.add_argument("--reference", action="store_true", help="also the unfused PyTorch router (gpu times)")
    ap.add_argument("--no-tables", action="store_true", help="skip the torch.profiler tables")
    ap.add_argument("--json", default=None, help="write the rows here")
    a = ap.parse_args()
    from dartool.bench import _router_inputs, host_gpu_ms, reference_router_calls
    from dartool.kernels import router_triton as rt

    srcs, q, gain, dh = _router_inputs(a.n, 32, 256, 1152, a.query)
    leaves = srcs + [q, gain]

    def fwd():
        with torch.no_grad():
            return rt.fused_router(srcs, q, gain, 1e-6)

    def fb():
        h = rt.fused_router(srcs, q, gain, 1e-6)
        return torch.autograd.grad(h, leaves, dh)

    rows = []
    arms = [True, False] if a.ab else [rt.atomic_reduce()]
    for r in range(a.rounds):
        for on in arms:
            with rt.atomic_reductions(on):
                for name, fn in (("fwd", fwd), ("fwd+bwd", fb)):
                    row = dict(round=r, atomic=on, path=name, N=a.n, query=a.query, **host_gpu_ms(fn, a.reps))
                    rows.append(row)
                    print(f"round {r} atomic={int(on)} {name:8s} host {row['host']:.3f}  wall {row['wall']:.3f}"
                          f"  gpu {row['gpu']:.3f} ms/call" + ("" if row["gpu_valid"] else "  (host not ahead)"),
                          flush=True)
    for on in arms:
        def med(path, key):
            v = sorted(x[key] for x in rows if x["atomic"] == on and x["path"] == path)
            return v[len(v) // 2]
        fb_w, f_w, fb_g, f_g = med("fwd+bwd", "wall"), med("fwd", "wall"), med("fwd+bwd", "gpu"), med("fwd", "gpu")
        print(f"atomic={int(on)} medians: bwd (wall) {fb_w - f_w:.3f} ms, bwd (gpu) {fb_g - f_g:.3f} ms, "
              f"host fwd+bwd {med('fwd+bwd', 'host'):.3f} ms")
    if a.reference:
        ref_fwd, ref_fb = reference_router_calls(srcs, q, gain, dh, a.query)
        rf, rfb = host_gpu_ms(ref_fwd, 10), host_gpu_ms(ref_fb, 10)
        rows += [dict(round=0, atomic=None, path="ref fwd", N=a.n, query=a.query, **rf),
                 dict(round=0, atomic=None, path="ref fwd+bwd", N=a.n, query=a.query, **rfb)]
        print(f"unfused: fwd gpu {rf['gpu']:.2f} ms, fwd+bwd gpu {rfb['gpu']:.2f} ms, "
              f"bwd gpu {rfb['gpu'] - rf['gpu']:.2f} ms (wall {rfb['wall'] - rf['wall']:.2f})")
    if a.cprofile:
        for on in arms:
            with rt.atomic_reductions(on):
                for _ in range(3):
                    fb()
                torch.cuda.synchronize()
                pr = cProfile.Profile()
                pr.enable()
                for _ in range(a.reps):
                    fb()
                pr.disable()
                torch.cuda.synchronize()
            s = io.StringIO()
            pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(22)
            print(f"--- cProfile, atomic={int(on)}, {a.reps} calls of forward + backward ---")
            print("\n".join(s.getvalue().splitlines()[:40]))
    if not a.no_tables:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                fb()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=14, max_name_column_width=50))
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=50))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
