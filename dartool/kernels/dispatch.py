"""Fused or reference router: the decision, made per call.

The fused Triton router (:mod:`dartool.kernels.router_triton`) is used when

* it is enabled (default; ``DARTOOL_FUSED=0`` in the environment at import, :func:`set_fused` or the
  :func:`fused` context manager turn it off),
* Triton imports and the sources are CUDA tensors on one device (or, for CPU development only, Triton's
  interpreter is on and :func:`fused` was entered with ``allow_cpu=True``),
* the sources are N >= 1 tensors of one shape [B, T, D] with D equal to the router's width, floating
  point, and the query is [D], [B, 1, D] or [B, T, D],
* nobody listens on the router's ``hook_alpha`` tap (module forward hooks or pre-hooks on it, or global
  module hooks). A hook that may replace alpha therefore gets the exact reference path, alpha tensor
  and all. Read-only taps (``tapped(model, readers={"routers.*.hook_alpha": fn})``, what ``dartool
  probe`` uses) keep the fused kernel: it runs with ``return_alpha=True`` and hands its alpha
  [B, T, N] (fp32) to the readers.

Otherwise ``Router.forward`` runs its PyTorch reference body, unchanged.

:func:`tap_source` (called by ``DARStream`` for every source it records) wraps a source in an identity
autograd node with a gradient slot, so that fused routers reading it add their gradients into one buffer
inside the backward kernel instead of returning one tensor each for autograd to sum. It is a no-op
unless the fused path can run (CUDA, enabled, gradients on, eager mode); ``DARTOOL_TAP_SOURCES=0`` turns
it off. Gradients reaching the source through ordinary autograd (reference routers, the dynamic query,
probes) are added by the tap node, so the result is the same either way.
"""
from __future__ import annotations

import contextlib
import functools
import os
from typing import Iterator, Sequence

import torch

from ..envflags import env_flag
from . import compiled_slots as _cslots

_state = {
    "enabled": env_flag("DARTOOL_FUSED", True),
    "allow_cpu": False,
}
_triton_ok: "bool | None" = None
_triton_err: str = ""


def triton_available() -> bool:
    """Whether Triton and the fused router module import (cached)."""
    global _triton_ok, _triton_err
    if _triton_ok is None:
        try:
            from . import router_triton  # noqa: F401

            _triton_ok = True
        except Exception as e:  # ImportError, or a broken Triton install
            _triton_ok, _triton_err = False, f"{type(e).__name__}: {e}"
    return _triton_ok


def fused_available() -> bool:
    """Fused kernels can run here: Triton imports and CUDA is present."""
    return torch.cuda.is_available() and triton_available()


def why_not_fused() -> str:
    """One line saying why the fused router cannot run here ('' if it can)."""
    if not _state["enabled"]:
        return "disabled (DARTOOL_FUSED=0 or set_fused(False))"
    if not torch.cuda.is_available():
        return "no CUDA device: the fused router needs CUDA (the PyTorch reference runs instead)"
    if not triton_available():
        return f"Triton unavailable ({_triton_err})"
    return ""


def set_fused(enabled: bool) -> None:
    _state["enabled"] = bool(enabled)


def fused_enabled() -> bool:
    return _state["enabled"]


@contextlib.contextmanager
def fused(enabled: bool = True, allow_cpu: bool = False) -> Iterator[None]:
    """Temporarily switch the fused router on or off (``allow_cpu``: interpreter development only)."""
    old = dict(_state)
    _state["enabled"], _state["allow_cpu"] = bool(enabled), bool(allow_cpu)
    try:
        yield
    finally:
        _state.update(old)


def _probed(router) -> bool:
    hp = getattr(router, "hook_alpha", None)
    if hp is not None and (hp._forward_hooks or hp._forward_pre_hooks):
        return True
    from torch.nn.modules import module as _m

    return bool(_m._global_forward_hooks or _m._global_forward_pre_hooks)


def use_fused(router, sources: Sequence[torch.Tensor], q: torch.Tensor) -> bool:
    """True when ``router(sources, q)`` should run the fused kernel (see the module docstring)."""
    if not _state["enabled"] or not sources:
        return False
    s0 = sources[0]
    if s0.is_cuda:
        if not triton_available():
            return False
        dev = s0.device
        if any(s.device != dev for s in sources) or q.device != dev:
            return False
    elif not (_state["allow_cpu"] and os.environ.get("TRITON_INTERPRET") == "1" and triton_available()):
        return False
    if s0.dim() != 3:
        return False
    B, T, D = s0.shape
    if D != getattr(router, "dim", D) or any(s.shape != s0.shape for s in sources):
        return False
    if not all(s.is_floating_point() and s.dtype != torch.float64 for s in sources):
        return False
    if q.dtype == torch.float64:
        return False
    if not (q.shape == (D,) or q.shape == (B, 1, D) or q.shape == (B, T, D)):
        return False
    return not _probed(router)


