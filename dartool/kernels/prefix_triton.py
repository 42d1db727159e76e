"""Shared prefixes for chunked DAR with static / static_t queries (Triton): every router of a chunk reads the
chunk's summaries once between them.

In a chunked model (DAR-METHOD.md section 4) the S routers of chunk n all read the same summaries
c_0 .. c_{n-1} (the *prefix*, P sources), and router j of the chunk reads j raw outputs after them. With static
or static_t queries all S queries are known when the chunk starts, so one pass over the prefix can compute every
router's softmax state over it. Router k's state is its normalised partial sum and log-sum-exp::

    s_ki    = q_k . RMSNorm_k(v_i) / sqrt(D)            i over the prefix
    lam_k   = logsumexp_i s_ki                          [B, T]      fp32
    part_k  = sum_i exp(s_ki - lam_k) v_i               [B, T, D]   the model's dtype (below)

Router k then runs the ordinary fused router (``router_triton``, ``PREFIX``) with (part_k, lam_k) as source 0
(its logit is lam_k) ahead of its raw sources: the same function as router k over prefix + raws. Its forward reads
one partial instead of P sources.

Backward. Router k's backward kernel hands back, for its prefix, ``dpart_k = alpha_0 dh_k`` (alpha_0 = exp(lam_k -
lse_k), the prefix's total weight) and, in the slot of lam_k's gradient, ``glam_k = -alpha_0 delta_k`` (delta =
dh . h). That is dlam_k - dpart_k . part_k (the logits' gradients sum to zero), so neither kernel needs part_k
for the gradients (router k reads it only where it recomputes h, below). One pass over the prefix then gives every
prefix source's gradient from all K routers at once::

    beta_ki = exp(s_ki - lam_k)                          (alpha_ki = alpha_0 beta_ki, router k's weight)
    ds_ki   = beta_ki (dpart_k . v_i + glam_k)           (= alpha_ki (dh_k . v_i - delta_k))
    dv_i    = sum_k beta_ki dpart_k + ds_ki rinv_i w_k - ds_ki s_ki rinv_i^2 v_i / D,   w_k = q_k g_k / sqrt(D)
    u_k    += ds_ki rinv_i v_i / sqrt(D)                 dq_k = g_k sum_rows u_k,  dg_k = sum_rows q_k u_k

Router k's backward needs its h (``router_triton.ln_h_dtype``) for the LayerNorm and delta: kept by its forward, or,
for routers of few sources (``router_triton.keep_h_for``, the partial counted; since session 24), recomputed in the
backward from part_k, lam_k and its raw sources, the partial (bf16) saved instead of h.

(dpart_k, glam_k) is a private protocol between the two custom ops (``dartool::prefix_fwd`` and
``dartool::router_ln_prefix_fwd``): the router op's gradient for lam_k is *not* d(loss)/d(lam_k) on its own; the
pair is exact only composed, which is how :meth:`dartool.models.sit.SiT.route` uses it (tested against the
routers it replaces in float64, ``dartool.kernels.check``).

Layout. Forward: one program handles ROWS rows of one sample, one warp per row, a group of KP queries (KP = K,
or 2 at D >= 1024, where four queries' w and partial sums do not fit one warp's registers); the groups of one
row block are adjacent in the launch order, so all but the first read its source rows from L2. It also keeps
every logit s_ki and 1 / rms_i (fp32 scalars per row, [P, B, T, KS] and [P, B, T]) for the backward.
Backward, two passes (D >= 1024; ``passes``):

1. ``_prefix_coef_kernel``, per row, the K dpart_k held: one read of each prefix source gives dpart_k . v_i,
   hence beta_ki and cw_ki = ds_ki rinv_i (scalars, [P, B, T, KS]) and, when the program holds all K queries,
   cv_i = sum_k cw_ki s_ki rinv_i / D ([P, B, T]; ``grad_config`` key ``cv``).
2. ``_prefix_grad_kernel``, elementwise over [2-row, 128-column] blocks: dv_i = sum_k beta_ki dpart_k + cw_ki w_k -
   cv_i v_i (cv_i from pass 1, or summed here from the logits and 1 / rms), and the query gradients' partial
   sums. No reductions across threads in its source loop (the K <= 4 queries unrolled).

One pass (D < 1024, or K > 4): ``_prefix_bwd_kernel`` does both per row with the queries of a group in each
thread (two warps per row); several groups run in sequence, each adding to the gradients the earlier ones stored.
The source loops are software pipelines (``tl.range(num_stages=pipe)``), as in the router kernels.

The partials are stored in the model's compute dtype (bf16 under autocast; ``dispatch.partial_dtype``;
``DARTOOL_PREFIX_PARTIAL=fp32`` keeps float32). Their rounding is that of any bf16 activation: in the float64
check's bf16 cases the worst error went from 2.7e-3 to 4.4e-3 at D = 768-1152 on an H200, against a tolerance of
1.6e-2. Each partial is written once and read once, its gradient written once and read twice: bf16 halves all
four, the largest per-chunk terms after the sources.

Bytes, per chunk of K routers over P prefix sources (u = one [B, T, D] element, bf16 sources and partials):
forward 2P + 2K (+ 2K read by the routers) instead of 2PK; backward (two-pass) 2P + 2K, then 4P + 2K, instead of
4PK + the autograd sums of each source's K gradients. ``dartool.models.sit`` shares prefixes where
P >= ``SHARED_PREFIX_MIN``.
"""
from __future__ import annotations

import contextlib
import math
import os
from typing import Sequence

import torch
from torch import Tensor

import triton
import triton.language as tl

from . import router_triton as rt

# --------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------


@triton.jit
def _mq_logits(v_a, v_b, w_a, w_b, D, eps, DB: tl.constexpr):
    """K logits of one source row (v [1, D] against w [KP, D]) and the row's 1 / rms ([1])."""
    ss = tl.sum(v_a * v_a, 1)                                            # [1]
    dot = tl.sum(w_a * v_a, 1)                                           # [KP]
    if DB > 0:
        ss += tl.sum(v_b * v_b, 1)
        dot += tl.sum(w_b * v_b, 1)
    rinv = 1.0 / tl.sqrt(ss / D + eps)
    return dot * rinv, rinv


@triton.jit
def _store_stats(s_ptr, rinv_ptr, i, row, R, kk, km, ok, KS, logit, rinv, first):
    """Keep a source's logits (s [NP, R, KS]) and 1 / rms (rinv [NP, R], by the first group only) for the
    two-pass backward."""
    tl.store(s_ptr + (i * R + row) * KS + kk, logit, mask=km & ok)
    one = tl.arange(0, 1)
    tl.store(rinv_ptr + i * R + row + one, rinv, mask=(one == 0) & ok & first)


@triton.jit
def _load_w(q_ptr, qo, g_ptr, kk, c, km, D, scale):
    """w [KP, cols] = q_k * g_k / sqrt(D) for the K queries (zero for padding k >= K)."""
    m = km[:, None] & (c < D)[None, :]
    q = tl.load(q_ptr + qo + kk[:, None] * D + c[None, :], mask=m, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + kk[:, None] * D + c[None, :], mask=m, other=0.0).to(tl.float32)
    return q * g * scale


@triton.jit
def _program_setup(q_ptr, q_sb, g_ptr, b, k0, K, D, scale, KP: tl.constexpr, DA: tl.constexpr, DB: tl.constexpr):
    """The program's queries k0 .. k0 + KP - 1 (a group; masked at K), the column tiles and w = q g / sqrt(D) per
    tile (held for the program)."""
    kk = k0 + tl.arange(0, KP)
    km = kk < K
    c_a = tl.arange(0, DA)
    w_a = _load_w(q_ptr, b * q_sb, g_ptr, kk, c_a, km, D, scale)                   # [KP, DA]
    c_b = c_a
    w_b = w_a
    if DB > 0:
        c_b = DA + tl.arange(0, DB)
        w_b = _load_w(q_ptr, b * q_sb, g_ptr, kk, c_b, km, D, scale)               # [KP, DB]
    return kk, km, c_a, c_b, w_a, w_b


