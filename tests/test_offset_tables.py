"""The fused kernels' offset tables (dartool.kernels.tables): values, flags and caching."""
import pytest
import torch

from dartool.kernels import tables


def test_offset_table_values_and_flags():
    base, el = 1 << 20, 2
    ptrs = [base, base + 2 * 100, base - 2 * 7]
    assert tables.offset_table(ptrs, base, el, torch.device("cpu")).tolist() == [0, 100, -7]
    got = tables.offset_table(ptrs, base, el, torch.device("cpu"), flags=[1, 0, 1])
    assert got.tolist() == [1, 200, -13] and got.dtype == torch.int64


def test_offset_table_cache_hits_and_lru_bound(monkeypatch):
    monkeypatch.setattr(tables, "CACHE_SIZE", 4)
    monkeypatch.setattr(tables, "_CACHE", type(tables._CACHE)())
    cpu = torch.device("cpu")
    first = tables.offset_table([8, 16], 8, 4, cpu)
    size = len(tables._CACHE)
    assert tables.offset_table([108, 116], 108, 4, cpu) is first       # same offsets: a hit
    assert len(tables._CACHE) == size                                   # and no new table
    for k in range(6):
        tables.offset_table([0, 4 * (k + 10)], 0, 4, cpu)
    assert len(tables._CACHE) == 4
    assert tables.offset_table([8, 16], 8, 4, cpu) is not first         # evicted, made again
    assert tables.offset_table([8, 16], 8, 4, cpu).tolist() == [0, 2]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_offset_table_cuda_values():
    import random

    rng = random.Random(0)
    for _ in range(600):   # more tables than the cache holds
        ptrs = [rng.randrange(0, 1 << 40) * 2 for _ in range(rng.randint(1, 60))]
        t = tables.offset_table(ptrs, ptrs[0], 2, torch.device("cuda"))
        assert t.device.type == "cuda" and t.tolist() == [(p - ptrs[0]) // 2 for p in ptrs]
