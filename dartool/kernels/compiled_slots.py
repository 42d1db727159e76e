"""In-kernel gradient accumulation for the routers' custom ops under torch.compile.

In eager training a DAR source tapped by :func:`dartool.kernels.dispatch.tap_source` carries a slot, and every
fused router that reads it adds its gradient into the slot's one buffer inside the backward kernel. Under
torch.compile the routers are custom ops whose backward used to return one fresh gradient per source; Inductor
then summed a source's gradients in one fused kernel after the *last* of them arrived, so with S = 1 (every
sublayer output a source of every later router) about half of all router gradients were alive at once
(``benchmarks/compiled_grad_lifetimes.py``; compiled c1 peaked at 1.35x / 1.93x the residual's memory).

Here the same accumulation is expressed inside the traced graph. While AOTAutograd traces the joint graph, each
router op's ``setup_context`` counts the router ops that read each source (keyed by the traced tensor). In the
backward, a router whose sources are still shared calls its ``*_into`` op (router_triton) with one buffer per
source, a *mutated* argument, and a flag each: start the buffer, or add to the running sum that the routers which
ran before left there (in the kernel, as in eager mode). The router that brings a source's count to zero (its
first reader in the forward, the last in the backward) hands the sum to autograd through :func:`grad_out`, an
opaque copy; the others return no gradient for it. Inductor re-inplaces the mutations (no copies), so each
source has one gradient buffer from its first gradient to its last. Routers whose sources are no longer shared
call the plain op, which returns fresh gradients.

Only where it pays (:data:`MIN_READERS` and :data:`MIN_PENDING`: graphs where many gradients would wait for
Inductor's sums, measured) and only while tracing under torch.compile: the counts live in Python and are read once
per trace, and the graph that results is a fixed function. ``DARTOOL_COMPILED_ACCUM=0`` turns it off (every router
returns fresh gradients and Inductor sums them, as before session 16); ``DARTOOL_COMPILED_ACCUM_MIN`` and
``DARTOOL_COMPILED_ACCUM_PENDING`` set the thresholds. The float64 check's ``compiled-accum`` part compares both
settings against the eager model.
"""
from __future__ import annotations

import os
import sys
import weakref
from typing import Sequence

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensor
from torch._subclasses.functional_tensor import FunctionalTensor

from ..envflags import env_flag

ENABLED = env_flag("DARTOOL_COMPILED_ACCUM", True)

# The version of the router ops' schemas and autograd formulas (router_triton, prefix_triton): bump it whenever
# either changes. torch.compile's caches (AOTAutograd's and Inductor's, on disk across processes) key a compiled
# graph on its forward graph, which holds only the forward ops: without this a backward compiled by an older
# dartool (or with accumulation switched the other way) is loaded and calls the backward ops with the old
# arguments. The version and the switch go into ``torch.compiler.config.cache_key_tag`` (kept beside any tag of
# the user's), and so do the thresholds (:data:`MIN_READERS`, :data:`MIN_PENDING`), which decide the backward too,
# and the dtype LN-fused routers keep h in (``router_triton.LN_H``; 3: h 16-bit by default, session 29).
OPS_VERSION = 3


def ln_h_mode() -> str:
    """``router_triton.LN_H`` (the dtype LN-fused routers keep h in; it shapes the compiled graphs too): read from
    that module once loaded (it imports this one, so not before; no Triton needed here), else from the
    environment variable it reads."""
    rt = sys.modules.get(__name__.rsplit(".", 1)[0] + ".router_triton")
    return getattr(rt, "LN_H", None) or os.environ.get("DARTOOL_ROUTER_H", "auto").strip().lower() or "auto"


def _tag_caches() -> None:
    import torch.compiler.config as cc

    own = f"dartool-ops-{OPS_VERSION}-accum{int(ENABLED)}-min{MIN_READERS}-pend{MIN_PENDING}-h{ln_h_mode()}"
    old = getattr(cc, "cache_key_tag", None)
    if old is None:                        # a torch without the tag: its caches cannot be told apart
        return
    tags = [t for t in old.split(",") if t and not t.startswith("dartool-ops-")]
    cc.cache_key_tag = ",".join(tags + [own])


def set_enabled(on: bool) -> None:
    """Switch in-graph accumulation for graphs compiled from now on (and the compile caches' key with it)."""
    global ENABLED
    ENABLED = bool(on)
    _tag_caches()


