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


def test_tables_made_under_graph_capture_are_fresh_and_keep_their_host_values(monkeypatch):
    """Under CUDA-graph capture a table is never taken from the cache (it may live in another graph's memory) and
    its host values sit in arena slots that are never reused (the recorded copy reads them at every replay). The
    capture is simulated on the CPU."""
    monkeypatch.setattr(tables, "_CACHE", type(tables._CACHE)())
    monkeypatch.setattr(tables, "_ARENA", {"host": None, "used": 0, "tables": 0})
    monkeypatch.setattr(tables, "ARENA_SIZE", 8)
    monkeypatch.setattr(tables, "GRAPH_SAFE", False)
    cpu = torch.device("cpu")
    cached = tables.offset_table([8, 16], 8, 4, cpu)                    # outside capture: cached as before
    monkeypatch.setattr(tables, "GRAPH_SAFE", True)                     # dartool's cudagraphs mode
    tables._arena()                                                     # set_graph_safe's allocation, before capture
    monkeypatch.setattr(tables, "_capturing", lambda device: True)
    a = tables.offset_table([8, 16], 8, 4, cpu)
    b = tables.offset_table([8, 16], 8, 4, cpu, flags=[1, 1])
    c = tables.offset_table([8, 16], 8, 4, cpu)
    assert a is not cached and c is not a                               # no cache under capture
    assert a.tolist() == [0, 2] and b.tolist() == [1, 5] and c.tolist() == [0, 2]
    assert tables._ARENA["used"] == 6 and tables._ARENA["tables"] == 3  # slots taken in turn
    assert tables._ARENA["host"][:6].tolist() == [0, 2, 1, 5, 0, 2]      # every slot still holds its values
    assert len(tables._CACHE) == 1                                      # nothing captured went into the cache
    with pytest.raises(RuntimeError, match="ARENA_SIZE"):
        tables.offset_table([0, 4, 8], 0, 4, cpu)                         # 3 more entries do not fit 8


def test_graph_safe_tables_are_not_cached(monkeypatch):
    """With CUDA graphs no table may stay alive between ops (the graph trees' pool check): no cache."""
    monkeypatch.setattr(tables, "_CACHE", type(tables._CACHE)())
    monkeypatch.setattr(tables, "GRAPH_SAFE", False)
    monkeypatch.setattr(tables, "_ARENA", {"host": None, "used": 0, "tables": 0})
    monkeypatch.setattr(tables, "ARENA_SIZE", 8)
    cpu = torch.device("cpu")
    tables.offset_table([8, 16], 8, 4, cpu)
    tables.set_graph_safe(True)
    try:
        assert len(tables._CACHE) == 0                                  # switching clears the cache
        a = tables.offset_table([8, 16], 8, 4, cpu)
        b = tables.offset_table([8, 16], 8, 4, cpu)
        assert a is not b and a.tolist() == b.tolist() == [0, 2] and len(tables._CACHE) == 0
        assert tables._ARENA["host"] is not None                        # allocated now, outside any capture
    finally:
        tables.set_graph_safe(False)
    assert tables.offset_table([8, 16], 8, 4, cpu) is tables.offset_table([8, 16], 8, 4, cpu)
