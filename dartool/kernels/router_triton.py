"""Fused DAR router for CUDA (Triton): forward and backward, each one pass over the sources.

The router (``dartool.models.sit.Router``) computes, per token (row r = b*T + t)::

    rinv_i  = (mean_d v_i^2 + eps)^(-1/2)                  RMSNorm of the key, gain g
    logit_i = (q . (g * v_i)) * rinv_i / sqrt(D)           q: [D] static, [B,1,D] static_t, [B,T,D] dynamic
    alpha   = softmax_i(logit)
    h       = sum_i alpha_i v_i

Forward (``_router_fwd_kernel``): one program per BLOCK_R rows of one sample; it streams the N
sources once with an online softmax (running max m, normaliser l, fp32 accumulator in registers) and
writes h, the per-row log-sum-exp (lse = m + log l) for the backward, and, on request, the logits
[B, T, N] (alpha = exp(logit - lse)) for probes. Nothing of size [N, B, T, D] is materialised.

Backward (``_router_bwd_kernel``): one pass too. With delta = dh . h (= sum_j alpha_j dalpha_j, the
flash-attention identity, h saved from the forward), every source is read once and its gradient
written once::

    dalpha_i = dh . v_i
    dlogit_i = alpha_i (dalpha_i - delta)
    dv_i     = alpha_i dh + dlogit_i rinv_i w - dlogit_i logit_i rinv_i^2 v_i / D,   w = q*g/sqrt(D)
    u        = sum_i dlogit_i rinv_i v_i / sqrt(D)            per row
    dq_row   = g * u,   dg = sum_rows q_row * u

u is summed over a program's rows in registers; static / static_t queries reduce those partial sums
(one [D] row per program) on the host side with torch, dynamic queries get dq per row from the kernel.
When h is 16-bit (all sources bf16/fp16) the forward also writes an fp32 copy of h for delta: with the
bf16 h, dq/dg errors reached 3e-2 (the cancellation in dalpha_i - delta). With the LayerNorm + modulate fused in,
h feeds only the LayerNorm, whose dh is orthogonal to h - mean(h) and to 1 (delta ~ 0): there h is kept in the
LayerNorm output's dtype, bf16 under autocast (:data:`LN_H`, session 29).

Sources are passed as pointer lists, so chunked source sets need no copy: source 0 (v_0, fp32 under
autocast because the position embedding is fp32) is a tensor argument with its own dtype; sources
1..N-1 share one dtype and are addressed as ``rest_ptr + offset_i`` with an int64 table of element
offsets from a base tensor (offsets are multiples of 16 bytes, so the loads stay 16-byte vectors).
Tables are cached by value on the device (a training step reuses its addresses step after step).

Gradient accumulation in the kernel: sources tapped by ``dispatch.tap_source`` (the model's DARStream
does this in eager training) carry a slot; the backward adds its gradient to the slot's buffer
(read-modify-write, flag bit in the output table) instead of returning a fresh tensor that autograd
would add separately, which saves two of the four passes per (router, source) gradient.

Layout and pipelining (see benchmarks/KERNEL_NOTES.md for the measurements): the row of D features is
held as one tile of next_pow2(D) columns, or (``split``, the default) two power-of-two tiles DA + DB
(1152 = 1024 + 128, 768 = 512 + 256) so no lane is masked off; one program per row, one warp (all reductions
inside the warp); in the forward two sources per loop iteration with one fused reduction, and the next pair's
loads issued before this pair's arithmetic (``prefetch``). The backward's configuration is chosen per shape
(:func:`bwd_config`): the same below D = 1024, one source per iteration without prefetch at D >= 1024; the
forward's prefetch only at N >= 32 (:func:`fwd_config`).

Eager autograd goes through ``_FusedRouterFn`` (low host overhead). Both kernels are also wrapped as
``torch.library.custom_op``s (``dartool::router_fwd`` / ``router_bwd``, with fake implementations and
registered autograd) used under torch.compile, which treats them as opaque ops without graph breaks.
:func:`fused_router` is the entry point.
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

from ..envflags import env_flag
from . import compiled_slots as _cslots
from . import tables as _tables

if os.environ.get("TRITON_INTERPRET") == "1":  # CPU development only
    from ._interp_compat import patch_interpreter

    patch_interpreter()

# --------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------


@triton.jit
def _add2(a0, a1, b0, b1):
    return a0 + b0, a1 + b1


@triton.jit
def _add3(a0, a1, a2, b0, b1, b2):
    return a0 + b0, a1 + b1, a2 + b2


@triton.jit
def _add4(a0, a1, a2, a3, b0, b1, b2, b3):
    return a0 + b0, a1 + b1, a2 + b2, a3 + b3


@triton.jit
def _add6(a0, a1, a2, a3, a4, a5, b0, b1, b2, b3, b4, b5):
    return a0 + b0, a1 + b1, a2 + b2, a3 + b3, a4 + b4, a5 + b5


@triton.jit
def _load_row(p, o_a, o_b, m_a, m_b, DB: tl.constexpr):
    """One source's row block as fp32 tiles (a, and b when D is split)."""
    v_a = tl.load(p + o_a, mask=m_a, other=0.0).to(tl.float32)
    if DB > 0:
        v_b = tl.load(p + o_b, mask=m_b, other=0.0).to(tl.float32)
    else:
        v_b = v_a
    return v_a, v_b


@triton.jit
def _load_raw(p, o_a, o_b, m_a, m_b, DB: tl.constexpr):
    """Like _load_row, but kept in the storage dtype (half the registers while a prefetch is in flight)."""
    v_a = tl.load(p + o_a, mask=m_a, other=0.0)
    if DB > 0:
        v_b = tl.load(p + o_b, mask=m_b, other=0.0)
    else:
        v_b = v_a
    return v_a, v_b