def fused_router(sources: Sequence[torch.Tensor], q: torch.Tensor, g: torch.Tensor, eps: float = 1e-6,
                 return_alpha: bool = False):
    """The fused router (imports Triton on first use)."""
    from .router_triton import fused_router as _fr

    return _fr(sources, q, g, eps, return_alpha=return_alpha)


def fused_dynamic_router(sources: Sequence[torch.Tensor], v_prev: torch.Tensor, W: torch.Tensor, g: torch.Tensor,
                         eps: float = 1e-6, save_q: bool = False):
    """The fused router with the dynamic query q = v_prev W^T recomputed in the backward (``save_q``: saved;
    imports Triton)."""
    from .router_triton import fused_dynamic_router as _fdr

    return _fdr(sources, v_prev, W, g, eps, save_q=save_q)


def fused_router_ln(sources: Sequence[torch.Tensor], q: torch.Tensor, g: torch.Tensor, eps: float,
                    shift: torch.Tensor, scale: torch.Tensor, ln_eps: float) -> torch.Tensor:
    """modulate(LayerNorm(router(sources, q)), shift, scale), fused (imports Triton on first use)."""
    from .router_triton import fused_router_ln as _frl

    return _frl(sources, q, g, eps, shift, scale, ln_eps)


def fused_dynamic_router_ln(sources: Sequence[torch.Tensor], v_prev: torch.Tensor, W: torch.Tensor, g: torch.Tensor,
                            eps: float, shift: torch.Tensor, scale: torch.Tensor, ln_eps: float,
                            save_q: bool = False) -> torch.Tensor:
    """modulate(LayerNorm(router(sources, q = v_prev W^T)), shift, scale), fused, q recomputed in the backward
    (``save_q``: saved; imports Triton on first use)."""
    from .router_triton import fused_dynamic_router_ln as _fdrl

    return _fdrl(sources, v_prev, W, g, eps, shift, scale, ln_eps, save_q=save_q)


def shared_prefix(sources: Sequence[torch.Tensor], qs: torch.Tensor, gs: torch.Tensor, eps: float):
    """The states of K static / static_t routers over their shared prefix ``sources``, in one pass:
    ([partial_k [B, T, D]], lse [K, B, T] fp32) for :func:`fused_router_ln_prefix` (imports Triton); the partials
    in the model's compute dtype (:func:`partial_dtype`)."""
    from .prefix_triton import shared_prefix as _sp

    return _sp(sources, qs, gs, eps)


def fused_router_ln_prefix(part: torch.Tensor, lam: torch.Tensor, sources: Sequence[torch.Tensor],
                           q: torch.Tensor, g: torch.Tensor, eps: float, shift: torch.Tensor, scale: torch.Tensor,
                           ln_eps: float, y_dtype: torch.dtype) -> torch.Tensor:
    """:func:`fused_router_ln` over a shared prefix (its state from :func:`shared_prefix`) + the raw ``sources``."""
    from .prefix_triton import fused_router_ln_prefix as _frp

    return _frp(part, lam, sources, q, g, eps, shift, scale, ln_eps, y_dtype)


def y_dtype_of(sources: Sequence[torch.Tensor]) -> torch.dtype:
    """The dtype a LayerNorm-fused router over these sources writes (the autocast dtype inside autocast)."""
    from .router_triton import _y_dtype

    return _y_dtype(sources)