def _threshold(n: int, what: str) -> int:
    if int(n) < 1:
        raise ValueError(f"the {what} threshold must be >= 1, got {n}")
    return int(n)


def set_min_readers(n: int) -> None:
    """Set :data:`MIN_READERS` for graphs compiled from now on (and the compile caches' key with it)."""
    global MIN_READERS
    MIN_READERS = _threshold(n, "reader")
    _tag_caches()


def set_min_pending(n: int) -> None:
    """Set :data:`MIN_PENDING` for graphs compiled from now on (and the compile caches' key with it)."""
    global MIN_PENDING
    MIN_PENDING = _threshold(n, "pending-gradient")
    _tag_caches()


# calls of the ``*_into`` backward ops and the source gradients they added to a running sum (the float64 check
# reads them to tell that accumulation happened)
COUNTS = {"ops": 0, "adds": 0}


# Accumulate only in graphs where some source has at least this many reading router ops (the shared-prefix
# kernels' reads not counted). Measured (session 16, benchmarks/KERNEL_NOTES.md): with S = 1 (v_0 read by 25
# router ops in SiT-B/2, 57 in SiT-XL/2) accumulation cut the compiled peak memory from 1.35x to 1.17x (B/2) and
# 1.79x to 1.13x (XL/2) the residual's at about the same time; with S = 4 (9 router ops read v_0, the rest of the
# reads go through the shared prefixes) the memory was the same either way and the paired step 1.5 % (static) and
# 3 % (dynamic) slower with it: Inductor's one fused sum per source is nearly free when few gradients wait. S = 8
# (17 readers) was not measured with it and stays below the threshold.
MIN_READERS = int(os.environ.get("DARTOOL_COMPILED_ACCUM_MIN", "20"))

# ... and only where, summed over the group's sources, at least this many gradients would wait for Inductor's sum
# (a source read by k router ops: k - 1 of them). MIN_READERS alone took dynamic c4 for S = 1: a dynamic router
# reads v_0 and the chunk summaries itself (a per-token query shares no prefix), so v_0 has 25 (B/2) / 57 (XL/2)
# readers, but the rest of the sources few. Measured (session 28, H200, under CUDA graphs): SiT-B/2 b256
# dynamic c4, 105 waiting, accumulation cost time at the same memory (step 1.382 on / 1.344 off over the residual,
# memory 1.099 both; session 16: paired 1.368 / 1.328 on the H100); SiT-XL/2 b32 dynamic c4, 465 waiting, the same
# time and less memory with it (paired 1.422 / 1.417, memory 1.105 / 1.139). S = 1: 300 (B/2), 1596 (XL/2).
MIN_PENDING = int(os.environ.get("DARTOOL_COMPILED_ACCUM_PENDING", "200"))
_tag_caches()


class _Group:
    """The sources whose readers overlap (in practice one traced graph): accumulation is decided for them
    together, by the most readers any of them has and the gradients that would wait for a sum."""

    __slots__ = ("members", "most")

    def __init__(self) -> None:
        self.members: list = []
        self.most = 0

    @property
    def pending(self) -> int:
        """Summed over the sources: their readers but one (the gradients Inductor would keep until the sum)."""
        return sum(max(m.readers - 1, 0) for m in self.members)


class _Reads:
    """One traced source: how many router ops still have to run their backward for it, and the gradient that the
    ones which ran have accumulated (a traced tensor, mutated by each backward op in turn)."""

    __slots__ = ("ref", "left", "readers", "acc", "group")

    def __init__(self, t: Tensor) -> None:
        self.ref = weakref.ref(t)
        self.left = 0
        self.readers = 0           # router ops that read it (counted in the forward; ``left`` counts down after)
        self.acc: "Tensor | None" = None
        self.group = _Group()
        self.group.members.append(self)

    @property
    def on(self) -> bool:
        return self.group.most >= MIN_READERS and self.group.pending >= MIN_PENDING


def _merge(reads: Sequence[_Reads]) -> None:
    """One group for all sources of one router (the larger group takes in the others)."""
    groups = {id(r.group): r.group for r in reads}
    if len(groups) < 2:
        return
    big = max(groups.values(), key=lambda g: len(g.members))
    for g in groups.values():
        if g is not big:
            for m in g.members:
                m.group = big
            big.members += g.members
            big.most = max(big.most, g.most)


