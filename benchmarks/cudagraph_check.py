#!/usr/bin/env python3
"""Does a DAR SiT compute the same under CUDA graphs? The same small model (same weights, same batch) compiled
as ``full`` and as ``cudagraphs`` (``torch.compile(mode="reduce-overhead")``, :mod:`dartool.models.compiling`),
several forward + backward calls each (under CUDA graphs: warm-up, recording, then replays): the losses and the
last call's gradients must agree within bf16 rounding (the routers' backward reduces with atomics, so not bit for
bit), and every call's loss must equal the first (a replay reading stale tables or buffers would differ). Also reports whether Inductor used CUDA graphs (its
skip counters) and the captured offset tables (:mod:`dartool.kernels.tables`).

``--train-steps N`` also trains each variant N steps in both modes with ``dartool train``'s own step
(:func:`dartool.train.arms.optimizer_step`: AdamW, gradient norm, EMA; under CUDA graphs it marks each step and drops
the gradients after it) on alternating batches: the per-step losses and the weights' updates must agree (losses
within ``--tol``, the updates' difference within 5 x ``--tol`` of their norm: Adam's normalised steps amplify the
rounding of small gradients).

    PYTHONPATH=$PWD python3 benchmarks/cudagraph_check.py --query static --query dynamic --train-steps 8

Needs CUDA. Exit 0 when every variant agrees.
"""
import argparse
import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run(model, cfg, mode: str, calls: int, batch: int) -> tuple[list[float], dict]:
    """``calls`` forward + backward passes of the compiled ``model`` on one fixed batch (weights unchanged; under
    CUDA graphs the first calls warm up and record, the later ones replay): the losses and the last call's
    gradients."""
    import torch

    from dartool.diffusion import diffusion_loss
    from dartool.models.compiling import compile_model

    fwd = compile_model(model, mode, dynamic=False)
    gen = torch.Generator(device="cuda").manual_seed(123)
    x = torch.randn(batch, cfg.in_channels, cfg.input_size, cfg.input_size, device="cuda", generator=gen)
    eps = torch.randn(x.shape, device="cuda", generator=gen)
    y = torch.randint(0, cfg.num_classes, (batch,), device="cuda", generator=gen)
    s = torch.rand(batch, device="cuda", generator=gen)
    drop = torch.rand(batch, device="cuda", generator=gen) < 0.1
    losses = []
    for _ in range(calls):
        if mode == "cudagraphs":
            torch.compiler.cudagraph_mark_step_begin()
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = diffusion_loss(fwd, x, y, s, eps=eps, drop_labels=drop)
        loss.backward()
        losses.append(float(loss))
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}
    return losses, grads


