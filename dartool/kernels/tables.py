"""Offset tables: the int64 device arrays through which the fused kernels find their sources (and gradient
outputs) at arbitrary addresses, without copying them into one stack.

A table is ``(ptr - base) // elsize`` for each pointer (with flags: ``2 * offset + flag``). Training reuses the same
addresses step after step, so tables are cached by value and a hit costs nothing on the device. A miss must put
the values on the device before the kernel that reads them. Done naively (``torch.tensor(...).pin_memory().to(dev,
non_blocking=True)``) a miss costs a pinned allocation, a tensor and a copy each, tens of microseconds of host time;
an eager SiT-XL/2 step builds 231 tables, so when its addresses stop repeating (the caching allocator hands out
other blocks, e.g. after other models ran in the same process) the host time can exceed the GPU's.

:class:`TableArena` makes a miss one write into a pinned host ring and one host-to-device copy into a device ring
of the same size. A table is a view of the device ring; it is read only by kernels launched right after it is
made (nothing keeps a table across calls), on the current stream, so the stream orders any later overwrite of its
slot after them. The host ring is reused half by half: before writing into a half again, the host waits for the
event recorded when it last left that half, i.e. for copies queued half a ring ago (long done in training).
Cache entries whose slots are overwritten are dropped.

``DARTOOL_TABLE_ARENA=0`` (or ``tables.ARENA = False``) goes back to the naive miss path, with an LRU cache of
``CACHE_SIZE`` tables.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from typing import Sequence

import torch

from ..envflags import env_flag

ARENA = env_flag("DARTOOL_TABLE_ARENA", True)
ARENA_ENTRIES = 1 << 16          # int64 offsets per device: 512 KiB pinned + 512 KiB on the device
CACHE_SIZE = 512                 # tables kept by the naive path (LRU)

# counters for benchmarks/offset_tables.py (calls, misses)
STATS = {"calls": 0, "misses": 0}


class TableArena:
    """One device's ring of offset tables (see the module docstring). ``capacity`` int64 entries."""

    def __init__(self, device: torch.device, capacity: int = ARENA_ENTRIES) -> None:
        if capacity < 4:
            raise ValueError("TableArena needs a capacity of at least 4 entries")
        self.device = device
        self.capacity = capacity - capacity % 2
        self.half = self.capacity // 2
        cuda = device.type == "cuda"
        self.host = torch.empty(self.capacity, dtype=torch.int64, pin_memory=cuda)
        self.host_np = self.host.numpy()
        self.dev = torch.empty(self.capacity, dtype=torch.int64, device=device)
        self.pos = 0
        self.cur = 0                     # the half being written
        self.lap = 0
        self.cache: dict[tuple, torch.Tensor] = {}
        self.slots: deque = deque()      # (lap, start, key) in the order written: the oldest first
        self.left: list = [None, None]   # per half: the event recorded when writing last left it (CUDA only)

    def get(self, offs: tuple) -> torch.Tensor:
        t = self.cache.get(offs)
        if t is not None:
            return t
        n = len(offs)
        if n > self.half:
            raise ValueError(f"offset table of {n} entries exceeds half the arena ({self.half})")
        s = self._reserve(n)
        self.host_np[s:s + n] = offs
        t = self.dev[s:s + n]
        t.copy_(self.host[s:s + n], non_blocking=True)
        self.cache[offs] = t
        self.slots.append((self.lap, s, offs))
        STATS["misses"] += 1
        return t

    def _reserve(self, n: int) -> int:
        """Start of n entries at the write position; a table never spans the two halves."""
        s = self.pos
        if self.cur == 0 and s + n > self.half:          # the first half is full: go on in the second
            self._switch(1)
            s = self.half
        elif self.cur == 1 and s + n > self.capacity:    # the second is full: wrap, a new lap
            self._switch(0)
            s = 0
        self._evict(s + n)
        self.pos = s + n
        return s

    def _switch(self, h: int) -> None:
        """Go on writing in half h: drop the previous lap's tables in the part of the other half skipped, mark
        that half left, and wait for half h's copies queued when it was last left (half a ring ago)."""
        if h == 0:
            self._evict(self.capacity)                   # the previous lap's tables left at the end
            self.lap += 1
        else:
            self._evict(self.half)
        if self.device.type == "cuda":
            ev = torch.cuda.Event()
            ev.record(torch.cuda.current_stream(self.device))
            self.left[1 - h] = ev
            if self.left[h] is not None:
                self.left[h].synchronize()
        self.cur = h

    def _evict(self, end: int) -> None:
        """Drop the previous lap's tables that start before ``end`` (their entries are about to be written, or
        skipped). The oldest is first in ``slots``, so they are popped from the left."""
        while self.slots and self.slots[0][0] < self.lap and self.slots[0][1] < end:
            self.cache.pop(self.slots.popleft()[2], None)


_ARENAS: dict = {}
_LRU: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()


def arena(device: torch.device) -> TableArena:
    key = (device.type, device.index)
    a = _ARENAS.get(key)
    if a is None:
        a = _ARENAS[key] = TableArena(device)
    return a


def offset_table(ptrs: Sequence[int], base: int, elsize: int, device: torch.device,
                 flags: "Sequence[int] | None" = None) -> torch.Tensor:
    """int64 device tensor of element offsets ``(ptr - base) // elsize`` (with ``flags``: ``2 * offset + flag``),
    cached by value. Read it only in kernels launched right away (the arena reuses its slot later)."""
    STATS["calls"] += 1
    offs = tuple((p - base) // elsize for p in ptrs)
    if flags is not None:
        offs = tuple(2 * o + f for o, f in zip(offs, flags))
    if ARENA and device.type == "cuda":
        return arena(device).get(offs)
    key = (device.type, device.index, offs)
    t = _LRU.get(key)
    if t is not None:
        _LRU.move_to_end(key)
        return t
    STATS["misses"] += 1
    host = torch.tensor(offs, dtype=torch.int64)
    t = host.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else host
    _LRU[key] = t
    if len(_LRU) > CACHE_SIZE:
        _LRU.popitem(last=False)
    return t
