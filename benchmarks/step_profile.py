#!/usr/bin/env python3
"""One training step under the profiler: where DAR's extra time goes (router kernels, gradient adds, ...),
and an A/B of in-kernel gradient accumulation (tapped sources) on vs off.

    PYTHONPATH=$PWD python3 benchmarks/step_profile.py --size XL --batch 128
    PYTHONPATH=$PWD python3 benchmarks/step_profile.py --size XL --batch 128 --compiled   # torch.compile'd model

With ``--compiled`` the A/B is skipped; the profile covers the compiled residual and DAR steps, and the number of
graphs / graph breaks Dynamo produced for each is printed (a graph break per router would explain a slow
compiled DAR step by itself).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


KINDS = (("router fwd", ("_router_fwd",)), ("router bwd", ("_router_bwd", "_qg_finish")),
         ("prefix fwd", ("_prefix_fwd",)), ("prefix bwd", ("_prefix_bwd", "_prefix_coef", "_prefix_grad")),
         ("attention", ("flash", "fmha", "attention", "sdpa")),
         ("gemm", ("gemm", "xmma", "nvjet", "cutlass", "sm90_", "cublas", "splitk")),
         ("inductor", ("triton_",)))


ROUTER_KINDS = ("router fwd", "router bwd", "prefix fwd", "prefix bwd")


def kernel_groups(events) -> dict:
    """GPU time (ms) per kind of kernel: the routers' forward / backward, the shared prefix passes' forward /
    backward, attention, GEMMs (cuBLAS / CUTLASS), Inductor's generated kernels, everything else."""
    out: dict = {}
    for e in events:
        name = e.key.lower()
        kind = next((k for k, keys in KINDS if any(x in name for x in keys)), "other")
        out[kind] = out.get(kind, 0.0) + e.self_device_time_total / 1e3
    return dict(sorted(out.items()))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="XL")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--query", action="append", default=None, choices=["static", "static_t", "dynamic"],
                    help="DAR query (repeatable: one DAR model per query and chunk against one residual; "
                         "default static)")
    ap.add_argument("--chunk", type=int, action="append", default=None,
                    help="DAR chunk size S (repeatable: one DAR model per S against one residual; default 4)")
    ap.add_argument("--compiled", action="store_true", help="profile torch.compile'd steps (no taps A/B)")
    ap.add_argument("--rows", type=int, default=18)
    a = ap.parse_args()
    chunks = list(dict.fromkeys(a.chunk or [4]))
    queries = list(dict.fromkeys(a.query or ["static"]))
    from dartool.bench import event_ms, train_step_bench
    from dartool.kernels import dispatch

    if not a.compiled:
        a.chunk, query = chunks[0], queries[0]
        rows = []
        for taps in (True, False):
            dispatch.TAP_SOURCES = taps
            variants = [("dar", query, a.chunk, True)] if not taps else [("residual", "static", 4, True),
                                                                           ("dar", query, a.chunk, True)]
            for r in train_step_bench(a.size, a.batch, variants, compiled=False, steps=8):
                r["taps"] = taps
                rows.append(r)
        for r in rows:
            print(f"{r['variant']:20s} taps={r['taps']!s:5s} {r.get('step_ms', float('nan')):7.1f} ms "
                  f"{r.get('peak_gb', 0):.1f} GB")
        dispatch.TAP_SOURCES = True

    from dartool.diffusion import diffusion_loss
    from dartool.models import SiT, model_config
    from torch.profiler import ProfilerActivity, profile

    torch.backends.cuda.matmul.allow_tf32 = True
    totals: dict = {}
    arm_of: dict = {}
    for routing, query, chunk in [("residual", "static", 4)] + [("dar", q, c) for q in queries for c in chunks]:
        label = routing if routing == "residual" else f"DAR {query} c{chunk}"
        arm_of[label] = (query, chunk)
        cfg = model_config(a.size, 2, routing=routing, query=query, chunk_size=chunk)
        with torch.device("cuda"):
            model = SiT(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        fwd = model
        if a.compiled:
            torch._dynamo.reset()
            torch._dynamo.utils.counters.clear()
            fwd = torch.compile(model)
        x = torch.randn(a.batch, 4, 32, 32, device="cuda")
        y = torch.randint(0, 1000, (a.batch,), device="cuda")
        s = torch.rand(a.batch, device="cuda")

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = diffusion_loss(fwd, x, y, s)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        for _ in range(3):
            step()
        torch.cuda.synchronize()
        if a.compiled:
            c = torch._dynamo.utils.counters
            breaks = sum(c["graph_break"].values())
            print(f"\n{label}: dynamo graphs {c['stats'].get('unique_graphs', '?')}, graph breaks {breaks}")
            for reason, n in list(c["graph_break"].items())[:5]:
                print(f"   {n}x {str(reason)[:160]}")
        ms = event_ms(step, reps=5, warmup=0)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        ev = prof.key_averages()
        tot = sum(e.self_device_time_total for e in ev) / 1e3
        print(f"\n=== {label}{' compiled' if a.compiled else ''}: step {ms:.1f} ms (median of 5), "
              f"GPU time in kernels {tot:.1f} ms")
        for e in sorted(ev, key=lambda e: -e.self_device_time_total)[:a.rows]:
            print(f"{e.self_device_time_total / 1e3:8.2f} ms {e.count:5d}x  {e.key[:110]}")
        groups = kernel_groups(ev)
        totals[label] = groups
        print("by kind: " + ", ".join(f"{k} {v:.1f} ms" for k, v in groups.items()))
        del model, opt, fwd
        torch.cuda.empty_cache()
    from dartool.bench import copy_bandwidth
    from dartool.kernels.traffic import as_built

    rate = copy_bandwidth()["bytes_per_s"]
    for label in [k for k in totals if k != "residual"]:
        print(f"\nkernel time by kind, ms per step ({label} - residual):")
        for k in sorted(totals[label].keys() | totals["residual"].keys()):
            r, d = totals["residual"].get(k, 0.0), totals[label].get(k, 0.0)
            print(f"  {k:16s} residual {r:7.1f}  {label} {d:7.1f}  extra {d - r:+7.1f}")
        routers = sum(totals[label].get(k, 0.0) for k in ROUTER_KINDS)
        rest = sum(v for k, v in totals[label].items() if k not in ROUTER_KINDS)
        query, chunk = arm_of[label]
        floor = as_built(a.size, a.batch, chunk, query)["total"] / rate * 1e3
        pct = 100 * floor / max(routers, 1e-9)
        print(f"  routers + prefix passes {routers:.1f} ms against their as-built byte floor {floor:.1f} ms "
              f"(dartool.kernels.traffic at the copy rate {rate / 1e12:.2f} TB/s: {pct:.0f} %); "
              f"DAR's other kernels {rest:.1f} ms against the residual's {sum(totals['residual'].values()):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
