#!/usr/bin/env python3
"""The shared-prefix kernels alone (``dartool.kernels.prefix_triton``): forward and backward time against their
byte floor, over launch configurations, at a model's chunk shape.

    PYTHONPATH=$PWD python3 benchmarks/prefix_bench.py --size XL --batch 64 --P 14 --K 4 \
        --config 8,4,3,1 --config 8,2,3,1 --json /tmp/prefix.json

``--config rows,warps,pipe,vec4[,group[,passes]]`` (repeatable; both passes, or ``FWD;BWD``; default: the code's;
group = queries per program, 0 all; passes = 2: the two-pass backward, whose second pass ``--grad`` configures). Bytes: forward reads the P sources (v_0 fp32,
the rest bf16) and writes K partials (``--partial``) and lse; backward reads the sources, K partial gradients and
writes the P source gradients. Also times what the shared pass replaces: K LayerNorm-fused router forwards and
backwards over the prefix alone. Times are medians of CUDA-event timed calls (``bench.event_ms``; session 9's
recorded sweeps used the mean of 20 calls). Registers and spills of each compiled kernel are printed. Needs CUDA.
"""
import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def kernel_ms(fn, n: int = 5) -> dict:
    """Device time per call of each kernel ``fn`` launches (torch.profiler), ms, by kernel name."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    out = {}
    for e in prof.key_averages():
        us = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if us:
            out[e.key[:40]] = round(us / n / 1e3, 4)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="XL")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--P", type=int, default=14, help="prefix sources (summaries)")
    ap.add_argument("--K", type=int, default=4, help="routers sharing them")
    ap.add_argument("--config", action="append", help="rows,warps,pipe,vec4[,group] (repeatable; both passes, or FWD;BWD)")
    ap.add_argument("--grad", action="append",
                    help="rows,rb,ct,warps,pipe of the two-pass backward's second pass (repeatable; crossed with --config)")
    ap.add_argument("--partial", default="fp32", choices=["fp32", "bf16"],
                    help="the partials' dtype (a bf16 model's default is bf16: prefix_triton.partial_dtype)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    import torch

    from dartool import bench
    from dartool.kernels import prefix_triton as pt
    from dartool.kernels import router_triton as rt
    from dartool.models import SIZES

    if not torch.cuda.is_available():
        print("needs CUDA")
        return 2
    _, D, _ = SIZES[a.size]
    B, T, P, K = a.batch, 256, a.P, a.K
    dev = "cuda"
    bw = bench.copy_bandwidth()["bytes_per_s"]
    g = torch.Generator(device=dev).manual_seed(0)
    srcs = [torch.randn(B, T, D, device=dev, generator=g).to(torch.float32 if i == 0 else torch.bfloat16)
            for i in range(P)]
    qs = torch.randn(K, D, device=dev, generator=g)
    gs = 1 + 0.1 * torch.randn(K, D, device=dev, generator=g)
    u = B * T * D
    src_b = 4 * u + 2 * u * (P - 1)
    pb = 2 if a.partial == "bf16" else 4
    fwd_bytes = src_b + pb * K * u
    bwd_bytes = 2 * src_b + pb * K * u
    rows = []

    for c, gc in [(c, gc) for c in a.config or [None] for gc in a.grad or [None]]:
        for var, val in (("DARTOOL_PREFIX_CONFIG", c), ("DARTOOL_PREFIX_GRAD", gc)):
            if val:
                os.environ[var] = val
            else:
                os.environ.pop(var, None)
        cfg = pt.prefix_config(D)
        bcfg = pt.prefix_config(D, backward=True)
        pdt = torch.bfloat16 if a.partial == "bf16" else torch.float32
        parts, lam, lg, ri = pt._fwd_impl(srcs, qs, gs, 1e-6, pdt)
        dps = [(torch.randn(B, T, D, device=dev, generator=g) * 0.1).to(pdt) for _ in range(K)]
        glam = torch.randn(K, B, T, device=dev, generator=g) * 0.1
        f = bench.event_ms(lambda: pt._fwd_impl(srcs, qs, gs, 1e-6, pdt))
        b = bench.event_ms(lambda: pt._bwd_impl(dps, glam, srcs, qs, gs, lam, lg, ri, 1e-6))
        row = dict(config=cfg, bwd_config=bcfg, grad_config=pt.grad_config(D) if bcfg.get("passes") == 2 else None,
                   fwd_ms=f, bwd_ms=b, fwd_floor_pct=100 * fwd_bytes / bw / (f * 1e-3),
                   bwd_floor_pct=100 * bwd_bytes / bw / (b * 1e-3))
        two = bcfg.get("passes") == 2
        # the kernels' own times (profiler; the event times above include the host side and the small torch ops)
        row["fwd_kernels_ms"] = {k: v for k, v in kernel_ms(
            lambda: pt._fwd_impl(srcs, qs, gs, 1e-6, pdt)).items() if "prefix" in k}
        row["bwd_kernels_ms"] = {k: v for k, v in kernel_ms(
            lambda: pt._bwd_impl(dps, glam, srcs, qs, gs, lam, lg, ri, 1e-6)).items() if "prefix" in k}
        for name, ker in (("fwd", pt._prefix_fwd_kernel),
                          ("bwd", pt._prefix_coef_kernel if two else pt._prefix_bwd_kernel),
                          ("grad", pt._prefix_grad_kernel if two else None)):
            if ker is None:
                continue
            try:
                ck = list(ker.device_caches[0][0].values())[-1]
                row[f"{name}_regs"], row[f"{name}_spills"] = ck.n_regs, ck.n_spills
            except Exception as e:  # cache layout differs between Triton versions
                row[f"{name}_regs"] = f"? ({type(e).__name__})"
        rows.append(row)
        gtxt = f" grad {','.join(str(v) for v in row['grad_config'].values())}" if two else ""
        print(f"fwd {','.join(str(cfg[k]) for k in pt._KEYS)} bwd {','.join(str(bcfg[k]) for k in pt._KEYS)}{gtxt}: fwd {f:.3f} ms "
              f"({row['fwd_floor_pct']:.0f} % of floor), bwd {b:.3f} ms ({row['bwd_floor_pct']:.0f} %), "
              f"regs/spills fwd {row.get('fwd_regs')}/{row.get('fwd_spills')} bwd {row.get('bwd_regs')}/"
              f"{row.get('bwd_spills')}" + (f" grad {row.get('grad_regs')}/{row.get('grad_spills')}"
                                           if two else "") + f" kernels {row['fwd_kernels_ms']} {row['bwd_kernels_ms']}",
              flush=True)
    # what one shared pass replaces: K routers' forwards / backwards over the prefix alone (LayerNorm fused)
    shift, scale = torch.zeros(B, D, device=dev), torch.zeros(B, D, device=dev)
    y, h, lse = rt._fwd_ln_impl(srcs, qs[0], gs[0], 1e-6, shift, scale, 1e-6, torch.bfloat16, True)
    dy = torch.randn(B, T, D, device=dev, generator=g).to(torch.bfloat16)
    rf = bench.event_ms(lambda: [rt._fwd_ln_impl(srcs, qs[k], gs[k], 1e-6, shift, scale, 1e-6, torch.bfloat16, True)
                        for k in range(K)], reps=10)
    rb = bench.event_ms(lambda: [rt._bwd_ln_impl(dy, srcs, qs[k], gs[k], h, lse, 1e-6, scale, 1e-6)
                                 for k in range(K)], reps=10)
    # unshared, autograd then sums each summary's K gradients (one fused kernel under compile: K reads, one write)
    sum_floor = (K + 1) * 2 * u * (P - 1) / bw * 1e3
    print(f"replaced: {K} router forwards over the prefix {rf:.3f} ms, backwards {rb:.3f} ms + their gradients' sums "
          f"(floor {sum_floor:.3f} ms) (floor of the shared pass: fwd {fwd_bytes / bw * 1e3:.3f} ms, "
          f"bwd {bwd_bytes / bw * 1e3:.3f} ms)")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(dict(env=bench.env_info(), size=a.size, batch=B, P=P, K=K, partial=a.partial, rows=rows, routers_fwd_ms=rf,
                           routers_bwd_ms=rb, routers_grad_sum_floor_ms=sum_floor,
                           copy_bytes_per_s=bw), fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
