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

* ``keep_h`` (with ``ln_fused``): which routers keep their h for the backward. A router of few sources recomputes
  it there instead (``router_triton.keep_h_for``; a router over a shared prefix counts its partial as a source):
  its forward writes no h and its backward reads none, one h's bytes fewer each way. Its second read of the
  sources is not counted: the row-pipelined backward reads them for the recompute and for the gradients in one
  row's work, so the second read is a cache hit, not DRAM traffic (a floor counts what must cross DRAM).
  :func:`as_built` follows ``keep_h_for`` where Triton is importable (the kernels' own rule, overrides included)
  and counts every h kept where it is not (no fused kernels run there).
* ``h_bytes`` (with ``ln_fused``): bytes per element of a kept h, 2 since session 29 (``router_triton.LN_H`` auto:
  kept in the LayerNorm output's bf16), 4 with ``DARTOOL_ROUTER_H=fp32``; the fp32 stream the residual's LayerNorm
  reads (what the fused kernels save, ``hb`` below) does not change.
"""
from __future__ import annotations

from typing import Callable, Optional

# keep_h(n, prefix): whether a router of n sources (prefix: a partial among them) keeps its h for the backward
KeepH = Callable[[int, bool], bool]


def chunk_routers(num_sublayers: int, chunk: int) -> list[tuple[int, int]]:
    """(summaries, raw sources) read by every sublayer router, in order (``dar_source_plan``'s counts split)."""
    from ..models.sit import dar_source_plan

    counts, _ = dar_source_plan(num_sublayers, chunk)
    return [(n - i % chunk, i % chunk) for i, n in enumerate(counts)]


def router_bytes(size: str, batch: int, chunk: int = 4, tokens: int = 256, *, bf16_stream: bool = False,
                 shared: bool = False, ln_fused: bool = False, partial_bytes: int = 4,
                 min_summaries: "int | None" = None, group: int = 0,
                 keep_h: Optional[KeepH] = None, h_bytes: "int | None" = None) -> dict[str, float]:
    """Bytes all routers of one training step move: ``dict(fwd, bwd, total)``.

    ``shared``: chunks share their prefix. With ``min_summaries`` None a chunk shares wherever that moves fewer
    bytes (the model's own choice); otherwise where it has at least that many summaries (the kernels' rule,
    ``dispatch.SHARED_PREFIX_MIN``). ``group``: at most this many routers per prefix pass (0: the whole chunk;
    groups of one router read their own sources), ``partial_bytes``: bytes per element of a partial (2 where the
    kernels keep them in bf16). ``keep_h`` (counted only with ``ln_fused``; None: every router keeps its h): a
    router for which it says False writes no h in the forward and reads none in the backward. ``h_bytes`` (counted
    only with ``ln_fused``; None: as the stream, 4 or 2 with ``bf16_stream``): bytes per element of a kept h."""
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

    hk = h_bytes * u if (ln_fused and h_bytes) else hb   # bytes of a kept h

    def h_once(n: int, prefix: bool) -> int:     # a router's h bytes in each direction: 0 where it recomputes h
        return 0 if ln_fused and keep_h is not None and not keep_h(n, prefix) else hk

    def single(n: int) -> tuple[int, int]:       # (forward, backward) of a router reading its own n sources
        return src(n) + h_once(n, False), 2 * src(n) + hb + h_once(n, False)

    def pass_of(P: int, raws: list[int]) -> tuple[int, int]:
        """One prefix pass over P summaries for a group whose routers have these raw sources."""
        k = len(raws) - 1                        # routers that read a partial instead of the summaries
        raw = sum(raws)
        hs = sum(h_once(1 + r, True) for r in raws)     # the group's h bytes (h_0 the pass's), each direction
        f = src(P) + k * part + k * part + hs + 2 * u * raw
        # routers: read partial, raw, dh, h; write d(partial), raw gradients. The pass: read the summaries, dh_0,
        # h_0 and the k partial gradients; write the summaries' gradients.
        b = k * (part + hb + part) + 2 * (2 * u * raw) + 2 * src(P) + hb + hs + k * part
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
    ``DARTOOL_PREFIX_PARTIAL=fp32``; routers of few sources recomputing h in the backward
    (``router_triton.keep_h_for``, where Triton is importable), each kept h in ``router_triton.LN_H``'s dtype
    (bf16 by default, as under bf16 autocast)."""
    from . import dispatch
    from .compiled_slots import ln_h_mode

    ln = bool(dispatch.FUSE_LN)
    shared = ln and bool(dispatch.SHARED_PREFIX) and query != "dynamic"
    return router_bytes(size, batch, chunk, tokens, shared=shared, ln_fused=ln,
                        partial_bytes=4 if dispatch.PREFIX_PARTIAL == "fp32" else 2,
                        min_summaries=dispatch.SHARED_PREFIX_MIN, group=dispatch.SHARED_PREFIX_GROUP,
                        keep_h=_keep_h_rule(size, query == "dynamic"), h_bytes=4 if ln_h_mode() == "fp32" else 2)


def _keep_h_rule(size: str, dynamic: bool) -> Optional[KeepH]:
    """``router_triton.keep_h_for`` at this model's width, read at each call (so its module settings apply);
    None where Triton is not importable (no fused kernel runs, nothing recomputes)."""
    import importlib.util

    if importlib.util.find_spec("triton") is None:
        return None
    from ..models import SIZES
    from . import router_triton as rt

    D = SIZES[size][1]
    return lambda n, prefix: rt.keep_h_for(n, D, prefix=prefix, dynamic=dynamic)
