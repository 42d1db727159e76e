#!/usr/bin/env python3
"""The fused router's kernels with the LayerNorm + modulate fused in, as a bf16 model step calls them, per query
kind: forward and backward time and their fraction of the byte floor (sources read once, the copy rate measured
in the same run), at the per-shape launch configuration the model uses.

    PYTHONPATH=$PWD python3 benchmarks/router_kernels_bench.py --shape XL:64:9 --shape B:256:6 --json /tmp/k.json
    ncu -k regex:_router_bwd_kernel --launch-skip 3 --launch-count 1 --section SpeedOfLight ... \\
        python3 benchmarks/router_kernels_bench.py --shape XL:64:9 --query dynamic --ncu   # launches only

Inputs are laid out as in a bf16-autocast step: v_0 float32, the other sources bf16, h float32, dy bf16; a
dynamic query is a bf16 [B, T, D] row per token. Runs against whichever ``dartool`` is on PYTHONPATH, so two
checkouts can be timed in one job (an A/B on one card). Needs CUDA.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def floor_bytes(N: int, B: int, T: int, D: int, dynamic: bool) -> tuple[int, int]:
    """(forward, backward) bytes: sources once (v_0 fp32), y bf16 + h fp32 written / dy bf16 + h fp32 read, every
    source's gradient written; a dynamic query read once per pass and its gradient written."""
    u = B * T * D
    src = u * (4 + 2 * (N - 1))
    fwd = src + u * (2 + 4) + (2 * u if dynamic else 0)
    bwd = 2 * src + u * (2 + 4) + (4 * u if dynamic else 0)
    return fwd, bwd


