"""Offset tables: the int64 device arrays through which the fused kernels find their sources (and gradient
outputs) at arbitrary addresses, without copying them into one stack.

A table is ``(ptr - base) // elsize`` for each pointer (with flags: ``2 * offset + flag``). Training reuses the same
addresses step after step, so tables are cached by value (LRU, ``CACHE_SIZE`` tables) and a hit costs nothing on
the device; a miss costs one small pinned host tensor and one host-to-device copy. An eager SiT-XL/2 c4 step makes
231 tables and misses about one step's worth of them once (H100, 2026-11-27, ``benchmarks/results/s15_f_*``): a
pinned ring for the misses was built, measured and removed as it changed nothing (session 15,
``benchmarks/KERNEL_NOTES.md``).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch

CACHE_SIZE = 512
_CACHE: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()


def offset_table(ptrs: Sequence[int], base: int, elsize: int, device: torch.device,
                 flags: "Sequence[int] | None" = None) -> torch.Tensor:
    """int64 device tensor of element offsets ``(ptr - base) // elsize`` (with ``flags``: ``2 * offset + flag``),
    cached by value (training reuses the same addresses step after step, so the host-to-device copy happens
    only on a miss)."""
    offs = tuple((p - base) // elsize for p in ptrs)
    if flags is not None:
        offs = tuple(2 * o + f for o, f in zip(offs, flags))
    key = (device.type, device.index, offs)
    t = _CACHE.get(key)
    if t is not None:
        _CACHE.move_to_end(key)
        return t
    host = torch.tensor(offs, dtype=torch.int64)
    t = host.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else host
    _CACHE[key] = t
    if len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return t
