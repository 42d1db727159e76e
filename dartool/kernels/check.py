"""Correctness of the fused router against a float64 reference, on every shape class.

    python -m dartool.kernels.check                 # on CUDA: the full matrix (about a minute, mostly compiles)
    TRITON_INTERPRET=1 python -m dartool.kernels.check --interpret   # CPU, Triton's interpreter, small shapes

Every case draws fresh random inputs (never zeros), poisons the kernel outputs with NaN before the
launch (so an unwritten element fails), and compares ``||out - ref|| / ||ref||`` of h, alpha and the
gradients of every source, the query and the RMSNorm gain with float64 autograd of the reference
formula on the same (already rounded) inputs. Bounds: fp32 data 1e-4, fp16 4e-3, bf16 1.6e-2
(the outputs themselves are stored in the source dtype, so a bf16 result carries ~2e-3 rounding).

Shape classes: N = 1 (no loop), small, and up to 57 sources; D a power of two, a sum of two (1152 = 1024
+ 128, 768, 384), and odd (40); T not a multiple of the row blocks; query static [D], static_t [B, 1, D],
dynamic [B, T, D]; source dtypes all-bf16, fp32 v_0 + bf16 rest (bf16 autocast), all-fp32, fp16;
sources that are slices of one history buffer and a source listed twice. The tapped-sources check runs
three routers over overlapping tapped sources (in-kernel gradient accumulation, one router on the
reference path) against float64 autograd. The dynamic-recompute check compares dynamic routers that recompute
their query in the backward (eager, and the custom op torch.compile runs) with ones that save it (same gradients,
fewer bytes saved); the compiled-dynamic-saved check counts the activations a compiled dynamic model saves.
The ln-fused check compares the router with the following LayerNorm + adaLN modulate fused in (y and the
gradients of every input, shift and scale included) with float64 autograd, eager and through the custom op.
The model check runs a small DAR SiT (every query kind, chunk sizes 1 and 2) with and without the kernel, under
bf16 autocast on CUDA, and compares the output and every parameter gradient.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch

TOL = {torch.float32: 1e-4, torch.float16: 4e-3, torch.bfloat16: 1.6e-2}


def reference_router(sources, q, g, eps):
    """float64 reference of Router.forward (the formula, in float64 throughout). Returns (h, alpha)."""
    V = torch.stack([s.double() for s in sources])                             # [N, B, T, D]
    D = V.shape[-1]
    K = V * torch.rsqrt(V.pow(2).mean(-1, keepdim=True) + eps) * g.double()
    logits = (K * q.double()).sum(-1) / math.sqrt(D)                         # [N, B, T]
    a = torch.softmax(logits, 0)
    return (a.unsqueeze(-1) * V).sum(0), a.permute(1, 2, 0)


def rel(x: torch.Tensor, y: torch.Tensor, floor: float = 0.0) -> float:
    x, y = x.double(), y.double().to(x.device)          # a reference may live on the CPU
    if not torch.isfinite(x).all():
        return float("nan")
    return ((x - y).norm() / y.norm().clamp_min(max(floor, 1e-300))).item()


@dataclass
class Case:
    name: str
    B: int
    T: int
    D: int
    N: int
    query: str                    # static | static_t | dynamic
    dtypes: str                   # bf16 | f32v0_bf16 | f32 | f16
    layout: str = "separate"      # separate | history (slices of one buffer) | repeat (a source twice)
    config: dict = field(default_factory=dict)       # launch-configuration override (split, unroll, ...)
    errors: dict = field(default_factory=dict)
    ref_errors: dict = field(default_factory=dict)   # the PyTorch reference module's own error, same dtype
    tol: float = 0.0
    ok: bool = False


def _dtypes(kind: str, N: int):
    if kind == "bf16":
        return [torch.bfloat16] * N
    if kind == "f32v0_bf16":
        return [torch.float32] + [torch.bfloat16] * (N - 1)
    if kind == "f32":
        return [torch.float32] * N
    if kind == "f16":
        return [torch.float16] * N
    raise ValueError(kind)


def run_case(c: Case, device: str, gen: torch.Generator) -> Case:
    from . import router_triton as rt

    dts = _dtypes(c.dtypes, c.N)
    B, T, D, N = c.B, c.T, c.D, c.N
    # sources with different scales (and a few large ones) so the softmax is far from uniform
    scales = [float(torch.empty(()).uniform_(0.3, 3.0, generator=gen)) for _ in range(N)]
    if c.layout == "history":
        buf = torch.randn(N + 1, B, T, D, generator=gen)
        for i in range(1, N):
            buf[i + 1] *= scales[i]
        buf = buf.to(device=device, dtype=dts[-1])     # sources 1.. are slices of one history buffer
        srcs = [(torch.randn(B, T, D, generator=gen) * scales[0]).to(device=device, dtype=dts[0])]
        srcs += [buf[i + 1] for i in range(1, N)]
        srcs = [s.detach().requires_grad_() for s in srcs]
    else:
        srcs = [(torch.randn(B, T, D, generator=gen) * scales[i]).to(device=device, dtype=dts[i]).requires_grad_()
                for i in range(N)]
    if c.layout == "repeat" and N >= 3:
        srcs[2] = srcs[1]
    qshape = {"static": (D,), "static_t": (B, 1, D), "dynamic": (B, T, D)}[c.query]
    qdt = dts[-1] if c.query == "dynamic" else torch.float32
    q = (torch.randn(qshape, generator=gen) * 3.0).to(device=device, dtype=qdt).requires_grad_()
    g = (1.0 + 0.3 * torch.randn(D, generator=gen)).to(device).requires_grad_()
    eps = 1e-6

    rt.POISON = True
    # config keys "atomic" (force the backward's atomic reductions on / off, rt.atomic_reduce) and "acc_rows"
    # (the static accumulator's rows); the rest are launch keys
    conf = {k: v for k, v in c.config.items() if k not in ("atomic", "acc_rows")}
    reductions = _reductions(c.config)
    try:
        with reductions, rt.configs(fwd={k: v for k, v in conf.items() if k != "rows"}, bwd=conf or None):
            h, alpha = rt.fused_router(srcs, q, g, eps, return_alpha=True)
            dh = torch.randn(h.shape, generator=gen).to(device=device, dtype=h.dtype)
            leaves = list({id(s): s for s in srcs}.values()) + [q, g]
            grads = torch.autograd.grad(h, leaves, dh)
    finally:
        rt.POISON = False
    # float64 leaves holding the same (already rounded) values: gradients stay float64 (autograd would
    # round a gradient to its leaf's dtype)
    d64 = {id(x): x.detach().double().requires_grad_() for x in leaves}
    hr, ar = reference_router([d64[id(s)] for s in srcs], d64[id(q)], d64[id(g)], eps)
    rgrads = torch.autograd.grad(hr, [d64[id(x)] for x in leaves], dh.double())
    # the PyTorch reference module in the working precision: what "bf16 bounds" means for this case
    pgrads = _module_reference_grads(srcs, leaves, q, g, eps, dh)

    out_dt = h.dtype
    c.tol = max(TOL[out_dt], max(TOL[d] for d in dts))
    c.errors = {"h": rel(h, hr), "alpha": rel(alpha, ar)}
    c.ref_errors = {}
    for i, (x, y, z) in enumerate(zip(grads[:-2], rgrads[:-2], pgrads[:-2])):
        c.errors[f"dv{i}"] = rel(x, y)
        c.ref_errors[f"dv{i}"] = rel(z, y)
    # with one source the query and gain get exactly zero gradient: measure against |dh| instead
    floor = 1e-2 * dh.double().norm().item() if c.N == 1 else 0.0
    c.errors["dq"] = rel(grads[-2], rgrads[-2], floor)
    c.errors["dg"] = rel(grads[-1], rgrads[-1], floor)
    c.ref_errors["dq"] = rel(pgrads[-2], rgrads[-2])
    c.ref_errors["dg"] = rel(pgrads[-1], rgrads[-1])
    # pass: within the dtype bound, or within twice the reference module's own error in the same dtype
    c.ok = all(math.isfinite(e) and (e <= c.tol or e <= 2 * c.ref_errors.get(k, 0.0))
               for k, e in c.errors.items())
    return c


def _reductions(keys: dict):
    """The atomic-reduction setting a case forces (keys "atomic", "acc_rows"), or none."""
    from . import router_triton as rt

    if "atomic" not in keys and "acc_rows" not in keys:
        return contextlib.nullcontext()
    return rt.atomic_reductions(bool(keys.get("atomic", 1)), keys.get("acc_rows"))


def _module_reference_grads(srcs, leaves, q, g, eps, dh):
    from ..models.sit import Router
    from . import dispatch

    D = srcs[0].shape[-1]
    r = Router(D, "static").to(srcs[0].device)
    with torch.no_grad():
        r.norm.weight.copy_(g.detach())
    r.norm.eps = eps
    r.norm.weight.requires_grad_(True)
    with dispatch.fused(False):
        h = r(srcs, q)
    leaves2 = leaves[:-1] + [r.norm.weight]
    return torch.autograd.grad(h, leaves2, dh.to(h.dtype))


def cases(interpret: bool, quick: bool = False) -> list[Case]:
    out = []
    if interpret and quick:  # the pytest interpreter test: a few seconds
        return [Case("small-dynamic", 2, 3, 40, 4, "dynamic", "f32v0_bf16"),
                Case("n1", 1, 2, 16, 1, "static", "bf16"),
                Case("history-f32", 1, 3, 32, 5, "static_t", "f32", layout="history"),
                Case("split-unroll1", 1, 3, 40, 4, "static", "bf16", config=dict(split=1, unroll=1, block_r=2, rows=2)),
                Case("sums-static", 2, 5, 40, 4, "static", "bf16", config=dict(atomic=0)),
                # many programs adding into each accumulator row (static: 10 programs over 3 rows; static_t: 5 per
                # sample): a lost or doubled partial shows
                Case("atomic-static", 2, 5, 40, 4, "static", "f32v0_bf16", config=dict(rows=1, acc_rows=3)),
                Case("atomic-static_t", 2, 5, 40, 3, "static_t", "f32", config=dict(rows=1))]
    if interpret:
        for q in ("static", "static_t", "dynamic"):
            out.append(Case(f"small-{q}", 2, 5, 40, 4, q, "f32v0_bf16"))
        out += [
            Case("n1", 2, 3, 48, 1, "static", "bf16"),
            Case("pow2-f32", 1, 3, 32, 3, "dynamic", "f32"),
            Case("f16", 2, 3, 24, 2, "static_t", "f16"),
            Case("history", 2, 3, 40, 4, "static", "bf16", layout="history"),
            Case("repeat", 2, 3, 40, 4, "dynamic", "bf16", layout="repeat"),
            Case("split-unroll1", 2, 5, 40, 5, "dynamic", "f32v0_bf16", config=dict(split=1, unroll=1, block_r=2, rows=4)),
            Case("split-unroll2", 2, 5, 40, 6, "static_t", "f32v0_bf16", config=dict(split=1, unroll=2, block_r=2, rows=2)),
            Case("atomic-static", 2, 5, 40, 4, "static", "f32v0_bf16", config=dict(rows=1, acc_rows=3)),
            Case("atomic-static_t", 2, 5, 40, 3, "static_t", "f32", config=dict(rows=1)),
            Case("atomic-dynamic", 2, 5, 40, 3, "dynamic", "f32", config=dict(rows=1, acc_rows=1)),
        ]
        # the backward's partials reduced by torch sums instead of atomics (deterministic mode), every query kind
        out += [Case(f"sums-{q}", 2, 5, 40, 4, q, "f32v0_bf16", config=dict(atomic=0))
                for q in ("static", "static_t", "dynamic")]
        return out
    for q in ("static", "static_t", "dynamic"):
        out.append(Case(f"xl-n57-{q}", 4, 256, 1152, 57, q, "f32v0_bf16"))
        out.append(Case(f"b-n9-{q}", 3, 255, 768, 9, q, "bf16"))
    out += [
        Case("xl-n1", 2, 256, 1152, 1, "static", "bf16"),
        Case("xl-n2-f32", 2, 33, 1152, 2, "static_t", "f32"),
        Case("s-n18-f16", 2, 64, 384, 18, "dynamic", "f16"),
        Case("pow2-1024", 2, 17, 1024, 5, "static", "bf16"),
        Case("odd-40", 3, 7, 40, 6, "dynamic", "f32v0_bf16"),
        Case("xl-history", 2, 128, 1152, 12, "static", "f32v0_bf16", layout="history"),
        Case("xl-repeat", 2, 64, 1152, 6, "dynamic", "bf16", layout="repeat"),
        Case("xl-split-unroll1", 2, 100, 1152, 8, "dynamic", "f32v0_bf16",
             config=dict(split=1, unroll=1, block_r=2, num_warps=8, rows=16)),
        Case("b-split-n10", 2, 100, 768, 10, "static_t", "bf16", config=dict(split=1, block_r=4, num_warps=8, rows=8)),
        Case("xl-noprefetch", 2, 64, 1152, 9, "dynamic", "f32v0_bf16", config=dict(unroll=2, prefetch=0)),
        Case("b-n6-prefetch", 2, 64, 768, 6, "static", "f32v0_bf16", config=dict(prefetch=1)),
        Case("xl-n3-warps2", 2, 64, 1152, 3, "static", "bf16", config=dict(num_warps=2)),
    ]
    out += [Case(f"xl-n9-{q}-sums", 4, 256, 1152, 9, q, "f32v0_bf16", config=dict(atomic=0))
            for q in ("static", "static_t", "dynamic")]
    return out


def _small_model(query: str, chunk: int, depth: int, hidden: int, heads: int, input_size: int, batch: int,
                 device: str, gen: torch.Generator):
    """A DAR SiT moved away from its zero init (so routing and gates matter) and one batch (x, y, s, eps)."""
    from ..models import SiT, model_config

    cfg = model_config("S", 2, input_size=input_size, routing="dar", query=query, chunk_size=chunk).replace(
        depth=depth, hidden_size=hidden, num_heads=heads)
    torch.manual_seed(0)
    model = SiT(cfg).to(device)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen).to(device))
    x = torch.randn(batch, cfg.in_channels, input_size, input_size, generator=gen).to(device)
    y = torch.randint(0, cfg.num_classes, (batch,), generator=gen).to(device)
    s = torch.rand(batch, generator=gen).to(device)
    return model, (x, y, s, torch.randn(x.shape, generator=gen).to(device))


def _loss_and_grads(model, batch, device: str, run=None) -> tuple:
    """The velocity loss of one batch (bf16 autocast on CUDA) and every parameter gradient, in float64; ``run``:
    what computes the forward (e.g. the compiled model), default the model itself."""
    from ..diffusion import diffusion_loss

    x, y, s, eps = batch
    model.zero_grad(set_to_none=True)
    with _autocast(device):
        loss = diffusion_loss(model if run is None else run, x, y, s, eps=eps)
    loss.backward()
    return loss.detach().double(), {n: p.grad.detach().double().clone()
                                    for n, p in model.named_parameters() if p.grad is not None}


def _compare(ref: tuple, got: tuple, device: str) -> dict:
    """Loss and worst parameter-gradient relative error of ``got`` against ``ref`` (both from _loss_and_grads)."""
    (l0, g0), (l1, g1) = ref, got
    worst = max((rel(g1[n], g0[n]), n) for n in g0 if g0[n].norm() > 0)
    tol = 5e-2 if device == "cuda" else 1e-4   # bf16 autocast: both paths round differently
    err = abs(l1 - l0).item() / abs(l0).item()
    return dict(loss_rel=err, worst_grad_rel=worst[0], worst_param=worst[1], tol=tol,
                ok=set(g0) == set(g1) and err < tol / 5 and worst[0] < tol)


def model_check(device: str, interpret: bool, quick: bool = False) -> list[dict]:
    """A small DAR SiT, fused vs reference: output and every parameter gradient. Static / static_t routers run
    with the following LayerNorm + modulate fused in (``dispatch.FUSE_LN``): counted, so the check can tell."""
    from . import dispatch, prefix_triton, router_triton

    ln_calls = {"n": 0, "dyn": 0, "prefix": 0}
    fused_router_ln, fused_dynamic_router_ln = router_triton.fused_router_ln, router_triton.fused_dynamic_router_ln
    fused_router_ln_prefix = prefix_triton.fused_router_ln_prefix

    def counting_ln(*a, **k):
        ln_calls["n"] += 1
        return fused_router_ln(*a, **k)

    def counting_prefix_ln(*a, **k):  # a router over a shared prefix (static / static_t, chunks with summaries)
        ln_calls["n"] += 1
        ln_calls["prefix"] += 1
        return fused_router_ln_prefix(*a, **k)

    def counting_dyn_ln(*a, **k):
        ln_calls["dyn"] += 1
        return fused_dynamic_router_ln(*a, **k)

    res = []
    gen = torch.Generator().manual_seed(1)
    if interpret:
        variants = [("dynamic", 2)] if quick else [("static", 2), ("dynamic", 1), ("static_t", 2)]
        base = dict(size="S", depth=2 if not quick else 1, hidden=64 if not quick else 32, heads=4,
                    input_size=8 if not quick else 4, batch=2)
    else:
        variants = [("static", 1), ("static", 2), ("static_t", 2), ("dynamic", 2)]
        base = dict(size="S", depth=4, hidden=384, heads=6, input_size=16, batch=4)
    for query, chunk in variants:
        model, batch = _small_model(query, chunk, base["depth"], base["hidden"], base["heads"], base["input_size"],
                                    base["batch"], device, gen)
        outs = {}
        ln_calls.update(n=0, dyn=0, prefix=0)
        for fused in (False, True):
            router_triton.fused_router_ln, router_triton.fused_dynamic_router_ln = counting_ln, counting_dyn_ln
            prefix_triton.fused_router_ln_prefix = counting_prefix_ln
            try:
                with dispatch.fused(fused, allow_cpu=interpret):
                    outs[fused] = _loss_and_grads(model, batch, device)
            finally:
                router_triton.fused_router_ln, router_triton.fused_dynamic_router_ln = (fused_router_ln,
                                                                                        fused_dynamic_router_ln)
                prefix_triton.fused_router_ln_prefix = fused_router_ln_prefix
        r = _compare(outs[False], outs[True], device)
        n_ln = ln_calls["dyn"] if query == "dynamic" else ln_calls["n"]
        if dispatch.FUSE_LN:   # every router, the head's too, fuses the LayerNorm + modulate that follows it
            r["ok"] = r["ok"] and n_ln == 2 * model.config.depth + 1
        res.append(dict(name=f"model-{query}-c{chunk}", **r, ln_fused_routers=n_ln,
                        shared_prefix_routers=ln_calls["prefix"]))
        res[-1]["ok"] = bool(res[-1]["ok"])
    return res


def _ln_amp_reference(srcs, q, g, shift, scale, dy, kind: str, device: str):
    """For the LN-fused router under bf16 autocast: float64 autograd of router -> LayerNorm -> modulate with a
    dynamic query rounded as autocast rounds it (q = v_prev W^T in bf16, its gradient passed straight through to
    W and v_prev), ((y, grads), and the relative errors of the PyTorch reference module (``Router``, then
    F.layer_norm and the modulate) run under the same autocast: what the bf16 bound means here."""
    import torch.nn.functional as F

    from ..models.sit import Router
    from . import dispatch

    N, D = len(srcs), srcs[0].shape[-1]
    labels = [f"dv{i}" for i in range(N)] + ["dW" if kind == "dynamic" else "dq", "dg", "dshift", "dscale"]
    leaves = [t.detach().double().requires_grad_() for t in (*srcs, q, g, shift, scale)]
    if kind == "dynamic":
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
            q16 = F.linear(srcs[N - 1].detach(), q.detach())
        qe = leaves[N - 1] @ leaves[N].t()
        q_ref = qe + (q16.double() - qe).detach()
    else:
        q_ref = leaves[N]
    h, _ = reference_router(leaves[:N], q_ref, leaves[N + 1], 1e-6)
    y = F.layer_norm(h, (D,), eps=1e-6) * (1 + leaves[N + 3][:, None]) + leaves[N + 2][:, None]
    want = (y, torch.autograd.grad(y, leaves, dy.double()))
    ins = [t.detach().requires_grad_() for t in (*srcs, q, g, shift, scale)]
    r = Router(D, kind).to(device)
    with torch.no_grad():
        r.norm.weight.copy_(g)
    r.norm.eps = 1e-6
    with dispatch.fused(False), torch.autocast(device, dtype=torch.bfloat16):
        qm = F.linear(ins[N - 1], ins[N]) if kind == "dynamic" else ins[N]
        hm = r(ins[:N], qm)
        ym = (F.layer_norm(hm, (D,), eps=1e-6) * (1 + ins[N + 3][:, None]) + ins[N + 2][:, None]).to(torch.bfloat16)
    # the gain's gradient reaches the module's own weight: hand it over in the place of g's
    got = torch.autograd.grad(ym, ins[:N + 1] + [r.norm.weight] + ins[N + 2:], dy.to(ym.dtype))
    return want, {k: rel(a, b) for k, a, b in zip(labels, got, want[1])}


def ln_check(device: str, interpret: bool) -> list[dict]:
    """The router with the LayerNorm + adaLN modulate fused in (``router_triton.fused_router_ln``, and
    ``fused_dynamic_router_ln`` for a dynamic query q = v_prev W^T with v_prev the last source) against float64
    autograd of router -> F.layer_norm -> modulate on the same rounded inputs: y and the gradients of every
    source, the query (W for a dynamic one), the RMSNorm gain, shift and scale; eager, the custom op
    torch.compile runs, the backward with its partials in registers and in memory slots (``ln_slot`` and
    ``part_slot`` both off, both on), h recomputed in the backward instead of kept
    (``keep_h_for``; eager and op; also y without gradients, where h is never written), and under bf16 autocast
    (y in bf16, the bf16 bound) with h kept in float32 (``amp-h32``) and in bf16 (``amp-h16``, eager and op;
    ``router_triton.LN_H``)."""
    import torch.nn.functional as F

    from . import router_triton as rt

    gen = torch.Generator().manual_seed(7)
    bf, f32 = torch.bfloat16, torch.float32
    if interpret:
        shapes = [("ln-small", 2, 5, 40, 4, "static", f32), ("ln-small-t", 2, 5, 40, 5, "static_t", bf),
                  ("ln-n1", 1, 4, 24, 1, "static", f32), ("ln-dyn", 2, 5, 40, 3, "dynamic", f32),
                  ("ln-dyn-bf16", 2, 5, 40, 3, "dynamic", bf)]
    else:
        shapes = [("ln-xl", 2, 100, 1152, 9, "static", bf), ("ln-b", 2, 255, 768, 6, "static_t", bf),
                  ("ln-pow2", 2, 17, 1024, 5, "static", bf), ("ln-f32", 2, 33, 384, 3, "static_t", f32),
                  ("ln-n1", 1, 7, 1152, 1, "static", bf), ("ln-dyn-xl", 2, 100, 1152, 9, "dynamic", bf),
                  ("ln-dyn-b", 2, 64, 768, 4, "dynamic", f32)]
    out = []
    for name, B, T, D, N, kind, dt in shapes:
        def rnd(*shape, s=1.0, dtype=torch.float32):
            return (torch.randn(*shape, generator=gen) * s).to(device=device, dtype=dtype)

        srcs = [(rnd(B, T, D, s=1 + i) + 0.3 * i).to(torch.float32 if i == 0 else dt) for i in range(N)]
        # the query, or for a dynamic router the projection W (q = v_prev W^T, v_prev = the last source)
        q = {"static": lambda: rnd(D, s=2.0), "static_t": lambda: rnd(B, 1, D, s=2.0),
             "dynamic": lambda: rnd(D, D, s=2.0 / math.sqrt(D))}[kind]()
        g = 1 + rnd(D, s=0.3)
        shift, scale, dy = rnd(B, D), rnd(B, D, s=0.5), rnd(B, T, D)
        leaves = [t.detach().double().requires_grad_() for t in (*srcs, q, g, shift, scale)]
        q_ref = leaves[N - 1] @ leaves[N].t() if kind == "dynamic" else leaves[N]
        h, _ = reference_router(leaves[:N], q_ref, leaves[N + 1], 1e-6)              # [B, T, D] float64
        y_ref = F.layer_norm(h, (D,), eps=1e-6) * (1 + leaves[N + 3][:, None]) + leaves[N + 2][:, None]
        want = torch.autograd.grad(y_ref, leaves, dy.double())
        tol = 1e-4 if dt == torch.float32 else 1.6e-2
        # eager, the custom op, the backward's partials in registers / in slots, and h recomputed (keep_h=False)
        # "sums": the partials reduced by torch sums instead of atomics (rt.atomic_reduce), eager and the op;
        # "amp-*": under bf16 autocast (in the interpreter for one static_t and one dynamic shape: minutes each)
        amp_here = not interpret or name in ("ln-small-t", "ln-dyn-bf16")
        amp_paths = ("amp-h32", "amp-h16", "amp-h16-op") if amp_here else ()
        if amp_paths:
            amp_want, amp_ref = _ln_amp_reference(srcs, q, g, shift, scale, dy, kind, device)
        for path in ("eager", "op", "regs", "slots", "noh", "noh-op", "sums", "sums-op") + amp_paths:
            old = rt.EAGER_AUTOGRAD_FN, rt.POISON, rt.RECOMPUTE_H, rt.LN_H
            rt.EAGER_AUTOGRAD_FN, rt.POISON = not path.endswith("op"), True   # unwritten outputs are NaN
            rt.RECOMPUTE_H = "all" if path.startswith("noh") else "none"
            amp = path.startswith("amp")   # bf16 autocast: y (and the query) in bf16, h kept as LN_H says
            if amp:
                rt.LN_H = "fp32" if path == "amp-h32" else "auto"
            # the backward keeping its partials in registers ("regs": ln_slot = part_slot = 0) or in memory slots
            # ("slots": both 1), whatever the per-shape default is
            slots = {"regs": 0, "slots": 1}.get(path)
            base = rt.bwd_config(N, D, dynamic=kind == "dynamic")
            cfg = (rt.configs(bwd=dict(base, ln_slot=slots, part_slot=slots)) if slots is not None
                   else rt.atomic_reductions(False) if path.startswith("sums") else contextlib.nullcontext())
            try:
                ins = [t.detach().requires_grad_() for t in (*srcs, q, g, shift, scale)]
                def run():
                    if kind == "dynamic":
                        return rt.fused_dynamic_router_ln(ins[:N], ins[N - 1], ins[N], ins[N + 1], 1e-6, ins[N + 2],
                                                          ins[N + 3], 1e-6)
                    return rt.fused_router_ln(ins[:N], ins[N], ins[N + 1], 1e-6, ins[N + 2], ins[N + 3], 1e-6)

                ac = torch.autocast(device, dtype=bf) if amp else contextlib.nullcontext()
                with cfg:
                    with ac:
                        y = run()
                    got = torch.autograd.grad(y, ins, dy.to(y.dtype))
                    if path == "noh":
                        with torch.no_grad():
                            y_nograd = run()
                errs = {"y": rel(y, y_ref)}
                if path == "noh":
                    errs["y_nograd"] = rel(y_nograd, y_ref)
                labels = [f"dv{i}" for i in range(N)] + ["dW" if kind == "dynamic" else "dq", "dg", "dshift", "dscale"]
                if amp:   # against float64 on the autocast-rounded query; the bound: bf16's or twice the module's
                    errs = {"y": rel(y, amp_want[0])}
                    errs.update({k: rel(a, b) for k, a, b in zip(labels, got, amp_want[1])})
                    bound = {k: max(1.6e-2, 2 * amp_ref.get(k, 0.0)) for k in errs}
                else:
                    errs.update({k: rel(a, b) for k, a, b in zip(labels, got, want)})
                if amp and y.dtype != bf:
                    raise AssertionError(f"y came out {y.dtype} under bf16 autocast")
                ok = all(math.isfinite(v) and v < (bound[k] if amp else tol) for k, v in errs.items())
            except Exception as e:
                errs, ok = {"error": f"{type(e).__name__}: {e}"}, False
            finally:
                rt.EAGER_AUTOGRAD_FN, rt.POISON, rt.RECOMPUTE_H, rt.LN_H = old
            worst = max(((v, k) for k, v in errs.items() if isinstance(v, float)), default=(float("nan"), "-"))
            out.append(dict(name=f"{name}-{path}", N=N, D=D, worst_rel=worst[0], worst=worst[1],
                            tol=1.6e-2 if amp else tol,
                            **({"error": errs["error"]} if "error" in errs else {}), ok=bool(ok)))
    return out


def finish_check(device: str) -> list[dict]:
    """The atomic reductions' finishing kernel (rt.finish_qg) against float64 torch, each query mode, at sizes
    spanning several row and column tiles (R, MR > FINISH_ROWS; C not a multiple of FINISH_COLS), with the cast of
    dshift / dscale to bf16 and without it."""
    from . import router_triton as rt

    gen = torch.Generator().manual_seed(5)
    R, MR, C = 2 * rt.FINISH_ROWS + 5, rt.FINISH_ROWS + 7, rt.FINISH_COLS + 44
    out = []
    for mode, cast in ((0, True), (1, False), (1, True), (2, False)):
        acc = torch.randn(R, C, generator=gen)
        q = torch.randn((R, C) if mode == 1 else (C,), generator=gen)
        g = torch.randn(C, generator=gen)
        macc = torch.randn(2, MR, C, generator=gen)
        U = acc.double() if mode == 1 else acc.double().sum(0)
        want = {"dg": (q.double() * U).sum(0) if mode == 1 else q.double() * U if mode == 0 else U}
        if mode != 2:
            want["dq"] = g.double() * U
        d = lambda t: t.to(device)
        dq, dg = torch.zeros(q.shape, device=device), torch.zeros(C, device=device)
        dmod = tuple(torch.zeros(MR, C, device=device, dtype=torch.bfloat16) for _ in range(2)) if cast else None
        rt.finish_qg(d(acc), R, d(q), d(g), dq, dg, C, mode, d(macc) if cast else None, dmod, MR)
        got = {"dq": dq.cpu(), "dg": dg.cpu()}                  # the references are on the CPU
        errs = {k: rel(got[k], v) for k, v in want.items()}
        if cast:
            errs.update(dshift=rel(dmod[0].cpu(), macc[0].double()), dscale=rel(dmod[1].cpu(), macc[1].double()))
        tol = 1e-2 if cast else 1e-5
        worst = max((v, k) for k, v in errs.items())
        out.append(dict(name=f"finish-mode{mode}{'-cast' if cast else ''}", worst_rel=worst[0], worst=worst[1],
                        tol=tol, ok=bool(all(math.isfinite(v) and v < tol for v in errs.values()))))
    return out


def prefix_check(device: str, interpret: bool) -> list[dict]:
    """Shared prefixes (``prefix_triton``): K static / static_t routers over P shared summaries, router k with k raw
    sources after them (a chunk), each followed by its fused LayerNorm + modulate, against float64 autograd of the
    K routers run separately on the same rounded inputs: every y and the gradients of every source, query, gain,
    shift and scale. The prefix op and the routers' op are a pair (their lam gradient is a private protocol), so
    only the composition is checked, as the model runs it. Routers of few sources (the partial among them;
    ``router_triton.recompute_h_max``) recompute h in the backward from their partial and raw sources, and the
    check counts those launches; the ``recompute_h`` cases force every router's h kept or recomputed."""
    import torch.nn.functional as F

    from . import prefix_triton as pt
    from . import router_triton as rt

    gen = torch.Generator().manual_seed(11)
    bf, f32 = torch.bfloat16, torch.float32
    # the last field forces launch-configuration keys (prefix_triton.configured): query groups, two-pass backward
    two, g2 = dict(passes=2), dict(group=2)
    if interpret:
        shapes = [("prefix-small", 2, 5, 40, 3, 3, "static", f32, {}),
                  ("prefix-small-t", 2, 5, 48, 4, 4, "static_t", bf, {}),
                  ("prefix-p1", 1, 4, 24, 1, 2, "static", f32, {}),
                  ("prefix-groups", 2, 5, 40, 3, 3, "static_t", f32, dict(group=2, passes=1)),
                  ("prefix-1pass", 2, 5, 48, 4, 4, "static_t", bf, dict(passes=1)),
                  ("prefix-2pass", 2, 5, 40, 3, 3, "static_t", f32, dict(passes=2, group=2)),
                  ("prefix-p16", 2, 5, 40, 3, 3, "static", bf, dict(passes=2, partial=bf)),
                  ("prefix-2pass-s", 2, 6, 24, 4, 2, "static", f32,
                   dict(passes=2, grad=dict(rows=4, rb=2, ct=8, num_warps=1, pipe=2))),
                  ("prefix-2pass-nocv", 2, 5, 40, 3, 3, "static", bf, dict(passes=2, partial=bf, grad=dict(cv=0))),
                  ("prefix-sums", 2, 5, 40, 3, 3, "static", f32, dict(atomic=0)),
                  ("prefix-acc1", 2, 9, 40, 3, 3, "static", f32, dict(passes=2, acc_rows=1,
                                                                       grad=dict(rows=2, rb=1, ct=8, num_warps=1))),
                  ("prefix-1pass-acc1", 2, 5, 40, 3, 3, "static", f32, dict(passes=1, rows=1, acc_rows=1)),
                  ("prefix-t-2pass-sums", 2, 5, 48, 4, 4, "static_t", bf, dict(passes=2, atomic=0)),
                  ("prefix-t-1pass-sums", 2, 5, 40, 3, 3, "static_t", f32, dict(passes=1, group=2, atomic=0)),
                  ("prefix-keeph", 2, 5, 40, 3, 4, "static", f32, dict(recompute_h="none")),
                  ("prefix-noh-t", 2, 5, 48, 4, 4, "static_t", bf, dict(recompute_h="all"))]
    else:
        shapes = [("prefix-xl", 2, 100, 1152, 14, 4, "static", bf, {}),
                  ("prefix-xl-t", 2, 64, 1152, 9, 4, "static_t", bf, {}),
                  ("prefix-xl-g2", 2, 100, 1152, 14, 4, "static", bf, g2),
                  ("prefix-xl-t-g1", 2, 64, 1152, 5, 3, "static_t", bf, dict(group=1)),
                  ("prefix-xl-2pass", 2, 100, 1152, 14, 4, "static", bf, dict(passes=2, group=2)),
                  ("prefix-xl-2pass-p32", 2, 64, 1152, 6, 4, "static_t", bf, dict(passes=2, partial=torch.float32)),
                  ("prefix-b-p32", 2, 64, 768, 6, 4, "static", bf, dict(partial=torch.float32)),
                  ("prefix-xl-t-2pass", 2, 64, 1152, 5, 3, "static_t", bf, two),
                  ("prefix-xl-2pass-nocv", 2, 100, 1152, 14, 4, "static", bf, dict(passes=2, grad=dict(cv=0))),
                  ("prefix-xl-t-2pass-g", 2, 100, 1152, 14, 4, "static_t", bf,
                   dict(passes=2, grad=dict(rows=16, rb=4, ct=128, num_warps=2))),
                  ("prefix-b", 3, 255, 768, 6, 4, "static", bf, {}),
                  ("prefix-b-t", 2, 64, 768, 4, 3, "static_t", bf, {}),
                  ("prefix-b-2pass", 3, 255, 768, 6, 4, "static", bf, two),
                  ("prefix-xl-1pass-g2", 2, 64, 1152, 6, 4, "static_t", bf, dict(passes=1, group=2)),
                  ("prefix-f32", 2, 33, 384, 5, 2, "static", f32, {}),
                  ("prefix-f32-g2", 2, 33, 384, 5, 3, "static", f32, g2),
                  ("prefix-f32-2pass", 2, 33, 384, 5, 3, "static_t", f32, two),
                  ("prefix-odd", 2, 17, 40, 3, 4, "static_t", bf, {}),
                  ("prefix-odd-2pass", 2, 17, 40, 3, 4, "static_t", bf, two),
                  ("prefix-xl-sums", 2, 100, 1152, 14, 4, "static", bf, dict(atomic=0)),
                  ("prefix-xl-t-2pass-sums", 2, 64, 1152, 9, 4, "static_t", bf, dict(passes=2, atomic=0)),
                  ("prefix-b-1pass-sums", 3, 255, 768, 6, 4, "static", bf, dict(passes=1, atomic=0)),
                  ("prefix-xl-keeph", 2, 100, 1152, 14, 4, "static", bf, dict(recompute_h="none")),
                  ("prefix-xl-t-noh", 2, 64, 1152, 9, 4, "static_t", bf, dict(recompute_h="all")),
                  ("prefix-b-noh", 3, 255, 768, 6, 4, "static", bf, dict(recompute_h="all"))]
    out = []
    for name, B, T, D, P, K, kind, dt, forced in shapes:
        def rnd(*shape, s=1.0, dtype=torch.float32):
            return (torch.randn(*shape, generator=gen) * s).to(device=device, dtype=dtype)

        n = P + K - 1
        srcs = [(rnd(B, T, D, s=1 + 0.3 * i) + 0.2 * i).to(torch.float32 if i == 0 else dt) for i in range(n)]
        qs = rnd(K, D, s=2.0) if kind == "static" else rnd(B, K, D, s=2.0)
        gs = 1 + rnd(K, D, s=0.3)
        shifts, scales, dys = rnd(K, B, D), rnd(K, B, D, s=0.5), rnd(K, B, T, D)
        leaves = [t.detach().double().requires_grad_() for t in (*srcs, qs, gs, shifts, scales)]
        lq, lg, lsh, lsc = leaves[n:]
        ys_ref = []
        for k in range(K):
            qk = lq[k] if kind == "static" else lq[:, k:k + 1]
            h, _ = reference_router(leaves[:P + k], qk, lg[k], 1e-6)                # [B, T, D] float64
            ys_ref.append(F.layer_norm(h, (D,), eps=1e-6) * (1 + lsc[k][:, None]) + lsh[k][:, None])
        want = torch.autograd.grad(ys_ref, leaves, [d.double() for d in dys])
        tol = 1e-4 if dt == torch.float32 else 1.6e-2
        # "recompute_h": the routers' h kept ("none") or recomputed from their partial ("all") whatever their
        # source count (rt.RECOMPUTE_H; by default routers of few sources, the partial among them, recompute:
        # rt.recompute_h_max)
        poison, rt.POISON = rt.POISON, True   # unwritten outputs are NaN
        old_h, rt.RECOMPUTE_H = rt.RECOMPUTE_H, forced.get("recompute_h", rt.RECOMPUTE_H)
        bwd_prepare, recomputed = rt._bwd_prepare, []

        def counting_prepare(dh, sources, q, g, h, *a, **k):   # the routers' backwards that recompute h
            recomputed.append(k.get("plam") is not None and h.numel() == 0)
            return bwd_prepare(dh, sources, q, g, h, *a, **k)

        rt._bwd_prepare = counting_prepare
        try:
            expect = sum(not rt.keep_h_for(1 + k, D, prefix=True) for k in range(K))
            with _reductions(forced), pt.configured(**{k: v for k, v in forced.items()
                                                       if k not in ("partial", "atomic", "acc_rows", "recompute_h")}):
                errs = _prefix_run(pt, rt, srcs, qs, gs, shifts, scales, dys, ys_ref, want, P, K, kind,
                                   forced.get("partial"))
            ok = all(math.isfinite(v) and v < tol for v in errs.values()) and sum(recomputed) == expect
        except Exception as e:
            errs, ok = {"error": f"{type(e).__name__}: {e}"}, False
        finally:
            rt.POISON, rt.RECOMPUTE_H, rt._bwd_prepare = poison, old_h, bwd_prepare
        worst = max(((v, k) for k, v in errs.items() if isinstance(v, float)), default=(float("nan"), "-"))
        shown = {k: str(v) if k == "partial" else v for k, v in forced.items() if k != "grad"}
        out.append(dict(name=name, P=P, K=K, D=D, **shown, h_recomputed=f"{sum(recomputed)}/{K}",
                        worst_rel=worst[0], worst=worst[1], tol=tol,
                        **({"error": errs["error"]} if "error" in errs else {}), ok=bool(ok)))
    return out


def _prefix_run(pt, rt, srcs, qs, gs, shifts, scales, dys, ys_ref, want, P, K, kind, part_dtype):
    """One shared-prefix chunk through the kernels: relative errors of every output and gradient against float64."""
    n = P + K - 1
    ins = [t.detach().requires_grad_() for t in (*srcs, qs, gs, shifts, scales)]
    iq, ig, ish, isc = ins[n:]
    parts, lam = pt.shared_prefix(ins[:P], iq, ig, 1e-6, part_dtype)
    y_dtype = rt._y_dtype(ins[:P + K - 1])
    ys = [pt.fused_router_ln_prefix(parts[k], lam[k], ins[P:P + k], iq[k] if kind == "static" else iq[:, k:k + 1],
                                    ig[k], 1e-6, ish[k], isc[k], 1e-6, y_dtype) for k in range(K)]
    got = torch.autograd.grad(ys, ins, [d.to(y.dtype) for d, y in zip(dys, ys)])
    errs = {f"y{k}": rel(y, yr) for k, (y, yr) in enumerate(zip(ys, ys_ref))}
    labels = [f"dv{i}" for i in range(n)] + ["dq", "dg", "dshift", "dscale"]
    errs.update({k: rel(a, b) for k, a, b in zip(labels, got, want)})
    return errs


def shared_model_check(device: str, interpret: bool) -> list[dict]:
    """A chunked DAR SiT (static and static_t, chunk 2, so later chunks have >= 3 summaries; and chunk 3 shared in
    groups of two routers) with shared prefixes (``SiT.share_prefixes = True``, every width) against the same model
    without them, both fused: loss and every parameter gradient; and the shared path must really run (its prefix
    passes are counted)."""
    from . import dispatch

    gen = torch.Generator().manual_seed(3)
    size = (3, 40, 4, 4) if interpret else (4, 384, 6, 16)          # depth, hidden, heads, input size
    out = []
    # (query, chunk, routers per prefix pass, fewest summaries that share): the last case splits a chunk of three
    # routers into a pair sharing one pass and a router on its own (dispatch.prefix_groups)
    for query, chunk, group, least in (("static", 2, None, None), ("static_t", 2, None, None), ("static", 3, 2, 2)):
        old_group, old_min = dispatch.SHARED_PREFIX_GROUP, dispatch.SHARED_PREFIX_MIN
        if group is not None:
            dispatch.SHARED_PREFIX_GROUP, dispatch.SHARED_PREFIX_MIN = group, least
        try:
            out.append(_shared_model_case(query, chunk, size, device, interpret, gen))
        finally:
            dispatch.SHARED_PREFIX_GROUP, dispatch.SHARED_PREFIX_MIN = old_group, old_min
        if group is not None:
            out[-1]["name"] += f"-group{group}"
    return out


def _shared_model_case(query: str, chunk: int, size: tuple, device: str, interpret: bool,
                       gen: torch.Generator) -> dict:
    """One model of :func:`shared_model_check`: shared prefixes on against off, and the prefix passes counted;
    shared, the eager autograd.Function path (no custom-op calls) against the custom ops torch.compile runs."""
    from . import dispatch, prefix_triton, router_triton

    model, batch = _small_model(query, chunk, *size, 2, device, gen)
    calls = {"n": 0, "op": 0}
    orig = prefix_triton.shared_prefix
    ops = {name: getattr(prefix_triton, name) for name in ("prefix_fwd", "router_ln_prefix_fwd")}

    def counting(*a, **k):
        calls["n"] += 1
        return orig(*a, **k)

    def counting_op(name):
        def f(*a, **k):
            calls["op"] += 1
            return ops[name](*a, **k)
        return f

    res, op_calls = {}, {}
    old_eager = router_triton.EAGER_AUTOGRAD_FN
    for run, share, eager in (("off", False, True), ("shared", True, True), ("shared-op", True, False)):
        model.share_prefixes = share
        prefix_triton.shared_prefix = counting
        for name in ops:
            setattr(prefix_triton, name, counting_op(name))
        router_triton.EAGER_AUTOGRAD_FN = eager
        calls["op"] = 0
        try:
            with dispatch.fused(True, allow_cpu=interpret):
                res[run] = _loss_and_grads(model, batch, device)
        finally:
            prefix_triton.shared_prefix = orig
            for name, op in ops.items():
                setattr(prefix_triton, name, op)
            router_triton.EAGER_AUTOGRAD_FN = old_eager
            model.share_prefixes = None
        op_calls[run] = calls["op"]
    r = _compare(res["off"], res["shared"], device)
    r_op = _compare(res["shared-op"], res["shared"], device)
    r["ok"] = bool(r["ok"] and r_op["ok"] and calls["n"] > 0 and op_calls["shared"] == 0 and op_calls["shared-op"] > 0)
    return dict(name=f"shared-model-{query}-c{chunk}", **r, prefix_passes=calls["n"],
                eager_vs_op_rel=r_op.get("worst_grad_rel"), op_calls_eager=op_calls["shared"],
                op_calls_op=op_calls["shared-op"])


def recompute_check(device: str, interpret: bool) -> dict:
    """Dynamic routers recompute q in the backward: same loss and gradients as saving q, and the bytes saved
    for the backward (parameters not counted) drop by (at least) one [B, T, D] query per router. Routers whose
    last source is v_prev add dq W into that source's gradient in place (counted: prev_grad_folded)."""
    from ..diffusion import diffusion_loss
    from . import dispatch, router_triton

    d, heads, size, depth, bs = (32, 4, 4, 2, 2) if interpret else (384, 6, 16, 4, 4)
    model, (x, y, s, eps) = _small_model("dynamic", 2, depth, d, heads, size, bs, device,
                                         torch.Generator().manual_seed(2))
    out, calls = {}, {"fn": 0, "op": 0, "fn_folded": 0, "op_folded": 0}
    # the routers run with or without the following LayerNorm + modulate fused in (dispatch.FUSE_LN; the head too)
    fns = {"plain": (router_triton._FusedDynamicRouterFn, 5), "ln": (router_triton._FusedDynamicRouterLNFn, 9)}
    ops = {"router_fwd_dynamic": (router_triton.router_fwd_dynamic, 6),
           "router_ln_fwd_dynamic": (router_triton.router_ln_fwd_dynamic, 10)}
    applies = {k: fn.apply for k, (fn, _) in fns.items()}

    def counting(kind):  # (v_prev, W, g, eps, [LN args,] q_dtype, prev_index, slots, *sources)
        def f(*a):
            calls["fn"] += 1
            calls["fn_folded"] += a[fns[kind][1]] >= 0
            return applies[kind](*a)
        return f

    def counting_op(name):  # (sources, v_prev, W, g, eps, [LN args,] q_dtype, prev_index)
        def f(*a):
            calls["op"] += 1
            calls["op_folded"] += a[ops[name][1]] >= 0
            return ops[name][0](*a)
        return f

    old = router_triton.RECOMPUTE_DYNAMIC_QUERY, router_triton.EAGER_AUTOGRAD_FN
    old_last, dispatch.SAVE_QUERY_LAST = dispatch.SAVE_QUERY_LAST, "0"     # every router by the switch above
    # save q; recompute it (eager autograd.Function); recompute it (the custom op torch.compile runs); the op with
    # dq written the other way (over the recomputed q or into a fresh buffer, router_triton.DQ_OVER_Q)
    dq_default = router_triton.DQ_OVER_Q
    modes = {"save": (False, True, dq_default), "recompute": (True, True, dq_default),
             "recompute-op": (True, False, dq_default), "recompute-op-dq": (True, False, not dq_default)}
    try:
        for k, (fn, _) in fns.items():
            fn.apply = counting(k)
        for name in ops:
            setattr(router_triton, name, counting_op(name))
        for mode, (recompute, eager_fn, dq_over_q) in modes.items():
            router_triton.RECOMPUTE_DYNAMIC_QUERY, router_triton.EAGER_AUTOGRAD_FN = recompute, eager_fn
            router_triton.DQ_OVER_Q = dq_over_q
            model.zero_grad(set_to_none=True)
            saved = []

            def pack(t):
                saved.append(t)
                return t

            with dispatch.fused(True, allow_cpu=interpret), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                ac = _autocast(device)
                with ac:
                    loss = diffusion_loss(model, x, y, s, eps=eps)
            loss.backward()
            # parameters are resident anyway: count what the backward keeps alive beyond them (saving the fp32
            # weight itself costs nothing, saving its bf16 autocast copy does)
            params = {p.untyped_storage().data_ptr() for p in model.parameters()}
            uniq = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved
                    if t.untyped_storage().data_ptr() not in params}
            out[mode] = (loss.detach().double(), sum(uniq.values()),
                         {n: p.grad.detach().double().clone() for n, p in model.named_parameters() if p.grad is not None})
    finally:
        router_triton.RECOMPUTE_DYNAMIC_QUERY, router_triton.EAGER_AUTOGRAD_FN = old
        router_triton.DQ_OVER_Q = dq_default
        dispatch.SAVE_QUERY_LAST = old_last
        for fn, _ in fns.values():
            del fn.apply                          # back to autograd.Function.apply
        for name, (op, _) in ops.items():
            setattr(router_triton, name, op)
    n_routers = len(model.routers)
    q_bytes = bs * (size // 2) ** 2 * d * (2 if device == "cuda" else 4)     # one query per router
    tol = 1e-2 if device == "cuda" else 1e-5
    l0, b0, g0 = out["save"]
    res = dict(name="dynamic-recompute", routers_recomputed=calls["fn"], routers_recomputed_op=calls["op"] // 2,
               prev_grad_folded=calls["fn_folded"], prev_grad_folded_op=calls["op_folded"] // 2,
               dq_over_q=dq_default,
               saved_mb_before=b0 / 2**20, tol=tol)
    # the projection's gradient is added into v_prev's source gradient (the routers whose last source is v_prev)
    folds = router_triton.FOLD_PREV_GRAD
    ok = (calls["fn"] == n_routers and calls["op"] == 2 * n_routers
          and (not folds or (calls["fn_folded"] > 0 and calls["op_folded"] == 2 * calls["fn_folded"])))
    for mode in ("recompute", "recompute-op", "recompute-op-dq"):
        l1, b1, g1 = out[mode]
        worst = max((rel(g1[n], g0[n]), n) for n in g0 if g0[n].norm() > 0)
        key = mode.replace("-", "_")
        res.update({f"saved_mb_{key}": b1 / 2**20, f"worst_grad_rel_{key}": worst[0], f"worst_param_{key}": worst[1]})
        ok = ok and (set(g0) == set(g1) and abs(l1 - l0).item() <= tol * abs(l0).item() and worst[0] < tol
                     and b0 - b1 >= n_routers * q_bytes)
    res["ok"] = bool(ok)
    return res


def compiled_saved_check(device: str, interpret: bool) -> dict:
    """Under torch.compile a dynamic router recomputes q too: AOTAutograd saves as many [B, T, D] activations for
    the backward of a compiled dynamic model as for the static one, not one query per router more (as when q is
    saved: checked too, so the count can tell). Both with the following LayerNorm + modulate fused into every
    router and without; fused, each router saves one [B, T, D] fewer (its fp32 h stands for the LayerNorm's
    input and the modulate's), and with h recomputed in the backward (``RECOMPUTE_H = "all"``) one fewer again.
    Counted with h kept (``"none"``) unless said."""
    from functorch.compile import make_boxed_func, min_cut_rematerialization_partition
    from torch._dynamo.backends.common import aot_autograd

    from ..diffusion import diffusion_loss
    from ..models import SiT, model_config
    from . import dispatch, router_triton

    bs, size, d = 2, 8, 64
    btd = (bs, (size // 2) ** 2, d)

    def saved_count(query: str, recompute: bool, fuse_ln: bool = True, recompute_h: str = "none") -> int:
        cfg = model_config("S", 2, input_size=size, routing="dar", query=query, chunk_size=2).replace(
            depth=2, hidden_size=d, num_heads=4)
        torch.manual_seed(0)
        model = SiT(cfg).to(device)
        info = {}

        def fw(gm, example_inputs):
            out = next(n for n in gm.graph.nodes if n.op == "output")
            vals = [a.meta.get("val") if hasattr(a, "meta") else None for a in out.args[0]]
            # the [B, T, D] activations kept for the backward (parameters are graph inputs saved at no cost)
            info["saved"] = sum(1 for v in vals[1:] if isinstance(v, torch.Tensor) and tuple(v.shape) == btd)
            return make_boxed_func(gm)

        backend = aot_autograd(fw_compiler=fw, bw_compiler=lambda gm, ex: make_boxed_func(gm),
                               partition_fn=min_cut_rematerialization_partition)
        old, old_ln, old_h = router_triton.RECOMPUTE_DYNAMIC_QUERY, dispatch.FUSE_LN, router_triton.RECOMPUTE_H
        old_last, dispatch.SAVE_QUERY_LAST = dispatch.SAVE_QUERY_LAST, "0"  # every router by the switch
        router_triton.RECOMPUTE_DYNAMIC_QUERY, dispatch.FUSE_LN = recompute, fuse_ln
        router_triton.RECOMPUTE_H = recompute_h
        torch._dynamo.reset()
        try:
            f = torch.compile(model, backend=backend)
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(bs, cfg.in_channels, size, size, generator=gen).to(device)
            y = torch.randint(0, cfg.num_classes, (bs,), generator=gen).to(device)
            s = torch.rand(bs, generator=gen).to(device)
            with dispatch.fused(True, allow_cpu=interpret):
                ac = _autocast(device)
                with ac:
                    loss = diffusion_loss(f, x, y, s)
            loss.backward()
        finally:
            router_triton.RECOMPUTE_DYNAMIC_QUERY, dispatch.FUSE_LN, router_triton.RECOMPUTE_H = old, old_ln, old_h
            dispatch.SAVE_QUERY_LAST = old_last
            torch._dynamo.reset()
        return info["saved"]

    st = saved_count("static", True, fuse_ln=False)
    st_ln = saved_count("static", True, fuse_ln=True)
    st_noh = saved_count("static", True, fuse_ln=True, recompute_h="all")
    dy = saved_count("dynamic", True, fuse_ln=False)
    dy_ln = saved_count("dynamic", True, fuse_ln=True)
    dy_save = saved_count("dynamic", False, fuse_ln=True)
    n_routers = 2 * 2 + 1
    # h recomputed in the backward: one [B, T, D] (fp32 h) fewer per router
    ok = (dy == st and dy_ln == st_ln and dy_save - dy_ln >= n_routers and st_ln < st
          and st_ln - st_noh >= n_routers)
    return dict(name="compiled-dynamic-saved", btd_saved_static=st, btd_saved_static_ln_fused=st_ln,
                btd_saved_static_h_recomputed=st_noh, btd_saved_dynamic=dy, btd_saved_dynamic_ln_fused=dy_ln,
                btd_saved_dynamic_q_saved=dy_save, routers=n_routers, ok=bool(ok))


def compiled_accum_check(device: str, interpret: bool) -> list[dict]:
    """Under torch.compile the routers' backward ops add each shared source's gradient into one buffer
    (:mod:`dartool.kernels.compiled_slots`): a small DAR SiT compiled with that accumulation on and off, each
    against the eager fused model (loss and every parameter gradient), and the adds counted (on: some; off:
    none). Every shared source takes part here (MIN_READERS and MIN_PENDING 1: these models are small). Compile
    caches are off, so each setting is compiled fresh."""
    from . import compiled_slots

    if interpret:
        variants, size = [("static", 1, 3), ("dynamic", 2, 2)], (32, 4, 4)
    else:
        variants, size = [("static", 1, 4), ("static", 4, 4), ("dynamic", 2, 4)], (384, 6, 16)
    gen = torch.Generator().manual_seed(5)
    old_on, old_min, old_pend = compiled_slots.ENABLED, compiled_slots.MIN_READERS, compiled_slots.MIN_PENDING
    compiled_slots.MIN_READERS = compiled_slots.MIN_PENDING = 1
    try:
        return [_compiled_accum_case(q, c, d, size, device, interpret, gen) for q, c, d in variants]
    finally:
        compiled_slots.MIN_READERS, compiled_slots.MIN_PENDING = old_min, old_pend
        compiled_slots.set_enabled(old_on)


def _compiled_accum_case(query: str, chunk: int, depth: int, size: tuple, device: str, interpret: bool,
                         gen: torch.Generator) -> dict:
    import torch._functorch.config as fconfig
    import torch._inductor.config as iconfig

    from . import compiled_slots, dispatch
    from . import router_triton as rt

    model, batch = _small_model(query, chunk, depth, *size, 4 if device == "cuda" else 2, device, gen)
    # row_pipe_accum: accumulating launches may take the row-pipelined backward (DARTOOL_ROW_PIPE_ACCUM=1);
    # accum_bwd: their launch keys off it (DARTOOL_ROUTER_BWD_ACCUM)
    row = dict(name=f"compiled-accum-{query}-c{chunk}", ok=True, row_pipe_accum=rt.ROW_PIPE_ACCUM,
               accum_bwd=rt.accum_bwd_text() or "-")
    with dispatch.fused(True, allow_cpu=interpret):
        ref = _loss_and_grads(model, batch, device)
        for on in (True, False):
            compiled_slots.set_enabled(on)
            compiled_slots.COUNTS.update(ops=0, adds=0)
            torch._dynamo.reset()
            try:
                with iconfig.patch(fx_graph_cache=False), fconfig.patch(enable_autograd_cache=False):
                    got = _loss_and_grads(model, batch, device, torch.compile(model))
            finally:
                torch._dynamo.reset()
            r = _compare(ref, got, device)
            tag = "on" if on else "off"
            row.update({f"{tag}_loss_rel": r["loss_rel"], f"{tag}_worst_grad_rel": r["worst_grad_rel"],
                        f"{tag}_adds": compiled_slots.COUNTS["adds"]})
            row["ok"] = bool(row["ok"] and r["ok"] and (compiled_slots.COUNTS["adds"] > 0) == on)
    row["tol"] = r["tol"]
    return row


def tap_check(device: str, interpret: bool) -> dict:
    """Tapped sources (in-kernel gradient accumulation): three routers over overlapping sources, one of
    them forced onto the reference path, against float64 autograd."""
    from . import dispatch
    from . import router_triton as rt

    gen = torch.Generator().manual_seed(7)
    B, T, D = (2, 3, 40) if interpret else (4, 128, 1152)
    leaves = [(torch.randn(B, T, D, generator=gen) * (1 + i)).to(device=device,
              dtype=torch.float32 if i == 0 else torch.bfloat16).requires_grad_() for i in range(6)]
    qs = [(torch.randn(D, generator=gen) * 3).to(device).requires_grad_() for _ in range(3)]
    gs = [(1 + 0.3 * torch.randn(D, generator=gen)).to(device).requires_grad_() for _ in range(3)]
    dhs = [torch.randn(B, T, D, generator=gen).to(device) for _ in range(3)]
    sets = [[0, 1, 2], [0, 2, 3, 4], [0, 2, 4, 5]]
    with dispatch.fused(True, allow_cpu=interpret):
        tapped = [dispatch.tap_source(x * 1) for x in leaves]  # tap a non-leaf, as the model does
        n_tapped = sum(getattr(t, "_dar_slot", None) is not None for t in tapped)
        loss = 0
        for r, idx in enumerate(sets):
            srcs = [tapped[i] for i in idx]
            if r == 1:  # the reference path on tapped sources: ordinary autograd into the taps
                with dispatch.fused(False):
                    V = torch.stack([s.float() for s in srcs])
                    K = V * torch.rsqrt(V.pow(2).mean(-1, keepdim=True) + 1e-6) * gs[r]
                    a = torch.softmax((K * qs[r]).sum(-1) / math.sqrt(D), 0)
                    h = (a.unsqueeze(-1) * V).sum(0)
            else:
                h = rt.fused_router(srcs, qs[r], gs[r], 1e-6)
            loss = loss + (h.float() * dhs[r]).sum()
    allp = leaves + qs + gs
    grads = torch.autograd.grad(loss, allp)
    d64 = [x.detach().double().requires_grad_() for x in allp]
    L64 = 0
    for r, idx in enumerate(sets):
        h, _ = reference_router([d64[i] for i in idx], d64[6 + r], d64[9 + r], 1e-6)
        L64 = L64 + (h * dhs[r].double()).sum()
    ref = torch.autograd.grad(L64, d64)
    errs = {f"g{i}": rel(a, b) for i, (a, b) in enumerate(zip(grads, ref))}
    worst = max(errs.values())
    return dict(name="tapped-sources", n_tapped=n_tapped, worst_grad_rel=worst, tol=1.6e-2,
                ok=bool(n_tapped == 6 and math.isfinite(worst) and worst < 1.6e-2))


def _autocast(device: str):
    """bf16 autocast on CUDA (what training runs), nothing on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext()


# the parts of run_all, by the names --only takes: the router cases per shape class, then the named checks
PARTS = ("router", "ln-fused", "shared-prefix", "shared-prefix-model", "tapped-sources", "dynamic-recompute",
         "compiled-dynamic-saved", "compiled-accum", "model")


def run_all(device: str | None = None, interpret: bool = False, verbose: bool = True, model: bool = True,
            quick: bool = False, only: Sequence[str] | None = None) -> dict:
    """Every check against float64 (``only``: just these PARTS). TF32 is off while they run, whatever the caller set (``dartool bench``
    turns it on for its timings): a dynamic router's projection W v_prev in TF32 is off by ~1e-3, which would
    be charged to the kernels."""
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        return _run_all(device, interpret, verbose, model, quick, only)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def _run_all(device: "str | None", interpret: bool, verbose: bool, model: bool, quick: bool,
             only: Sequence[str] | None = None) -> dict:
    unknown = sorted(set(only or ()) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown check part(s) {', '.join(unknown)}: choose from {', '.join(PARTS)}")
    wanted = set(only or PARTS)
    device = device or ("cuda" if torch.cuda.is_available() and not interpret else "cpu")
    gen = torch.Generator().manual_seed(1234)
    t0 = time.time()
    results = []
    for c in cases(interpret, quick) if "router" in wanted else []:
        try:
            run_case(c, device, gen)
        except Exception as e:  # report, don't stop
            c.errors = {"exception": f"{type(e).__name__}: {e}"}
            c.ok = False
        results.append(asdict(c))
        if verbose:
            errs = " ".join(f"{k}={v:.1e}" if isinstance(v, float) else f"{k}={v}" for k, v in c.errors.items()
                            if not k.startswith("dv") or k in ("dv0", "dv1"))
            worst_dv = max((v for k, v in c.errors.items() if k.startswith("dv")), default=float("nan"))
            ref_dq = c.ref_errors.get("dq", float("nan"))
            print(f"  [{'ok' if c.ok else 'FAIL'}] {c.name:18s} N={c.N:2d} D={c.D:4d} {c.dtypes:10s} "
                  f"{errs} max_dv={worst_dv:.1e} tol={c.tol:.0e} (torch ref dq={ref_dq:.1e})", flush=True)
    checks = [("router", lambda: finish_check(device)),
              ("ln-fused", lambda: ln_check(device, interpret)),
              ("shared-prefix", lambda: prefix_check(device, interpret)),
              ("shared-prefix-model", lambda: shared_model_check(device, interpret)),
              ("tapped-sources", lambda: [tap_check(device, interpret)]),
              ("dynamic-recompute", lambda: [recompute_check(device, interpret)])]
    named = set(only or ())       # parts asked for by name run even where --quick / --no-model would leave them out
    if not quick or "compiled-dynamic-saved" in named:
        checks.append(("compiled-dynamic-saved", lambda: [compiled_saved_check(device, interpret)]))
    if not quick or "compiled-accum" in named:
        checks.append(("compiled-accum", lambda: compiled_accum_check(device, interpret)))
    if model or "model" in named:
        checks.append(("model", lambda: model_check(device, interpret, quick)))
    checks = [(name, run) for name, run in checks if name in wanted]
    models = []
    for name, run in checks:  # report a failure, don't stop
        try:
            models += run()
        except Exception as e:
            models.append(dict(name=name, ok=False, error=f"{type(e).__name__}: {e}"))
    if verbose:
        for m in models:
            print(f"  [{'ok' if m['ok'] else 'FAIL'}] {m['name']:18s} " +
                  " ".join(f"{k}={v:.1e}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items()
                           if k not in ("name", "ok")), flush=True)
    ok = bool(results or models) and all(r["ok"] for r in results) and all(m["ok"] for m in models)
    return dict(ok=ok, device=device, interpret=interpret, seconds=time.time() - t0, cases=results, models=models)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--interpret", action="store_true", help="small shapes on the CPU (set TRITON_INTERPRET=1)")
    ap.add_argument("--no-model", action="store_true")
    ap.add_argument("--quick", action="store_true", help="fewer router cases and a smaller model part (the pytest "
                    "interpreter test; the LayerNorm and shared-prefix parts run in full: minutes in the interpreter)")
    ap.add_argument("--only", default=None, metavar="PART[,PART]",
                    help=f"run only these parts: {', '.join(PARTS)}")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    only = [x.strip() for x in a.only.split(",") if x.strip()] if a.only else None
    if only and set(only) - set(PARTS):
        ap.error(f"--only: unknown part(s) {', '.join(sorted(set(only) - set(PARTS)))}; choose from "
                 f"{', '.join(PARTS)}")
    if a.interpret:
        import os

        if os.environ.get("TRITON_INTERPRET") != "1":
            print("--interpret needs TRITON_INTERPRET=1 in the environment", file=sys.stderr)
            return 2
    elif not torch.cuda.is_available():
        print("no CUDA device: run with TRITON_INTERPRET=1 ... --interpret for the CPU interpreter check")
        return 2
    out = run_all(interpret=a.interpret, model=not a.no_model, quick=a.quick, only=only)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    print(f"router check: {'PASS' if out['ok'] else 'FAIL'} ({out['seconds']:.1f} s on {out['device']})")
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
