"""benchmarks/step_memory.py --peak-buffers: the allocator trace replay that names what is alive at a step's peak
(the CUDA part needs a GPU; the replay is checked here on a hand-made trace)."""
from tests.benchmark_scripts import load_benchmark


def _tool():
    return load_benchmark("step_memory")


def _fr(fn, line, name):
    return [dict(filename="/x/site-packages/torch/autograd/graph.py", line=1, name="run_backward"),
            dict(filename=fn, line=line, name=name)]


def test_peak_replay_names_the_blocks_alive_at_the_peak():
    m = _tool()
    act = _fr("/repo/dartool/models/sit.py", 10, "forward")
    grad = _fr("/tmp/torchinductor_root/ab/cabc.py", 77, "call")
    trace = [dict(action="alloc", addr=1, size=100, frames=act),            # forward: activations
             dict(action="alloc", addr=2, size=100, frames=act),
             dict(action="segment_alloc", addr=9, size=10_000),              # cudaMalloc: not a block
             dict(action="alloc", addr=3, size=50, frames=grad),             # backward: gradients
             dict(action="alloc", addr=4, size=60, frames=grad),             # <- peak: 310 bytes
             dict(action="free_requested", addr=1, size=100),
             dict(action="free_completed", addr=1, size=100),
             dict(action="alloc", addr=5, size=80, frames=grad)]             # 290: below the peak
    r = m.peak_buffers(trace, n_forward=3, top=5)
    assert abs(r["peak_gb"] - 310e-9) < 1e-15 and r["phase"] == "backward" and r["live_blocks"] == 4
    assert r["by_site"][0] == dict(where="sit.py:10 forward", blocks=2, gb=200e-9)
    assert r["by_site"][1]["where"] == "cabc.py:77 call" and r["by_site"][1]["blocks"] == 2
    assert [x["gb"] for x in r["largest"]] == [100e-9, 100e-9, 60e-9, 50e-9]
    assert [x["backward"] for x in r["largest"]] == [False, False, True, True]
    # what the backward itself allocated and still held at the peak, and the allocation that reached it
    assert abs(r["from_backward_gb"] - 110e-9) < 1e-15 and r["from_backward_blocks"] == 2
    assert r["by_site_backward"] == [dict(where="cabc.py:77 call", blocks=2, gb=110e-9)]
    assert r["peak_site"] == "cabc.py:77 call"
    assert m.peak_buffers(trace[:2], n_forward=3)["phase"] == "forward"