_READS: dict[int, _Reads] = {}


def _reads_of(t: Tensor) -> _Reads:
    r = _READS.get(id(t))
    if r is None or r.ref() is not t:
        if len(_READS) > 4096:          # traced tensors of finished traces: drop the dead entries
            for k in [k for k, v in _READS.items() if v.ref() is None]:
                del _READS[k]
        r = _READS[id(t)] = _Reads(t)
    return r


def active(sources: Sequence[Tensor] = ()) -> bool:
    """True while torch.compile traces (AOTAutograd's tracing runs on fake tensors; torch 2.11's
    ``torch.compiler.is_compiling()`` is False there, session 16) and accumulation is on."""
    if not ENABLED:
        return False
    return torch.compiler.is_compiling() or any(isinstance(s, (FakeTensor, FunctionalTensor)) for s in sources[:1])


def note_readers(ctx, sources: Sequence[Tensor]) -> None:
    """In a router op's ``setup_context``: count this router as a reader of each of its sources (a source listed
    twice by one router is left out: each position gets a gradient of its own)."""
    reads: list = [None] * len(sources)
    if active(sources):
        ids = [id(s) for s in sources]
        for i, s in enumerate(sources):
            if ids.count(id(s)) == 1 and s.requires_grad:
                reads[i] = _reads_of(s)
                reads[i].left += 1
                reads[i].readers += 1
        live = [r for r in reads if r is not None]
        if live:
            _merge(live)
            g = live[0].group
            g.most = max(g.most, max(r.left for r in live))
    ctx.reads = reads


def buffers(ctx, sources: Sequence[Tensor]) -> "tuple[list[Tensor] | None, list[int]]":
    """In a router's backward: (None, []) when none of its sources is shared with a router still to run its
    backward and none has a running sum: the plain op returns fresh gradients. Otherwise one buffer per source
    for the ``*_into`` op and a flag each, 1 where the op adds to a running sum, 0 where it writes a new buffer."""
    if not any(r is not None and r.on and (r.acc is not None or r.left > 1) for r in ctx.reads):
        return None, []
    into, flags = [], []
    for s, r in zip(sources, ctx.reads):
        if r is not None and r.acc is not None:
            into.append(r.acc)
            flags.append(1)
        else:
            into.append(s.new_empty(s.shape))
            flags.append(0)
    return into, flags


def hand_back(ctx, into: "Sequence[Tensor] | None", fresh: "Sequence[Tensor] | None") -> list:
    """After the backward op ran: the gradients to return to autograd, one per source (None where an earlier
    reader in forward order will still add to the source's buffer). A gradient leaves a buffer through
    :func:`grad_out`, an opaque copy (see there)."""
    out = []
    for i, r in enumerate(ctx.reads):
        if r is not None:
            r.left -= 1
        if into is None:
            out.append(fresh[i])
        elif r is not None and r.left > 0:
            r.acc = into[i]
            out.append(None)
        else:
            if r is not None:
                r.acc = None
            out.append(grad_out(into[i]))
    return out


def skip(ctx) -> list:
    """A router whose output got no gradient: its reads end here; a source whose sum it was the last to wait for
    hands it on (None where there is none). One entry per source."""
    out = []
    for r in ctx.reads:
        if r is None:
            out.append(None)
            continue
        r.left -= 1
        out.append(grad_out(r.acc) if r.left <= 0 and r.acc is not None else None)
        if r.left <= 0:
            r.acc = None
    return out


@torch.library.custom_op("dartool::grad_out", mutates_args=())
def grad_out(acc: Tensor) -> Tensor:
    """A copy of an accumulated source gradient, as an opaque op. The buffer was written by mutating backward
    ops; torch 2.13's Inductor (CPU, found in session 16) can fuse a pointwise kernel that reads such a buffer
    into a kernel scheduled before the mutations (wrong gradients), while opaque ops keep their order. One read
    and one write per summed source and step: at SiT-XL/2 b64 c1, 57 sources of 38 MB, 4.3 GB, about 1.4 ms at
    the H100's measured 3.00 TB/s copy rate (an estimate; the copies were not timed on their own)."""
    return acc.clone()


@grad_out.register_fake
def _grad_out_fake(acc):
    return torch.empty_like(acc)