# Chunked models with static / static_t queries and the LayerNorm fused in: the routers of a chunk read its summaries
# once between them (prefix_triton) where the chunk has at least SHARED_PREFIX_MIN summaries (below that the
# partials cost about as many bytes as the summaries they replace) and the width is below SHARED_PREFIX_MAX_D.
# Measured (H200, 2026-11-26, benchmarks/KERNEL_NOTES.md sessions 9 and 10): compiled SiT-B/2 b256 static c4
# 1.108 -> 1.081, static_t 1.109 -> 1.093 (paired); SiT-XL/2 b128 static c4 1.160 -> 1.124 with session 10's
# two-pass backward (fp32 partials).
# DARTOOL_SHARED_PREFIX=0 turns it off; SiT.share_prefixes decides per model.
SHARED_PREFIX = env_flag("DARTOOL_SHARED_PREFIX", True)
SHARED_PREFIX_MIN = int(os.environ.get("DARTOOL_SHARED_PREFIX_MIN", "3") or 3)
SHARED_PREFIX_MAX_D = 1 << 30
# At most this many routers share one prefix pass; a longer chunk (S = 8) runs its routers in groups of this many,
# each group one pass over the summaries (0: the whole chunk in one pass). The two-pass prefix backward that makes
# sharing pay at D = 1152 unrolls up to 4 queries; with 8 the one-pass backward ran instead, at 5 ms a launch:
# compiled SiT-XL/2 b128 static c8 stood at 1.246 against c4's 1.097 (H200, 2026-11-26,
# benchmarks/results/s14_b_profile_xl_c4_c8-NVIDIA-H200-20261126.txt: 50 ms of _prefix_bwd_kernel a step).
SHARED_PREFIX_GROUP = int(os.environ.get("DARTOOL_SHARED_PREFIX_GROUP", "4") or 0)


def prefix_groups(routers: Sequence[int], size: "int | None" = None) -> list[list[int]]:
    """The routers of a chunk, split into the groups that share one prefix pass each (``SHARED_PREFIX_GROUP``
    routers at most; ``size`` overrides it, 0 = one group). Groups of one router are dropped: that router makes
    its own pass."""
    g = SHARED_PREFIX_GROUP if size is None else size
    routers = list(routers)
    if g <= 0:
        g = max(1, len(routers))
    groups = [routers[i:i + g] for i in range(0, len(routers), g)]
    return [grp for grp in groups if len(grp) >= 2]


# The shared prefixes' partials are stored in the model's compute dtype ("auto": autocast's inside autocast, else the
# last summary's), so a bf16 model keeps them in bf16: half the bytes of fp32 in the four passes that write or read
# them or their gradients, with the rounding of any bf16 activation (compiled SiT-XL/2 b128 static c4 1.124 -> 1.099,
# benchmarks/KERNEL_NOTES.md session 10). DARTOOL_PREFIX_PARTIAL=fp32 keeps them in float32.
PREFIX_PARTIAL = os.environ.get("DARTOOL_PREFIX_PARTIAL", "auto")


def partial_dtype(sources: Sequence[torch.Tensor]) -> torch.dtype:
    """The dtype of a shared prefix's partials over these summaries (``PREFIX_PARTIAL``)."""
    if PREFIX_PARTIAL == "fp32":
        return torch.float32
    if PREFIX_PARTIAL != "auto":
        raise ValueError(f"DARTOOL_PREFIX_PARTIAL must be auto or fp32, got {PREFIX_PARTIAL!r}")
    dev = sources[0].device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return sources[-1].dtype


def shares_prefix(D: int, summaries: int, forced: "bool | None" = None) -> bool:
    """Whether a chunk of width D with this many summaries shares its prefix (``forced``: a model's own choice,
    ``SiT.share_prefixes``; True ignores the width, not the minimum of summaries)."""
    if summaries < SHARED_PREFIX_MIN:
        return False
    if forced is not None:
        return forced
    return SHARED_PREFIX and D < SHARED_PREFIX_MAX_D


# Dynamic routers on the fused path recompute q = W v_prev in the backward, except the last ones of a model (the
# head's included), which save it: a memory budget between the two (q is one [B, T, D] of the autocast dtype per
# router, alive at the backward's peak). DARTOOL_SAVE_QUERY_LAST: ``auto`` (default), ``all``, or a number K of
# routers (0: every router recomputes; DARTOOL_RECOMPUTE_DYNAMIC_QUERY=0: none does, whatever this says).
# ``auto`` (session 29): with the LayerNorm fused in and h kept in bf16 (router_triton.LN_H), the memory h gives
# back pays for the queries: every router saves q at widths >= 1024, the last two thirds below (17 of SiT-B/2's
# 25), none with h in float32 or the LayerNorm unfused (session 28's default). Paired under CUDA graphs on H200s
# (benchmarks/results/s29_b-*, s29_c-*): SiT-XL/2 b32 dynamic c4 1.425 -> 1.324, memory 1.058 -> 1.119; SiT-B/2
# b256 1.308 -> 1.279 (last 17), memory 1.116, where all 25 (1.268) needed 1.169 of the residual's memory.
SAVE_QUERY_LAST = os.environ.get("DARTOOL_SAVE_QUERY_LAST", "auto")