def _variants(fwd: dict, bwd: dict, sweeps: list, sets: list) -> list:
    """[(label, fwd config, bwd config)] for every combination of the --sweep values, --set applied to all."""
    import itertools

    def apply(f, b, key, val):
        f, b = dict(f), dict(b)
        kern, _, k = key.rpartition(".")
        for name, c in (("fwd", f), ("bwd", b)):
            if kern in ("", name) and k in c:
                c[k] = val
                if k == "pipe" and val > 1:
                    c.update(unroll=1, prefetch=0)
        return f, b

    axes = [(k, [int(x) for x in v.split(",")]) for k, v in (s.split("=") for s in sweeps)]
    out = []
    for combo in itertools.product(*[vals for _, vals in axes]):
        f, b = fwd, bwd
        for (k, _), v in zip(axes, combo):
            f, b = apply(f, b, k, v)
        for kv in sets:  # after the sweep: --set bwd.unroll=2 keeps two sources per iteration under pipe > 1
            k, v = kv.split("=")
            f, b = apply(f, b, k, int(v))
        out.append((" ".join(f"{k}={v}" for (k, _), v in zip(axes, combo)) or "default", f, b))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", action="append", default=[], help="size:batch:N (repeatable; default XL:64:9 B:256:6)")
    ap.add_argument("--query", action="append", default=[], help="static, static_t, dynamic (default static, dynamic)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--ncu", action="store_true", help="launch the kernels a few times, no timing (under ncu)")
    ap.add_argument("--vec4", action="store_true",
                    help="time both kernels with and without vec4 (4-wide accesses, no layout conversion per source)")
    ap.add_argument("--sweep", action="append", default=[],
                    help="KEY=V1,V2,...: time every value of a launch-configuration key (both kernels where each has "
                         "it; fwd.KEY / bwd.KEY for one); repeated: every combination. pipe=1,2,3 also sets unroll 1, "
                         "prefetch 0 where pipe > 1")
    ap.add_argument("--set", action="append", default=[], help="KEY=V: a fixed key for every variant (as --sweep), applied after the sweep's keys")
    ap.add_argument("--writes", default="fresh",
                    help="comma-separated, how the backward writes its gradients (each timed, same inputs): fresh "
                         "(new buffers), over-q (a dynamic query's dq over q, DQ_OVER_Q), into (given buffers, the "
                         "compiled *_into ops starting a sum), accum (added into them: ACCUM)")
    a = ap.parse_args(argv)
    writes = [w.strip() for w in a.writes.split(",") if w.strip()]
    if bad := sorted(set(writes) - {"fresh", "over-q", "into", "accum"}):
        ap.error(f"--writes: unknown {', '.join(bad)}; choose fresh, over-q, into, accum")
    import torch

    from dartool.bench import _router_inputs, bench_ms, copy_bandwidth, env_info
    from dartool.kernels import router_triton as rt
    from dartool.models import SIZES

    env = env_info()
    bw = None if a.ncu else copy_bandwidth()["bytes_per_s"]
    rows = []
    for spec in a.shape or ["XL:64:9", "B:256:6"]:
        size, batch, n = spec.split(":")
        B, N, T, D = int(batch), int(n), 256, SIZES[size][1]
        for query in a.query or ["static", "dynamic"]:
            srcs, q, gain, dh = _router_inputs(N, B, T, D, query)
            srcs[0] = srcs[0].detach().float().requires_grad_()
            dy = dh.to(torch.bfloat16)
            shift, mscale = (torch.randn(B, D, device="cuda") * s for s in (1.0, 0.3))
            ln = (shift, mscale, 1e-6, torch.bfloat16)
            Pf = rt._fwd_prepare(srcs, q, gain, 1e-6, False, False, ln=ln)
            rt._fwd_launch(Pf)
            h, lse = Pf["out"][0], Pf["out"][1]
            fb, bb = floor_bytes(N, B, T, D, query == "dynamic")
            bufs = [torch.empty_like(x) for x in srcs]          # the *_into ops' gradient buffers, one per source
            given = {"into": (bufs, [0] * N), "accum": (bufs, [1] * N)}     # start the sums / add into them
            for label, fcfg, cfg in _variants(rt.fwd_config(N, D), rt.bwd_config(N, D, dynamic=query == "dynamic"),
                                              a.sweep + (["vec4=0,1"] if a.vec4 else []), a.set):
                for how in writes:
                    if how == "over-q" and query != "dynamic":
                        continue
                    with rt.configs(fwd=fcfg, bwd=cfg):
                        Pf = rt._fwd_prepare(srcs, q, gain, 1e-6, False, False, ln=ln)
                        Pb = rt._bwd_prepare(dy, srcs, q.clone() if how == "over-q" else q, gain, h, lse, 1e-6,
                                             dq_into_q=how == "over-q", ln=(mscale, 1e-6),
                                             into=given.get(how))
                        if a.ncu:
                            for _ in range(5):
                                rt._fwd_launch(Pf)
                                rt._bwd_launch(Pb)
                            torch.cuda.synchronize()
                            print(f"launched {spec} {query} {how} {cfg}")
                            continue
                        f_ms = bench_ms(lambda: rt._fwd_launch(Pf), 10, 60)
                        b_ms = bench_ms(lambda: rt._bwd_launch(Pb), 10, 60)
                    k = rt.LAST_KERNELS.get("bwd")
                    r = dict(shape=spec, query=query, variant=label, writes=how, fwd_config=fcfg, fwd_ms=f_ms,
                             bwd_ms=b_ms, fwd_pct_floor=100 * fb / bw / (f_ms * 1e-3),
                             bwd_pct_floor=100 * bb / bw / (b_ms * 1e-3), bwd_config=cfg,
                             bwd_registers=getattr(k, "n_regs", None), bwd_spills=getattr(k, "n_spills", None))
                    rows.append(r)
                    print(f"{spec:9s} {query:8s} {label:18s} {how:7s} fwd {f_ms:7.3f} ms "
                          f"({r['fwd_pct_floor']:4.1f} % of floor)   bwd {b_ms:7.3f} ms ({r['bwd_pct_floor']:4.1f} %)  "
                          f"regs {r['bwd_registers']} spills {r['bwd_spills']}", flush=True)
            del Pf, Pb, srcs, q, h, lse, bufs, given
            torch.cuda.empty_cache()
    if a.json and rows:
        Path(a.json).write_text(json.dumps(dict(env=env, copy_bytes_per_s=bw, rows=rows), indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