@triton.jit
def _row_offsets(row, ok, c_a, c_b, D, VEC4: tl.constexpr):
    """Offsets [1, cols] and masks of one row's tiles."""
    return (row * D + rt._cols(c_a, VEC4)[None, :], row * D + rt._cols(c_b, VEC4)[None, :],
            ((c_a < D) & ok)[None, :], ((c_b < D) & ok)[None, :])


@triton.jit(do_not_specialize=["NP"])
def _prefix_fwd_kernel(
    src0_ptr, rest_ptr, tab_ptr, NP,
    q_ptr, q_sb, g_ptr,
    out_ptr, otab_ptr, lam_ptr, s_ptr, rinv_ptr, KS,
    T, K, NG, eps, scale,
    D: tl.constexpr, KP: tl.constexpr, DA: tl.constexpr, DB: tl.constexpr, ROWS: tl.constexpr,
    ALIGN: tl.constexpr, PALIGN: tl.constexpr, PIPE: tl.constexpr, VEC4: tl.constexpr,
):
    # NG groups of KP queries: the NG programs of one row block are adjacent in the launch order (axis 0), so
    # all but the first read the block's source rows from L2
    pid = tl.program_id(0)
    pid_t = pid // NG
    b = tl.program_id(1).to(tl.int64)
    R = tl.num_programs(1).to(tl.int64) * T
    grp = pid % NG
    kk, km, c_a, c_b, w_a, w_b = _program_setup(q_ptr, q_sb, g_ptr, b, grp * KP, K, D, scale, KP, DA, DB)
    # the K outputs are separate tensors: element offsets from out_ptr (multiples of 4: 16-byte aligned)
    ooff = (tl.load(otab_ptr + kk, mask=km, other=0) // PALIGN) * PALIGN          # [KP]

    for r in range(ROWS):
        t = pid_t * ROWS + r
        ok = t < T
        row = b * T + t
        o1_a, o1_b, m1_a, m1_b = _row_offsets(row, ok, c_a, c_b, D, VEC4)
        v_a, v_b = rt._load_row(src0_ptr, o1_a, o1_b, m1_a, m1_b, DB)              # [1, DA], [1, DB]
        m, rinv = _mq_logits(v_a, v_b, w_a, w_b, D, eps, DB)                       # [KP], [1]
        _store_stats(s_ptr, rinv_ptr, 0, row, R, kk, km, ok, KS, m, rinv, grp == 0)
        l = tl.full([KP], 1.0, tl.float32)
        acc_a = tl.broadcast_to(v_a, (KP, DA))
        acc_b = acc_a
        if DB > 0:
            acc_b = tl.broadcast_to(v_b, (KP, DB))
        for i in tl.range(1, NP, num_stages=PIPE):
            p = rest_ptr + (tl.load(tab_ptr + i) // ALIGN) * ALIGN
            v_a, v_b = rt._load_row(p, o1_a, o1_b, m1_a, m1_b, DB)
            logit, rinv = _mq_logits(v_a, v_b, w_a, w_b, D, eps, DB)
            _store_stats(s_ptr, rinv_ptr, i, row, R, kk, km, ok, KS, logit, rinv, grp == 0)
            m_new = tl.maximum(m, logit)
            corr = tl.exp(m - m_new)
            pe = tl.exp(logit - m_new)
            l = l * corr + pe
            acc_a = acc_a * corr[:, None] + pe[:, None] * v_a
            if DB > 0:
                acc_b = acc_b * corr[:, None] + pe[:, None] * v_b
            m = m_new
        inv = 1.0 / l
        tl.store(out_ptr + ooff[:, None] + o1_a, (acc_a * inv[:, None]).to(out_ptr.dtype.element_ty),
                 mask=km[:, None] & m1_a)
        if DB > 0:
            tl.store(out_ptr + ooff[:, None] + o1_b, (acc_b * inv[:, None]).to(out_ptr.dtype.element_ty),
                     mask=km[:, None] & m1_b)
        tl.store(lam_ptr + kk * R + row, m + tl.log(l), mask=km & ok)


@triton.jit
def _row_grad_state(lam_ptr, glam_ptr, dp_ptr, dpoff, kk, km, R, row, ok, o1_a, o1_b, m1_a, m1_b,
                    DB: tl.constexpr):
    """One row's backward inputs for the program's queries: lam, glam [KP] and dpart [KP, D] per tile (fp32)."""
    lam = tl.load(lam_ptr + kk * R + row, mask=km & ok, other=0.0)
    glam = tl.load(glam_ptr + kk * R + row, mask=km & ok, other=0.0)
    dp_a = tl.load(dp_ptr + dpoff[:, None] + o1_a, mask=km[:, None] & m1_a, other=0.0).to(tl.float32)
    dp_b = dp_a
    if DB > 0:
        dp_b = tl.load(dp_ptr + dpoff[:, None] + o1_b, mask=km[:, None] & m1_b, other=0.0).to(tl.float32)
    return lam, glam, dp_a, dp_b


@triton.jit
def _pbwd_source(src_ptr, out_ptr, o1_a, o1_b, m1_a, m1_b, w_a, w_b, dp_a, dp_b, lam, glam, D, eps, scale,
                 DB: tl.constexpr, ACCUM: tl.constexpr):
    """One prefix source: read its row, store its gradient row (dv, the output's dtype; with ACCUM added to the
    one an earlier query group stored) and return the group's query-gradient increments (du [KP, D] per tile)."""
    v_a, v_b = rt._load_row(src_ptr, o1_a, o1_b, m1_a, m1_b, DB)                    # [1, DA], [1, DB]
    ss = tl.sum(v_a * v_a, 1)                                            # [1]
    dot = tl.sum(w_a * v_a, 1)                                           # [KP]
    a = tl.sum(dp_a * v_a, 1)                                            # [KP]  dpart_k . v_i
    if DB > 0:
        ss += tl.sum(v_b * v_b, 1)
        dot += tl.sum(w_b * v_b, 1)
        a += tl.sum(dp_b * v_b, 1)
    rinv = 1.0 / tl.sqrt(ss / D + eps)
    s = dot * rinv
    beta = tl.exp(s - lam)
    ds = beta * (a + glam)
    cw = ds * rinv
    cv = tl.sum(cw * s * rinv, 0) / D                                    # scalar: sum over k
    dv_a = tl.sum(beta[:, None] * dp_a + cw[:, None] * w_a, 0)[None, :] - cv * v_a
    if ACCUM:
        dv_a += tl.load(out_ptr + o1_a, mask=m1_a, other=0.0).to(tl.float32)
    tl.store(out_ptr + o1_a, dv_a.to(out_ptr.dtype.element_ty), mask=m1_a)
    du_a = (cw * scale)[:, None] * v_a
    du_b = du_a
    if DB > 0:
        dv_b = tl.sum(beta[:, None] * dp_b + cw[:, None] * w_b, 0)[None, :] - cv * v_b
        if ACCUM:
            dv_b += tl.load(out_ptr + o1_b, mask=m1_b, other=0.0).to(tl.float32)
        tl.store(out_ptr + o1_b, dv_b.to(out_ptr.dtype.element_ty), mask=m1_b)
        du_b = (cw * scale)[:, None] * v_b
    return du_a, du_b


@triton.jit(do_not_specialize=["NP"])
def _prefix_bwd_kernel(
    src0_ptr, rest_ptr, tab_ptr, dv0_ptr, dvrest_ptr, otab_ptr, NP,
    q_ptr, q_sb, g_ptr, lam_ptr, dp_ptr, dptab_ptr, glam_ptr, part_ptr,
    T, K, k0, n_tprog, eps, scale, acc_div, acc_mod,
    D: tl.constexpr, KP: tl.constexpr, DA: tl.constexpr, DB: tl.constexpr, ROWS: tl.constexpr,
    ALIGN: tl.constexpr, PALIGN: tl.constexpr, OALIGN: tl.constexpr, PIPE: tl.constexpr, VEC4: tl.constexpr,
    ACCUM: tl.constexpr, ATOMIC: tl.constexpr = 0,
):
    # one launch per group of KP queries (k0 ..); a later group adds its share to the gradients (ACCUM)
    pid_t = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    R = tl.num_programs(1).to(tl.int64) * T
    kk, km, c_a, c_b, w_a, w_b = _program_setup(q_ptr, q_sb, g_ptr, b, k0, K, D, scale, KP, DA, DB)
    u_a = tl.zeros([KP, DA], tl.float32)
    u_b = u_a
    if DB > 0:
        u_b = tl.zeros([KP, DB], tl.float32)
    dpoff = (tl.load(dptab_ptr + kk, mask=km, other=0) // PALIGN) * PALIGN          # [KP] element offsets

    for r in range(ROWS):
        t = pid_t * ROWS + r
        ok = t < T
        row = b * T + t
        o1_a, o1_b, m1_a, m1_b = _row_offsets(row, ok, c_a, c_b, D, VEC4)
        lam, glam, dp_a, dp_b = _row_grad_state(lam_ptr, glam_ptr, dp_ptr, dpoff, kk, km, R, row, ok,
                                                o1_a, o1_b, m1_a, m1_b, DB)
        # source 0 (own dtype, own gradient tensor), then the rest through their tables
        du_a, du_b = _pbwd_source(src0_ptr, dv0_ptr, o1_a, o1_b, m1_a, m1_b, w_a, w_b, dp_a, dp_b, lam, glam, D,
                                  eps, scale, DB, ACCUM)
        u_a += du_a
        if DB > 0:
            u_b += du_b
        for i in tl.range(1, NP, num_stages=PIPE):
            p = rest_ptr + (tl.load(tab_ptr + i) // ALIGN) * ALIGN
            po = dvrest_ptr + (tl.load(otab_ptr + i) // OALIGN) * OALIGN
            du_a, du_b = _pbwd_source(p, po, o1_a, o1_b, m1_a, m1_b, w_a, w_b, dp_a, dp_b, lam, glam, D, eps,
                                      scale, DB, ACCUM)
            u_a += du_a
            if DB > 0:
                u_b += du_b

    # this program's query-gradient partials: row (b * n_tprog + pid_t) of part [B * n_tprog, K, D], or (ATOMIC)
    # added into row ((b * n_tprog + pid_t) // acc_div) % acc_mod of a zeroed accumulator
    pbase = ((((b * n_tprog + pid_t) // acc_div) % acc_mod) * K + kk[:, None]) * D
    _part_out(part_ptr + pbase + c_a[None, :], u_a, km[:, None] & (c_a < D)[None, :], ATOMIC)
    if DB > 0:
        _part_out(part_ptr + pbase + c_b[None, :], u_b, km[:, None] & (c_b < D)[None, :], ATOMIC)


@triton.jit
def _coef_source(src_ptr, i, row, R, ok, o1_a, o1_b, m1_a, m1_b, dp_a, dp_b, lam, glam, kk, km, KS, D,
                 s_ptr, rinv_ptr, beta_ptr, cw_ptr, cv_ptr, DB: tl.constexpr, CV: tl.constexpr):
    """Pass 1 of the two-pass backward, one source row: its dot products with the group's dpart_k and from them,
    with the forward's logits and 1 / rms, two coefficients of its gradient: beta_ki and cw_ki = ds_ki rinv_i;
    with CV (all K queries in this program) also the source's own coefficient cv_i = sum_k cw_ki s_ki rinv_i / D,
    so that pass 2 need not load s and rinv."""
    v_a, v_b = rt._load_row(src_ptr, o1_a, o1_b, m1_a, m1_b, DB)                    # [1, DA], [1, DB]
    a = tl.sum(dp_a * v_a, 1)                                            # [KP]  dpart_k . v_i
    if DB > 0:
        a += tl.sum(dp_b * v_b, 1)
    base = (i * R + row) * KS
    sk = tl.load(s_ptr + base + kk, mask=km & ok, other=0.0)            # [KP]  s_ki
    rinv = tl.load(rinv_ptr + i * R + row, mask=ok, other=0.0)          # scalar
    beta = tl.exp(sk - lam)
    cw = beta * (a + glam) * rinv                                        # [KP]  (0 for padding k >= K)
    tl.store(beta_ptr + base + kk, beta, mask=km & ok)
    tl.store(cw_ptr + base + kk, cw, mask=km & ok)
    if CV:
        one = tl.arange(0, 1)
        cv = tl.sum(cw * sk, 0) * rinv / D
        tl.store(cv_ptr + i * R + row + one, cv + tl.zeros([1], tl.float32), mask=ok)


@triton.jit(do_not_specialize=["NP"])
def _prefix_coef_kernel(
    src0_ptr, rest_ptr, tab_ptr, NP,
    lam_ptr, dp_ptr, dptab_ptr, glam_ptr, s_ptr, rinv_ptr, beta_ptr, cw_ptr, cv_ptr, KS,
    T, K, NG,
    D: tl.constexpr, KP: tl.constexpr, DA: tl.constexpr, DB: tl.constexpr, ROWS: tl.constexpr,
    ALIGN: tl.constexpr, PALIGN: tl.constexpr, PIPE: tl.constexpr, VEC4: tl.constexpr, CV: tl.constexpr,
):
    """Pass 1: per row, a group's KP partial gradients held, one read of each prefix source -> the per-source
    scalars. The NG group programs of a row block are adjacent in the launch (later ones read from L2)."""
    pid = tl.program_id(0)
    pid_t = pid // NG
    b = tl.program_id(1).to(tl.int64)
    R = tl.num_programs(1).to(tl.int64) * T
    kk = (pid % NG) * KP + tl.arange(0, KP)
    km = kk < K
    c_a = tl.arange(0, DA)
    c_b = c_a
    if DB > 0:
        c_b = DA + tl.arange(0, DB)
    dpoff = (tl.load(dptab_ptr + kk, mask=km, other=0) // PALIGN) * PALIGN          # [KP] element offsets
    for r in range(ROWS):
        t = pid_t * ROWS + r
        ok = t < T
        row = b * T + t
        o1_a, o1_b, m1_a, m1_b = _row_offsets(row, ok, c_a, c_b, D, VEC4)
        lam, glam, dp_a, dp_b = _row_grad_state(lam_ptr, glam_ptr, dp_ptr, dpoff, kk, km, R, row, ok,
                                                o1_a, o1_b, m1_a, m1_b, DB)
        _coef_source(src0_ptr, 0, row, R, ok, o1_a, o1_b, m1_a, m1_b, dp_a, dp_b, lam, glam, kk, km, KS, D,
                     s_ptr, rinv_ptr, beta_ptr, cw_ptr, cv_ptr, DB, CV)
        for i in tl.range(1, NP, num_stages=PIPE):
            p = rest_ptr + (tl.load(tab_ptr + i) // ALIGN) * ALIGN
            _coef_source(p, i, row, R, ok, o1_a, o1_b, m1_a, m1_b, dp_a, dp_b, lam, glam, kk, km, KS, D,
                         s_ptr, rinv_ptr, beta_ptr, cw_ptr, cv_ptr, DB, CV)


@triton.jit
def _grad_k(beta_ptr, cw_ptr, s_ptr, base, ok, k, K, dp, w, v, dv, cvs, u, CV: tl.constexpr):
    """Query k's share of one source's gradient over a [RB, CT] block: dv += beta_k dpart_k + cw_k w_k, the
    sum_k cw_k s_k of cv (unless pass 1 wrote cv: CV), and u_k += cw_k v (rows summed after the source loop)."""
    mk = ok & (k < K)
    beta = tl.load(beta_ptr + base + k, mask=mk, other=0.0)                          # [RB]
    cw = tl.load(cw_ptr + base + k, mask=mk, other=0.0)
    if not CV:
        sk = tl.load(s_ptr + base + k, mask=mk, other=0.0)
        cvs += cw * sk
    return dv + beta[:, None] * dp + cw[:, None] * w[None, :], cvs, u + cw[:, None] * v


@triton.jit
def _grad_source(src_ptr, out_ptr, i, row, R, ok, o, m, dp0, dp1, dp2, dp3, w0, w1, w2, w3, u0, u1, u2, u3,
                 K, KS, beta_ptr, cw_ptr, s_ptr, rinv_ptr, cv_ptr, D, KP: tl.constexpr, CV: tl.constexpr):
    """Pass 2, one source over a [RB, CT] block: store dv = sum_k (beta_k dpart_k + cw_k w_k) - cv v with
    cv = sum_k cw_k s_k rinv / D (pass 1's when CV), and add cw_k v to the query-gradient accumulators (KP <= 4
    queries, unrolled)."""
    v = tl.load(src_ptr + o, mask=m, other=0.0).to(tl.float32)                       # [RB, CT]
    base = (i * R + row) * KS                                                        # [RB]
    zero = tl.zeros_like(ok.to(tl.float32))
    dv, cvs, u0 = _grad_k(beta_ptr, cw_ptr, s_ptr, base, ok, 0, K, dp0, w0, v, v * 0.0, zero, u0, CV)
    if KP > 1:
        dv, cvs, u1 = _grad_k(beta_ptr, cw_ptr, s_ptr, base, ok, 1, K, dp1, w1, v, dv, cvs, u1, CV)
    if KP > 2:
        dv, cvs, u2 = _grad_k(beta_ptr, cw_ptr, s_ptr, base, ok, 2, K, dp2, w2, v, dv, cvs, u2, CV)
        dv, cvs, u3 = _grad_k(beta_ptr, cw_ptr, s_ptr, base, ok, 3, K, dp3, w3, v, dv, cvs, u3, CV)
    if CV:
        cv = tl.load(cv_ptr + i * R + row, mask=ok, other=0.0)                      # [RB]
    else:
        cv = cvs * tl.load(rinv_ptr + i * R + row, mask=ok, other=0.0) / D
    dv -= cv[:, None] * v
    tl.store(out_ptr + o, dv.to(out_ptr.dtype.element_ty), mask=m)
    return u0, u1, u2, u3


@triton.jit
def _grad_w(q_ptr, q_sb, g_ptr, b, k, K, c, cmask, D, scale):
    """w_k = q_k g_k / sqrt(D) over one column tile ([CT]; zero for k >= K)."""
    mk = cmask & (k < K)
    q = tl.load(q_ptr + b * q_sb + k * D + c, mask=mk, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + k * D + c, mask=mk, other=0.0).to(tl.float32)
    return q * g * scale


@triton.jit
def _grad_dp(dp_ptr, dptab_ptr, k, K, o, m, PALIGN: tl.constexpr):
    """dpart_k over a [RB, CT] block (zero for k >= K)."""
    off = (tl.load(dptab_ptr + k, mask=k < K, other=0) // PALIGN) * PALIGN
    return tl.load(dp_ptr + off + o, mask=m & (k < K), other=0.0).to(tl.float32)


@triton.jit
def _part_out(p, val, mask, ATOMIC: tl.constexpr):
    """A query-gradient partial: stored, or (ATOMIC) added into a zeroed accumulator."""
    if ATOMIC:
        tl.atomic_add(p, val, mask=mask, sem="relaxed")
    else:
        tl.store(p, val, mask=mask)


@triton.jit
def _grad_u(part_ptr, b, n_rb, rb, k, K, c, cmask, D, u, scale, acc_div, acc_mod, ATOMIC: tl.constexpr):
    slot = ((b * n_rb + rb) // acc_div) % acc_mod
    _part_out(part_ptr + (slot * K + k) * D + c, tl.sum(u, 0) * scale, cmask & (k < K), ATOMIC)


@triton.jit(do_not_specialize=["NP"])
def _prefix_grad_kernel(
    src0_ptr, rest_ptr, tab_ptr, dv0_ptr, dvrest_ptr, otab_ptr, NP,
    q_ptr, q_sb, g_ptr, dp_ptr, dptab_ptr, beta_ptr, cw_ptr, s_ptr, rinv_ptr, cv_ptr, part_ptr, KS,
    T, K, NCT, n_rb, scale, acc_div, acc_mod,
    D: tl.constexpr, KP: tl.constexpr, CT: tl.constexpr, RB: tl.constexpr, ROWS: tl.constexpr,
    ALIGN: tl.constexpr, PALIGN: tl.constexpr, OALIGN: tl.constexpr, PIPE: tl.constexpr,
    CV: tl.constexpr, ATOMIC: tl.constexpr = 0,
):
    """Pass 2: elementwise over a [ROWS, CT] block of every prefix source: its gradient from the pass-1
    scalars, and the queries' gradient partial over the block (part [B, n_rb, K, D]). KP <= 4, the queries
    unrolled (no cross-thread reductions in the source loop)."""
    pid = tl.program_id(0)
    ct = pid % NCT                      # the column tiles of a row block are adjacent: they share its scalars in L2
    rb = pid // NCT
    b = tl.program_id(1).to(tl.int64)
    R = tl.num_programs(1).to(tl.int64) * T
    c = ct * CT + tl.arange(0, CT)
    cmask = c < D
    w0 = _grad_w(q_ptr, q_sb, g_ptr, b, 0, K, c, cmask, D, scale)                    # [CT]
    w1 = w0
    w2 = w0
    w3 = w0
    if KP > 1:
        w1 = _grad_w(q_ptr, q_sb, g_ptr, b, 1, K, c, cmask, D, scale)
    if KP > 2:
        w2 = _grad_w(q_ptr, q_sb, g_ptr, b, 2, K, c, cmask, D, scale)
        w3 = _grad_w(q_ptr, q_sb, g_ptr, b, 3, K, c, cmask, D, scale)
    u0 = tl.zeros([RB, CT], tl.float32)
    u1 = u0
    u2 = u0
    u3 = u0
    for r0 in range(0, ROWS, RB):
        t = rb * ROWS + r0 + tl.arange(0, RB)
        ok = t < T
        row = b * T + t                                                              # [RB]
        o = row[:, None] * D + c[None, :]                                            # [RB, CT]
        m = ok[:, None] & cmask[None, :]
        dp0 = _grad_dp(dp_ptr, dptab_ptr, 0, K, o, m, PALIGN)
        dp1 = dp0
        dp2 = dp0
        dp3 = dp0
        if KP > 1:
            dp1 = _grad_dp(dp_ptr, dptab_ptr, 1, K, o, m, PALIGN)
        if KP > 2:
            dp2 = _grad_dp(dp_ptr, dptab_ptr, 2, K, o, m, PALIGN)
            dp3 = _grad_dp(dp_ptr, dptab_ptr, 3, K, o, m, PALIGN)
        u0, u1, u2, u3 = _grad_source(src0_ptr, dv0_ptr, 0, row, R, ok, o, m, dp0, dp1, dp2, dp3, w0, w1, w2, w3,
                                      u0, u1, u2, u3, K, KS, beta_ptr, cw_ptr, s_ptr, rinv_ptr, cv_ptr, D, KP, CV)
        for i in tl.range(1, NP, num_stages=PIPE):
            p = rest_ptr + (tl.load(tab_ptr + i) // ALIGN) * ALIGN
            po = dvrest_ptr + (tl.load(otab_ptr + i) // OALIGN) * OALIGN
            u0, u1, u2, u3 = _grad_source(p, po, i, row, R, ok, o, m, dp0, dp1, dp2, dp3, w0, w1, w2, w3,
                                          u0, u1, u2, u3, K, KS, beta_ptr, cw_ptr, s_ptr, rinv_ptr, cv_ptr, D, KP, CV)
    _grad_u(part_ptr, b, n_rb, rb, 0, K, c, cmask, D, u0, scale, acc_div, acc_mod, ATOMIC)
    if KP > 1:
        _grad_u(part_ptr, b, n_rb, rb, 1, K, c, cmask, D, u1, scale, acc_div, acc_mod, ATOMIC)
    if KP > 2:
        _grad_u(part_ptr, b, n_rb, rb, 2, K, c, cmask, D, u2, scale, acc_div, acc_mod, ATOMIC)
        _grad_u(part_ptr, b, n_rb, rb, 3, K, c, cmask, D, u3, scale, acc_div, acc_mod, ATOMIC)


# --------------------------------------------------------------------------------------------------
# Launch configuration
# --------------------------------------------------------------------------------------------------

# rows per program, warps per row, pipeline depth, vec4 column offsets (router_triton._cols), queries per program
# (group: 0 = all K in one program; else a power of two, the K queries split into groups of that many), backward
# passes (1: one pass per query group, later groups accumulating; 2: the two-pass backward, its pass 1 taking the
# first five keys, its pass 2 grad_config's); per pass and width (prefix_config).
# DARTOOL_PREFIX_CONFIG="rows,warps,pipe,vec4[,group[,passes]]" sets both passes, "FWD;BWD" each (read per call, for
# sweeps: benchmarks/prefix_bench.py).
_KEYS = ("rows", "num_warps", "pipe", "vec4", "group", "passes")


def prefix_config(D: int = 768, backward: bool = False) -> dict:
    """Launch configuration of the prefix kernels, from benchmarks/prefix_bench.py on an H200 (2026-11-26,
    benchmarks/KERNEL_NOTES.md sessions 9 and 10). D = 768 (SiT-B/2 b256, P = 6): forward with one warp per row
    (75 % of its floor), one-pass backward with two warps (1.59 ms against 1.83 ms two-pass, fp32 partials). D = 1152 (SiT-XL/2
    b128, P = 14): forward in groups of two queries, 0.80 ms against 1.18 ms for all four in one program with two
    warps (and 1.40 ms for the four routers' own passes); two-pass backward 2.2 ms against 2.8 ms one-pass in groups
    of two and 4.0 ms + the gradient sums for the routers' own passes. Session 11 (kernel times, bf16 partials):
    at D = 768, P = 6 two passes took 1.08 ms against 1.26 ms one-pass alone, yet the compiled B/2 b256 step paired
    ran 1.080 with them against 1.065 without (4 rounds), so D = 768 keeps the one-pass backward."""
    if D < 1024:     # session 11: two passes here too were faster alone, not in the compiled B/2 step (1.080 vs 1.065)
        cfg = dict(rows=8, num_warps=2 if backward else 1, pipe=3, vec4=1, group=0, passes=1)
    elif backward:   # session 10: the two-pass backward, pass 1 with the K partial gradients in one program
        cfg = dict(rows=4, num_warps=1, pipe=3, vec4=1, group=4, passes=2)
    else:            # session 10: groups of two queries, adjacent in the launch (the second reads from L2)
        cfg = dict(rows=8, num_warps=1, pipe=3, vec4=1, group=2, passes=1)
    raw = os.environ.get("DARTOOL_PREFIX_CONFIG")
    if raw:   # "fwd" for both passes, or "fwd;bwd"
        parts = raw.split(";")
        raw = parts[min(len(parts) - 1, int(backward))]
        cfg.update(zip(_KEYS, (int(x) for x in raw.split(","))))
    cfg.update({k: v for k, v in OVERRIDES.items() if k in _KEYS})
    cfg.update(OVERRIDES.get("bwd" if backward else "fwd", {}))
    return cfg


# pass 2's keys: rows per program, rows per block, columns per tile, warps, pipeline depth, cv (pass 1 writes each
# source's own coefficient when it holds all K queries, so pass 2 loads neither the logits nor 1 / rms)
_GRAD_KEYS = ("rows", "rb", "ct", "num_warps", "pipe", "cv")


def grad_config(D: int = 768) -> dict:
    """Pass 2 of the two-pass backward (elementwise over column tiles): rows per program, rows per block, columns
    per tile, warps, pipeline depth, cv (_GRAD_KEYS); DARTOOL_PREFIX_GRAD="rows,rb,ct,warps,pipe[,cv]". Chosen
    at SiT-XL/2 b128, P = 14, bf16 partials (H200, 2026-11-26, benchmarks/results/s11_p3_XL-*.json): 0.93 ms
    (2-row blocks, one warp, cv from pass 1) against 1.15 ms for session 10's 4-row blocks on two warps without it
    (P = 3: 0.32 / 0.44, P = 6: 0.49 / 0.62); 1-row blocks or 64-column tiles 1.44-1.47 ms; re-reading w per source
    instead of holding it was 60 % slower (s10_grad_XL)."""
    cfg = dict(rows=16, rb=2, ct=128, num_warps=1, pipe=3, cv=1)
    raw = os.environ.get("DARTOOL_PREFIX_GRAD")
    if raw:
        cfg.update(zip(_GRAD_KEYS, (int(x) for x in raw.split(","))))
    cfg.update(OVERRIDES.get("grad", {}))
    return cfg


# configuration keys forced over prefix_config's choice, both passes (see configured)
OVERRIDES: dict = {}


@contextlib.contextmanager
def configured(**keys):
    """Run the prefix kernels with these prefix_config keys forced inside the block (checks, benches), e.g.
    ``configured(group=2)`` (queries per program), ``configured(passes=2)`` (the two-pass backward),
    ``configured(grad=dict(ct=16))`` (its second pass, grad_config's keys); ``configured(fwd=dict(rows=4))`` /
    ``configured(bwd=dict(...))``: prefix_config's keys for the forward / the backward's (first) pass only."""
    global OVERRIDES
    old, OVERRIDES = OVERRIDES, {**OVERRIDES, **keys}
    try:
        yield
    finally:
        OVERRIDES = old


def _groups(cfg: dict, K: int) -> tuple[int, int]:
    """(queries per program KP, number of groups) for K queries."""
    kp = triton.next_power_of_2(K)
    if cfg.get("group"):
        kp = min(kp, triton.next_power_of_2(int(cfg["group"])))
    return kp, triton.cdiv(K, kp)


# --------------------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------------------


def _query_stack(qs: Tensor, K: int, B: int, D: int) -> tuple[Tensor, int]:
    """(queries contiguous, stride over b): [K, D] (static) or [B, K, D] (static_t)."""
    qs = qs.contiguous()
    if qs.dim() == 2 and qs.shape == (K, D):
        return qs, 0
    if qs.dim() == 3 and qs.shape == (B, K, D):
        return qs, K * D
    raise ValueError(f"shared-prefix queries must be [K, D] or [B, K, D], got {tuple(qs.shape)}")


def _sources(sources: Sequence[Tensor]) -> tuple[Tensor, list[Tensor], Tensor, Tensor]:
    src0, rest = rt._prep_sources(rt._as_kernel_sources(sources))
    base = rest[0] if rest else src0
    tab = rt._offset_table([src0.data_ptr()] + [s.data_ptr() for s in rest], base.data_ptr(), base.element_size(),
                           src0.device)
    return src0, rest, base, tab


def _fwd_impl(sources: list[Tensor], qs: Tensor, gs: Tensor, eps: float, part_dtype: torch.dtype = torch.float32
              ) -> tuple[list[Tensor], Tensor, Tensor, Tensor]:
    """(K partials in part_dtype, lam [K, B, T], logits s [P, B, T, KS], 1 / rms rinv [P, B, T]); s and rinv feed
    the two-pass backward (KS = next power of two >= K)."""
    B, T, D = rt._check(sources, sources[0])
    K, NP = gs.shape[0], len(sources)
    src0, rest, base, tab = _sources(sources)
    dev = src0.device
    qc, q_sb = _query_stack(qs, K, B, D)
    KS = triton.next_power_of_2(K)
    parts = [rt._empty((B, T, D), part_dtype, dev) for _ in range(K)]
    lam = rt._empty((K, B, T), torch.float32, dev)
    logits = rt._empty((NP, B, T, KS), torch.float32, dev)
    rinv = rt._empty((NP, B, T), torch.float32, dev)
    psize = parts[0].element_size()
    otab = rt._offset_table([p.data_ptr() for p in parts], parts[0].data_ptr(), psize, dev)
    cfg = prefix_config(D)
    KP, NG = _groups(cfg, K)
    DA, DB = rt._tiles(D, True)
    _prefix_fwd_kernel[(NG * triton.cdiv(T, cfg["rows"]), B)](
        src0, base, tab, NP, qc, q_sb, gs.contiguous(), parts[0], otab, lam, logits, rinv, KS, T, K, NG,
        float(eps), 1.0 / math.sqrt(D),
        D=D, KP=KP, DA=DA, DB=DB, ROWS=cfg["rows"], ALIGN=max(1, 16 // base.element_size()), PALIGN=16 // psize,
        PIPE=cfg["pipe"], VEC4=cfg["vec4"], num_warps=cfg["num_warps"], num_stages=1)
    return parts, lam, logits, rinv


def _grad_outputs(src0: Tensor, rest: list[Tensor]) -> tuple[Tensor, list[Tensor], Tensor, Tensor]:
    """The prefix sources' gradient tensors: (dv0, dvrest, base, offset table)."""
    dev = src0.device
    dv0 = rt._empty(src0.shape, src0.dtype, dev)
    dvrest = [rt._empty(s.shape, s.dtype, dev) for s in rest]
    obase = dvrest[0] if dvrest else dv0
    otab = rt._offset_table([obase.data_ptr()] + [o.data_ptr() for o in dvrest], obase.data_ptr(),
                            obase.element_size(), dev)
    return dv0, dvrest, obase, otab


def _query_partials(B: int, n: int, K: int, D: int, q_sb: int, atomic: bool, dev) -> tuple[Tensor, int, int]:
    """Where the backward's programs (B x n of them) put their query-gradient partials: (buffer, acc_div,
    acc_mod), program (b, p) writing row ((b * n + p) // acc_div) % acc_mod of the buffer [rows, K, D]. Plain: one
    row each, reduced afterwards. Atomic (router_triton.atomic_reduce): added into a zeroed accumulator, per
    sample for per-sample queries (static_t), else spread over several rows (rt.acc_layout)."""
    if not atomic:
        return rt._empty((B, n, K, D), torch.float32, dev), 1, B * n
    rows, div = rt.acc_layout(B, n, bool(q_sb))
    return torch.zeros((rows, K, D), dtype=torch.float32, device=dev), div, rows


def _bwd_impl(dparts: list[Tensor], glam: Tensor, sources: list[Tensor], qs: Tensor, gs: Tensor, lam: Tensor,
              logits: Tensor, rinv: Tensor, eps: float) -> tuple[list[Tensor], Tensor, Tensor]:
    B, T, D = rt._check(sources, sources[0])
    atomic = rt.atomic_reduce()
    K, NP = gs.shape[0], len(sources)
    src0, rest, base, tab = _sources(sources)
    dev = src0.device
    qc, q_sb = _query_stack(qs, K, B, D)
    dps = [rt._aligned(d.to(dparts[0].dtype)) for d in dparts]       # the partials' dtype
    dpsize = dps[0].element_size()
    dptab = rt._offset_table([d.data_ptr() for d in dps], dps[0].data_ptr(), dpsize, dev)
    dv0, dvrest, obase, otab = _grad_outputs(src0, rest)
    lam, glam = lam.contiguous(), glam.float().contiguous()
    ALIGN, OALIGN = max(1, 16 // base.element_size()), max(1, 16 // obase.element_size())
    cfg = prefix_config(D, backward=True)
    KP, NG = _groups(cfg, K)
    DA, DB = rt._tiles(D, True)
    if cfg.get("passes", 1) == 2 and K <= 4:   # (the second pass unrolls up to 4 queries)
        # pass 1: per-source scalars (beta, cw) [P, B, T, KS]; pass 2: the gradients, elementwise over column tiles
        KS = logits.shape[-1]
        gc = grad_config(D)
        CV = bool(gc["cv"]) and NG == 1           # pass 1 sees every query of a row: it can sum cv itself
        beta = rt._empty(logits.shape, torch.float32, dev)
        cw = rt._empty(logits.shape, torch.float32, dev)
        cv = rt._empty(rinv.shape, torch.float32, dev) if CV else rinv
        _prefix_coef_kernel[(NG * triton.cdiv(T, cfg["rows"]), B)](
            src0, base, tab, NP, lam, dps[0], dptab, glam, logits, rinv, beta, cw, cv, KS, T, K, NG,
            D=D, KP=KP, DA=DA, DB=DB, ROWS=cfg["rows"], ALIGN=ALIGN, PALIGN=16 // dpsize, PIPE=cfg["pipe"],
            VEC4=cfg["vec4"], CV=CV, num_warps=cfg["num_warps"], num_stages=1)
        n_rb, NCT = triton.cdiv(T, gc["rows"]), triton.cdiv(D, gc["ct"])
        part, acc_div, acc_mod = _query_partials(B, n_rb, K, D, q_sb, atomic, dev)
        _prefix_grad_kernel[(n_rb * NCT, B)](
            src0, base, tab, dv0, obase, otab, NP, qc, q_sb, gs.contiguous(), dps[0], dptab, beta, cw, logits,
            rinv, cv, part, KS, T, K, NCT, n_rb, 1.0 / math.sqrt(D), acc_div, acc_mod,
            D=D, KP=KS, CT=gc["ct"], RB=gc["rb"], ROWS=gc["rows"], ALIGN=ALIGN, PALIGN=16 // dpsize, OALIGN=OALIGN,
            PIPE=gc["pipe"], CV=CV, ATOMIC=atomic, num_warps=gc["num_warps"], num_stages=1)
    else:
        n_tprog = triton.cdiv(T, cfg["rows"])
        part, acc_div, acc_mod = _query_partials(B, n_tprog, K, D, q_sb, atomic, dev)
        for grp in range(NG):   # in sequence: a later group adds to the gradients the earlier ones stored
            _prefix_bwd_kernel[(n_tprog, B)](
                src0, base, tab, dv0, obase, otab, NP, qc, q_sb, gs.contiguous(), lam, dps[0], dptab,
                glam, part, T, K, grp * KP, n_tprog, float(eps), 1.0 / math.sqrt(D), acc_div, acc_mod,
                D=D, KP=KP, DA=DA, DB=DB, ROWS=cfg["rows"], ALIGN=ALIGN, PALIGN=16 // dpsize, OALIGN=OALIGN,
                PIPE=cfg["pipe"], VEC4=cfg["vec4"], ACCUM=grp > 0, ATOMIC=atomic, num_warps=cfg["num_warps"],
                num_stages=1)
    if atomic:   # part: the summed partials [acc_mod, K, D]; dq, dg in one small kernel
        dq = torch.empty(qs.shape, dtype=qs.dtype, device=dev)
        dg = torch.empty(gs.shape, dtype=gs.dtype, device=dev)
        C = K * D
        rt.finish_qg(part, acc_mod, qc, gs, dq, dg, C, 0 if q_sb == 0 else 1)
        return [dv0] + dvrest, dq, dg
    gf = gs.float()
    if q_sb == 0:
        U = part.sum((0, 1))                                                   # [K, D]
        dq = (gf * U).to(qs.dtype)
        dg = (qs.float() * U).to(gs.dtype)
    else:
        U = part.sum(1)                                                        # [B, K, D]
        dq = (gf[None] * U).to(qs.dtype)
        dg = (qs.float() * U).sum(0).to(gs.dtype)
    return [dv0] + dvrest, dq, dg


def _router_ln_prefix_fwd_impl(part: Tensor, lam: Tensor, sources: list[Tensor], q: Tensor, g: Tensor, eps: float,
                               shift: Tensor, scale: Tensor, ln_eps: float, y_dtype: torch.dtype, keep_h: bool = True
                               ) -> tuple[Tensor, Tensor, Tensor]:
    """A router with a shared prefix (part, lam) as source 0, LayerNorm + modulate fused: (y, h, lse); h is
    empty ([0]) without ``keep_h``: the backward recomputes it from the partial, lam and the raw sources."""
    P = rt._fwd_prepare(sources, q, g, eps, False, False, ln=(shift, scale, ln_eps, y_dtype), keep_h=keep_h,
                        prefix=(part, lam))
    rt._fwd_launch(P)
    h, lse, _, _ = P["out"]
    return P["y"], h, lse


def _router_ln_prefix_bwd_impl(dy: Tensor, sources: list[Tensor], q: Tensor, g: Tensor, h: Tensor, lse: Tensor,
                               lam: Tensor, eps: float, scale: Tensor, ln_eps: float, part_dtype: torch.dtype,
                               part: "Tensor | None" = None):
    """(dpart, glam, dv per raw source, dq, dg, dshift, dscale) of :func:`_router_ln_prefix_fwd_impl`; ``h``
    empty ([0]): recomputed from the partial ``part`` (the forward ran without ``keep_h``)."""
    P = rt._bwd_prepare(dy, sources, q, g, h, lse, eps, ln=(scale, ln_eps), plam=lam, pdtype=part_dtype,
                        mod_dtype=scale.dtype, ppart=part if h.numel() == 0 else None)
    rt._bwd_launch(P)
    dvs, dq, dg = rt._bwd_finish(P)
    return (P["dpre"], P["glam"], dvs, dq, dg) + P["dmod"]


# --------------------------------------------------------------------------------------------------
# Custom ops + autograd
# --------------------------------------------------------------------------------------------------


@torch.library.custom_op("dartool::prefix_fwd", mutates_args=())
def prefix_fwd(sources: list[Tensor], qs: Tensor, gs: Tensor, eps: float, part_dtype: torch.dtype
               ) -> tuple[list[Tensor], Tensor, Tensor, Tensor]:
    """The K routers' states over the shared prefix ``sources``: K partials [B, T, D] fp32, lam [K, B, T] fp32;
    and, for the backward only, the logits [P, B, T, KS] and 1 / rms [P, B, T] (fp32).
    qs: [K, D] (static) or [B, K, D] (static_t); gs: [K, D] RMSNorm gains."""
    return _fwd_impl(list(sources), qs, gs, eps, part_dtype)


@prefix_fwd.register_fake
def _prefix_fwd_fake(sources, qs, gs, eps, part_dtype):
    s0 = sources[0]
    B, T, D = s0.shape
    K = gs.shape[0]
    KS = 1 << max(0, K - 1).bit_length()
    return ([s0.new_empty((B, T, D), dtype=part_dtype) for _ in range(K)],
            s0.new_empty((K, B, T), dtype=torch.float32), s0.new_empty((len(sources), B, T, KS), dtype=torch.float32),
            s0.new_empty((len(sources), B, T), dtype=torch.float32))


@torch.library.custom_op("dartool::prefix_bwd", mutates_args=())
def prefix_bwd(dparts: list[Tensor], glam: Tensor, sources: list[Tensor], qs: Tensor, gs: Tensor, lam: Tensor,
               logits: Tensor, rinv: Tensor, eps: float) -> tuple[list[Tensor], Tensor, Tensor]:
    """(dv per prefix source, dqs, dgs) from the routers' (dpart_k, glam_k) (module docstring)."""
    return _bwd_impl(list(dparts), glam, list(sources), qs, gs, lam, logits, rinv, eps)


@prefix_bwd.register_fake
def _prefix_bwd_fake(dparts, glam, sources, qs, gs, lam, logits, rinv, eps):
    return [s.new_empty(s.shape) for s in sources], qs.new_empty(qs.shape), gs.new_empty(gs.shape)


def _setup_prefix(ctx, inputs, output):
    sources, qs, gs, eps, _ = inputs
    _, lam, logits, rinv = output
    ctx.eps = eps
    ctx.mark_non_differentiable(logits, rinv)
    ctx.save_for_backward(qs, gs, lam, logits, rinv, *sources)


def _backward_prefix(ctx, dparts, glam, dlogits, drinv):
    qs, gs, lam, logits, rinv, *sources = ctx.saved_tensors
    dvs, dq, dg = prefix_bwd(list(dparts), glam, sources, qs, gs, lam, logits, rinv, ctx.eps)
    return list(dvs), dq, dg, None, None


prefix_fwd.register_autograd(_backward_prefix, setup_context=_setup_prefix)


@torch.library.custom_op("dartool::router_ln_prefix_fwd", mutates_args=())
def router_ln_prefix_fwd(part: Tensor, lam: Tensor, sources: list[Tensor], q: Tensor, g: Tensor, eps: float,
                         shift: Tensor, scale: Tensor, ln_eps: float,
                         y_dtype: torch.dtype, keep_h: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Router + LayerNorm + modulate with a shared prefix (part, lam) as source 0 ahead of the raw ``sources``:
    y [B, T, D] in y_dtype, h [B, T, D] in ``rt.ln_h_dtype`` (or [0] without ``keep_h``: the backward recomputes it
    from the partial), lse [B, T] fp32."""
    return _router_ln_prefix_fwd_impl(part, lam, list(sources), q, g, eps, shift, scale, ln_eps, y_dtype, keep_h)


@router_ln_prefix_fwd.register_fake
def _router_ln_prefix_fwd_fake(part, lam, sources, q, g, eps, shift, scale, ln_eps, y_dtype, keep_h):
    B, T, D = part.shape
    return (part.new_empty((B, T, D), dtype=y_dtype),
            part.new_empty((B, T, D) if keep_h else (0,), dtype=rt.ln_h_dtype(y_dtype)),
            part.new_empty((B, T), dtype=torch.float32))


@torch.library.custom_op("dartool::router_ln_prefix_bwd", mutates_args=())
def router_ln_prefix_bwd(dy: Tensor, sources: list[Tensor], q: Tensor, g: Tensor, h: Tensor, lse: Tensor,
                         lam: Tensor, eps: float, scale: Tensor, ln_eps: float, part_dtype: torch.dtype,
                         part: Tensor) -> tuple[Tensor, Tensor, list[Tensor], Tensor, Tensor, Tensor, Tensor]:
    """(dpart in part_dtype, glam, dv per raw source, dq, dg, dshift, dscale) of ``router_ln_prefix_fwd``; glam is
    the prefix protocol's value for lam (module docstring), not dloss/dlam. h kept, or [0] and ``part`` the
    partial to recompute it from (else ``part`` is [0])."""
    return _router_ln_prefix_bwd_impl(dy, list(sources), q, g, h, lse, lam, eps, scale, ln_eps, part_dtype, part)


@router_ln_prefix_bwd.register_fake
def _router_ln_prefix_bwd_fake(dy, sources, q, g, h, lse, lam, eps, scale, ln_eps, part_dtype, part):
    return (dy.new_empty(dy.shape, dtype=part_dtype), lse.new_empty(lse.shape, dtype=torch.float32),
            [s.new_empty(s.shape) for s in sources], q.new_empty(q.shape), g.new_empty(g.shape),
            scale.new_empty(scale.shape), scale.new_empty(scale.shape))


def _h_or_partial(hp: Tensor, keep_h: bool) -> tuple[Tensor, Tensor]:
    """(h, partial) for the router backward from what its forward saved (h kept, or the partial to recompute h
    from); the one not saved is empty ([0])."""
    empty = hp.new_empty(0)
    return (hp, empty) if keep_h else (empty, hp)


def _setup_router(ctx, inputs, output):
    part, lam, sources, q, g, eps, shift, scale, ln_eps, y_dtype, keep_h = inputs
    y, h, lse = output
    ctx.eps, ctx.ln_eps, ctx.n, ctx.part_dtype = eps, ln_eps, len(sources), part.dtype
    ctx.mark_non_differentiable(h, lse)
    ctx.set_materialize_grads(False)
    # h kept: not the partial (its gradient needs none of it); else the partial, to recompute h from
    ctx.keep_h = keep_h
    ctx.save_for_backward(q, g, scale, h if keep_h else part, lse, lam, *sources)


def _backward_router(ctx, dy, dh, dlse):
    q, g, scale, hp, lse, lam, *sources = ctx.saved_tensors
    if dy is None:
        return None, None, [None] * ctx.n, None, None, None, None, None, None, None, None
    h, part = _h_or_partial(hp, ctx.keep_h)
    dpart, glam, dvs, dq, dg, dshift, dscale = router_ln_prefix_bwd(dy, sources, q, g, h, lse, lam, ctx.eps, scale,
                                                                    ctx.ln_eps, ctx.part_dtype, part)
    return dpart, glam, list(dvs), dq, dg, None, dshift, dscale, None, None, None


router_ln_prefix_fwd.register_autograd(_backward_router, setup_context=_setup_router)


# Eager autograd: the same impls through torch.autograd.Function. A custom op's eager dispatch (argument defaults,
# pytree flattening, the alias check on every output, the autograd wrapper) cost 0.7 ms of host time per call on an
# H100 host: 120 calls, 83 ms of an eager SiT-XL/2 b64 static c4 step, which left the GPU idle 25-110 ms a step
# (benchmarks/step_host.py, results/s15_h_* and s15_g_*, 2026-11-27). The custom ops stay for torch.compile.


class _PrefixFn(torch.autograd.Function):
    """Eager path of ``prefix_fwd``: returns (*parts, lam)."""

    @staticmethod
    def forward(ctx, qs, gs, eps, part_dtype, *sources):
        parts, lam, logits, rinv = _fwd_impl(list(sources), qs, gs, eps, part_dtype)
        ctx.eps = eps
        ctx.save_for_backward(qs, gs, lam, logits, rinv, *sources)
        return (*parts, lam)

    @staticmethod
    def backward(ctx, *grads):
        qs, gs, lam, logits, rinv, *sources = ctx.saved_tensors
        dvs, dq, dg = _bwd_impl(list(grads[:-1]), grads[-1], sources, qs, gs, lam, logits, rinv, ctx.eps)
        return (dq, dg, None, None, *dvs)


class _RouterLNPrefixFn(torch.autograd.Function):
    """Eager path of ``router_ln_prefix_fwd``: returns y."""

    @staticmethod
    def forward(ctx, part, lam, q, g, eps, shift, scale, ln_eps, y_dtype, keep_h, *sources):
        y, h, lse = _router_ln_prefix_fwd_impl(part, lam, list(sources), q, g, eps, shift, scale, ln_eps, y_dtype,
                                               keep_h)
        ctx.eps, ctx.ln_eps, ctx.part_dtype = eps, ln_eps, part.dtype
        ctx.set_materialize_grads(False)
        # h kept: not the partial (its gradient needs none of it); else the partial, to recompute h from
        ctx.save_for_backward(q, g, scale, h if keep_h else part, lse, lam, *sources)
        ctx.keep_h = keep_h
        return y

    @staticmethod
    def backward(ctx, dy):
        q, g, scale, hp, lse, lam, *sources = ctx.saved_tensors
        if dy is None:
            return (None,) * (10 + len(sources))
        h, part = _h_or_partial(hp, ctx.keep_h)
        dpart, glam, dvs, dq, dg, dshift, dscale = _router_ln_prefix_bwd_impl(
            dy, sources, q, g, h, lse, lam, ctx.eps, scale, ctx.ln_eps, ctx.part_dtype, part)
        return (dpart, glam, dq, dg, None, dshift, dscale, None, None, None, *dvs)


def _eager() -> bool:
    return rt.EAGER_AUTOGRAD_FN and not torch.compiler.is_compiling()


# --------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------


def shared_prefix(sources: Sequence[Tensor], qs: Tensor, gs: Tensor, eps: float,
                  part_dtype: "torch.dtype | None" = None) -> tuple[list[Tensor], Tensor]:
    """Every router's state over one shared prefix: ([part_k], lam [K, B, T]); differentiable (composed with
    :func:`fused_router_ln_prefix` only, see the module docstring). ``part_dtype``: the partials' (default
    :func:`dartool.kernels.dispatch.partial_dtype`)."""
    from .dispatch import partial_dtype

    pdt = part_dtype or partial_dtype(sources)
    sources = rt._as_kernel_sources(sources)
    if _eager():
        if not (torch.is_grad_enabled() and (qs.requires_grad or gs.requires_grad
                                             or any(v.requires_grad for v in sources))):
            parts, lam, _, _ = _fwd_impl(list(sources), qs, gs, float(eps), pdt)
            return parts, lam
        *parts, lam = _PrefixFn.apply(qs, gs, float(eps), pdt, *sources)
        return list(parts), lam
    parts, lam, _, _ = prefix_fwd(sources, qs, gs, float(eps), pdt)
    return parts, lam


def fused_router_ln_prefix(part: Tensor, lam: Tensor, sources: Sequence[Tensor], q: Tensor, g: Tensor, eps: float,
                           shift: Tensor, scale: Tensor, ln_eps: float, y_dtype: torch.dtype) -> Tensor:
    """modulate(LayerNorm(router(prefix + sources, q)), shift, scale) with the prefix given as its state
    (part, lam) from :func:`shared_prefix`: y [B, T, D] in ``y_dtype`` (what the unshared router would give:
    ``router_triton._y_dtype`` of prefix + raw sources). ``sources``: the raw ones (may be none). h is
    kept for the backward, or recomputed there from the partial and the raw sources, as for an unshared router of
    1 + len(sources) sources (:func:`router_triton.keep_h_for`); never written without gradients."""
    sources = rt._as_kernel_sources(sources) if sources else []
    needs_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (part, lam, q, g, shift, scale, *sources))
    keep_h = needs_grad and rt.keep_h_for(1 + len(sources), part.shape[-1], prefix=True)
    if _eager():
        if not needs_grad:
            return _router_ln_prefix_fwd_impl(part, lam, sources, q, g, float(eps), shift, scale, float(ln_eps),
                                              y_dtype, keep_h=False)[0]
        return _RouterLNPrefixFn.apply(part, lam, q, g, float(eps), shift, scale, float(ln_eps), y_dtype, keep_h,
                                       *sources)
    return router_ln_prefix_fwd(part, lam, sources, q, g, float(eps), shift, scale, float(ln_eps), y_dtype,
                                keep_h)[0]