def save_query_count(n_routers: int, D: int) -> int:
    """How many of a model's n_routers dynamic routers (the last ones) save q for the backward (``SAVE_QUERY_LAST``;
    width D). Asked once per dynamic router and step: the answer is cached per setting."""
    return _save_query_count(str(SAVE_QUERY_LAST), bool(FUSE_LN), _cslots.ln_h_mode(), n_routers, D)


@functools.lru_cache(maxsize=64)
def _save_query_count(setting: str, fuse_ln: bool, ln_h: str, n_routers: int, D: int) -> int:
    v = setting.strip().lower()
    if v in ("", "auto"):
        if not fuse_ln or ln_h == "fp32":
            return 0
        return n_routers if D >= 1024 else -(-2 * n_routers // 3)
    if v == "all":
        return n_routers
    try:
        k = int(v)
    except ValueError:
        k = -1
    if k < 0:
        raise ValueError(f"DARTOOL_SAVE_QUERY_LAST={setting!r}: use auto, all or a number of routers (>= 0)")
    return min(k, n_routers)


def saves_query(r: int, n_routers: int, D: int) -> bool:
    """Whether dynamic router r (0-based, of n_routers, width D) is one of the last :func:`save_query_count`, which
    save q for the backward on the fused path (the reference path saves what autograd saves anyway)."""
    return r >= n_routers - save_query_count(n_routers, D)


def hooks_idle(points: Sequence[torch.nn.Module]) -> bool:
    """True when no tap point listens (no readers, no module forward hooks or pre-hooks, no global module
    hooks): then a fused path may skip materialising the tensors those points would show."""
    from torch.nn.modules import module as _m

    if _m._global_forward_hooks or _m._global_forward_pre_hooks:
        return False
    return not any(getattr(p, "_readers", None) or p._forward_hooks or p._forward_pre_hooks for p in points)


# Routers compute the following LayerNorm + adaLN modulate inside their kernels (when the fused path runs and no
# tap listens; every query kind, the head's router too), eager and compiled, at every width; DARTOOL_FUSE_LN=0
# turns it off. Under compile it once stopped at D = 1024: with the backward's dshift / dscale partials in
# registers the fused SiT-XL/2 step was slower (1.260 vs 1.235 separate); with them in memory slots (ln_slot) it
# is faster (1.214; H200, 2026-11-26, benchmarks/KERNEL_NOTES.md sessions 5-6).
FUSE_LN = env_flag("DARTOOL_FUSE_LN", True)


# --------------------------------------------------------------------------------------------------
# Gradient accumulation for DAR sources read by several fused routers
# --------------------------------------------------------------------------------------------------


class GradSlot:
    """Where the fused routers' backward kernels accumulate one source's gradient."""

    __slots__ = ("grad",)

    def __init__(self) -> None:
        self.grad: "torch.Tensor | None" = None


class _SourceTap(torch.autograd.Function):
    """Identity on a DAR source. Fused routers that read the tapped tensor add their gradient for it into
    its slot inside the backward kernel (and return none to autograd); this node hands the sum on, plus
    whatever reached it through ordinary autograd (reference routers, the dynamic query, probes)."""

    @staticmethod
    def forward(ctx, v, slot):
        ctx.slot = slot
        ctx.set_materialize_grads(False)
        # an alias; or one contiguous copy (v_0 is a transposed view) instead of one per reading router
        return v.view_as(v) if v.is_contiguous() else v.contiguous()

    @staticmethod
    def backward(ctx, g):
        acc, ctx.slot.grad = ctx.slot.grad, None
        if acc is None:
            return g, None
        if g is not None:
            acc = acc + g
        return acc, None


def tap_source(v: torch.Tensor) -> torch.Tensor:
    """Mark a DAR source for in-kernel gradient accumulation (a no-op unless the fused router will run:
    CUDA, enabled, gradients on, eager mode). Semantics are unchanged: the result is an alias of v (a
    contiguous copy if v is not contiguous)."""
    on_device = v.is_cuda or (_state["allow_cpu"] and os.environ.get("TRITON_INTERPRET") == "1")
    if not (_state["enabled"] and on_device and v.requires_grad and torch.is_grad_enabled() and TAP_SOURCES):
        return v
    if torch.compiler.is_compiling() or not triton_available():
        # no in-kernel accumulation under torch.compile (the graph must stay functional), but one contiguous
        # copy of v_0 here instead of one inside every router that reads it
        return v if v.is_contiguous() else v.contiguous()
    slot = GradSlot()
    out = _SourceTap.apply(v, slot)
    out._dar_slot = slot
    return out


TAP_SOURCES = env_flag("DARTOOL_TAP_SOURCES", True)
