"""bench.host_gpu_ms: the GPU's own time of host-bound calls (runs where CUDA is present)."""
import time

import pytest
import torch

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
def test_cuda_host_gpu_ms_hides_host_overhead():
    from dartool.bench import host_gpu_ms

    x = torch.randn(1 << 20, device="cuda")

    def host_bound():            # ~2 ms of host work around a few microseconds of GPU work
        time.sleep(0.002)
        return x.mul_(1.0)

    t = host_gpu_ms(host_bound, reps=20)
    assert t["gpu_valid"]
    assert t["wall"] > 1.5 and t["host"] > 1.5
    assert t["gpu"] < 0.25 * t["wall"]


@cuda
def test_cuda_host_gpu_ms_matches_gpu_bound_time():
    from dartool.bench import host_gpu_ms

    a, b = torch.randn(4096, 4096, device="cuda"), torch.randn(4096, 4096, device="cuda")
    c = torch.empty_like(a)

    def gpu_bound():
        for _ in range(4):
            torch.mm(a, b, out=c)

    t = host_gpu_ms(gpu_bound, reps=10)
    assert t["gpu_valid"]
    assert t["gpu"] == pytest.approx(t["wall"], rel=0.15)
