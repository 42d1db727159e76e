"""Offset tables: the int64 device arrays through which the fused kernels find their sources (and gradient
outputs) at arbitrary addresses, without copying them into one stack.

A table is ``(ptr - base) // elsize`` for each pointer (with flags: ``2 * offset + flag``). Training reuses the same
addresses step after step, so tables are cached by value (LRU, ``CACHE_SIZE`` tables) and a hit costs nothing on
the device; a miss costs one small pinned host tensor and one host-to-device copy. An eager SiT-XL/2 c4 step makes
231 tables and misses about one step's worth of them once (H100, 2026-11-27, ``benchmarks/results/s15_f_*``): a
pinned ring for the misses was built, measured and removed as it changed nothing (session 15,
``benchmarks/KERNEL_NOTES.md``).

CUDA graphs (``torch.compile(mode="reduce-overhead")``, dartool's ``cudagraphs`` compile mode) need
two things of the tables. (1) Inductor's graph trees check, after a warm-up run, that no tensor allocated in
their memory pool is still alive unless it is an output: cached tables are (session 17, H100: "Detected 54
tensor(s) in the cudagraph pool not tracked as outputs"). So while :data:`GRAPH_SAFE` is set (``compile_model``
sets it for ``cudagraphs``; process-wide) no table is cached: each call makes its own and frees it after use.
(2) Under capture (checked only while :data:`GRAPH_SAFE` is set: the check costs host time on every call; a
graph captured by hand outside dartool's mode reads cached tables made before it) the host-to-device copy is recorded into the graph and replayed at every step, so its host
values must stay where they are for as long as the graph lives: captured tables take their values from a pinned
arena allocated once, outside capture (by ``set_graph_safe``), whose slots are never reused. The device table itself is freed after
the op like any temporary; the replayed copy refills it before the kernel that reads it.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch

CACHE_SIZE = 512
_CACHE: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()

# no caching (CUDA graphs' memory pool must hold no live tensor but outputs); set by compile_model("cudagraphs")
GRAPH_SAFE = False

# the pinned arena of captured tables' host values (int64 entries; slots never reused) and how many tables took one
ARENA_SIZE = 1 << 18
_ARENA: "dict[str, object]" = {"host": None, "used": 0, "tables": 0}


def set_graph_safe(on: bool = True) -> None:
    """Stop (or resume) caching tables, for CUDA graphs; clears the cache. Switching on also allocates the
    pinned arena of captured tables here, outside any capture (an allocation under capture is not allowed)."""
    global GRAPH_SAFE
    GRAPH_SAFE = bool(on)
    _CACHE.clear()
    if GRAPH_SAFE:
        _arena()


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _arena() -> torch.Tensor:
    """The pinned arena (allocated by :func:`set_graph_safe`, which ``compile_model("cudagraphs")`` calls before
    anything is captured)."""
    if _ARENA["host"] is None:
        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("dartool's offset tables: a CUDA graph is being captured but the tables' pinned arena "
                               "was never allocated; call dartool.kernels.tables.set_graph_safe(True) before "
                               "capturing (compile_model(model, 'cudagraphs') does)")
        _ARENA["host"] = torch.empty(ARENA_SIZE, dtype=torch.int64, pin_memory=torch.cuda.is_available())
    return _ARENA["host"]


def _upload(offs: tuple, device: torch.device) -> torch.Tensor:
    """A new table: one small pinned host tensor and one host-to-device copy (on the CPU, the host tensor)."""
    host = torch.tensor(offs, dtype=torch.int64)
    return host.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else host


def _captured_table(offs: tuple, device: torch.device) -> torch.Tensor:
    host = _arena()
    n, used = len(offs), int(_ARENA["used"])
    if used + n > host.numel():
        raise RuntimeError(f"dartool's offset tables: the pinned arena for CUDA-graph capture is full "
                           f"({host.numel()} entries); raise dartool.kernels.tables.ARENA_SIZE before the first step")
    slot = host[used:used + n]
    slot.copy_(torch.tensor(offs, dtype=torch.int64))          # host memory: not recorded, kept for every replay
    _ARENA["used"] = used + n
    _ARENA["tables"] = int(_ARENA["tables"]) + 1
    t = torch.empty(n, dtype=torch.int64, device=device)
    t.copy_(slot, non_blocking=True)                           # recorded: replayed at every step
    return t


def offset_table(ptrs: Sequence[int], base: int, elsize: int, device: torch.device,
                 flags: "Sequence[int] | None" = None) -> torch.Tensor:
    """int64 device tensor of element offsets ``(ptr - base) // elsize`` (with ``flags``: ``2 * offset + flag``),
    cached by value (training reuses the same addresses step after step, so the host-to-device copy happens
    only on a miss)."""
    offs = tuple((p - base) // elsize for p in ptrs)
    if flags is not None:
        offs = tuple(2 * o + f for o, f in zip(offs, flags))
    if GRAPH_SAFE:
        return _captured_table(offs, device) if _capturing(device) else _upload(offs, device)
    key = (device.type, device.index, offs)
    t = _CACHE.get(key)
    if t is not None:
        _CACHE.move_to_end(key)
        return t
    t = _upload(offs, device)
    _CACHE[key] = t
    if len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return t