def train(model, mode: str, steps: int, batch: int) -> tuple[list[float], dict]:
    """``steps`` steps of ``dartool train``'s optimizer_step on the model compiled in ``mode`` (two alternating
    fixed batches): the per-step losses and the final weights."""
    import torch

    from dartool.train.arms import TrainModule, optimizer_step
    from dartool.train.ema import EMA

    cfg = model.config
    module = TrainModule(model, compile=True, compile_mode=mode)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, fused=True)
    ema = EMA(model, 0.99)
    gen = torch.Generator(device="cuda").manual_seed(7)
    batches = [(torch.randn(batch, cfg.in_channels, cfg.input_size, cfg.input_size, device="cuda", generator=gen),
                torch.randint(0, cfg.num_classes, (batch,), device="cuda", generator=gen),
                torch.randn(batch, cfg.in_channels, cfg.input_size, cfg.input_size, device="cuda", generator=gen),
                torch.rand(batch, device="cuda", generator=gen),
                torch.rand(batch, device="cuda", generator=gen) < 0.1) for _ in range(2)]
    losses = []
    for k in range(steps):
        x, y, eps, s, drop = batches[k % 2]
        per, gnorm, _ = optimizer_step(module, model, params, opt, ema, x, y, eps, s, drop, k,
                                       device=torch.device("cuda"), precision="bf16", grad_clip=1.0)
        losses.append(float(per.mean()))
    weights = {n: p.detach().float().clone() for n, p in model.named_parameters()}
    return losses, weights


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--query", action="append", default=None)
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--tol", type=float, default=2e-2, help="relative, for the gradients and the losses")
    ap.add_argument("--train-steps", type=int, default=0, help="also train this many steps in both modes (dartool "
                    "train's step) and compare the losses and the final weights")
    ap.add_argument("--no-residual", action="store_true", help="skip the residual control (it passed on an H100, "
                    "session 17)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    import torch

    from dartool.kernels import tables
    from dartool.models import SiT
    from dartool.models.config import ModelConfig

    if not torch.cuda.is_available():
        print("cudagraph_check.py needs CUDA", file=sys.stderr)
        return 2
    rows, ok_all = [], True
    control = [] if a.no_residual else [("residual", "static")]
    for routing, query in control + [("dar", q) for q in (a.query or ["static"])]:
        cfg = ModelConfig(input_size=16, patch_size=2, in_channels=4, hidden_size=a.hidden, depth=a.depth,
                          num_heads=6, num_classes=10, routing=routing, query=query, chunk_size=a.chunk)
        torch.manual_seed(0)
        with torch.device("cuda"):
            ref = SiT(cfg)
        with torch.no_grad():                          # leave adaLN-Zero's identity start: every path carries signal
            for p in ref.parameters():
                p.add_(0.02 * torch.randn_like(p))
        res = {}
        for mode in ("full", "cudagraphs"):
            torch._dynamo.reset()
            before = int(tables._ARENA["tables"])
            from torch._dynamo.utils import counters
            counters.clear()
            m = copy.deepcopy(ref)
            losses, grads = run(m, cfg, mode, a.calls, a.batch)
            skips = {k: v for k, v in counters["inductor"].items() if "cudagraph" in k}
            res[mode] = dict(losses=losses, grads=grads, captured_tables=int(tables._ARENA["tables"]) - before,
                             cudagraph_counters=dict(skips))
            del m
        g0, g1 = res["full"]["grads"], res["cudagraphs"]["grads"]
        worst = max(((g0[k] - v).norm() / g0[k].norm().clamp_min(1e-12)).item() for k, v in g1.items()) \
            if set(g0) == set(g1) else float("inf")
        l0, l1 = res["full"]["losses"], res["cudagraphs"]["losses"]
        spread = max(abs(v - l1[0]) for v in l1 + l0)
        ok = worst < a.tol and spread <= a.tol * abs(l0[0])
        ok_all &= ok
        row = dict(routing=routing, query=query, chunk=a.chunk, ok=ok, worst_grad_rel=worst,
                   losses_full=l0, losses_cudagraphs=l1, captured_tables=res["cudagraphs"]["captured_tables"],
                   cudagraph_counters=res["cudagraphs"]["cudagraph_counters"])
        rows.append(row)
        print(f"{'PASS' if ok else 'FAIL'} {routing} {query if routing == 'dar' else ''} c{a.chunk}: gradients of "
              f"call {a.calls} rel {worst:.2e}, losses {l0} (full) {l1} (cudagraphs), "
              f"captured tables {row['captured_tables']}, counters {row['cudagraph_counters']}", flush=True)
        if a.train_steps > 0:
            tr = {}
            for mode in ("full", "cudagraphs"):
                torch._dynamo.reset()
                tr[mode] = train(copy.deepcopy(ref), mode, a.train_steps, a.batch)
            (t0, w0), (t1, w1) = tr["full"], tr["cudagraphs"]
            loss_rel = max(abs(u - v) / max(abs(u), 1e-12) for u, v in zip(t0, t1))
            start = {k: v.detach().float() for k, v in ref.named_parameters()}
            d0 = torch.cat([(w0[k] - start[k]).flatten() for k in w0])      # what training changed, per mode
            d1 = torch.cat([(w1[k] - start[k]).flatten() for k in w0])
            w_rel = ((d1 - d0).norm() / d0.norm().clamp_min(1e-12)).item()
            tok = loss_rel < a.tol and w_rel < 5 * a.tol and d0.norm().item() > 0
            ok_all &= tok
            row.update(train_ok=tok, train_losses_full=t0, train_losses_cudagraphs=t1, train_loss_rel=loss_rel,
                       train_weight_rel=w_rel)
            print(f"{'PASS' if tok else 'FAIL'} {routing} {query if routing == 'dar' else ''} c{a.chunk} trained "
                  f"{a.train_steps} steps: losses rel {loss_rel:.2e} ({t0[0]:.4f} -> {t0[-1]:.4f} full, "
                  f"{t1[0]:.4f} -> {t1[-1]:.4f} cudagraphs), weight updates rel {w_rel:.2e}", flush=True)
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "cudagraph_check.json").write_text(json.dumps(rows, indent=1))
    print("ALL OK" if ok_all else "SOME FAILED")
    return 0 if ok_all else 1


if __name__ == "__main__":
    raise SystemExit(main())
