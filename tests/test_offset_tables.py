"""The fused kernels' offset tables (dartool.kernels.tables): values, caching, and the arena's slot reuse.

The arena is exercised on the CPU (no pinned memory, no events): its bookkeeping is the same on CUDA."""
import random

import pytest
import torch

from dartool.kernels import tables


def _check_cache(a: tables.TableArena) -> None:
    # every table still in the cache holds its own values: no live entry was overwritten
    for offs, t in a.cache.items():
        assert t.tolist() == list(offs)
        start = t.storage_offset()
        assert start // a.half == (start + len(offs) - 1) // a.half, "a table spans the two halves"


@pytest.mark.parametrize("capacity", [16, 64, 250])
def test_arena_tables_hold_their_values_while_cached(capacity):
    rng = random.Random(capacity)
    a = tables.TableArena(torch.device("cpu"), capacity=capacity)
    keys = [tuple(rng.randrange(-10**9, 10**9) for _ in range(rng.randint(1, capacity // 2))) for _ in range(40)]
    laps_seen = set()
    for _ in range(2000):
        offs = rng.choice(keys)
        t = a.get(offs)
        assert t.tolist() == list(offs)
        laps_seen.add(a.lap)
        if rng.random() < 0.05:
            _check_cache(a)
    _check_cache(a)
    assert len(laps_seen) > 3, "the test never wrapped the ring"


def test_arena_hits_do_not_write():
    a = tables.TableArena(torch.device("cpu"), capacity=64)
    t1 = a.get((1, 2, 3))
    pos, misses = a.pos, tables.STATS["misses"]
    t2 = a.get((1, 2, 3))
    assert t2 is t1 and a.pos == pos and tables.STATS["misses"] == misses


def test_arena_refuses_a_table_larger_than_half():
    a = tables.TableArena(torch.device("cpu"), capacity=16)
    with pytest.raises(ValueError, match="exceeds half the arena"):
        a.get(tuple(range(9)))


def test_offset_table_values_and_flags_on_the_cpu():
    base, el = 1 << 20, 2
    ptrs = [base, base + 2 * 100, base - 2 * 7]
    assert tables.offset_table(ptrs, base, el, torch.device("cpu")).tolist() == [0, 100, -7]
    got = tables.offset_table(ptrs, base, el, torch.device("cpu"), flags=[1, 0, 1])
    assert got.tolist() == [1, 200, -13]
    assert got.dtype == torch.int64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("arena", [True, False])
def test_offset_table_cuda_arena_and_naive_agree(monkeypatch, arena):
    monkeypatch.setattr(tables, "ARENA", arena)
    dev = torch.device("cuda")
    rng = random.Random(0)
    for _ in range(3000):   # more than one lap of the arena
        ptrs = [rng.randrange(0, 1 << 40) * 2 for _ in range(rng.randint(1, 60))]
        t = tables.offset_table(ptrs, ptrs[0], 2, dev)
        assert t.device.type == "cuda" and t.tolist() == [(p - ptrs[0]) // 2 for p in ptrs]
