"""The bytes DAR's routers must move in one training step: a traffic model (no GPU) that gives the byte floor
``dartool bench`` sets DAR's extra step time against, and ``benchmarks/floor_options.py`` compares layouts with.

Per router of N sources (v_0 among them), with u = B x T x D elements:

* forward: read the N sources, write h;
* backward: read the N sources, dh and h, write N source gradients (the query, gain and log-sum-exp terms are
  negligible).

v_0 (bf16 patch embedding + fp32 position embedding) and each h are float32 under bf16 autocast, the other
sources bf16 (``bf16_stream``: all in bf16). Two layouts the kernels use change the count:

* ``shared`` prefixes: the routers of a chunk with static / static_t queries read the chunk's summaries once
  between them. One pass over the P summaries writes the first router's h and a partial softmax state for each of
  the other k routers of its group; each of those reads its partial plus its raw sources. The backward mirrors it
  (each router hands back a gradient for its partial; one pass turns them into the summaries' gradients).
* ``ln_fused``: the LayerNorm + adaLN modulate after every router computed in the router's kernel. DAR's separate
  LayerNorm kernels go (forward: read h, write y; backward: read dy and h, write dh); the router writes y and
  reads dy instead of dh. Net: one h's bytes saved in the forward and three in the backward, per router.

Not modelled: routers of few sources that recompute h in the backward instead of keeping it
(``router_triton.keep_h_for``): each is counted as keeping h (8 bytes per element of h, written and read back in
fp32), not as reading its sources a second time (a cache hit where the row-pipelined backward holds them).
"""
from __future__ import annotations


def chunk_routers(num_sublayers: int, chunk: int) -> list[tuple[int, int]]:
    """(summaries, raw sources) read by every sublayer router, in order (``dar_source_plan``'s counts split)."""
    from ..models.sit import dar_source_plan

    counts, _ = dar_source_plan(num_sublayers, chunk)
    return [(n - i % chunk, i % chunk) for i, n in enumerate(counts)]


def router_bytes(size: str, batch: int, chunk: int = 4, tokens: int = 256, *, bf16_stream: bool = False,
                 shared: bool = False, ln_fused: bool = False, partial_bytes: int = 4,
                 min_summaries: "int | None" = None, group: int = 0) -> dict[str, float]:
    """Bytes all routers of one training step move: ``dict(fwd, bwd, total)``.

    ``shared``: chunks share their prefix. With ``min_summaries`` None a chunk shares wherever that moves fewer
    bytes (the model's own choice); otherwise where it has at least that many summaries (the kernels' rule,
    ``dispatch.SHARED_PREFIX_MIN``). ``group``: at most this many routers per prefix pass (0: the whole chunk;
    groups of one router read their own sources), ``partial_bytes``: bytes per element of a partial (2 where the
    kernels keep them in bf16)."""
    from ..models import SIZES
    from ..models.sit import dar_source_plan

    depth, D, _ = SIZES[size]
    L = 2 * depth
    u = batch * tokens * D                       # elements of one [B, T, D] tensor
    v0 = 2 * u if bf16_stream else 4 * u         # bytes of v_0
    hb = 2 * u if bf16_stream else 4 * u         # bytes of h (and dh)
    part = partial_bytes * u                     # bytes of one partial

    def src(n: int) -> int:                      # bytes of n sources, v_0 among them
        return v0 + 2 * u * (n - 1)

    def single(n: int) -> tuple[int, int]:       # (forward, backward) of a router reading its own n sources
        return src(n) + hb, 2 * src(n) + 2 * hb

    def pass_of(P: int, raws: list[int]) -> tuple[int, int]:
        """One prefix pass over P summaries for a group whose routers have these raw sources."""
        k = len(raws) - 1                        # routers that read a partial instead of the summaries
        raw = sum(raws)
        f = src(P) + hb + k * part + k * (part + hb) + 2 * u * raw
        # routers: read partial, raw, dh, h; write d(partial), raw gradients. The pass: read the summaries, dh_0,
        # h_0 and the k partial gradients; write the summaries' gradients.
        b = k * (part + 2 * hb + part) + 2 * (2 * u * raw) + 2 * src(P) + 2 * hb + k * part
        return f, b

    plan = chunk_routers(L, chunk)
    fwd = bwd = 0
    for c0 in range(0, L, chunk):
        routers = plan[c0:c0 + chunk]
        P = routers[0][0]
        f_ind = sum(single(p + r)[0] for p, r in routers)
        b_ind = sum(single(p + r)[1] for p, r in routers)
        if shared and len(routers) > 1 and (min_summaries is None or P >= min_summaries):
            g = group if group > 0 else len(routers)
            f_sh = b_sh = 0
            for i in range(0, len(routers), g):
                grp = routers[i:i + g]
                f, b = pass_of(P, [r for _, r in grp]) if len(grp) > 1 else single(P + grp[0][1])
                f_sh, b_sh = f_sh + f, b_sh + b
            if min_summaries is not None or f_sh + b_sh < f_ind + b_ind:
                f_ind, b_ind = f_sh, b_sh
        fwd += f_ind
        bwd += b_ind
    _, head = dar_source_plan(L, chunk)
    f, b = single(head)
    fwd, bwd = fwd + f, bwd + b
    if ln_fused:
        fwd -= (L + 1) * hb
        bwd -= (L + 1) * 3 * hb
    return dict(fwd=float(fwd), bwd=float(bwd), total=float(fwd + bwd))


def as_built(size: str, batch: int, chunk: int, query: str, tokens: int = 256) -> dict[str, float]:
    """The bytes of the routers as this process would run them (``dartool.kernels.dispatch``'s switches): the
    LayerNorm fused in (``FUSE_LN``), and with it, for static / static_t queries, shared prefixes on chunks of at
    least ``SHARED_PREFIX_MIN`` summaries in groups of ``SHARED_PREFIX_GROUP`` routers, partials in bf16 unless
    ``DARTOOL_PREFIX_PARTIAL=fp32``."""
    from . import dispatch

    ln = bool(dispatch.FUSE_LN)
    shared = ln and bool(dispatch.SHARED_PREFIX) and query != "dynamic"
    return router_bytes(size, batch, chunk, tokens, shared=shared, ln_fused=ln,
                        partial_bytes=4 if dispatch.PREFIX_PARTIAL == "fp32" else 2,
                        min_summaries=dispatch.SHARED_PREFIX_MIN, group=dispatch.SHARED_PREFIX_GROUP)
