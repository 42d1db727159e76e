#!/usr/bin/env python3
"""How low could DAR's compiled training step go? The routers' byte floor under other layouts, as a ratio to a
measured compiled residual step.

Under torch.compile DAR's non-router kernels cost what the residual step's kernels cost (step_profile.py
--compiled, session 3), so a compiled step is at best ``residual + router bytes / copy rate``. This prints that
bound for the plain router and for three changes to it (two of which the kernels now make), from a traffic model
(``dartool.kernels.traffic``; no GPU needed), and for the routers as this process's switches run them:

* ``own reads``: every router reads its own sources, the LayerNorm after it runs apart; v_0 and each h in
  float32 (bf16 autocast with an fp32 position embedding), the other sources bf16. Forward reads a router's N
  sources and writes h; backward reads the sources, dh and h and writes N source gradients
  (``dartool.bench.router_traffic_bytes``).
* ``bf16 v_0 and h``: the same with v_0 and h in bf16 (a numerics change: h no longer carries fp32 precision).
* ``shared prefixes``: with static / static_t queries every query of a chunk is known before the chunk runs, so
  one pass over the chunk's summaries can compute every router's partial softmax state over them (an fp32
  partial sum and its log-sum-exp); each router then reads that partial plus its raw sources. The backward
  mirrors it: each router hands a gradient for its partial back, and one pass over the summaries turns all
  of them into the summaries' gradients. Used per chunk only where it moves fewer bytes (the kernels built since session 9,
  ``prefix_triton``, use their own rule: see ``as built now``); ``shared_prefix_route`` below is its PyTorch
  form, equal to the routers it replaces (tested in float64).
* ``LN fused``: the LayerNorm + adaLN modulate that follows every router (and the head's) computed inside the
  router kernel, as the issue allows. The forward writes y = modulate(LN(h)) in bf16 (what the next GEMM reads
  under autocast) beside h; the backward takes dy and forms dh itself (``ln_modulate_backward`` below, tested
  against autograd in float64). DAR's separate LayerNorm kernels go: forward read h, write y; backward read dy
  and h, write dh. The router writes y and reads dy instead of dh. Net: 4 bytes of h's width saved per element
  and router (16 with h in fp32: 4 forward, 12 backward). The figures are router bytes net of that saving.
* combinations;
* ``as built now (static)``: the fused LayerNorm and shared prefixes as ``dartool.kernels.dispatch`` runs them
  (chunks of at least ``SHARED_PREFIX_MIN`` summaries, groups of ``SHARED_PREFIX_GROUP`` routers, bf16 partials):
  the floor ``dartool bench`` reports as "as built" (``dartool.kernels.traffic.as_built``).

    python3 benchmarks/floor_options.py benchmarks/results/compiled-NVIDIA-H200-20261126-0903.json

The JSON is a ``dartool bench`` result (or the compiled rows of one) with ``copy`` and compiled ``residual``
rows; without one, only the bytes are printed.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def traffic(size: str, batch: int, chunk: int = 4, tokens: int = 256, bf16_stream: bool = False,
            shared: bool = False, ln_fused: bool = False) -> dict:
    """Bytes every router of one training step moves (forward, backward) under the chosen layout
    (:func:`dartool.kernels.traffic.router_bytes`; shared prefixes where they move fewer bytes, fp32 partials)."""
    from dartool.kernels.traffic import router_bytes

    return router_bytes(size, batch, chunk, tokens, bf16_stream=bf16_stream, shared=shared, ln_fused=ln_fused)


def ln_modulate_backward(dy, h, shift, scale, eps: float):
    """The backward a router with the LayerNorm + modulate fused in would compute per row, written out (no
    kernel): y = xhat (1 + scale) + shift, xhat = (h - mean) rstd over D (no affine, as DiT's LayerNorm).
    h, dy [B, T, D]; shift, scale [B, D]. Returns (dh, dshift, dscale); tested against autograd in float64.

    Per row it needs only dy, h and the row statistics, so a backward kernel that already reads h (for
    delta = dh . h) forms dh in registers; dshift and dscale are sums over tokens, which such a kernel
    accumulates per program as it does the static query's gradient."""
    import torch

    mean = h.mean(-1, keepdim=True)                                                  # [B, T, 1]
    rstd = torch.rsqrt(h.var(-1, unbiased=False, keepdim=True) + eps)                # [B, T, 1]
    xhat = (h - mean) * rstd                                                         # [B, T, D]
    dxhat = dy * (1 + scale[:, None, :])                                             # [B, T, D]
    dh = rstd * (dxhat - dxhat.mean(-1, keepdim=True) - xhat * (dxhat * xhat).mean(-1, keepdim=True))
    return dh, dy.sum(1), (dy * xhat).sum(1)                                         # [B,T,D], [B,D], [B,D]


def shared_prefix_route(summaries, raws, q, gain, eps: float = 1e-6):
    """What the shared-prefix layout computes, in PyTorch (the algebra behind the model above; no kernel).

    summaries: P x [B, T, D], read once for every router of the chunk; raws: one list of raw sources per router;
    q: one query per router ([D] or [B, 1, D]); gain: one RMSNorm gain per router. Router j's partial state over
    the summaries is its normalised weighted sum acc_j and log-sum-exp lse_j; its output is the softmax over
    [lse_j, logits of its raw sources] applied to [acc_j, raw sources] -- equal to router j over summaries + raws.
    """
    import math

    import torch

    V = torch.stack(list(summaries))                                                  # [P, B, T, D]
    D = V.shape[-1]
    rms = torch.rsqrt(V.pow(2).mean(-1, keepdim=True) + eps)                          # [P, B, T, 1], shared
    outs = []
    for j, raw in enumerate(raws):
        def logits(X, rms_x):                                                         # [n, B, T]
            return ((X * rms_x) * gain[j] * q[j]).sum(-1) / math.sqrt(D)
        lp = logits(V, rms)                                                           # [P, B, T]
        lse = torch.logsumexp(lp, 0)                                                  # [B, T]
        acc = torch.einsum("pbt,pbtd->btd", torch.softmax(lp, 0), V)                  # [B, T, D]
        if not raw:
            outs.append(acc)
            continue
        R = torch.stack(list(raw))                                                    # [r, B, T, D]
        lr = logits(R, torch.rsqrt(R.pow(2).mean(-1, keepdim=True) + eps))            # [r, B, T]
        w = torch.softmax(torch.cat([lse[None], lr]), 0)                              # [1 + r, B, T]
        outs.append(w[0, ..., None] * acc + torch.einsum("rbt,rbtd->btd", w[1:], R))  # [B, T, D]
    return outs


OPTIONS = (("own reads", False, False, False), ("bf16 v_0 and h", True, False, False),
           ("shared prefixes", False, True, False), ("LN fused", False, False, True),
           ("shared prefixes + LN fused", False, True, True), ("all three", True, True, True))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("result", nargs="?", help="a dartool bench JSON with compiled residual rows")
    ap.add_argument("--chunk", type=int, default=4)
    a = ap.parse_args(argv)
    from dartool.bench import router_traffic_bytes
    from dartool.kernels.traffic import as_built

    rows, bw = [], None
    if a.result:
        d = json.loads(Path(a.result).read_text())
        bw = d["copy"]["bytes_per_s"]
        rows = [r for r in d.get("train", d.get("rows", [])) if r.get("compiled") and r.get("routing") == "residual"
                and "step_ms" in r]
        measured = {}
        for r in d.get("train", d.get("rows", [])):   # "DAR static c4", "DAR static c4 (LN fused)", ...
            if r.get("compiled") and r.get("variant", "").startswith(f"DAR static c{a.chunk}") and "step_ms" in r:
                measured.setdefault((r["model"], r["batch"]), []).append(r)
        print(f"{d['env'].get('card')}, copy {bw / 1e12:.2f} TB/s, commit {d['env'].get('commit')}")
    shapes = [(r["model"].split("-")[1].split("/")[0], r["batch"], r) for r in rows] or [("B", 256, None),
                                                                                       ("XL", 64, None)]
    print("| model | batch | layout | router GB / step | floor ms | best compiled ratio |")
    print("|---|---:|---|---:|---:|---:|")
    for size, batch, r in shapes:
        ref = router_traffic_bytes(size, batch, a.chunk)["total"]
        for name, bf16, shared, ln in OPTIONS:
            t = traffic(size, batch, a.chunk, bf16_stream=bf16, shared=shared, ln_fused=ln)["total"]
            if name == "own reads":
                assert abs(t - ref) < 1, (t, ref)  # the model agrees with the bench's own count
            ms = t / bw * 1e3 if bw else None
            ratio = 1 + ms / r["step_ms"] if r else None
            print(f"| SiT-{size}/2 | {batch} | {name} | {t / 1e9:.1f} | " + (f"{ms:.1f}" if ms else "-") + " | "
                  + (f"{ratio:.3f}" if ratio else "-") + " |")
        t = as_built(size, batch, a.chunk, "static")["total"]   # this process's switches: bf16 partials, groups
        ms = t / bw * 1e3 if bw else None
        print(f"| SiT-{size}/2 | {batch} | as built now (static) | {t / 1e9:.1f} | " + (f"{ms:.1f}" if ms else "-")
              + " | " + (f"{1 + ms / r['step_ms']:.3f}" if r and ms else "-") + " |")
        for m in (measured.get((r["model"], batch), []) if r else []):
            print(f"| | | *measured: {m['variant']}* | | | {m['time_ratio']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