@triton.jit
def _cols(c, VEC4: tl.constexpr):
    """Column offsets; with VEC4 the same values written so the compiler sees runs of 4 contiguous columns only:
    every access is then at most 4 wide (64-bit for bf16, 128-bit for fp32), one register layout serves the bf16
    sources and the fp32 row vectors alike, and the source loop needs no layout conversion (shuffles) per source."""
    if VEC4:
        return (c // 4) * 4 + c % 4
    return c


@triton.jit
def _fwd_step(v_a, v_b, w_a, w_b, D, eps, DB: tl.constexpr):
    """logit of one source (one fused row reduction per tile)."""
    ss, dot = tl.reduce((v_a * v_a, w_a * v_a), 1, _add2)
    if DB > 0:
        ss_b, dot_b = tl.reduce((v_b * v_b, w_b * v_b), 1, _add2)
        ss += ss_b
        dot += dot_b
    return dot / tl.sqrt(ss / D + eps)


@triton.jit
def _fwd_step2(v1_a, v1_b, v2_a, v2_b, w_a, w_b, D, eps, DB: tl.constexpr):
    """logits of two sources with a single fused reduction (one barrier for both)."""
    ss1, dot1, ss2, dot2 = tl.reduce((v1_a * v1_a, w_a * v1_a, v2_a * v2_a, w_a * v2_a), 1, _add4)
    if DB > 0:
        s1b, d1b, s2b, d2b = tl.reduce((v1_b * v1_b, w_b * v1_b, v2_b * v2_b, w_b * v2_b), 1, _add4)
        ss1 += s1b
        dot1 += d1b
        ss2 += s2b
        dot2 += d2b
    return dot1 / tl.sqrt(ss1 / D + eps), dot2 / tl.sqrt(ss2 / D + eps)


@triton.jit
def _ln_center(h_a, h_b, m_a, m_b, D, ln_eps, DB: tl.constexpr):
    """LayerNorm statistics of a block of rows (no affine, biased variance): the centred rows h - mean (zero
    outside the masks) and rstd; the forward and the backward of the fused LayerNorm share them."""
    hs = tl.sum(tl.where(m_a, h_a, 0.0), 1)
    if DB > 0:
        hs += tl.sum(tl.where(m_b, h_b, 0.0), 1)
    mean = hs / D
    xc_a = tl.where(m_a, h_a - mean[:, None], 0.0)
    var = tl.sum(xc_a * xc_a, 1)
    xc_b = xc_a
    if DB > 0:
        xc_b = tl.where(m_b, h_b - mean[:, None], 0.0)
        var += tl.sum(xc_b * xc_b, 1)
    return xc_a, xc_b, 1.0 / tl.sqrt(var / D + ln_eps)


@triton.jit
def _h_add(rest_ptr, tab_ptr, i, o_a, o_b, m_a, m_b, w_a, w_b, lse, h_a, h_b, D, eps, DB: tl.constexpr,
           ALIGN: tl.constexpr):
    """h += exp(logit_i - lse) v_i for source i >= 1 (one step of :func:`_recompute_h`)."""
    ptr = rest_ptr + (tl.load(tab_ptr + i) // ALIGN) * ALIGN
    v_a, v_b = _load_row(ptr, o_a, o_b, m_a, m_b, DB)
    p = tl.exp(_fwd_step(v_a, v_b, w_a, w_b, D, eps, DB) - lse)
    h_a += p[:, None] * v_a
    if DB > 0:
        h_b += p[:, None] * v_b
    return h_a, h_b


@triton.jit
def _recompute_h(src0_ptr, rest_ptr, tab_ptr, N, o_a, o_b, m_a, m_b, w_a, w_b, lse, D, eps, DB: tl.constexpr,
                 ALIGN: tl.constexpr, PIPE: tl.constexpr, NC: tl.constexpr = 0, PREFIX: tl.constexpr = 0,
                 plam=0.0):
    """h = sum_i exp(logit_i - lse) v_i for a block of rows, from the sources and the forward's lse: the backward
    of a router whose forward kept no h (``keep_h=False``) reads its sources twice instead of h once. ``NC`` > 0:
    N is that constant and the loop is unrolled (no loop nested in the caller's row loop). ``PREFIX``: source 0
    is a shared prefix's partial (src0_ptr) whose logit is its log-sum-exp ``plam`` [rows]."""
    v_a, v_b = _load_row(src0_ptr, o_a, o_b, m_a, m_b, DB)
    if PREFIX:
        p = tl.exp(plam - lse)
    else:
        p = tl.exp(_fwd_step(v_a, v_b, w_a, w_b, D, eps, DB) - lse)
    h_a = p[:, None] * v_a
    h_b = h_a
    if DB > 0:
        h_b = p[:, None] * v_b
    if NC > 0:
        for i in tl.static_range(1, NC):
            h_a, h_b = _h_add(rest_ptr, tab_ptr, i, o_a, o_b, m_a, m_b, w_a, w_b, lse, h_a, h_b, D, eps, DB, ALIGN)
    else:
        for i in tl.range(1, N, num_stages=PIPE):
            h_a, h_b = _h_add(rest_ptr, tab_ptr, i, o_a, o_b, m_a, m_b, w_a, w_b, lse, h_a, h_b, D, eps, DB, ALIGN)
    return h_a, h_b


@triton.jit(do_not_specialize=["N"])
def _router_fwd_kernel(
    src0_ptr, rest_ptr, tab_ptr, N,
    q_ptr, q_sb, q_st, g_ptr,
    h_ptr, h32_ptr, lse_ptr, logit_ptr,
    y_ptr, shift_ptr, mscale_ptr, ln_eps, sh_sb, sc_sb,
    T, eps, scale, pre_ptr, plam_ptr,
    D: tl.constexpr, BLOCK_R: tl.constexpr, DA: tl.constexpr, DB: tl.constexpr, UNROLL: tl.constexpr, PREFETCH: tl.constexpr,
    ALIGN: tl.constexpr, WRITE_LOGITS: tl.constexpr, WRITE_H32: tl.constexpr, LN_MOD: tl.constexpr,
    WRITE_H: tl.constexpr, VEC4: tl.constexpr = 0, PIPE: tl.constexpr = 1, PREFIX: tl.constexpr = 0,
):
    pid_t = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    t = pid_t * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = t < T
    row = b * T + t                                                   # int64 [BLOCK_R]
    c_a = tl.arange(0, DA)
    m_a = rmask[:, None] & (c_a < D)[None, :]
    o_a = row[:, None] * D + _cols(c_a, VEC4)[None, :]
    q_a = tl.load(q_ptr + b * q_sb + t[:, None] * q_st + c_a[None, :], mask=m_a, other=0.0).to(tl.float32)
    g_a = tl.load(g_ptr + c_a, mask=c_a < D, other=0.0).to(tl.float32)
    w_a = q_a * g_a[None, :] * scale
    if DB > 0:
        c_b = DA + tl.arange(0, DB)
        m_b = rmask[:, None] & (c_b < D)[None, :]
        o_b = row[:, None] * D + _cols(c_b, VEC4)[None, :]
        q_b = tl.load(q_ptr + b * q_sb + t[:, None] * q_st + c_b[None, :], mask=m_b, other=0.0).to(tl.float32)
        g_b = tl.load(g_ptr + c_b, mask=c_b < D, other=0.0).to(tl.float32)
        w_b = q_b * g_b[None, :] * scale
    else:
        w_b = w_a
        o_b = o_a
        m_b = m_a

    if PREFIX:
        # a shared prefix (prefix_triton) is source 0: its normalised partial sum (fp32 or the model's dtype)
        # and, as its logit, its log-sum-exp; sources 1..N-1 are the raw ones (table entries 1..; entry 0 unused)
        v_a = tl.load(pre_ptr + o_a, mask=m_a, other=0.0).to(tl.float32)
        v_b = v_a
        if DB > 0:
            v_b = tl.load(pre_ptr + o_b, mask=m_b, other=0.0).to(tl.float32)
        logit = tl.load(plam_ptr + row, mask=rmask, other=0.0)
    else:
        # source 0 (own dtype) initialises the online softmax
        v_a, v_b = _load_row(src0_ptr, o_a, o_b, m_a, m_b, DB)
        logit = _fwd_step(v_a, v_b, w_a, w_b, D, eps, DB)
    if WRITE_LOGITS:
        tl.store(logit_ptr + row * N, logit, mask=rmask)
    m = logit
    l = tl.full([BLOCK_R], 1.0, tl.float32)
    acc_a = v_a
    acc_b = v_b

    if UNROLL == 2 and PREFETCH:
        # Two sources per iteration, and the next pair's loads are issued before this pair's arithmetic
        # (register double-buffering), so every warp keeps a load in flight while it computes.
        # The second source of the last pair may not exist (odd N - 1): masked, logit -inf.
        ok1 = N > 1
        ok2 = N > 2
        p1 = rest_ptr + (tl.load(tab_ptr + 1, mask=ok1, other=0) // ALIGN) * ALIGN
        p2 = rest_ptr + (tl.load(tab_ptr + 2, mask=ok2, other=0) // ALIGN) * ALIGN
        n1_a, n1_b = _load_raw(p1, o_a, o_b, m_a & ok1, m_b & ok1, DB)
        n2_a, n2_b = _load_raw(p2, o_a, o_b, m_a & ok2, m_b & ok2, DB)
        for i in range(1, N, 2):
            c1_a = n1_a
            c1_b = n1_b
            c2_a = n2_a
            c2_b = n2_b
            ok1 = i + 2 < N
            ok2 = i + 3 < N
            p1 = rest_ptr + (tl.load(tab_ptr + i + 2, mask=ok1, other=0) // ALIGN) * ALIGN
            p2 = rest_ptr + (tl.load(tab_ptr + i + 3, mask=ok2, other=0) // ALIGN) * ALIGN
            n1_a, n1_b = _load_raw(p1, o_a, o_b, m_a & ok1, m_b & ok1, DB)
            n2_a, n2_b = _load_raw(p2, o_a, o_b, m_a & ok2, m_b & ok2, DB)
            v1_a = c1_a.to(tl.float32)
            v1_b = c1_b.to(tl.float32)
            v2_a = c2_a.to(tl.float32)
            v2_b = c2_b.to(tl.float32)
            has2 = i + 1 < N
            lg1, lg2 = _fwd_step2(v1_a, v1_b, v2_a, v2_b, w_a, w_b, D, eps, DB)
            lg2 = tl.where(has2, lg2, float("-inf"))
            if WRITE_LOGITS:
                tl.store(logit_ptr + row * N + i, lg1, mask=rmask)
                tl.store(logit_ptr + row * N + i + 1, lg2, mask=rmask & has2)
            m_new = tl.maximum(m, tl.maximum(lg1, lg2))
            corr = tl.exp(m - m_new)
            e1 = tl.exp(lg1 - m_new)
            e2 = tl.exp(lg2 - m_new)
            l = l * corr + e1 + e2
            acc_a = acc_a * corr[:, None] + e1[:, None] * v1_a + e2[:, None] * v2_a
            if DB > 0:
                acc_b = acc_b * corr[:, None] + e1[:, None] * v1_b + e2[:, None] * v2_b
            m = m_new
        start = N
    elif UNROLL == 2:  # two sources per iteration: twice the loads in flight, one reduction
        for i in tl.range(1, N - 1, 2, num_stages=PIPE):
            p1 = rest_ptr + (tl.load(tab_ptr + i) // ALIGN) * ALIGN      # exact; tells the compiler it is aligned
            p2 = rest_ptr + (tl.load(tab_ptr + i + 1) // ALIGN) * ALIGN
            v1_a, v1_b = _load_row(p1, o_a, o_b, m_a, m_b, DB)
            v2_a, v2_b = _load_row(p2, o_a, o_b, m_a, m_b, DB)
            lg1, lg2 = _fwd_step2(v1_a, v1_b, v2_a, v2_b, w_a, w_b, D, eps, DB)
            if WRITE_LOGITS:
                tl.store(logit_ptr + row * N + i, lg1, mask=rmask)
                tl.store(logit_ptr + row * N + i + 1, lg2, mask=rmask)
            m_new = tl.maximum(m, tl.maximum(lg1, lg2))
            corr = tl.exp(m - m_new)
            e1 = tl.exp(lg1 - m_new)
            e2 = tl.exp(lg2 - m_new)
            l = l * corr + e1 + e2
            acc_a = acc_a * corr[:, None] + e1[:, None] * v1_a + e2[:, None] * v2_a
            if DB > 0:
                acc_b = acc_b * corr[:, None] + e1[:, None] * v1_b + e2[:, None] * v2_b
            m = m_new
        start = 1 + ((N - 1) // 2) * 2
    else:
        start = 1

    # PIPE > 1: Triton's software pipeliner keeps PIPE - 1 sources in flight as asynchronous copies into shared
    # memory (no registers held for them)
    for i in tl.range(start, N, num_stages=PIPE):
        p = rest_ptr + (tl.load(tab_ptr + i) // ALIGN) * ALIGN
        v_a, v_b = _load_row(p, o_a, o_b, m_a, m_b, DB)
        logit = _fwd_step(v_a, v_b, w_a, w_b, D, eps, DB)
        if WRITE_LOGITS:
            tl.store(logit_ptr + row * N + i, logit, mask=rmask)
        m_new = tl.maximum(m, logit)
        corr = tl.exp(m - m_new)
        pexp = tl.exp(logit - m_new)
        l = l * corr + pexp
        acc_a = acc_a * corr[:, None] + pexp[:, None] * v_a
        if DB > 0:
            acc_b = acc_b * corr[:, None] + pexp[:, None] * v_b
        m = m_new

    inv_l = 1.0 / l
    h_a = acc_a * inv_l[:, None]
    if WRITE_H:  # off only with LN_MOD and keep_h=False: the backward recomputes h (_recompute_h)
        tl.store(h_ptr + o_a, h_a.to(h_ptr.dtype.element_ty), mask=m_a)
    if WRITE_H32:
        tl.store(h32_ptr + o_a, h_a, mask=m_a)
    h_b = h_a
    if DB > 0:
        h_b = acc_b * inv_l[:, None]
        if WRITE_H:
            tl.store(h_ptr + o_b, h_b.to(h_ptr.dtype.element_ty), mask=m_b)
        if WRITE_H32:
            tl.store(h32_ptr + o_b, h_b, mask=m_b)
    tl.store(lse_ptr + row, m + tl.log(l), mask=rmask)
    if LN_MOD:
        # y = LayerNorm(h) * (1 + scale_b) + shift_b over the row in registers (no affine, biased variance)
        xc_a, xc_b, rstd = _ln_center(h_a, h_b, m_a, m_b, D, ln_eps, DB)
        sc_a = tl.load(mscale_ptr + b * sc_sb + c_a, mask=c_a < D, other=0.0).to(tl.float32)
        sh_a = tl.load(shift_ptr + b * sh_sb + c_a, mask=c_a < D, other=0.0).to(tl.float32)
        y_a = xc_a * rstd[:, None] * (1.0 + sc_a[None, :]) + sh_a[None, :]
        tl.store(y_ptr + o_a, y_a.to(y_ptr.dtype.element_ty), mask=m_a)
        if DB > 0:
            sc_b = tl.load(mscale_ptr + b * sc_sb + c_b, mask=c_b < D, other=0.0).to(tl.float32)
            sh_b = tl.load(shift_ptr + b * sh_sb + c_b, mask=c_b < D, other=0.0).to(tl.float32)
            y_b = xc_b * rstd[:, None] * (1.0 + sc_b[None, :]) + sh_b[None, :]
            tl.store(y_ptr + o_b, y_b.to(y_ptr.dtype.element_ty), mask=m_b)


@triton.jit
def _bwd_coef(ss, dot, dal, lse, delta, D, eps):
    rinv = 1.0 / tl.sqrt(ss / D + eps)
    logit = dot * rinv
    alpha = tl.exp(logit - lse)
    cw = alpha * (dal - delta) * rinv          # dlogit * rinv
    cv = cw * logit * rinv / D
    return alpha, cw, cv


@triton.jit
def _bwd_step(v_a, v_b, w_a, w_b, dh_a, dh_b, lse, delta, D, eps, DB: tl.constexpr):
    """Per-row coefficients of one source: dv = alpha*dh + cw*w - cv*v, and u += cw*scale*v."""
    ss, dot, dal = tl.reduce((v_a * v_a, w_a * v_a, dh_a * v_a), 1, _add3)
    if DB > 0:
        ss_b, dot_b, dal_b = tl.reduce((v_b * v_b, w_b * v_b, dh_b * v_b), 1, _add3)
        ss += ss_b
        dot += dot_b
        dal += dal_b
    return _bwd_coef(ss, dot, dal, lse, delta, D, eps)


@triton.jit
def _bwd_step2(v1_a, v1_b, v2_a, v2_b, w_a, w_b, dh_a, dh_b, lse, delta, D, eps, DB: tl.constexpr):
    s1, d1, a1, s2, d2, a2 = tl.reduce((v1_a * v1_a, w_a * v1_a, dh_a * v1_a,
                                        v2_a * v2_a, w_a * v2_a, dh_a * v2_a), 1, _add6)
    if DB > 0:
        s1b, d1b, a1b, s2b, d2b, a2b = tl.reduce((v1_b * v1_b, w_b * v1_b, dh_b * v1_b,
                                                  v2_b * v2_b, w_b * v2_b, dh_b * v2_b), 1, _add6)
        s1 += s1b
        d1 += d1b
        a1 += a1b
        s2 += s2b
        d2 += d2b
        a2 += a2b
    al1, cw1, cv1 = _bwd_coef(s1, d1, a1, lse, delta, D, eps)
    al2, cw2, cv2 = _bwd_coef(s2, d2, a2, lse, delta, D, eps)
    return al1, cw1, cv1, al2, cw2, cv2


@triton.jit
def _out_ptr(base, otab_ptr, i, mask, OALIGN: tl.constexpr):
    """Gradient pointer of source i and its accumulate flag: the table holds 2 * offset + flag."""
    x = tl.load(otab_ptr + i, mask=mask, other=0)
    return base + ((x >> 1) // OALIGN) * OALIGN, (x & 1) != 0


@triton.jit
def _slot_add(p, c, D, r0, val, ASM: tl.constexpr = False):
    """p[c] += val over c < D, starting from zero on a program's first row (r0 == 0): a private fp32 partial slot.
    ``ASM``: the slot is read by an inline-asm load, which Triton's software pipeliner leaves in the row's own
    stage (a tl.load, volatile or not, it turns into an asynchronous copy issued a row ahead, before this row's
    store). Not in the interpreter (no inline asm there)."""
    if ASM:
        old = tl.inline_asm_elementwise("ld.global.f32 $0, [$1];", "=r,l", [p + tl.minimum(c, D - 1)],
                                        dtype=tl.float32, is_pure=False, pack=1)
        old = tl.where((c < D) & (r0 > 0), old, 0.0)
    else:
        old = tl.load(p + c, mask=(c < D) & (r0 > 0), other=0.0)
    tl.store(p + c, old + val, mask=c < D)


@triton.jit
def _acc_add(acc, p, c, D, val, FROM_SLOT: tl.constexpr):
    """acc[c] += (the slot's p[c] if FROM_SLOT else val) over c < D: an atomic add into a zeroed accumulator."""
    if FROM_SLOT:
        val = tl.load(p + c, mask=c < D, other=0.0)
    tl.atomic_add(acc + c, val, mask=c < D, sem="relaxed")


@triton.jit
def _store_dv(po, fl, o_a, o_b, m_a, m_b, alpha, cw, cv, dh_a, dh_b, w_a, w_b, v_a, v_b,
              DB: tl.constexpr, ACCUM: tl.constexpr):
    """dv = alpha*dh + cw*w - cv*v, added to the gradient already there when the flag says so."""
    dv_a = alpha[:, None] * dh_a + cw[:, None] * w_a - cv[:, None] * v_a
    if ACCUM:
        dv_a += tl.load(po + o_a, mask=m_a & fl, other=0.0).to(tl.float32)
    tl.store(po + o_a, dv_a.to(po.dtype.element_ty), mask=m_a)
    if DB > 0:
        dv_b = alpha[:, None] * dh_b + cw[:, None] * w_b - cv[:, None] * v_b
        if ACCUM:
            dv_b += tl.load(po + o_b, mask=m_b & fl, other=0.0).to(tl.float32)
        tl.store(po + o_b, dv_b.to(po.dtype.element_ty), mask=m_b)


@triton.jit
def _store_dv_acc(po, g_a, g_b, o_a, o_b, m_a, m_b, alpha, cw, cv, dh_a, dh_b, w_a, w_b, v_a, v_b,
                  DB: tl.constexpr):
    """As _store_dv with accumulation, the old gradient (g_a, g_b; zero where absent) loaded earlier."""
    dv_a = alpha[:, None] * dh_a + cw[:, None] * w_a - cv[:, None] * v_a + g_a.to(tl.float32)
    tl.store(po + o_a, dv_a.to(po.dtype.element_ty), mask=m_a)
    if DB > 0:
        dv_b = alpha[:, None] * dh_b + cw[:, None] * w_b - cv[:, None] * v_b + g_b.to(tl.float32)
        tl.store(po + o_b, dv_b.to(po.dtype.element_ty), mask=m_b)


@triton.jit
def _bwd_source(rest_ptr, tab_ptr, dvrest_ptr, otab_ptr, i, N, o_a, o_b, m_a, m_b, w_a, w_b, dh_a, dh_b, lse, delta,
                D, eps, scale, u_a, u_b, DB: tl.constexpr, ALIGN: tl.constexpr, OALIGN: tl.constexpr,
                ACCUM: tl.constexpr):
    """Source i >= 1 of the backward's one-source loop: its gradient stored, u += cw * scale * v returned."""
    p = rest_ptr + (tl.load(tab_ptr + i) // ALIGN) * ALIGN
    po, fl = _out_ptr(dvrest_ptr, otab_ptr, i, i < N, OALIGN)
    v_a, v_b = _load_row(p, o_a, o_b, m_a, m_b, DB)
    alpha, cw, cv = _bwd_step(v_a, v_b, w_a, w_b, dh_a, dh_b, lse, delta, D, eps, DB)
    _store_dv(po, fl, o_a, o_b, m_a, m_b, alpha, cw, cv, dh_a, dh_b, w_a, w_b, v_a, v_b, DB, ACCUM)
    u_a += (cw * scale)[:, None] * v_a
    if DB > 0:
        u_b += (cw * scale)[:, None] * v_b
    return u_a, u_b


@triton.jit(do_not_specialize=["N"])
def _router_bwd_kernel(
    src0_ptr, rest_ptr, tab_ptr, dv0_ptr, dvrest_ptr, otab_ptr, N,
    q_ptr, q_sb, q_st, g_ptr,
    h_ptr, dh_ptr, lse_ptr,
    dq_ptr, part_ptr,
    mscale_ptr, pmod_ptr, ln_eps, msc_sb,
    T, eps, scale, n_tprog, plam_ptr, dpre_ptr, glam_ptr, acc_ptr, acc_div, acc_mod, macc_ptr, macc2_ptr,
    D: tl.constexpr, BLOCK_R: tl.constexpr, ROWS: tl.constexpr, DA: tl.constexpr, DB: tl.constexpr, UNROLL: tl.constexpr,
    PREFETCH: tl.constexpr, ALIGN: tl.constexpr, OALIGN: tl.constexpr, DYNAMIC: tl.constexpr,
    ACCUM: tl.constexpr, LN_MOD: tl.constexpr, LN_SLOT: tl.constexpr, RECOMPUTE_H: tl.constexpr,
    PART_SLOT: tl.constexpr, VEC4: tl.constexpr = 0, PIPE: tl.constexpr = 1, PREFIX: tl.constexpr = 0,
    ATOMIC: tl.constexpr = 0, NC: tl.constexpr = 0, RPIPE: tl.constexpr = 1, SLOT_ASM: tl.constexpr = 0,
    LEAN: tl.constexpr = 0,
):
    # LEAN (bwd_config's "lean", a bit mask; the module's LEAN says why and where): 1 (G_ROW), g re-read per row
    # rather than held for the program; 2 (U_PART), static / static_t with the partial in registers: each source's
    # u term added straight into the query-gradient partial, no per-row u (the fp32 sums' order changes).
    # NC > 0 (bwd_config's "rpipe", ROW_PIPE): N is that constant, the source loops are unrolled, and the row
    # loop, now innermost, is a software pipeline RPIPE deep (the next rows' h, dy and sources fetched into shared
    # memory while this row computes). Needs UNROLL 1, no ACCUM (unless every sum has its own address,
    # ROW_PIPE_ACCUM), and slots (LN_SLOT, PART_SLOT) only with SLOT_ASM
    # (a slot's tl.load + store at one address in a pipelined loop would read the value from before the previous
    # row's store; an inline-asm load stays in its row's stage).
    pid_t = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    c_a = tl.arange(0, DA)
    if DB > 0:
        c_b = DA + tl.arange(0, DB)
    # PART_SLOT: the query / gain gradient partial lives in the program's slot of part_ptr (updated once per row)
    # and g is re-read per row, instead of both held in registers for the whole program
    G_ROW: tl.constexpr = PART_SLOT or (LEAN % 2 == 1)
    U_PART: tl.constexpr = (LEAN // 2) % 2 == 1 and not PART_SLOT and not DYNAMIC
    if not G_ROW:
        g_a = tl.load(g_ptr + c_a, mask=c_a < D, other=0.0).to(tl.float32)
        if DB > 0:
            g_b = tl.load(g_ptr + c_b, mask=c_b < D, other=0.0).to(tl.float32)
    if not PART_SLOT:
        part_a = tl.zeros([BLOCK_R, DA], tl.float32)
        if DB > 0:
            part_b = tl.zeros([BLOCK_R, DB], tl.float32)
    prow = (b * n_tprog + pid_t) * D
    mrow = tl.num_programs(1).to(tl.int64) * n_tprog * D
    if LN_MOD and not LN_SLOT:  # dh_ptr holds dy, the gradient of y = LN(h)(1 + scale_b) + shift_b
        psh_a = tl.zeros([BLOCK_R, DA], tl.float32)
        psc_a = tl.zeros([BLOCK_R, DA], tl.float32)
        if DB > 0:
            psh_b = tl.zeros([BLOCK_R, DB], tl.float32)
            psc_b = tl.zeros([BLOCK_R, DB], tl.float32)

    for r0 in tl.range(0, ROWS, BLOCK_R, num_stages=RPIPE):
        t = pid_t * ROWS + r0 + tl.arange(0, BLOCK_R)
        rmask = t < T
        row = b * T + t
        m_a = rmask[:, None] & (c_a < D)[None, :]
        o_a = row[:, None] * D + _cols(c_a, VEC4)[None, :]
        qo_a = b * q_sb + t[:, None] * q_st + c_a[None, :]
        if G_ROW:
            g_a = tl.load(g_ptr + c_a, mask=c_a < D, other=0.0).to(tl.float32)
            if DB > 0:
                g_b = tl.load(g_ptr + c_b, mask=c_b < D, other=0.0).to(tl.float32)
        w_a = tl.load(q_ptr + qo_a, mask=m_a, other=0.0).to(tl.float32) * g_a[None, :] * scale
        if DB > 0:
            m_b = rmask[:, None] & (c_b < D)[None, :]
            o_b = row[:, None] * D + _cols(c_b, VEC4)[None, :]
            qo_b = b * q_sb + t[:, None] * q_st + c_b[None, :]
            w_b = tl.load(q_ptr + qo_b, mask=m_b, other=0.0).to(tl.float32) * g_b[None, :] * scale
        else:
            m_b = m_a
            o_b = o_a
            w_b = w_a
        lse = tl.load(lse_ptr + row, mask=rmask, other=0.0)
        if PREFIX:
            plam = tl.load(plam_ptr + row, mask=rmask, other=0.0)
        else:
            plam = lse
        if RECOMPUTE_H:  # a first pass over the sources instead of reading h (with a prefix: src0_ptr its partial)
            hv_a, hv_b = _recompute_h(src0_ptr, rest_ptr, tab_ptr, N, o_a, o_b, m_a, m_b, w_a, w_b, lse, D, eps,
                                      DB, ALIGN, PIPE, NC, PREFIX, plam)
        else:
            hv_a = tl.load(h_ptr + o_a, mask=m_a, other=0.0).to(tl.float32)
            hv_b = hv_a
            if DB > 0:
                hv_b = tl.load(h_ptr + o_b, mask=m_b, other=0.0).to(tl.float32)
        if LN_MOD:
            # dh from dy: dxhat = dy (1 + scale); dh = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))
            dy_a = tl.load(dh_ptr + o_a, mask=m_a, other=0.0).to(tl.float32)
            if DB > 0:
                dy_b = tl.load(dh_ptr + o_b, mask=m_b, other=0.0).to(tl.float32)
            xh_a, xh_b, rstd = _ln_center(hv_a, hv_b, m_a, m_b, D, ln_eps, DB)
            xh_a = xh_a * rstd[:, None]
            # 1 + scale_b re-read per row (a cached [D] vector) rather than held across the source loop
            dx_a = dy_a * (1.0 + tl.load(mscale_ptr + b * msc_sb + c_a, mask=c_a < D, other=0.0).to(tl.float32))[None, :]
            c1 = tl.sum(dx_a, 1)
            c2 = tl.sum(dx_a * xh_a, 1)
            if LN_SLOT:  # this program's own [D] slots in pmod, updated once per row: nothing held over the loop
                _slot_add(pmod_ptr + prow, c_a, D, r0, tl.sum(dy_a, 0), SLOT_ASM)
                _slot_add(pmod_ptr + mrow + prow, c_a, D, r0, tl.sum(dy_a * xh_a, 0), SLOT_ASM)
            else:
                psh_a += dy_a
                psc_a += dy_a * xh_a
            if DB > 0:
                xh_b = xh_b * rstd[:, None]
                dx_b = dy_b * (1.0 + tl.load(mscale_ptr + b * msc_sb + c_b, mask=c_b < D, other=0.0).to(tl.float32))[None, :]
                c1 += tl.sum(dx_b, 1)
                c2 += tl.sum(dx_b * xh_b, 1)
                if LN_SLOT:
                    _slot_add(pmod_ptr + prow, c_b, D, r0, tl.sum(dy_b, 0), SLOT_ASM)
                    _slot_add(pmod_ptr + mrow + prow, c_b, D, r0, tl.sum(dy_b * xh_b, 0), SLOT_ASM)
                else:
                    psh_b += dy_b
                    psc_b += dy_b * xh_b
            c1 = c1 / D
            c2 = c2 / D
            dh_a = tl.where(m_a, rstd[:, None] * (dx_a - c1[:, None] - xh_a * c2[:, None]), 0.0)
            delta = tl.sum(dh_a * hv_a, 1)
            if DB > 0:
                dh_b = tl.where(m_b, rstd[:, None] * (dx_b - c1[:, None] - xh_b * c2[:, None]), 0.0)
                delta += tl.sum(dh_b * hv_b, 1)
            else:
                dh_b = dh_a
        else:
            dh_a = tl.load(dh_ptr + o_a, mask=m_a, other=0.0).to(tl.float32)
            delta = tl.sum(dh_a * hv_a, 1)
            if DB > 0:
                dh_b = tl.load(dh_ptr + o_b, mask=m_b, other=0.0).to(tl.float32)
                delta += tl.sum(dh_b * hv_b, 1)
            else:
                dh_b = dh_a

        if PREFIX:
            # the shared prefix as source 0 (prefix_triton): hand back d(partial) = alpha_0 dh and, for its
            # log-sum-exp, -alpha_0 delta (= dlse - d(partial) . partial, since the logits' gradients sum to zero),
            # which is all the prefix's backward needs (the partial is read only to recompute h, RECOMPUTE_H)
            a0 = tl.exp(plam - lse)
            tl.store(dpre_ptr + o_a, (a0[:, None] * dh_a).to(dpre_ptr.dtype.element_ty), mask=m_a)
            if U_PART:  # u is the partial itself (see LEAN)
                u_a = part_a
            else:
                u_a = tl.zeros([BLOCK_R, DA], tl.float32)
            if DB > 0:
                tl.store(dpre_ptr + o_b, (a0[:, None] * dh_b).to(dpre_ptr.dtype.element_ty), mask=m_b)
                if U_PART:
                    u_b = part_b
                else:
                    u_b = tl.zeros([BLOCK_R, DB], tl.float32)
            else:
                u_b = u_a
            tl.store(glam_ptr + row, -a0 * delta, mask=rmask)
        else:
            # source 0 (own dtype; its own gradient pointer, only the accumulate flag from the table)
            fl0 = (tl.load(otab_ptr) & 1) != 0
            v_a, v_b = _load_row(src0_ptr, o_a, o_b, m_a, m_b, DB)
            alpha, cw, cv = _bwd_step(v_a, v_b, w_a, w_b, dh_a, dh_b, lse, delta, D, eps, DB)
            cw = tl.where(N > 1, cw, 0.0)   # one source: alpha == 1 whatever q and g are; exact zero gradients
            cv = tl.where(N > 1, cv, 0.0)
            _store_dv(dv0_ptr, fl0, o_a, o_b, m_a, m_b, alpha, cw, cv, dh_a, dh_b, w_a, w_b, v_a, v_b, DB, ACCUM)
            u_a = (cw * scale)[:, None] * v_a
            if U_PART:
                u_a += part_a
            if DB > 0:
                u_b = (cw * scale)[:, None] * v_b
                if U_PART:
                    u_b += part_b
            else:
                u_b = u_a

        if UNROLL == 2 and PREFETCH:  # as in the forward: next pair's loads issued before this pair's math
            ok1 = N > 1
            ok2 = N > 2
            p1 = rest_ptr + (tl.load(tab_ptr + 1, mask=ok1, other=0) // ALIGN) * ALIGN
            p2 = rest_ptr + (tl.load(tab_ptr + 2, mask=ok2, other=0) // ALIGN) * ALIGN
            n1_a, n1_b = _load_raw(p1, o_a, o_b, m_a & ok1, m_b & ok1, DB)
            n2_a, n2_b = _load_raw(p2, o_a, o_b, m_a & ok2, m_b & ok2, DB)
            for i in range(1, N, 2):
                c1_a = n1_a
                c1_b = n1_b
                c2_a = n2_a
                c2_b = n2_b
                ok1 = i + 2 < N
                ok2 = i + 3 < N
                p1 = rest_ptr + (tl.load(tab_ptr + i + 2, mask=ok1, other=0) // ALIGN) * ALIGN
                p2 = rest_ptr + (tl.load(tab_ptr + i + 3, mask=ok2, other=0) // ALIGN) * ALIGN
                n1_a, n1_b = _load_raw(p1, o_a, o_b, m_a & ok1, m_b & ok1, DB)
                n2_a, n2_b = _load_raw(p2, o_a, o_b, m_a & ok2, m_b & ok2, DB)
                has2 = i + 1 < N
                po1, fl1 = _out_ptr(dvrest_ptr, otab_ptr, i, i < N, OALIGN)
                po2, fl2 = _out_ptr(dvrest_ptr, otab_ptr, i + 1, has2, OALIGN)
                if ACCUM:  # the gradients already accumulated for this pair: in flight during the math
                    g1_a, g1_b = _load_raw(po1, o_a, o_b, m_a & fl1, m_b & fl1, DB)
                    g2_a, g2_b = _load_raw(po2, o_a, o_b, m_a & fl2, m_b & fl2, DB)
                v1_a = c1_a.to(tl.float32)
                v1_b = c1_b.to(tl.float32)
                v2_a = c2_a.to(tl.float32)
                v2_b = c2_b.to(tl.float32)
                al1, cw1, cv1, al2, cw2, cv2 = _bwd_step2(v1_a, v1_b, v2_a, v2_b, w_a, w_b, dh_a, dh_b,
                                                          lse, delta, D, eps, DB)
                al2 = tl.where(has2, al2, 0.0)
                cw2 = tl.where(has2, cw2, 0.0)
                cv2 = tl.where(has2, cv2, 0.0)
                if ACCUM:
                    _store_dv_acc(po1, g1_a, g1_b, o_a, o_b, m_a, m_b, al1, cw1, cv1, dh_a, dh_b, w_a, w_b,
                                  v1_a, v1_b, DB)
                    _store_dv_acc(po2, g2_a, g2_b, o_a, o_b, m_a & has2, m_b & has2, al2, cw2, cv2, dh_a, dh_b,
                                  w_a, w_b, v2_a, v2_b, DB)
                else:
                    _store_dv(po1, fl1, o_a, o_b, m_a, m_b, al1, cw1, cv1, dh_a, dh_b, w_a, w_b, v1_a, v1_b,
                              DB, ACCUM)
                    _store_dv(po2, fl2, o_a, o_b, m_a & has2, m_b & has2, al2, cw2, cv2, dh_a, dh_b, w_a, w_b,
                              v2_a, v2_b, DB, ACCUM)
                u_a += (cw1 * scale)[:, None] * v1_a + (cw2 * scale)[:, None] * v2_a
                if DB > 0:
                    u_b += (cw1 * scale)[:, None] * v1_b + (cw2 * scale)[:, None] * v2_b
            start = N
        elif UNROLL == 2:
            for i in tl.range(1, N - 1, 2, num_stages=PIPE):
                p1 = rest_ptr + (tl.load(tab_ptr + i) // ALIGN) * ALIGN
                p2 = rest_ptr + (tl.load(tab_ptr + i + 1) // ALIGN) * ALIGN
                po1, fl1 = _out_ptr(dvrest_ptr, otab_ptr, i, i < N, OALIGN)
                po2, fl2 = _out_ptr(dvrest_ptr, otab_ptr, i + 1, i + 1 < N, OALIGN)
                v1_a, v1_b = _load_row(p1, o_a, o_b, m_a, m_b, DB)
                v2_a, v2_b = _load_row(p2, o_a, o_b, m_a, m_b, DB)
                al1, cw1, cv1, al2, cw2, cv2 = _bwd_step2(v1_a, v1_b, v2_a, v2_b, w_a, w_b, dh_a, dh_b,
                                                          lse, delta, D, eps, DB)
                _store_dv(po1, fl1, o_a, o_b, m_a, m_b, al1, cw1, cv1, dh_a, dh_b, w_a, w_b, v1_a, v1_b,
                          DB, ACCUM)
                _store_dv(po2, fl2, o_a, o_b, m_a, m_b, al2, cw2, cv2, dh_a, dh_b, w_a, w_b, v2_a, v2_b,
                          DB, ACCUM)
                u_a += (cw1 * scale)[:, None] * v1_a + (cw2 * scale)[:, None] * v2_a
                if DB > 0:
                    u_b += (cw1 * scale)[:, None] * v1_b + (cw2 * scale)[:, None] * v2_b
            start = 1 + ((N - 1) // 2) * 2
        else:
            start = 1

        if NC > 0:
            for i in tl.static_range(1, NC):
                u_a, u_b = _bwd_source(rest_ptr, tab_ptr, dvrest_ptr, otab_ptr, i, N, o_a, o_b, m_a, m_b, w_a, w_b,
                                       dh_a, dh_b, lse, delta, D, eps, scale, u_a, u_b, DB, ALIGN, OALIGN, ACCUM)
        else:
            for i in tl.range(start, N, num_stages=PIPE):  # PIPE > 1: as in the forward
                u_a, u_b = _bwd_source(rest_ptr, tab_ptr, dvrest_ptr, otab_ptr, i, N, o_a, o_b, m_a, m_b, w_a, w_b,
                                       dh_a, dh_b, lse, delta, D, eps, scale, u_a, u_b, DB, ALIGN, OALIGN, ACCUM)

        if DYNAMIC:
            # dq per row = g * u; dg partial = sum_rows q * u. q is read before dq is stored: dq may be
            # written over q (same offsets, same layout: each element is loaded and then stored by one thread)
            # g re-read here rather than kept live across the source loop (registers at D = 1152)
            ge_a = tl.load(g_ptr + c_a, mask=c_a < D, other=0.0).to(tl.float32)
            pq_a = tl.load(q_ptr + qo_a, mask=m_a, other=0.0).to(tl.float32) * u_a
            tl.store(dq_ptr + o_a, (ge_a[None, :] * u_a).to(dq_ptr.dtype.element_ty), mask=m_a)
            if DB > 0:
                ge_b = tl.load(g_ptr + c_b, mask=c_b < D, other=0.0).to(tl.float32)
                pq_b = tl.load(q_ptr + qo_b, mask=m_b, other=0.0).to(tl.float32) * u_b
                tl.store(dq_ptr + o_b, (ge_b[None, :] * u_b).to(dq_ptr.dtype.element_ty), mask=m_b)
        else:
            pq_a = u_a
            if DB > 0:
                pq_b = u_b
        if PART_SLOT:
            _slot_add(part_ptr + prow, c_a, D, r0, tl.sum(pq_a, 0), SLOT_ASM)
            if DB > 0:
                _slot_add(part_ptr + prow, c_b, D, r0, tl.sum(pq_b, 0), SLOT_ASM)
        elif U_PART:
            part_a = pq_a
            if DB > 0:
                part_b = pq_b
        else:
            part_a += pq_a
            if DB > 0:
                part_b += pq_b

    if ATOMIC:
        # the partials are added into small zeroed accumulators instead of stored for a host-side reduction: the
        # query / gain ones into row ((b * n_tprog + pid_t) // acc_div) % acc_mod of acc [*, D] (static: one of
        # acc_mod rows, spreading the contention; static_t: row b), dshift / dscale into macc / macc2 [B, D]; from
        # the slots after the loop (ptxas: no more stack than without atomics; adding them on the last row inside
        # the loop instead spilled 144 bytes more at D = 1152)
        arow = (((tl.program_id(1) * n_tprog + pid_t) // acc_div) % acc_mod).to(tl.int64) * D   # int32 division
        _acc_add(acc_ptr + arow, part_ptr + prow, c_a, D, 0.0 if PART_SLOT else tl.sum(part_a, 0), PART_SLOT)
        if DB > 0:
            _acc_add(acc_ptr + arow, part_ptr + prow, c_b, D, 0.0 if PART_SLOT else tl.sum(part_b, 0), PART_SLOT)
        if LN_MOD:
            mb = b * D
            _acc_add(macc_ptr + mb, pmod_ptr + prow, c_a, D, 0.0 if LN_SLOT else tl.sum(psh_a, 0), LN_SLOT)
            _acc_add(macc2_ptr + mb, pmod_ptr + mrow + prow, c_a, D, 0.0 if LN_SLOT else tl.sum(psc_a, 0), LN_SLOT)
            if DB > 0:
                _acc_add(macc_ptr + mb, pmod_ptr + prow, c_b, D, 0.0 if LN_SLOT else tl.sum(psh_b, 0), LN_SLOT)
                _acc_add(macc2_ptr + mb, pmod_ptr + mrow + prow, c_b, D, 0.0 if LN_SLOT else tl.sum(psc_b, 0),
                         LN_SLOT)
    else:
        if not PART_SLOT:
            tl.store(part_ptr + prow + c_a, tl.sum(part_a, 0), mask=c_a < D)
            if DB > 0:
                tl.store(part_ptr + prow + c_b, tl.sum(part_b, 0), mask=c_b < D)
        if LN_MOD and not LN_SLOT:  # [2, B, n_tprog, D]: dshift partials, then dscale partials
            tl.store(pmod_ptr + prow + c_a, tl.sum(psh_a, 0), mask=c_a < D)
            tl.store(pmod_ptr + mrow + prow + c_a, tl.sum(psc_a, 0), mask=c_a < D)
            if DB > 0:
                tl.store(pmod_ptr + prow + c_b, tl.sum(psh_b, 0), mask=c_b < D)
                tl.store(pmod_ptr + mrow + prow + c_b, tl.sum(psc_b, 0), mask=c_b < D)


@triton.jit
def _qg_finish_kernel(acc_ptr, R, q_ptr, g_ptr, dq_ptr, dg_ptr, C, macc_ptr, dmod_ptr, dmod2_ptr, MR,
                      MODE: tl.constexpr, BC: tl.constexpr, RB: tl.constexpr):
    """The query / gain gradients from the backward's accumulated partials acc [R, C] (fp32), BC columns per
    program; the rows in tiles of RB (a serial loop over single rows was latency-bound: 30 us a call).
    Programs (c, 0): MODE 0 (static, q and g [C]): U = sum_r acc_r, dq = g U, dg = q U; MODE 1 (static_t,
    q [R = B, C]): dq_r = g acc_r, dg = sum_r q_r acc_r; MODE 2 (dynamic, dq written by the backward):
    dg = sum_r acc_r. Programs (c, j > 0), launched when dshift / dscale need a cast: rows (j - 1) * RB ... of
    macc [2, MR, C] (fp32) into dmod, dmod2 [MR, C] (their dtype)."""
    c = tl.program_id(0) * BC + tl.arange(0, BC)
    cm = c < C
    j = tl.program_id(1)
    if j == 0:
        g = tl.load(g_ptr + c, mask=cm, other=0.0).to(tl.float32)
        s = tl.zeros([BC], tl.float32)
        for r0 in range(0, R, RB):
            r = r0 + tl.arange(0, RB)
            m = (r < R)[:, None] & cm[None, :]
            o = r[:, None] * C + c[None, :]
            u = tl.load(acc_ptr + o, mask=m, other=0.0)                              # [RB, BC]
            if MODE == 1:
                tl.store(dq_ptr + o, (g[None, :] * u).to(dq_ptr.dtype.element_ty), mask=m)
                s += tl.sum(tl.load(q_ptr + o, mask=m, other=0.0).to(tl.float32) * u, 0)
            else:
                s += tl.sum(u, 0)
        if MODE == 0:
            tl.store(dq_ptr + c, (g * s).to(dq_ptr.dtype.element_ty), mask=cm)
            s = tl.load(q_ptr + c, mask=cm, other=0.0).to(tl.float32) * s
        tl.store(dg_ptr + c, s.to(dg_ptr.dtype.element_ty), mask=cm)
    else:
        r = (j - 1) * RB + tl.arange(0, RB)
        m = (r < MR)[:, None] & cm[None, :]
        o = r[:, None] * C + c[None, :]
        tl.store(dmod_ptr + o, tl.load(macc_ptr + o, mask=m, other=0.0).to(dmod_ptr.dtype.element_ty), mask=m)
        tl.store(dmod2_ptr + o, tl.load(macc_ptr + MR * C + o, mask=m, other=0.0).to(dmod2_ptr.dtype.element_ty),
                 mask=m)


# --------------------------------------------------------------------------------------------------
# Launch configuration
# --------------------------------------------------------------------------------------------------


def _pow2_floor(n: int) -> int:
    return 1 << (n.bit_length() - 1)


def _tiles(D: int, split: bool) -> tuple[int, int]:
    """(DA, DB): one power-of-two tile covering D, or two (DA = largest power of two <= D)."""
    if not split or D == _pow2_floor(D):
        return triton.next_power_of_2(D), 0
    da = _pow2_floor(D)
    return da, triton.next_power_of_2(D - da)


# Defaults (from the sweep on an H100, see benchmarks/KERNEL_NOTES.md), overridable by environment for
# experiments: DARTOOL_ROUTER_FWD="block_r,warps,stages,split,unroll", DARTOOL_ROUTER_BWD="block_r,rows,...".
_DEFAULT_FWD = dict(block_r=1, num_warps=1, num_stages=1, split=1, unroll=2, prefetch=1, vec4=0, pipe=1)
# ln_slot: with the LayerNorm fused in, keep the dshift / dscale partials in the program's own memory slot (updated
# once per row) instead of registers held across the source loop. Compiled static c4 steps, same run (H200,
# 2026-11-26, benchmarks/results/slot-ab-NVIDIA-H200-20261126-1101.json): SiT-XL/2 b64 1.214 against 1.260 with
# the partials in registers (240 -> 78 spilled registers), SiT-B/2 b256 1.111 against 1.124 (100 -> 2).
# part_slot: likewise the query / gain gradient partial, with g re-read per row (frees two row vectors of registers);
# per shape in bwd_config.
_DEFAULT_BWD = dict(block_r=1, rows=8, num_warps=2, num_stages=1, split=1, unroll=2, prefetch=1, ln_slot=1,
                    part_slot=0, vec4=0, pipe=1)


def _parse_env(name: str, keys: Sequence[str], default: dict) -> dict:
    raw = os.environ.get(name)
    if not raw:
        return dict(default)
    vals = [int(x) for x in raw.split(",")]
    out = dict(default)
    out.update(dict(zip(keys, vals)))
    return out


FWD_CONFIG = _parse_env("DARTOOL_ROUTER_FWD", ("block_r", "num_warps", "num_stages", "split", "unroll", "prefetch",
                                               "vec4", "pipe"), _DEFAULT_FWD)
# DARTOOL_ROUTER_BWD's positional keys; DARTOOL_ROUTER_BWD_ACCUM (ACCUM_BWD) names them and two more
_BWD_POSITIONAL = ("block_r", "rows", "num_warps", "num_stages", "split", "unroll", "prefetch", "ln_slot", "part_slot",
                   "vec4", "pipe")
BWD_CONFIG = _parse_env("DARTOOL_ROUTER_BWD", _BWD_POSITIONAL, _DEFAULT_BWD)


# Per-shape backward configuration (sweeps on an H200 with inputs laid out as in a bf16 training step,
# benchmarks/results/router_sweep-NVIDIA-H200-20261126-0834.md and -0854.md): below D = 1024 one warp per row
# is 1.7-1.9x faster than the session-3 default (SiT-B/2 b256: 74-77 % of the byte floor instead of 40-44 %);
# at D >= 1024 one warp per row with one source per iteration and no prefetch (fewer live registers: the
# two-source loop spills at D = 1152) is 3-15 % faster at every N swept (4, 9, 17; batch 64 and 128). In force
# unless a configuration is given (DARTOOL_ROUTER_BWD, set_configs, configs()).
_AUTO = {"bwd": not os.environ.get("DARTOOL_ROUTER_BWD"), "fwd": not os.environ.get("DARTOOL_ROUTER_FWD")}


# Routers of at most FEW_SOURCES sources at D >= 1024 run their source loops without the pipeline: the forward
# whatever the query, the backward with static / static_t queries, and that backward keeps its query-gradient
# partial in registers (part_slot 0) (DARTOOL_ROUTER_FEW=k at import; 0 restores the session-8 choice everywhere).
# Inside a SiT-XL/2 b32 static c4 training step, whose routers with shared prefixes read 1-4 sources (the partial
# and up to three raw outputs), the pipelined loops (chosen at N = 9 / 17 / 57) cost more than they save. Device
# time per step (H200, 2026-11-27, benchmarks/step_kernel_sweep.py, benchmarks/results/s22_*-step-sweep):
# router backward 4.90 -> 4.43 ms unpipelined, 4.18 ms with part_slot 0 too; forward 1.92 -> 1.78 ms; FEW_SOURCES
# 2 / 3 / 4 / 5 / 8 gave 4.63 / 4.52 / 4.43 / 4.44 / 4.44 ms (both unpipelined only). SiT-XL/2
# b64: 9.66 -> 8.67 ms. Below D = 1024 the sweep found nothing above its noise, so those shapes keep their choice.
FEW_SOURCES = int(os.environ.get("DARTOOL_ROUTER_FEW", "4"))

# Row-pipelined few-source backward (built session 22, default since session 23): ROW_PIPE = k > 1
# (DARTOOL_ROUTER_RPIPE=k at import; 1 turns it off) runs the static / static_t backward of routers of at most
# FEW_SOURCES sources (and never more than ROW_PIPE_MAX_N) with N a compile-time constant, the source loops unrolled
# and the row loop a software pipeline k deep ("rpipe"): Triton then fetches the next rows' h, dy and sources into
# shared memory (cp.async) while a row computes. The backward is latency-bound at 8 warps per SM (255 registers);
# this doubles the bytes in flight without registers. It keeps the partials in registers (ln_slot 0, part_slot 0;
# slots only as ROW_SLOTS below), and is off for dynamic queries and under in-kernel accumulation (_bwd_prepare).
# sm_90 ptxas on the CPU (benchmarks/kernel_resources.py): 32-66 async copies; stack 0-24 bytes at D = 768,
# 464-584 at D = 1152.
# Device time per step inside a DAR static c4 step (H200, 2026-11-27, benchmarks/step_kernel_sweep.py,
# benchmarks/results/s23_a-rowpipe): router backward SiT-B/2 b256 9.31 -> 6.94 ms (rpipe 2), 7.11 (rpipe 3);
# SiT-XL/2 b32 4.21 -> 3.96 ms (rpipe 2), 6.31 (rpipe 3: the spills), 5.23 (rpipe 2 with two warps a row).
# Under CUDA graphs, SiT-B/2 b256 static c4 / residual 1.111 -> 1.089 on one card (dartool bench --parts graphs).
ROW_PIPE = int(os.environ.get("DARTOOL_ROUTER_RPIPE", "2"))
ROW_PIPE_MAX_N = 8

# DYN_ROW_PIPE_N: dynamic routers of at most this many sources run the row-pipelined backward too (ROW_PIPE deep,
# the partials in registers, the source loop unpipelined; the next rows' q is fetched with their h, dy and sources,
# and with DQ_OVER_Q each row's dq is still written over its own q after that row's q is read). Never on a launch that adds into
# tapped / accumulated source gradients (in-kernel accumulation: eager DAR by default, and compiled graphs where
# compiled_slots accumulates). Per shape: 12 at D < 1024 (every router of a c4 SiT-B/2), 0 (off) at D >= 1024;
# DARTOOL_ROUTER_DYN_RPIPE=k at import sets k for every shape.
# Session 27 (H200s, SiT-B/2 b256 dynamic c4, eager in-step sweep without taps, results/s27_b-dyn-rpipe-h200): the
# dynamic router backward 19.90 ms a step -> 17.82 (k = 4) -> 15.61 (8) -> 15.40 (12; its routers have N <= 10),
# rpipe 3 22.66. It was turned off again when the compiled step did not gain (s27_c / s27_d): its launches all
# accumulated there (compiled_slots counted v_0's 25 readers), so the kernel hardly ran. Session 28, with the
# compiled accumulation off at SiT-B/2 dynamic c4 (compiled_slots.MIN_PENDING): paired under CUDA graphs, H200s,
# 1.341 / 1.329 without it against 1.305 / 1.305 with k = 12 (two cards each, results/s28_d-accum-rule-B-h200;
# s28_c: 1.313 / 1.309). SiT-XL/2 b32 eager: 15.28 -> 15.12 (4 or 8) -> 29.43 (18): at D = 1152 it spills (sm_90
# ptxas, LayerNorm fused: 272-496 stack bytes at N = 1-9; D = 768: 0 up to N = 4, 120 at N = 9), hence off there.
# The float64 check passes with k = 18 on an H200 (every router case, LayerNorm-fused, dynamic recompute, compiled
# dynamic, model; s27_c).
_DYN_RPIPE_ENV = os.environ.get("DARTOOL_ROUTER_DYN_RPIPE")
DYN_ROW_PIPE_N: "int | None" = int(_DYN_RPIPE_ENV) if _DYN_RPIPE_ENV else None
DYN_ROW_PIPE_MAX_N = 18

# ROW_PIPE_ACCUM (DARTOOL_ROW_PIPE_ACCUM=1; off: timed in session 31, no gain): let launches that add into running
# gradient sums (ACCUM) take the row-pipelined backward too, where every sum they add into is a buffer of its own
# (no two sources' gradients at one address). Each row's sums are then that row's own addresses, so loading row
# r+1's ahead cannot read around row r's store; what the rule above guards against is a source listed twice, whose
# second position would load the sum before the first position's store. Session 30 (H200, router_kernels_bench.py
# --writes, results/s30_d) had an accumulating SiT-B/2 launch at 1.088 ms against 0.710 fresh (N = 6, dynamic)
# and guessed the row pipeline's absence was why. Session 31 (results/s31_a): with this on, the same launch takes
# the row pipeline (255 registers, 34 spills instead of 246 / 0) and 1.101 ms; N = 10 gets slower (1.713 ->
# 1.969); static launches, never row-pipelined, pay the same +60 % (0.580 -> 0.930). B/2 b256 dynamic c4, every q
# kept, compiled accumulation on, paired under graphs: 1.320 with it, 1.305 without (s30_c). What an accumulating
# launch pays is the read of the running sums, 1.5-2.3x what those bytes cost at the copy rate (s31_c: the compiled
# B/2 step's 25 router backwards 15.3 -> 23.3 ms; Inductor's kernels 20.0 -> 16.5 ms, 1.25 ms of copies added).
ROW_PIPE_ACCUM = env_flag("DARTOOL_ROW_PIPE_ACCUM", False)

_BWD_KEYS = _BWD_POSITIONAL + ("lean", "maxnreg")


def _pipe_cfg(pipe: int) -> dict:
    return dict(pipe=pipe, unroll=1, prefetch=0) if pipe > 1 else dict(pipe=1)


def _parse_cfg_pairs(name: str) -> dict:
    """Launch-configuration keys from ``name``'s "key=value,key=value" (integers); pipe > 1 takes unroll 1, prefetch 0
    as a --sweep of pipe does. Refused with what to write when malformed."""
    raw = os.environ.get(name, "").strip()
    out: dict = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        k, sep, v = (x.strip() for x in part.partition("="))
        if not sep or k not in _BWD_KEYS or not v.isdigit():
            raise ValueError(f"{name}={raw!r}: write key=integer pairs joined by commas (e.g. pipe=2 or "
                             f"unroll=2,prefetch=1); keys: {', '.join(_BWD_KEYS)}")
        out[k] = int(v)
    if "pipe" in out:
        out.update(_pipe_cfg(out["pipe"]))
    return out


# ACCUM_BWD (DARTOOL_ROUTER_BWD_ACCUM="pipe=2", "unroll=2,prefetch=1", ...; empty by default; session 31): launch-
# configuration keys applied to backward launches that add into running gradient sums (ACCUM) and run off the row
# pipeline, over what bwd_config chose for the shape. At SiT-B/2 the dynamic backward's configuration is the row
# pipeline's (pipe 1, unroll 1, prefetch 0): an accumulating launch that falls back from it runs a loop that
# loads each source and then each running sum with nothing in flight ahead of it. Session 31 (H200): pipe=3 takes
# such a launch at B:256:6 / :10 from 1.106 / 1.712 to 0.902 / 1.296 ms in router_kernels_bench.py (results/s31_d),
# but not in the step: B/2 b256 dynamic c4, every q kept, accumulation on, paired 1.307 (1.305 without), the step's
# 25 router backwards 23.8 ms (23.3 without; results/s31_e). Hence empty by default.
ACCUM_BWD = _parse_cfg_pairs("DARTOOL_ROUTER_BWD_ACCUM")


def accum_bwd_text() -> str:
    """:data:`ACCUM_BWD` as the bench's and the check's records write it ("pipe=3,unroll=1,prefetch=0"; '' when
    empty)."""
    return ",".join(f"{k}={v}" for k, v in ACCUM_BWD.items())


def _sums_apart(outs: Sequence[Tensor], flags: Sequence[int]) -> bool:
    """True when every gradient buffer a launch adds into (flag 1) is at an address no other output of the launch
    starts at: accumulation that the row-pipelined backward may run (``ROW_PIPE_ACCUM``)."""
    ptrs = [o.data_ptr() for o in outs]
    return all(ptrs.count(p) == 1 for p, f in zip(ptrs, flags) if f)


# Experimental, off by default because it is slower (session 23): ROW_SLOTS (DARTOOL_ROUTER_RSLOT=k at import; a
# bit mask, 1: the dshift / dscale partials, 2: the query-gradient partial) keeps those partials of the
# row-pipelined backward in the program's memory slots (ln_slot, part_slot) instead of registers, their loads made
# by inline asm so the pipeline cannot fetch a row's slot ahead of the previous row's store (_slot_add). At D = 1152
# the partials in registers are what spills (sm_90 ptxas, LayerNorm fused, prefix router, N = 4, rpipe 2: stack 464
# bytes with none in slots, 48 with the LayerNorm's, 0 with both; at D = 768 24 / 0 / 0). Removing the spills did
# not pay: inside a static c4 step (H100, 2026-11-27, benchmarks/results/s23_d-rslot-h100) the router backward
# took 4.93 / 5.19 / 5.73 ms (rslot 0 / 1 / 3) at SiT-XL/2 b32 and 8.26 / 12.12 ms (rslot 0 / 3) at SiT-B/2 b256:
# a slot's per-row load + store costs more than the spill traffic it removes. The float64 check's router,
# LayerNorm-fused and shared-prefix parts pass with rslot 3 on that GPU.
ROW_SLOTS = int(os.environ.get("DARTOOL_ROUTER_RSLOT", "0"))

# LEAN: fewer registers held across the backward's row loop (the kernel's LEAN, a bit mask): 1, g re-read per row;
# 2, the query-gradient partial takes each source's term directly (static / static_t queries, partial in registers).
# At D >= 1024 only the few-source backward holds both (part_slot 0; elsewhere part_slot re-reads g and keeps the
# partial in a slot), so that is where it acts. Per shape: 3 at D >= 1024, 0 below; DARTOOL_ROUTER_LEAN=k at import
# sets k for every shape. Nsight Compute on an H100 (session 26, benchmarks/results/s26_b-ncu-xl32): at SiT-XL/2 b32
# the few-source backwards (255 registers) spilled ~100 registers a row, 1.2-1.4 M local loads + stores a launch
# (about as many as their global loads, stores and async copies), L2 75-79 % busy, long-scoreboard waits 45-57 % of
# the stalls; sm_90 ptxas (D = 1152, LayerNorm fused, prefix, rpipe 2): stack 464 -> 312 (1) / 384 (2) / 232 (3)
# bytes. Inside the static c4 step (H100, benchmarks/results/s26_c-lean): router backward SiT-XL/2 b32 4.87 -> 4.59
# (1) -> 4.41 ms (3); SiT-B/2 b256 (D = 768, no spills to remove) 8.21 -> 8.56 ms with 3, hence off there. MAXNREG
# 168 on top (12 warps an SM, more spills): 7.68 ms (XL/2), 11.78 (B/2). Paired under CUDA graphs on an H100
# (s26_d): SiT-XL/2 static c4 / residual 1.108 -> 1.092 (b32), 1.108 -> 1.098 (b64).
LEAN: "int | None" = int(os.environ["DARTOOL_ROUTER_LEAN"]) if os.environ.get("DARTOOL_ROUTER_LEAN") else None
# MAXNREG (DARTOOL_ROUTER_MAXNREG=k at import; 0: off): caps the backward kernel's registers per thread (Triton's
# maxnreg), so more warps fit an SM (255 -> 8 warps, 168 -> 12, 128 -> 16) at the cost of spills. Experimental.
MAXNREG = int(os.environ.get("DARTOOL_ROUTER_MAXNREG", "0"))


def fwd_config(N: int, D: int) -> dict:
    """The forward's launch configuration for N sources of width D. The default (prefetching the next pair
    of sources) was tuned at N = 57; at the source counts a chunked model runs, not prefetching is 2-4 %
    faster (H200, SiT-B/2 b256 N = 6 and SiT-XL/2 b64 N = 9,
    benchmarks/results/router_sweep-NVIDIA-H200-20261126-0938.md), so N < 32 runs without."""
    cfg = dict(FWD_CONFIG)
    if _AUTO["fwd"] and N < 32:
        cfg.update(prefetch=0)
        if D >= 768:
            cfg.update(_pipe_cfg(4), vec4=1)
        if D >= 1024 and N <= FEW_SOURCES:
            cfg.update(pipe=1)
    elif _AUTO["fwd"] and D >= 768:  # N = 57, SiT-XL/2 b32: 0.357 -> 0.274 ms, 77 -> 100 % of the floor
        cfg.update(_pipe_cfg(3))
    if _AUTO["fwd"] and VEC4 is not None:
        cfg.update(vec4=VEC4)
    if _AUTO["fwd"] and PIPE is not None:
        cfg.update(_pipe_cfg(PIPE))
    return cfg


# vec4 in both kernels (column offsets as runs of 4: no layout conversion of each source (and, backward, each
# gradient) in the source loop; backward at D = 1152, sm_90 ptxas: 619 -> 473 loop instructions, 88 / 112 -> 8 / 0
# stack bytes). On per shape (below); DARTOOL_ROUTER_VEC4=0 / 1 sets it for every shape (the rest of the per-shape
# choice stays).
VEC4: "int | None" = int(os.environ["DARTOOL_ROUTER_VEC4"]) if os.environ.get("DARTOOL_ROUTER_VEC4") else None

# pipe: the single-source loop of both kernels as a software pipeline (tl.range num_stages): Triton issues the next
# pipe - 1 sources' loads as asynchronous copies into shared memory (cp.async), so each warp has more bytes in flight
# without holding them in registers (the kernels are latency-bound: one source in flight per warp). pipe > 1 runs
# the single-source loop (unroll 1, no register prefetch). Per shape (below); DARTOOL_ROUTER_PIPE=k for every shape
# (1: none). Rows per program (4, 8, 16) and two warps per row were swept with it at SiT-XL/2 (router_kernels-bwd-
# sweep-XL-NVIDIA-H200-20261126-1457.json): two warps 20-40 % slower; 4 rows 3 % faster alone, but the compiled
# XL/2 step was 1 % slower (compiled-XL-bwd-rows-NVIDIA-H200-20261126-1501.json), so 8 rows stay.
PIPE: "int | None" = int(os.environ["DARTOOL_ROUTER_PIPE"]) if os.environ.get("DARTOOL_ROUTER_PIPE") else None


# The per-shape choices below were timed on an H200 with the kernels alone, laid out as in a bf16 training step
# (benchmarks/router_kernels_bench.py; benchmarks/results/router_kernels-pipe-NVIDIA-H200-20261126-1439.json,
# router_kernels-vec4-NVIDIA-H200-20261126-1429.json):
#   forward, N < 32, D >= 768: one source per iteration pipelined 4 deep, vec4: SiT-XL/2 b64 N = 9 / 17 and
#   SiT-B/2 b256 N = 6 at 94-101 % of the byte floor (86-93 % before), static and dynamic queries alike;
#   backward, D >= 1024: vec4 (static 3-5 % faster, dynamic unchanged), pipelined 4 deep with a static query
#   (N = 9 / 17: 0.367 -> 0.361, 0.562 -> 0.520 ms), 3 deep with a dynamic one (0.433 -> 0.423, 0.637 -> 0.587 ms;
#   2 deep is slower everywhere; at N = 57, b32: 70 -> 81 % of the floor); D < 1024: vec4 (static 5 % faster), not
#   pipelined (the dynamic backward at SiT-B/2 is 3-19 % slower pipelined, one or two sources per iteration;
#   router_kernels-pipe57-NVIDIA-H200-20261126-1452.json, router_kernels-pipeB-NVIDIA-H200-20261126-1452.json).


def bwd_config(N: int, D: int, dynamic: bool = False) -> dict:
    """The backward's launch configuration for N sources of width D. ``part_slot`` only at D >= 1024: the
    LayerNorm-fused backward kernel at SiT-XL/2 b64 N = 9 is 1.6 % faster with it (0.424 vs 0.431 ms), at SiT-B/2
    b256 N = 6 12 % slower (0.706 vs 0.631 ms); compiled static c4 steps, same run: XL/2 1.220 both ways, B/2
    1.085 without against 1.096 with (H200, benchmarks/results/part-slot-*-NVIDIA-H200-20261126-115*.json,
    router_sweep-ln-NVIDIA-H200-20261126-1153.md)."""
    cfg = dict(BWD_CONFIG)
    if _AUTO["bwd"]:
        if D < 1024:
            cfg.update(num_warps=1, split=1, part_slot=0, vec4=1)
        else:
            cfg.update(num_warps=1, split=1, unroll=1, prefetch=0, part_slot=1, vec4=1, pipe=3 if dynamic else 4)
            if N <= FEW_SOURCES and not dynamic:
                cfg.update(pipe=1, part_slot=0)
        if ROW_PIPE > 1 and N <= FEW_SOURCES and not dynamic:
            cfg.update(rpipe=ROW_PIPE, rslot=ROW_SLOTS)
        dyn_n = DYN_ROW_PIPE_N if DYN_ROW_PIPE_N is not None else (12 if D < 1024 else 0)
        if ROW_PIPE > 1 and dynamic and N <= min(dyn_n, DYN_ROW_PIPE_MAX_N):
            cfg.update(rpipe=ROW_PIPE, rslot=ROW_SLOTS, pipe=1, unroll=1, prefetch=0)
        lean = LEAN if LEAN is not None else (3 if D >= 1024 else 0)
        if lean:
            cfg.update(lean=lean)
        if MAXNREG:
            cfg.update(maxnreg=MAXNREG)
        if VEC4 is not None:
            cfg.update(vec4=VEC4)
        if PIPE is not None:
            cfg.update(_pipe_cfg(PIPE))
    return cfg


# atomic: the backward's query / gain and dshift / dscale partials are added by each program into small zeroed
# accumulators (fp32 atomics) and one small kernel forms dq, dg from them, instead of [B, T / rows, D] partials
# reduced by three torch sums and a few elementwise ops per router (SiT-XL/2 b64 on an H100: 171 such launches,
# ~1.9 ms per compiled step). The sums' order then varies from run to run (fp32 rounding, ~1e-7 relative): off under
# torch.use_deterministic_algorithms(True), or with DARTOOL_ROUTER_ATOMIC=0 (read per call).
ACC_ROWS = 32      # rows of the static query's accumulator: programs spread over them to limit contention
FINISH_COLS, FINISH_ROWS = 128, 32  # the finishing kernel's tile


def finish_qg(acc: Tensor, R: int, q: Tensor, g: Tensor, dq: Tensor, dg: Tensor, C: int, mode: int,
              macc: "Tensor | None" = None, dmod: "tuple | None" = None, MR: int = 0) -> None:
    """dq, dg from the accumulated partials acc [R, C] (:func:`_qg_finish_kernel`); with ``macc`` [2, MR, C] fp32
    also dshift, dscale cast into ``dmod`` (two [MR, C] tensors) by the same launch."""
    rows = triton.cdiv(MR, FINISH_ROWS) if macc is not None else 0
    _qg_finish_kernel[(triton.cdiv(C, FINISH_COLS), 1 + rows)](
        acc, R, q.contiguous(), g.contiguous(), dq, dg, C, macc if macc is not None else dg,
        dmod[0] if macc is not None else dg, dmod[1] if macc is not None else dg, MR,
        MODE=mode, BC=FINISH_COLS, RB=FINISH_ROWS, num_warps=4)


_ATOMIC_FORCED: "bool | None" = None
_ACC_ROWS_FORCED: "int | None" = None


def acc_rows() -> int:
    """Rows of a static query's atomic accumulator (ACC_ROWS, or what :func:`atomic_reductions` forces)."""
    return _ACC_ROWS_FORCED or ACC_ROWS


def acc_layout(B: int, n: int, per_sample: bool) -> tuple[int, int]:
    """(rows, div) of an atomic query-gradient accumulator for B x n programs: program (b, p) adds into row
    ((b * n + p) // div) % rows; a per-sample query (static_t) gets its sample's row, a shared one (static, and
    a dynamic router's gain) one of acc_rows() rows, spreading the contention."""
    return (B, n) if per_sample else (min(acc_rows(), B * n), 1)


def atomic_reduce() -> bool:
    """Whether the backward kernels reduce their query / gain / modulation partials with atomics (above)."""
    if torch.are_deterministic_algorithms_enabled():
        return False
    if _ATOMIC_FORCED is not None:
        return _ATOMIC_FORCED
    return env_flag("DARTOOL_ROUTER_ATOMIC", True)


@contextlib.contextmanager
def atomic_reductions(on: bool, rows: "int | None" = None):
    """Force the atomic reductions on or off inside the block (checks; deterministic algorithms still win);
    ``rows``: the static accumulator's rows (few rows make many programs add into each: what the checks need
    to see lost or doubled partials at small shapes)."""
    global _ATOMIC_FORCED, _ACC_ROWS_FORCED
    old = _ATOMIC_FORCED, _ACC_ROWS_FORCED
    _ATOMIC_FORCED, _ACC_ROWS_FORCED = bool(on), rows
    try:
        yield
    finally:
        _ATOMIC_FORCED, _ACC_ROWS_FORCED = old


def set_configs(fwd: dict | None = None, bwd: dict | None = None) -> None:
    """Change the launch configuration (benchmark sweeps); a backward configuration given here is used for
    every shape (the per-shape choice of :func:`bwd_config` / :func:`fwd_config` is off from then on)."""
    if fwd:
        FWD_CONFIG.update(fwd)
        _AUTO["fwd"] = False
    if bwd:
        BWD_CONFIG.update(bwd)
        _AUTO["bwd"] = False


@contextlib.contextmanager
def configs(fwd: dict | None = None, bwd: dict | None = None):
    """Run with these launch configurations (for every shape), restoring the previous state after."""
    old_f, old_b, old_auto = dict(FWD_CONFIG), dict(BWD_CONFIG), dict(_AUTO)
    try:
        set_configs(fwd, bwd)
        yield
    finally:
        FWD_CONFIG.clear(); FWD_CONFIG.update(old_f)
        BWD_CONFIG.clear(); BWD_CONFIG.update(old_b)
        _AUTO.update(old_auto)


# --------------------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------------------

LAST_KERNELS: dict = {}  # the last compiled kernels launched (register / spill counts for the notes)
POISON = False  # tests: fill outputs with NaN before each launch so unwritten elements show


def _empty(shape, dtype, device) -> Tensor:
    if POISON and dtype.is_floating_point:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


# int64 device tables of element offsets (ptr - base) / elsize, cached by value (dartool.kernels.tables)
_offset_table = _tables.offset_table


def _aligned(x: Tensor) -> Tensor:
    x = x.contiguous()
    if x.data_ptr() % 16:
        x = x.clone()
    return x


def _prep_sources(sources: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """Source 0 keeps its dtype; sources 1.. must share one dtype (the caller casts odd ones)."""
    srcs = [_aligned(s) for s in sources]
    return srcs[0], srcs[1:]


def _mod_rows(x: Tensor, B: int, D: int) -> tuple[Tensor, int]:
    """A [B, D] (or [B, 1, D]) modulation (shift, scale) as (tensor, row stride) with unit column stride: a chunk
    of the adaLN output is read in place (a copy per router and pass cost ~4 us, 171 of them per XL/2 step)."""
    x2 = x.reshape(B, D)                               # a view where the layout allows
    if x2.stride(1) != 1 or x2.data_ptr() % 16 or (B > 1 and x2.stride(0) % 8):
        x2 = x2.contiguous()
    return x2, x2.stride(0) if B > 1 else D


def _query_view(q: Tensor, B: int, T: int, D: int) -> tuple[Tensor, int, int, int]:
    """(q contiguous, stride over b, stride over t, mode) with mode 0 static, 1 static_t, 2 dynamic."""
    q = q.contiguous()
    if q.dim() == 1:
        return q, 0, 0, 0
    if q.dim() == 2:  # [B, D]
        return q, D, 0, 1
    if q.shape[1] == 1:  # [B, 1, D]
        return q, D, 0, 1
    return q, T * D, D, 2


def _check(sources: Sequence[Tensor], q: Tensor) -> tuple[int, int, int]:
    if len(sources) < 1:
        raise ValueError("router needs at least one source")
    B, T, D = sources[0].shape
    rest = sources[1:]
    for s in sources:
        if s.shape != (B, T, D):
            raise ValueError(f"source shapes differ: {tuple(s.shape)} vs {(B, T, D)}")
    if rest and any(s.dtype != rest[0].dtype for s in rest):
        raise ValueError("sources 1.. must share one dtype")
    return B, T, D


def _prefix_sources(prefix: tuple, sources: Sequence[Tensor]) -> tuple:
    """With a shared prefix (partial [B, T, D], its lse [B, T] fp32) as source 0: (B, T, D, N, src0, rest, table
    base, table of the raw sources as entries 1..N-1 (entry 0 unused)). ``sources`` are the raw ones (may be
    none)."""
    pre, plam = prefix
    if not pre.dtype.is_floating_point or plam.dtype != torch.float32:
        raise ValueError("a shared prefix is a floating-point partial and a float32 log-sum-exp")
    B, T, D = pre.shape
    rest = [_aligned(s) for s in sources]
    for s in rest:
        if s.shape != (B, T, D):
            raise ValueError(f"source shapes differ: {tuple(s.shape)} vs {(B, T, D)}")
    if rest and any(s.dtype != rest[0].dtype for s in rest):
        raise ValueError("raw sources must share one dtype")
    base = rest[0] if rest else pre
    tab = _offset_table([base.data_ptr()] + [s.data_ptr() for s in rest], base.data_ptr(), base.element_size(),
                        pre.device)
    return B, T, D, 1 + len(rest), _aligned(pre), rest, base, tab


def _fwd_prepare(sources: list[Tensor], q: Tensor, g: Tensor, eps: float, want_logits: bool,
                 want_h32: bool = False, ln: "tuple | None" = None, keep_h: bool = True,
                 prefix: "tuple | None" = None) -> dict:
    """``ln`` = (shift [B, D], scale [B, D], ln_eps, y_dtype): also write y = LN(h) (1 + scale) + shift in
    y_dtype (``P["y"]``); h is then written in :func:`ln_h_dtype` (y_dtype at 16 bits unless ``LN_H`` is fp32), or,
    with ``keep_h=False``, not at all (h comes back empty, [0]; the backward recomputes it from the sources).
    ``prefix`` = (partial, lse) of a shared prefix (:mod:`prefix_triton`), read as source 0 ahead of
    ``sources`` (the raw ones); needs ``ln`` and no logits (without ``keep_h`` the backward recomputes h from
    the partial, its lse and the raw sources)."""
    if prefix is not None:
        if ln is None or want_logits or want_h32:
            raise ValueError("a shared prefix needs the LayerNorm fused in and no logits")
        B, T, D, N, src0, rest, base, tab = _prefix_sources(prefix, sources)
    else:
        B, T, D = _check(sources, q)
        N = len(sources)
        src0, rest = _prep_sources(sources)
    dev = src0.device
    out_dtype = src0.dtype if not rest else torch.promote_types(src0.dtype, rest[0].dtype)
    if ln is not None:
        shift, mscale, ln_eps, y_dtype = ln
        out_dtype = ln_h_dtype(y_dtype)
        y = _empty((B, T, D), y_dtype, dev)
        (shift, sh_sb), (mscale, sc_sb) = _mod_rows(shift, B, D), _mod_rows(mscale, B, D)
    write_h = ln is None or keep_h
    h = _empty((B, T, D) if write_h else (0,), out_dtype, dev)
    lse = _empty((B, T), torch.float32, dev)
    logits = _empty((B, T, N) if want_logits else (0,), torch.float32, dev)
    write_h32 = bool(want_h32) and out_dtype != torch.float32
    h32 = _empty((B, T, D) if write_h32 else (0,), torch.float32, dev)
    if prefix is None:
        base = rest[0] if rest else src0
        tab = _offset_table([src0.data_ptr()] + [s.data_ptr() for s in rest], base.data_ptr(), base.element_size(),
                            dev)
    qc, q_sb, q_st, _ = _query_view(q, B, T, D)
    cfg = fwd_config(N, D)
    DA, DB = _tiles(D, bool(cfg["split"]))
    if ln is None:
        y, shift, mscale, ln_eps, sh_sb, sc_sb = h, h, h, 0.0, 0, 0
    plam = prefix[1].contiguous() if prefix is not None else lse
    args = (src0, base, tab, N, qc, q_sb, q_st, g.contiguous(), h if write_h else y, h32, lse, logits,
            y, shift, mscale, float(ln_eps), sh_sb, sc_sb,
            T, float(eps), 1.0 / math.sqrt(D), src0, plam)
    meta = dict(D=D, BLOCK_R=cfg["block_r"], DA=DA, DB=DB, UNROLL=cfg["unroll"], PREFETCH=bool(cfg.get("prefetch", 0)),
                ALIGN=max(1, 16 // base.element_size()), WRITE_LOGITS=bool(want_logits), WRITE_H32=write_h32,
                LN_MOD=ln is not None, WRITE_H=write_h, VEC4=int(cfg.get("vec4", 0)), PIPE=int(cfg.get("pipe", 1)),
                PREFIX=prefix is not None, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return dict(args=args, meta=meta, grid=(triton.cdiv(T, cfg["block_r"]), B), out=(h, lse, logits, h32), y=y)


def _fwd_launch(P: dict) -> None:
    LAST_KERNELS["fwd"] = _router_fwd_kernel[P["grid"]](*P["args"], **P["meta"])


def _fwd_impl(sources: list[Tensor], q: Tensor, g: Tensor, eps: float, want_logits: bool, want_h32: bool = False):
    P = _fwd_prepare(sources, q, g, eps, want_logits, want_h32)
    _fwd_launch(P)
    return P["out"]


def _bwd_prepare(dh: Tensor, sources: list[Tensor], q: Tensor, g: Tensor, h: Tensor, lse: Tensor, eps: float,
                 slots: "Sequence | None" = None, dq_into_q: bool = False, ln: "tuple | None" = None,
                 plam: "Tensor | None" = None, pdtype: torch.dtype = torch.float32,
                 mod_dtype: "torch.dtype | None" = None, into: "tuple | None" = None,
                 ppart: "Tensor | None" = None) -> dict:
    """Allocate outputs, build the pointer tables; :func:`_bwd_launch` runs the kernel.

    ``slots`` (one per source, or None): gradient accumulators of tapped sources
    (:func:`dartool.kernels.dispatch.tap_source`). A tapped source's gradient is added in the kernel to
    the buffer its earlier readers wrote (or starts it), and no gradient is returned for it, so autograd
    does no separate add per reader. ``dq_into_q``: a per-token query the caller owns and no longer needs
    (a dynamic router's recomputed q) receives dq in place: each row's q is read before its dq is written,
    by the same program. ``ln`` = (scale [B, D], ln_eps): ``dh`` is dy, the gradient of the fused
    LayerNorm + modulate's output, and h the router output (float32 or 16-bit, :func:`ln_h_dtype`); dshift and
    dscale come back too. An empty ``h`` ([0], a forward with ``keep_h=False``): the kernel recomputes h from the
    sources and lse first.
    ``plam``: the forward read a shared prefix with this lse as source 0 (``sources`` are the raw ones); the
    kernel writes the prefix's gradients (``P["dpre"]`` [B, T, D] in ``pdtype``, the partial's; ``P["glam"]``
    [B, T], float32); with an empty ``h`` the kernel recomputes h from the prefix's partial ``ppart`` (and lse
    ``plam``) and the raw sources. ``mod_dtype``: dshift and dscale's dtype (default float32). ``into`` =
    (buffers, flags), one each per source (the compiled ``*_into`` ops, :mod:`dartool.kernels.compiled_slots`): the
    kernel writes source i's gradient into buffers[i] (flag 0) or adds it there (flag 1), and none is returned; a
    buffer the kernel cannot address directly (layout, alignment) takes the gradient through a temporary and one
    copy or add."""
    if plam is not None:
        if slots is not None or into is not None or (h.numel() == 0 and ppart is None):
            raise ValueError("a shared prefix's router takes no gradient slots, and needs h kept or its partial")
        B, T, D = dh.shape
        dpre, glam = _empty((B, T, D), pdtype, dh.device), _empty((B, T), torch.float32, dh.device)
        # source 0 of the table: the partial where the kernel recomputes h from it, else dpre standing in for it
        # (never read)
        pre = ppart if h.numel() == 0 else dpre
        _, _, _, N, src0, rest, base, tab = _prefix_sources((pre, plam), sources)
    else:
        B, T, D = _check(sources, q)
        N = len(sources)
        src0, rest = _prep_sources(sources)
    dev = src0.device
    dh = _aligned(dh)
    recompute_h = h.numel() == 0
    h = dh if recompute_h else _aligned(h)
    if slots is not None:
        live = [id(sl) for sl in slots if sl is not None]
        if len(live) != len(set(live)):        # a source listed twice: plain gradients
            slots = None
    outs, flags, returned, post = [], [], [], []
    if into is not None:
        _cslots.COUNTS["ops"] += 1
        _cslots.COUNTS["adds"] += sum(int(f) for f in into[1])
        for s, o, f in zip([src0] + rest, into[0], into[1]):
            if o.shape == s.shape and o.dtype == s.dtype and o.is_contiguous() and o.data_ptr() % 16 == 0:
                outs.append(o)
                flags.append(int(f))
            else:                                       # through a temporary: copied or added after the kernel
                t = _empty(s.shape, s.dtype, dev)
                post.append((o, t, bool(f)))
                outs.append(t)
                flags.append(0)
            returned.append(None)
    for i, s in enumerate([src0] + rest if into is None else []):
        if i == 0 and plam is not None:  # the prefix: its gradient comes out as dpre / glam
            outs.append(dpre)
            flags.append(0)
            continue
        sl = slots[i] if slots is not None else None
        if sl is not None and (sl.grad is None or (sl.grad.shape == s.shape and sl.grad.dtype == s.dtype)):
            if sl.grad is None:
                sl.grad = _empty(s.shape, s.dtype, dev)
                flags.append(0)
            else:
                flags.append(1)
            outs.append(sl.grad)
            returned.append(None)
        else:
            o = _empty(s.shape, s.dtype, dev)
            outs.append(o)
            flags.append(0)
            returned.append(o)
    if plam is None:
        base = rest[0] if rest else src0
        tab = _offset_table([src0.data_ptr()] + [s.data_ptr() for s in rest], base.data_ptr(), base.element_size(),
                            dev)
    dv0, dvrest = outs[0], outs[1:]
    obase = dvrest[0] if dvrest else dv0
    otab = _offset_table([dv0.data_ptr()] + [o.data_ptr() for o in dvrest], obase.data_ptr(), obase.element_size(),
                         dev, flags)   # entry 0 is never read (source 0 has its own pointer; with a prefix, dpre)
    qc, q_sb, q_st, mode = _query_view(q, B, T, D)
    cfg = bwd_config(N, D, dynamic=mode == 2)
    if cfg.get("rpipe", 1) > 1:
        # the row-pipelined backward: one source a step, the partials in registers unless "rslot" (a bit mask,
        # ROW_SLOTS) puts them in slots read by inline asm. Not with in-kernel accumulation (tapped sources): a
        # source listed twice would have its accumulated gradient for the next row loaded ahead of this router's
        # own store to it (ROW_PIPE_ACCUM: unless every sum has an address of its own)
        accum_ok = not any(flags) or (ROW_PIPE_ACCUM and _sums_apart(outs, flags))
        if N <= (ROW_PIPE_MAX_N if mode != 2 else DYN_ROW_PIPE_MAX_N) and accum_ok:
            rslot = int(cfg.get("rslot", 0))
            cfg = dict(cfg, unroll=1, prefetch=0, pipe=1, ln_slot=rslot & 1, part_slot=(rslot >> 1) & 1)
        else:
            cfg = dict(cfg, rpipe=1)
    if ACCUM_BWD and any(flags) and cfg.get("rpipe", 1) <= 1:
        cfg = dict(cfg, **ACCUM_BWD)
    rows = max(cfg["rows"], cfg["block_r"])
    n_tprog = triton.cdiv(T, rows)
    atomic = atomic_reduce()
    part_slot, ln_slot = bool(cfg.get("part_slot", 0)), bool(cfg.get("ln_slot", 0))
    if atomic:
        # zeroed accumulators: the query / gain one [acc_mod, D], then (LayerNorm fused) dshift and dscale [B, D]
        # in the same buffer when a finishing cast copies them out, else dscale in its own (returned tensors
        # must not alias)
        acc_mod, acc_div = acc_layout(B, n_tprog, mode == 1)
        cast = ln is not None and mod_dtype not in (None, torch.float32)
        nmod = (2 if cast else 1) * B * D if ln is not None else 0
        accbuf = torch.zeros(acc_mod * D + nmod, dtype=torch.float32, device=dev)
        acc = accbuf[:acc_mod * D]
        macc = macc2 = acc
        if ln is not None:
            macc = accbuf[acc_mod * D:acc_mod * D + B * D]
            macc2 = accbuf[acc_mod * D + B * D:] if cast else torch.zeros(B * D, dtype=torch.float32, device=dev)
    else:
        acc_mod, acc_div, acc, macc, macc2 = 1, 1, None, None, None
    # the programs' partials: reduced by the host (not atomic) or the programs' own slots (part_slot)
    part = _empty((B, n_tprog, D), torch.float32, dev) if (part_slot or not atomic) else acc
    if mode == 2:
        dq_rows = q if (dq_into_q and q.is_contiguous() and tuple(q.shape) == (B, T, D)) else _empty((B, T, D), q.dtype, dev)
    else:
        dq_rows = part
    DA, DB = _tiles(D, bool(cfg["split"]))
    if ln is not None:
        (mscale, msc_sb), ln_eps = _mod_rows(ln[0], B, D), float(ln[1])
        pmod = _empty((2, B, n_tprog, D), torch.float32, dev) if (ln_slot or not atomic) else part
    else:
        mscale, pmod, ln_eps, msc_sb = part, part, 0.0, 0
    if acc is None:
        acc = macc = macc2 = part
    args = (src0, base, tab, dv0, obase, otab, N,
            qc, q_sb, q_st, g.contiguous(),
            h, dh, lse.contiguous(),
            dq_rows, part,
            mscale, pmod, ln_eps, msc_sb,
            T, float(eps), 1.0 / math.sqrt(D), n_tprog,
            plam.contiguous() if plam is not None else lse, dpre if plam is not None else part,
            glam if plam is not None else lse, acc, acc_div, acc_mod, macc, macc2)
    meta = dict(D=D, BLOCK_R=cfg["block_r"], ROWS=rows, DA=DA, DB=DB, UNROLL=cfg["unroll"],
                PREFETCH=bool(cfg.get("prefetch", 0)),
                ALIGN=max(1, 16 // base.element_size()), OALIGN=max(1, 16 // obase.element_size()),
                DYNAMIC=mode == 2, ACCUM=any(flags), LN_MOD=ln is not None, LN_SLOT=ln_slot,
                RECOMPUTE_H=recompute_h, PART_SLOT=part_slot,
                VEC4=int(cfg.get("vec4", 0)), PIPE=int(cfg.get("pipe", 1)), PREFIX=plam is not None,
                ATOMIC=atomic, NC=N if cfg.get("rpipe", 1) > 1 else 0, RPIPE=int(cfg.get("rpipe", 1)),
                SLOT_ASM=int(cfg.get("rpipe", 1) > 1 and (ln_slot or part_slot) and dev.type == "cuda"),
                LEAN=int(cfg.get("lean", 0)),
                num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
                **({"maxnreg": int(cfg["maxnreg"])} if cfg.get("maxnreg") and dev.type == "cuda" else {}))
    return dict(args=args, meta=meta, grid=(n_tprog, B), mode=mode, part=part, dq_rows=dq_rows, q=q, g=g,
                B=B, D=D, returned=returned, post=post, pmod=pmod if ln is not None else None,
                dpre=dpre if plam is not None else None, glam=glam if plam is not None else None,
                atomic=atomic, acc=acc, acc_mod=acc_mod, mod_dtype=mod_dtype,
                macc=(macc, macc2) if ln is not None else None)


def _bwd_launch(P: dict) -> None:
    LAST_KERNELS["bwd"] = _router_bwd_kernel[P["grid"]](*P["args"], **P["meta"])


def _bwd_finish(P: dict):
    """(gradients returned per source, dq, dg) after :func:`_bwd_launch`; with the LayerNorm fused in also
    ``P["dmod"]`` = (dshift, dscale) [B, D] (float32, or the ``mod_dtype`` given to :func:`_bwd_prepare`)."""
    q, g, part, mode, B, D = P["q"], P["g"], P["part"], P["mode"], P["B"], P["D"]
    mod_dtype = P["mod_dtype"]
    for o, t, add in P["post"]:                                        # given buffers the kernel could not write
        o.add_(t.view(o.shape)) if add else o.copy_(t.view(o.shape))
    if P["atomic"]:
        dq = P["dq_rows"] if mode == 2 else torch.empty(q.shape, dtype=q.dtype, device=q.device)
        dg = torch.empty(g.shape, dtype=g.dtype, device=g.device)
        macc = P["macc"]
        cast = macc is not None and mod_dtype not in (None, torch.float32)
        dmod = tuple(torch.empty((B, D), dtype=mod_dtype, device=q.device) for _ in range(2)) if cast else None
        finish_qg(P["acc"], P["acc_mod"], q, g, dq, dg, D, mode, macc[0] if cast else None, dmod, B)
        if macc is not None:
            P["dmod"] = dmod if cast else (macc[0].view(B, D), macc[1].view(B, D))
        return P["returned"], dq, dg
    if P["pmod"] is not None:
        pm = P["pmod"]                                                 # [2, B, n_tprog, D]
        dmod = (pm[0].sum(1), pm[1].sum(1))                            # dshift, dscale [B, D]
        P["dmod"] = dmod if mod_dtype in (None, torch.float32) else tuple(d.to(mod_dtype) for d in dmod)
    gf = g.float()
    if mode == 0:
        U = part.sum((0, 1))                                           # [D]
        dq = (gf * U).to(q.dtype)
        dg = (q.float() * U).to(g.dtype)
    elif mode == 1:
        Ub = part.sum(1)                                               # [B, D]
        dq = (gf * Ub).reshape(q.shape).to(q.dtype)
        dg = (q.float().reshape(B, D) * Ub).sum(0).to(g.dtype)
    else:
        dq = P["dq_rows"]
        dg = part.sum((0, 1)).to(g.dtype)
    return P["returned"], dq, dg


def _bwd_impl(dh: Tensor, sources: list[Tensor], q: Tensor, g: Tensor, h: Tensor, lse: Tensor, eps: float,
              slots: "Sequence | None" = None):
    P = _bwd_prepare(dh, sources, q, g, h, lse, eps, slots)
    _bwd_launch(P)
    return _bwd_finish(P)


def _fwd_ln_impl(sources: list[Tensor], q: Tensor, g: Tensor, eps: float, shift: Tensor, mscale: Tensor,
                 ln_eps: float, y_dtype: torch.dtype, keep_h: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """The router with the following LayerNorm + modulate fused in: (y, h in :func:`ln_h_dtype` (or [0] without
    ``keep_h``: the backward recomputes it), lse)."""
    P = _fwd_prepare(sources, q, g, eps, False, False, ln=(shift, mscale, ln_eps, y_dtype), keep_h=keep_h)
    _fwd_launch(P)
    h, lse, _, _ = P["out"]
    return P["y"], h, lse


def _bwd_ln_impl(dy: Tensor, sources: list[Tensor], q: Tensor, g: Tensor, h: Tensor, lse: Tensor, eps: float,
                 mscale: Tensor, ln_eps: float, slots: "Sequence | None" = None):
    """Backward of :func:`_fwd_ln_impl`: (dv per source, dq, dg, dshift [B, D], dscale [B, D])."""
    P = _bwd_prepare(dy, sources, q, g, h, lse, eps, slots, ln=(mscale, ln_eps))
    _bwd_launch(P)
    dvs, dq, dg = _bwd_finish(P)
    return (dvs, dq, dg) + P["dmod"]                                   # dshift, dscale [B, D] fp32


# --------------------------------------------------------------------------------------------------
# Custom ops + autograd
# --------------------------------------------------------------------------------------------------


@torch.library.custom_op("dartool::router_fwd", mutates_args=())
def router_fwd(sources: list[Tensor], q: Tensor, g: Tensor, eps: float, want_logits: bool,
               want_h32: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """h [B,T,D], lse [B,T] fp32, logits [B,T,N] fp32 (or [0] unless want_logits), and an fp32 copy of
    h for the backward (or [0]: only written when h is 16-bit and want_h32)."""
    return _fwd_impl(list(sources), q, g, eps, want_logits, want_h32)


@router_fwd.register_fake
def _router_fwd_fake(sources, q, g, eps, want_logits, want_h32):
    s0 = sources[0]
    B, T, D = s0.shape
    dt = s0.dtype
    for s in sources[1:]:
        dt = torch.promote_types(dt, s.dtype)
    N = len(sources)
    h32 = (B, T, D) if (want_h32 and dt != torch.float32) else (0,)
    return (s0.new_empty((B, T, D), dtype=dt), s0.new_empty((B, T), dtype=torch.float32),
            s0.new_empty((B, T, N) if want_logits else (0,), dtype=torch.float32),
            s0.new_empty(h32, dtype=torch.float32))


@torch.library.custom_op("dartool::router_bwd", mutates_args=())
def router_bwd(dh: Tensor, sources: list[Tensor], q: Tensor, g: Tensor, h: Tensor, lse: Tensor,
               eps: float) -> tuple[list[Tensor], Tensor, Tensor]:
    """(dv per source, dq, dg)."""
    return _bwd_impl(dh, list(sources), q, g, h, lse, eps)


@router_bwd.register_fake
def _router_bwd_fake(dh, sources, q, g, h, lse, eps):
    # the real op returns contiguous gradients whatever the inputs' strides
    return ([s.new_empty(s.shape) for s in sources], q.new_empty(q.shape), g.new_empty(g.shape))


@torch.library.custom_op("dartool::router_bwd_into", mutates_args=("into",))
def router_bwd_into(dh: Tensor, sources: list[Tensor], q: Tensor, g: Tensor, h: Tensor, lse: Tensor, eps: float,
                    into: list[Tensor], accumulate: list[int]) -> tuple[Tensor, Tensor]:
    """:func:`router_bwd` with the sources' gradients written into ``into`` (one buffer each), or added to it
    where ``accumulate`` says so (:mod:`dartool.kernels.compiled_slots`): (dq, dg)."""
    P = _bwd_prepare(dh, list(sources), q, g, h, lse, eps, into=(into, accumulate))
    _bwd_launch(P)
    _, dq, dg = _bwd_finish(P)
    return dq, dg


@router_bwd_into.register_fake
def _router_bwd_into_fake(dh, sources, q, g, h, lse, eps, into, accumulate):
    return q.new_empty(q.shape), g.new_empty(g.shape)


def _setup_context(ctx, inputs, output):
    sources, q, g, eps, want_logits, want_h32 = inputs
    h, lse, logits, h32 = output
    ctx.eps = eps
    ctx.mark_non_differentiable(lse, logits, h32)
    ctx.set_materialize_grads(False)
    # delta = dh . h needs h at full precision: the fp32 copy when h itself is 16-bit
    ctx.save_for_backward(q, g, h32 if h32.numel() else h, lse, *sources)
    _cslots.note_readers(ctx, sources)


def _backward(ctx, dh, dlse, dlogits, dh32):
    q, g, h, lse, *sources = ctx.saved_tensors
    if dh is None:
        return _cslots.skip(ctx), None, None, None, None, None
    into, acc = _cslots.buffers(ctx, sources)
    if into is None:
        dvs, dq, dg = router_bwd(dh, sources, q, g, h, lse, ctx.eps)
    else:
        dvs, (dq, dg) = None, router_bwd_into(dh, sources, q, g, h, lse, ctx.eps, into, acc)
    return _cslots.hand_back(ctx, into, dvs), dq, dg, None, None, None


router_fwd.register_autograd(_backward, setup_context=_setup_context)


def _project(v_prev: Tensor, W: Tensor, q_dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """q = v_prev W^T computed in ``q_dtype`` (as autocast would), with the cast operands: (q, v_prev, W)."""
    vq, Wq = v_prev.to(q_dtype), W.to(q_dtype)
    return torch.nn.functional.linear(vq, Wq), vq, Wq                               # q [B, T, D]


def _prev_index(sources: Sequence[Tensor], v_prev: Tensor, q_dtype: torch.dtype) -> int:
    """Where v_prev sits among a dynamic router's sources when its projection gradient can be added into that
    source's gradient in place (same tensor, one dtype for the source, q and W), else -1."""
    for i, s in enumerate(sources):
        if s is v_prev:
            return i if s.dtype == q_dtype else -1
    return -1


def _dynamic_bwd(dh: Tensor, sources: list[Tensor], v_prev: Tensor, W: Tensor, g: Tensor, h: Tensor, lse: Tensor,
                 eps: float, q_dtype: torch.dtype, slots=None, want_v_prev: bool = True, want_W: bool = True,
                 prev_index: int = -1, ln: "tuple | None" = None, into: "tuple | None" = None):
    """Backward of a dynamic router that saved v_prev and W, not q: recompute q, run the router backward, then
    the projection's (dv per source, dv_prev, dW, dg, dmod); the eager autograd.Functions and the compiled ops
    share it.

    v_prev is normally the router's last source (``prev_index``, see :func:`_prev_index`): then dq W is added
    in place into that source's gradient (one GEMM with beta = 1; in its slot's buffer when the source is
    tapped) and dv_prev is None, so no separate [B, T, D] gradient waits for autograd to sum it.
    ``ln`` = (scale [B, D], ln_eps): the router ran with the LayerNorm + modulate fused in, ``dh`` is dy and
    ``h`` the float32 router output; dmod = (dshift, dscale) [B, D] float32 (else None). ``into``: the compiled
    ``*_into`` ops' gradient buffers (see :func:`_bwd_prepare`); v_prev's part goes into its source's buffer."""
    q, vq, Wq = _project(v_prev, W, q_dtype)
    P = _bwd_prepare(dh, list(sources), q, g, h, lse, eps, slots, dq_into_q=DQ_OVER_Q, ln=ln, into=into)
    _bwd_launch(P)
    dvs, dq, dg = _bwd_finish(P)
    del q, P["q"]
    dmod = P["dmod"] if ln is not None else None                                        # dshift, dscale [B, D]
    D = dq.shape[-1]
    dW = torch.matmul(dq.reshape(-1, D).t(), vq.reshape(-1, D)).to(W.dtype) if want_W else None    # [D, D]
    dv_prev = None
    if want_v_prev:
        acc = None
        if prev_index >= 0:
            acc = dvs[prev_index]
            if acc is None and into is not None:
                acc = into[0][prev_index]          # the compiled op's buffer for that source, just written
            elif acc is None and slots is not None and slots[prev_index] is not None:
                acc = slots[prev_index].grad       # the tapped source's accumulator, just written by the kernel
        if acc is not None and acc.dtype == dq.dtype == Wq.dtype and acc.is_contiguous():
            acc.view(-1, D).addmm_(dq.reshape(-1, D), Wq)                           # += dq W  [B*T, D]
        else:
            dv_prev = torch.matmul(dq, Wq).to(v_prev.dtype)                         # [B, T, D]
    return dvs, dv_prev, dW, dg, dmod


@torch.library.custom_op("dartool::router_fwd_dynamic", mutates_args=())
def router_fwd_dynamic(sources: list[Tensor], v_prev: Tensor, W: Tensor, g: Tensor, eps: float,
                       q_dtype: torch.dtype, prev_index: int) -> tuple[Tensor, Tensor, Tensor]:
    """A dynamic router, q = v_prev W^T (in ``q_dtype``, as autocast would compute it), for torch.compile: the
    query is recomputed in the backward instead of saved (the compiled counterpart of
    ``_FusedDynamicRouterFn``). Returns h, lse and the fp32 copy of h (or [0]). ``prev_index``: see
    :func:`_dynamic_bwd`; it has no default on purpose: the dispatcher drops arguments equal to their default,
    and torch 2.11's custom-op autograd then expects one gradient fewer than the backward returns."""
    q, _, _ = _project(v_prev, W, q_dtype)                                           # [B, T, D]
    h, lse, _, h32 = _fwd_impl(list(sources), q, g, eps, False, True)
    return h, lse, h32


@router_fwd_dynamic.register_fake
def _router_fwd_dynamic_fake(sources, v_prev, W, g, eps, q_dtype, prev_index):
    h, lse, _, h32 = _router_fwd_fake(sources, v_prev, g, eps, False, True)
    return h, lse, h32


def _setup_context_dynamic(ctx, inputs, output):
    sources, v_prev, W, g, eps, q_dtype, prev_index = inputs
    h, lse, h32 = output
    ctx.eps, ctx.q_dtype, ctx.prev_index = eps, q_dtype, prev_index
    ctx.mark_non_differentiable(lse, h32)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(v_prev, W, g, h32 if h32.numel() else h, lse, *sources)
    _cslots.note_readers(ctx, sources)


@torch.library.custom_op("dartool::router_bwd_dynamic", mutates_args=())
def router_bwd_dynamic(dh: Tensor, sources: list[Tensor], v_prev: Tensor, W: Tensor, g: Tensor, h: Tensor,
                       lse: Tensor, eps: float, q_dtype: torch.dtype,
                       prev_index: int) -> tuple[list[Tensor], Tensor, Tensor, Tensor]:
    """(dv per source, dv_prev, dW, dg) of ``router_fwd_dynamic``, recomputing q = v_prev W^T first. One opaque op
    on purpose: were the recomputation traced into the backward graph, AOTAutograd would see that it needs no
    gradient input, move it into the forward and save q, which is what this op exists to avoid. With
    ``prev_index`` >= 0 the projection's gradient is inside that source's and dv_prev is empty ([0])."""
    dvs, dv_prev, dW, dg, _ = _dynamic_bwd(dh, sources, v_prev, W, g, h, lse, eps, q_dtype, prev_index=prev_index)
    if dv_prev is None:
        dv_prev = v_prev.new_empty((0,))
    return dvs, dv_prev, dW, dg


@router_bwd_dynamic.register_fake
def _router_bwd_dynamic_fake(dh, sources, v_prev, W, g, h, lse, eps, q_dtype, prev_index):
    return ([s.new_empty(s.shape) for s in sources], v_prev.new_empty((0,) if prev_index >= 0 else v_prev.shape),
            W.new_empty(W.shape), g.new_empty(g.shape))


@torch.library.custom_op("dartool::router_bwd_dynamic_into", mutates_args=("into",))
def router_bwd_dynamic_into(dh: Tensor, sources: list[Tensor], v_prev: Tensor, W: Tensor, g: Tensor, h: Tensor,
                            lse: Tensor, eps: float, q_dtype: torch.dtype, prev_index: int, into: list[Tensor],
                            accumulate: list[int]) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`router_bwd_dynamic` with the sources' gradients into ``into`` as in :func:`router_bwd_into`:
    (dv_prev, dW, dg)."""
    _, dv_prev, dW, dg, _ = _dynamic_bwd(dh, sources, v_prev, W, g, h, lse, eps, q_dtype, prev_index=prev_index,
                                         into=(into, accumulate))
    if dv_prev is None:
        dv_prev = v_prev.new_empty((0,))
    return dv_prev, dW, dg


@router_bwd_dynamic_into.register_fake
def _router_bwd_dynamic_into_fake(dh, sources, v_prev, W, g, h, lse, eps, q_dtype, prev_index, into, accumulate):
    return _router_bwd_dynamic_fake(dh, sources, v_prev, W, g, h, lse, eps, q_dtype, prev_index)[1:]


def _backward_dynamic(ctx, dh, dlse, dh32):
    v_prev, W, g, h, lse, *sources = ctx.saved_tensors
    if dh is None:
        return _cslots.skip(ctx), None, None, None, None, None, None
    into, acc = _cslots.buffers(ctx, sources)
    if into is None:
        dvs, dv_prev, dW, dg = router_bwd_dynamic(dh, sources, v_prev, W, g, h, lse, ctx.eps, ctx.q_dtype,
                                                  ctx.prev_index)
    else:
        dvs, (dv_prev, dW, dg) = None, router_bwd_dynamic_into(dh, sources, v_prev, W, g, h, lse, ctx.eps,
                                                               ctx.q_dtype, ctx.prev_index, into, acc)
    return (_cslots.hand_back(ctx, into, dvs), (None if ctx.prev_index >= 0 else dv_prev), dW, dg,
            None, None, None)


router_fwd_dynamic.register_autograd(_backward_dynamic, setup_context=_setup_context_dynamic)


@torch.library.custom_op("dartool::router_ln_fwd", mutates_args=())
def router_ln_fwd(sources: list[Tensor], q: Tensor, g: Tensor, eps: float, shift: Tensor, scale: Tensor,
                  ln_eps: float, y_dtype: torch.dtype, keep_h: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Router + LayerNorm + modulate for torch.compile: y [B,T,D] in y_dtype, h [B,T,D] (:func:`ln_h_dtype`; [0] without
    ``keep_h``: the backward recomputes it), lse [B,T] fp32."""
    return _fwd_ln_impl(list(sources), q, g, eps, shift, scale, ln_eps, y_dtype, keep_h)


@router_ln_fwd.register_fake
def _router_ln_fwd_fake(sources, q, g, eps, shift, scale, ln_eps, y_dtype, keep_h):
    B, T, D = sources[0].shape
    s0 = sources[0]
    return (s0.new_empty((B, T, D), dtype=y_dtype),
            s0.new_empty((B, T, D) if keep_h else (0,), dtype=ln_h_dtype(y_dtype)),
            s0.new_empty((B, T), dtype=torch.float32))


@torch.library.custom_op("dartool::router_ln_bwd", mutates_args=())
def router_ln_bwd(dy: Tensor, sources: list[Tensor], q: Tensor, g: Tensor, h: Tensor, lse: Tensor, eps: float,
                  scale: Tensor, ln_eps: float) -> tuple[list[Tensor], Tensor, Tensor, Tensor, Tensor]:
    """(dv per source, dq, dg, dshift, dscale) of ``router_ln_fwd``."""
    dvs, dq, dg, dshift, dscale = _bwd_ln_impl(dy, list(sources), q, g, h, lse, eps, scale, ln_eps)
    return dvs, dq, dg, dshift.to(scale.dtype), dscale.to(scale.dtype)


@router_ln_bwd.register_fake
def _router_ln_bwd_fake(dy, sources, q, g, h, lse, eps, scale, ln_eps):
    return ([s.new_empty(s.shape) for s in sources], q.new_empty(q.shape), g.new_empty(g.shape),
            scale.new_empty(scale.shape), scale.new_empty(scale.shape))


@torch.library.custom_op("dartool::router_ln_bwd_into", mutates_args=("into",))
def router_ln_bwd_into(dy: Tensor, sources: list[Tensor], q: Tensor, g: Tensor, h: Tensor, lse: Tensor, eps: float,
                       scale: Tensor, ln_eps: float, into: list[Tensor],
                       accumulate: list[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`router_ln_bwd` with the sources' gradients into ``into`` as in :func:`router_bwd_into`: (dq, dg,
    dshift, dscale)."""
    P = _bwd_prepare(dy, list(sources), q, g, h, lse, eps, ln=(scale, ln_eps), into=(into, accumulate))
    _bwd_launch(P)
    _, dq, dg = _bwd_finish(P)
    dshift, dscale = P["dmod"]
    return dq, dg, dshift.to(scale.dtype), dscale.to(scale.dtype)


@router_ln_bwd_into.register_fake
def _router_ln_bwd_into_fake(dy, sources, q, g, h, lse, eps, scale, ln_eps, into, accumulate):
    return _router_ln_bwd_fake(dy, sources, q, g, h, lse, eps, scale, ln_eps)[1:]


def _setup_context_ln(ctx, inputs, output):
    sources, q, g, eps, shift, scale, ln_eps, y_dtype, keep_h = inputs
    y, h, lse = output
    ctx.eps, ctx.ln_eps = eps, ln_eps
    ctx.mark_non_differentiable(h, lse)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(q, g, scale, h, lse, *sources)
    _cslots.note_readers(ctx, sources)


def _backward_ln(ctx, dy, dh, dlse):
    q, g, scale, h, lse, *sources = ctx.saved_tensors
    if dy is None:
        return _cslots.skip(ctx), None, None, None, None, None, None, None, None
    into, acc = _cslots.buffers(ctx, sources)
    if into is None:
        dvs, dq, dg, dshift, dscale = router_ln_bwd(dy, sources, q, g, h, lse, ctx.eps, scale, ctx.ln_eps)
    else:
        dvs, (dq, dg, dshift, dscale) = None, router_ln_bwd_into(dy, sources, q, g, h, lse, ctx.eps, scale,
                                                                 ctx.ln_eps, into, acc)
    return _cslots.hand_back(ctx, into, dvs), dq, dg, None, dshift, dscale, None, None, None


router_ln_fwd.register_autograd(_backward_ln, setup_context=_setup_context_ln)


class _FusedRouterLNFn(torch.autograd.Function):
    """Eager path of the router with the LayerNorm + modulate fused in (in-kernel source-gradient slots)."""

    @staticmethod
    def forward(ctx, q, g, eps, shift, scale, ln_eps, y_dtype, keep_h, slots, *sources):
        y, h, lse = _fwd_ln_impl(list(sources), q, g, eps, shift, scale, ln_eps, y_dtype, keep_h)
        ctx.eps, ctx.ln_eps, ctx.slots = eps, ln_eps, slots
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(q, g, scale, h, lse, *sources)
        return y

    @staticmethod
    def backward(ctx, dy):
        q, g, scale, h, lse, *sources = ctx.saved_tensors
        if dy is None:
            return (None,) * (9 + len(sources))
        dvs, dq, dg, dshift, dscale = _bwd_ln_impl(dy, sources, q, g, h, lse, ctx.eps, scale, ctx.ln_eps, ctx.slots)
        return (dq, dg, None, dshift.to(scale.dtype), dscale.to(scale.dtype), None, None, None, None, *dvs)


def _y_dtype(sources: Sequence[Tensor]) -> torch.dtype:
    """The dtype of the fused LayerNorm + modulate's output: what autocast gives the next GEMM inside an autocast
    region, else the sources' (promoted) dtype."""
    dev = sources[0].device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return sources[0].dtype if len(sources) == 1 else torch.promote_types(sources[0].dtype, sources[1].dtype)


def fused_router_ln(sources: Sequence[Tensor], q: Tensor, g: Tensor, eps: float, shift: Tensor, scale: Tensor,
                    ln_eps: float) -> Tensor:
    """modulate(LayerNorm(router(sources, q)), shift, scale) in one kernel per pass: y [B, T, D].

    shift, scale: [B, D] (adaLN). The LayerNorm has no affine (DiT's). y comes out in the autocast dtype inside
    an autocast region (what the next GEMM reads), else in h's dtype; h itself is kept (in :func:`ln_h_dtype`)
    for the backward only, or recomputed there from the sources (:func:`keep_h_for`). Differentiable in every source, q,
    g, shift and scale."""
    sources = _as_kernel_sources(sources)
    y_dtype = _y_dtype(sources)
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or g.requires_grad or shift.requires_grad or
                                              scale.requires_grad or any(s.requires_grad for s in sources))
    keep_h = needs_grad and keep_h_for(len(sources), sources[0].shape[-1], dynamic=q.dim() == 3 and q.shape[1] > 1)
    if torch.compiler.is_compiling() or not EAGER_AUTOGRAD_FN:
        return router_ln_fwd(sources, q, g, float(eps), shift, scale, float(ln_eps), y_dtype, keep_h)[0]
    if not needs_grad:
        return _fwd_ln_impl(sources, q, g, float(eps), shift, scale, float(ln_eps), y_dtype, False)[0]
    return _FusedRouterLNFn.apply(q, g, float(eps), shift, scale, float(ln_eps), y_dtype, keep_h,
                                  _slots_of(sources), *sources)


def _query_dtype(v_prev: Tensor, W: Tensor) -> torch.dtype:
    """The dtype F.linear(v_prev, W) would produce here (the autocast dtype inside an autocast region)."""
    dev = v_prev.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return torch.promote_types(v_prev.dtype, W.dtype)


class _FusedRouterFn(torch.autograd.Function):
    """Eager path: the same kernels without the custom-op wrapper's host overhead (~0.3 ms a call).
    Under torch.compile the custom op (``router_fwd`` with its registered autograd) is used instead."""

    @staticmethod
    def forward(ctx, q, g, eps, want_logits, want_h32, slots, *sources):
        h, lse, logits, h32 = _fwd_impl(list(sources), q, g, eps, want_logits, want_h32)
        ctx.eps = eps
        ctx.slots = slots
        ctx.mark_non_differentiable(lse, logits)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(q, g, h32 if h32.numel() else h, lse, *sources)
        return h, lse, logits

    @staticmethod
    def backward(ctx, dh, dlse, dlogits):
        q, g, h, lse, *sources = ctx.saved_tensors
        if dh is None:
            return (None,) * (6 + len(sources))
        dvs, dq, dg = _bwd_impl(dh, sources, q, g, h, lse, ctx.eps, ctx.slots)
        return (dq, dg, None, None, None, None, *dvs)


def _as_kernel_sources(sources: Sequence[Tensor]) -> list[Tensor]:
    """Contiguous sources (v_0 = patch embedding is a transposed view; under torch.compile the graph dedupes the
    repeated copies, in eager mode tap_source already made it contiguous), sources 1.. in one dtype."""
    sources = [s if s.is_contiguous() else s.contiguous() for s in sources]
    if len(sources) > 1:
        dt = sources[1].dtype
        sources = sources[:1] + [s if s.dtype == dt else s.to(dt) for s in sources[1:]]
    return sources


def _slots_of(sources: Sequence[Tensor]) -> "list | None":
    """The in-kernel gradient slots of tapped sources (dispatch.tap_source), or None when none is tapped."""
    slots = [getattr(s, "_dar_slot", None) for s in sources]
    return slots if any(sl is not None for sl in slots) else None


class _FusedDynamicRouterFn(torch.autograd.Function):
    """Eager path of a *dynamic* router, q = v_prev W^T (no bias): the query is recomputed in the backward
    instead of being saved, which drops one [B, T, D] tensor per router from the training step's memory (the
    projection's input v_prev is a source, saved anyway). q is computed in the dtype autocast gives it in the
    forward (``q_dtype``), so the backward reproduces it exactly (``_dynamic_bwd``, shared with the compiled op)."""

    @staticmethod
    def forward(ctx, v_prev, W, g, eps, q_dtype, prev_index, slots, *sources):
        q, _, _ = _project(v_prev, W, q_dtype)                                      # [B, T, D]
        h, lse, _, h32 = _fwd_impl(list(sources), q, g, eps, False, True)
        ctx.eps, ctx.q_dtype, ctx.prev_index, ctx.slots = eps, q_dtype, prev_index, slots
        ctx.mark_non_differentiable(lse)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(v_prev, W, g, h32 if h32.numel() else h, lse, *sources)
        return h

    @staticmethod
    def backward(ctx, dh):
        v_prev, W, g, h, lse, *sources = ctx.saved_tensors
        if dh is None:
            return (None,) * (7 + len(sources))
        dvs, dvp, dW, dg, _ = _dynamic_bwd(dh, sources, v_prev, W, g, h, lse, ctx.eps, ctx.q_dtype, ctx.slots,
                                           ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.prev_index)
        return (dvp, dW, dg, None, None, None, None, *dvs)


def fused_dynamic_router(sources: Sequence[Tensor], v_prev: Tensor, W: Tensor, g: Tensor, eps: float = 1e-6,
                         save_q: bool = False):
    """The fused router with a dynamic query q = v_prev W^T, recomputing q in the backward when training
    (eager: ``_FusedDynamicRouterFn``; torch.compile: the ``router_fwd_dynamic`` custom op). Without
    gradients it is :func:`fused_router` of the projected query. ``save_q``: this router keeps q for the
    backward instead (as for every router with ``RECOMPUTE_DYNAMIC_QUERY`` off; see ``dispatch.saves_query``)."""
    needs_grad = torch.is_grad_enabled() and (v_prev.requires_grad or W.requires_grad or g.requires_grad or
                                              any(s.requires_grad for s in sources))
    if not needs_grad or not RECOMPUTE_DYNAMIC_QUERY or save_q:
        return fused_router(sources, _project(v_prev, W, _query_dtype(v_prev, W))[0], g, eps)   # q saved
    sources = _as_kernel_sources(sources)
    q_dtype = _query_dtype(v_prev, W)
    prev = _prev_index(sources, v_prev, q_dtype) if FOLD_PREV_GRAD else -1
    if torch.compiler.is_compiling() or not EAGER_AUTOGRAD_FN:
        return router_fwd_dynamic(sources, v_prev, W, g, float(eps), q_dtype, prev)[0]
    return _FusedDynamicRouterFn.apply(v_prev, W, g, float(eps), q_dtype, prev, _slots_of(sources), *sources)


@torch.library.custom_op("dartool::router_ln_fwd_dynamic", mutates_args=())
def router_ln_fwd_dynamic(sources: list[Tensor], v_prev: Tensor, W: Tensor, g: Tensor, eps: float, shift: Tensor,
                          scale: Tensor, ln_eps: float, y_dtype: torch.dtype, q_dtype: torch.dtype,
                          prev_index: int, keep_h: bool) -> tuple[Tensor, Tensor, Tensor]:
    """A dynamic router (q = v_prev W^T, recomputed in the backward) with the LayerNorm + modulate fused in, for
    torch.compile: y [B,T,D] in y_dtype, h [B,T,D] (for the backward, :func:`ln_h_dtype`), lse [B,T] fp32. No
    argument has a default (see :func:`router_fwd_dynamic`)."""
    q, _, _ = _project(v_prev, W, q_dtype)                                           # [B, T, D]
    return _fwd_ln_impl(list(sources), q, g, eps, shift, scale, ln_eps, y_dtype, keep_h)


@router_ln_fwd_dynamic.register_fake
def _router_ln_fwd_dynamic_fake(sources, v_prev, W, g, eps, shift, scale, ln_eps, y_dtype, q_dtype, prev_index,
                                keep_h):
    return _router_ln_fwd_fake(sources, v_prev, g, eps, shift, scale, ln_eps, y_dtype, keep_h)


@torch.library.custom_op("dartool::router_ln_bwd_dynamic", mutates_args=())
def router_ln_bwd_dynamic(dy: Tensor, sources: list[Tensor], v_prev: Tensor, W: Tensor, g: Tensor, h: Tensor,
                          lse: Tensor, eps: float, scale: Tensor, ln_eps: float, q_dtype: torch.dtype,
                          prev_index: int) -> tuple[list[Tensor], Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dv per source, dv_prev, dW, dg, dshift, dscale) of ``router_ln_fwd_dynamic``; one opaque op for the reason
    given at :func:`router_bwd_dynamic`. With ``prev_index`` >= 0 dv_prev is empty ([0])."""
    dvs, dv_prev, dW, dg, (dshift, dscale) = _dynamic_bwd(dy, sources, v_prev, W, g, h, lse, eps, q_dtype,
                                                          prev_index=prev_index, ln=(scale, ln_eps))
    if dv_prev is None:
        dv_prev = v_prev.new_empty((0,))
    return dvs, dv_prev, dW, dg, dshift.to(scale.dtype), dscale.to(scale.dtype)


@router_ln_bwd_dynamic.register_fake
def _router_ln_bwd_dynamic_fake(dy, sources, v_prev, W, g, h, lse, eps, scale, ln_eps, q_dtype, prev_index):
    dvs, dv_prev, dW, dg = _router_bwd_dynamic_fake(dy, sources, v_prev, W, g, h, lse, eps, q_dtype, prev_index)
    return dvs, dv_prev, dW, dg, scale.new_empty(scale.shape), scale.new_empty(scale.shape)


@torch.library.custom_op("dartool::router_ln_bwd_dynamic_into", mutates_args=("into",))
def router_ln_bwd_dynamic_into(dy: Tensor, sources: list[Tensor], v_prev: Tensor, W: Tensor, g: Tensor, h: Tensor,
                               lse: Tensor, eps: float, scale: Tensor, ln_eps: float, q_dtype: torch.dtype,
                               prev_index: int, into: list[Tensor],
                               accumulate: list[int]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """:func:`router_ln_bwd_dynamic` with the sources' gradients into ``into`` as in :func:`router_bwd_into`:
    (dv_prev, dW, dg, dshift, dscale)."""
    _, dv_prev, dW, dg, (dshift, dscale) = _dynamic_bwd(dy, sources, v_prev, W, g, h, lse, eps, q_dtype,
                                                        prev_index=prev_index, ln=(scale, ln_eps),
                                                        into=(into, accumulate))
    if dv_prev is None:
        dv_prev = v_prev.new_empty((0,))
    return dv_prev, dW, dg, dshift.to(scale.dtype), dscale.to(scale.dtype)


@router_ln_bwd_dynamic_into.register_fake
def _router_ln_bwd_dynamic_into_fake(dy, sources, v_prev, W, g, h, lse, eps, scale, ln_eps, q_dtype, prev_index,
                                     into, accumulate):
    return _router_ln_bwd_dynamic_fake(dy, sources, v_prev, W, g, h, lse, eps, scale, ln_eps, q_dtype,
                                       prev_index)[1:]


def _setup_context_ln_dynamic(ctx, inputs, output):
    sources, v_prev, W, g, eps, shift, scale, ln_eps, y_dtype, q_dtype, prev_index, keep_h = inputs
    y, h, lse = output
    ctx.eps, ctx.ln_eps, ctx.q_dtype, ctx.prev_index = eps, ln_eps, q_dtype, prev_index
    ctx.mark_non_differentiable(h, lse)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(v_prev, W, g, scale, h, lse, *sources)
    _cslots.note_readers(ctx, sources)


def _backward_ln_dynamic(ctx, dy, dh, dlse):
    v_prev, W, g, scale, h, lse, *sources = ctx.saved_tensors
    if dy is None:
        return _cslots.skip(ctx), None, None, None, None, None, None, None, None, None, None, None
    into, acc = _cslots.buffers(ctx, sources)
    if into is None:
        dvs, dv_prev, dW, dg, dshift, dscale = router_ln_bwd_dynamic(dy, sources, v_prev, W, g, h, lse, ctx.eps,
                                                                     scale, ctx.ln_eps, ctx.q_dtype, ctx.prev_index)
    else:
        dvs, (dv_prev, dW, dg, dshift, dscale) = None, router_ln_bwd_dynamic_into(
            dy, sources, v_prev, W, g, h, lse, ctx.eps, scale, ctx.ln_eps, ctx.q_dtype, ctx.prev_index, into, acc)
    return (_cslots.hand_back(ctx, into, dvs), (None if ctx.prev_index >= 0 else dv_prev), dW, dg, None, dshift, dscale,
            None, None, None, None, None)


router_ln_fwd_dynamic.register_autograd(_backward_ln_dynamic, setup_context=_setup_context_ln_dynamic)


class _FusedDynamicRouterLNFn(torch.autograd.Function):
    """Eager path of a dynamic router with the LayerNorm + modulate fused in: q recomputed in the backward (as in
    ``_FusedDynamicRouterFn``), source gradients accumulated in their slots (as in ``_FusedRouterLNFn``)."""

    @staticmethod
    def forward(ctx, v_prev, W, g, eps, shift, scale, ln_eps, y_dtype, q_dtype, prev_index, keep_h, slots, *sources):
        q, _, _ = _project(v_prev, W, q_dtype)                                      # [B, T, D]
        y, h, lse = _fwd_ln_impl(list(sources), q, g, eps, shift, scale, ln_eps, y_dtype, keep_h)
        ctx.eps, ctx.ln_eps, ctx.q_dtype, ctx.prev_index, ctx.slots = eps, ln_eps, q_dtype, prev_index, slots
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(v_prev, W, g, scale, h, lse, *sources)
        return y

    @staticmethod
    def backward(ctx, dy):
        v_prev, W, g, scale, h, lse, *sources = ctx.saved_tensors
        if dy is None:
            return (None,) * (12 + len(sources))
        dvs, dvp, dW, dg, (dshift, dscale) = _dynamic_bwd(
            dy, sources, v_prev, W, g, h, lse, ctx.eps, ctx.q_dtype, ctx.slots, ctx.needs_input_grad[0],
            ctx.needs_input_grad[1], ctx.prev_index, ln=(scale, ctx.ln_eps))
        return (dvp, dW, dg, None, dshift.to(scale.dtype), dscale.to(scale.dtype), None, None, None, None, None,
                None, *dvs)


def fused_dynamic_router_ln(sources: Sequence[Tensor], v_prev: Tensor, W: Tensor, g: Tensor, eps: float,
                            shift: Tensor, scale: Tensor, ln_eps: float, save_q: bool = False) -> Tensor:
    """modulate(LayerNorm(router(sources, q = v_prev W^T)), shift, scale) with the query recomputed in the
    backward (:func:`fused_dynamic_router`) and the LayerNorm + modulate in the router's kernels
    (:func:`fused_router_ln`): y [B, T, D]. Differentiable in every source, v_prev, W, g, shift and scale.
    ``save_q``: keep q for the backward instead (``dispatch.saves_query``)."""
    needs_grad = torch.is_grad_enabled() and (v_prev.requires_grad or W.requires_grad or g.requires_grad or
                                              shift.requires_grad or scale.requires_grad or
                                              any(s.requires_grad for s in sources))
    if not needs_grad or not RECOMPUTE_DYNAMIC_QUERY or save_q:
        return fused_router_ln(sources, _project(v_prev, W, _query_dtype(v_prev, W))[0], g, eps, shift, scale,
                               ln_eps)                                                  # q saved
    sources = _as_kernel_sources(sources)
    y_dtype = _y_dtype(sources)
    q_dtype = _query_dtype(v_prev, W)
    prev = _prev_index(sources, v_prev, q_dtype) if FOLD_PREV_GRAD else -1
    keep_h = keep_h_for(len(sources), sources[0].shape[-1], dynamic=True)
    if torch.compiler.is_compiling() or not EAGER_AUTOGRAD_FN:
        return router_ln_fwd_dynamic(sources, v_prev, W, g, float(eps), shift, scale, float(ln_eps), y_dtype,
                                     q_dtype, prev, keep_h)[0]
    return _FusedDynamicRouterLNFn.apply(v_prev, W, g, float(eps), shift, scale, float(ln_eps), y_dtype, q_dtype,
                                         prev, keep_h, _slots_of(sources), *sources)


def fused_router(sources: Sequence[Tensor], q: Tensor, g: Tensor, eps: float = 1e-6,
                 return_alpha: bool = False):
    """h = sum_i softmax_i(q . RMSNorm_g(v_i) / sqrt(D)) v_i, fused; differentiable in every source, q, g.

    Sources 1.. are cast to one dtype if they differ (source 0 may keep its own, e.g. fp32 v_0 under
    bf16 autocast). With ``return_alpha`` it also returns alpha [B, T, N] (fp32, no gradient).
    """
    sources = _as_kernel_sources(sources)
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or g.requires_grad or
                                              any(s.requires_grad for s in sources))
    if torch.compiler.is_compiling() or not EAGER_AUTOGRAD_FN:
        h, lse, logits, _ = router_fwd(sources, q, g, float(eps), bool(return_alpha), needs_grad)
    elif needs_grad:
        h, lse, logits = _FusedRouterFn.apply(q, g, float(eps), bool(return_alpha), True, _slots_of(sources), *sources)
    else:
        h, lse, logits, _ = _fwd_impl(sources, q, g, float(eps), bool(return_alpha), False)
    if return_alpha:
        return h, torch.exp(logits.detach() - lse.detach().unsqueeze(-1))
    return h


EAGER_AUTOGRAD_FN = not env_flag("DARTOOL_ROUTER_CUSTOM_OP_EAGER", False)
# dynamic routers recompute q = W v_prev in the backward instead of saving it (DARTOOL_RECOMPUTE_DYNAMIC_QUERY=0: save)
RECOMPUTE_DYNAMIC_QUERY = env_flag("DARTOOL_RECOMPUTE_DYNAMIC_QUERY", True)
# (save_q: a single router saves it; the model asks dispatch.saves_query, DARTOOL_SAVE_QUERY_LAST)
# ... and add the projection's gradient dq W into v_prev's source gradient in place (=0: a separate dv_prev)
FOLD_PREV_GRAD = env_flag("DARTOOL_FOLD_PREV_GRAD", True)
# ... and the kernel writes dq into a fresh buffer, not over the recomputed q (DARTOOL_DQ_OVER_Q=1: over q, as
# before session 30). Same kernel, same arguments otherwise, yet writing over q made every dynamic backward launch
# ~20 % slower (H200, SiT-XL/2 b32 compiled, the step's 57 launches replayed both ways: 18.3 ms over q, 14.7 ms
# fresh; benchmarks/launch_inputs.py, results/s30_b). The fresh buffer is one [B, T, D] in q's dtype, alive from
# the kernel to the projection's GEMMs.
DQ_OVER_Q = env_flag("DARTOOL_DQ_OVER_Q", False)
# LN-fused routers keep h for the backward in the LayerNorm output's dtype (bf16 under bf16 autocast; session 29),
# or in float32 as before (DARTOOL_ROUTER_H=fp32). Safe at 16 bits because there h feeds only the LayerNorm: its
# backward's dh is orthogonal to h - mean(h) and to 1, so delta = dh . h is ~0 and the cancellation that made a
# bf16 h unusable for routers without the LayerNorm (session 1: dq / dg errors 3e-2) cannot happen; what is left
# is xhat rounded to bf16 in the LayerNorm's backward (relative 2^-9). Halves h's memory and traffic.
def _ln_h_checked(mode: str) -> str:
    mode = str(mode).strip().lower()
    if mode not in ("auto", "fp32"):
        raise ValueError(f"DARTOOL_ROUTER_H={mode!r}: use auto (h in the LayerNorm output's dtype) or fp32")
    return mode


LN_H = _ln_h_checked(_cslots.ln_h_mode())   # the environment's (this module has no LN_H yet while it loads)


def ln_h_dtype(y_dtype: torch.dtype) -> torch.dtype:
    """The dtype an LN-fused router keeps its output h in for the backward (``LN_H``): ``auto``, the LayerNorm
    output's dtype ``y_dtype`` (float32 where that is wider than 16 bits); ``fp32``, always float32."""
    if LN_H == "fp32" or y_dtype not in (torch.bfloat16, torch.float16):
        return torch.float32
    return y_dtype


def set_ln_h(mode: str) -> None:
    """Set :data:`LN_H` (``auto`` or ``fp32``) for routers run from now on, and the compile caches' key with it."""
    global LN_H
    LN_H = _ln_h_checked(mode)
    _cslots._tag_caches()


# LN-fused routers: keep h (see LN_H) for the backward, or recompute it there from the sources (keep_h_for), where
# they have at most RECOMPUTE_H_MAX_N sources (None: per width and query, recompute_h_max; DARTOOL_RECOMPUTE_H_MAX=N)
RECOMPUTE_H = os.environ.get("DARTOOL_RECOMPUTE_H", "auto")
def _recompute_h_max_env() -> "int | None":
    v = os.environ.get("DARTOOL_RECOMPUTE_H_MAX", "").strip()
    if not v:
        return None
    if not v.isdigit():
        raise ValueError(f"DARTOOL_RECOMPUTE_H_MAX={v!r}: use a number of sources (>= 0), or unset it for the "
                         "per-width rule")
    return int(v)


RECOMPUTE_H_MAX_N: "int | None" = _recompute_h_max_env()
# ... and routers over a shared prefix (prefix_triton) by the same rule, their partial counted as a source
# (DARTOOL_RECOMPUTE_H_PREFIX=0: they always keep h, as before session 24)
RECOMPUTE_H_PREFIX = env_flag("DARTOOL_RECOMPUTE_H_PREFIX", True)


def recompute_h_max(D: int, dynamic: bool = False) -> int:
    """The most sources a router may have and still recompute h (``RECOMPUTE_H`` auto). 3 (session 6: no more
    traffic than keeping h, 8 bytes a row against 2N + 2); 2 for static / static_t routers at D >= 1024, whose
    row-pipelined backward pays more for the extra pass over 3 sources than the bytes it saves: routers + prefix
    passes per SiT-XL/2 static c4 step 10.46 -> 10.29 ms (b32, H200), 12.34 -> 12.24 (b32, H100), 23.36 -> 23.20
    (b64, H100), while SiT-B/2 b256 keeps 3 (16.50 against 16.67 ms with 2; benchmarks/results/s24_b-*, s24_c-*)."""
    if RECOMPUTE_H_MAX_N is not None:
        return int(RECOMPUTE_H_MAX_N)
    return 2 if D >= 1024 and not dynamic else 3


def keep_h_for(N: int, D: int, prefix: bool = False, dynamic: bool = False) -> bool:
    """Whether a router with the LayerNorm fused in keeps its output h (:func:`ln_h_dtype`) for the backward, or lets
    the backward recompute it from its N sources and lse (one more pass over the sources; no [B, T, D] h kept). Per row
    element, keeping h costs 8 bytes of traffic (written, read back) and 4 bytes of memory until the backward in
    float32, 4 and 2 in bf16 (:data:`LN_H`, the default since session 29; the thresholds below were tuned with float32);
    recomputing it costs one more read of the sources, 2N + 2 bytes (bf16 sources, fp32 v_0). ``auto`` recomputes up to
    :func:`recompute_h_max` sources (width D; ``dynamic`` queries); ``all`` everywhere (least memory); ``none`` never.
    Set with DARTOOL_RECOMPUTE_H or by assigning ``RECOMPUTE_H``. ``prefix``: a router over a shared prefix (its N
    counts the partial; bf16, so its recompute reads 2N bytes a row), unless ``RECOMPUTE_H_PREFIX`` is off."""
    if RECOMPUTE_H not in ("auto", "all", "none"):
        raise ValueError(f"DARTOOL_RECOMPUTE_H={RECOMPUTE_H!r}: use auto, all or none")
    if prefix and not RECOMPUTE_H_PREFIX:
        return True
    if RECOMPUTE_H == "all":
        return False
    if RECOMPUTE_H == "none":
        return True
    return N > recompute_h_max(D, dynamic)


def kernel_resources() -> dict:
    """Registers / spills / shared memory of the last launched kernels (compiled mode only)."""
    out = {}
    for k, v in LAST_KERNELS.items():
        out[k] = {a: getattr(v, a, None) for a in ("n_regs", "n_spills", "shared")}
    return out
