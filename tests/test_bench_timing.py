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


def test_reference_router_calls_on_cpu():
    """The unfused router the bench times: its forward is the router's function with the given gain, and its
    backward returns a gradient for every source, the query and the gain."""
    from dartool.bench import reference_router_calls

    g = torch.Generator().manual_seed(0)
    N, B, T, D = 3, 2, 4, 8
    srcs = [torch.randn(B, T, D, generator=g).requires_grad_() for _ in range(N)]
    q = torch.randn(D, generator=g).requires_grad_()
    gain = 1 + 0.1 * torch.randn(D, generator=g)
    dh = torch.randn(B, T, D, generator=g)
    fwd, fwdbwd = reference_router_calls(srcs, q, gain, dh)
    h = fwd()
    V = torch.stack([s.detach().double() for s in srcs])                          # [N, B, T, D]
    k = V * torch.rsqrt(V.pow(2).mean(-1, keepdim=True) + 1e-6) * gain.double()
    alpha = torch.softmax((k * q.detach().double()).sum(-1) / D ** 0.5, dim=0)    # [N, B, T]
    torch.testing.assert_close(h.double(), (alpha.unsqueeze(-1) * V).sum(0), rtol=1e-5, atol=1e-5)
    grads = fwdbwd()
    assert len(grads) == N + 2 and all(gr is not None and torch.isfinite(gr).all() for gr in grads)


def test_results_from_before_gpu_timing_keep_host_bound_labels():
    """Router rows written before the speedups were GPU times (no ``*_gpu_ms`` keys) are shown and judged as
    host-bound, not as GPU times."""
    from dartool.bench import evaluate_targets, markdown
    from tests.test_bench_merge import _env, _router_row

    res = dict(env=_env("abc"), skipped=[], router=[_router_row(57)])
    assert all("host-bound" in t["target"] for t in evaluate_targets(res) if "12x" in t["target"])
    row = next(line for line in markdown(res).splitlines() if line.startswith("| 57 "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[7] == "- / - / -" and cells[9] == "16.0 / 24.0 / 15.6"


def test_results_name_the_switches_they_ran_under(monkeypatch, tmp_path):
    """A run under DARTOOL_* switches (e.g. DARTOOL_SAVE_QUERY_LAST) records them in its env and its Markdown;
    the commit label is not a switch."""
    import os

    from dartool import bench

    for k in [k for k in os.environ if k.startswith("DARTOOL_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("DARTOOL_SAVE_QUERY_LAST", "12")
    monkeypatch.setenv("DARTOOL_COMMIT", "abc1234")
    env = bench.env_info()
    assert env["switches"] == {"DARTOOL_SAVE_QUERY_LAST": "12"} and env["commit"] == "abc1234"
    md = bench.markdown({"env": env, "skipped": []})
    assert "Switches set for this run: `DARTOOL_SAVE_QUERY_LAST=12`" in md
    monkeypatch.delenv("DARTOOL_SAVE_QUERY_LAST")
    assert "switches" not in bench.env_info()


def test_markdown_says_whether_compiled_gradient_sums_ran_in_the_graph():
    """The compiled rows depend on dartool.kernels.compiled_slots' switch and thresholds: the results say which
    (results written before session 28 have no pending-gradient threshold)."""
    from dartool import bench

    env = bench.env_info()
    on = bench.markdown({"env": env, "skipped": [], "compiled_accum": dict(on=True, min_readers=20, ops_version=2)})
    assert "at least 20 reading router ops, i.e. S = 1): on." in on
    off = bench.markdown({"env": env, "skipped": [], "compiled_accum": dict(on=False, min_readers=20, ops_version=2)})
    assert "off (DARTOOL_COMPILED_ACCUM=0)" in off
    now = bench.markdown({"env": env, "skipped": [],
                          "compiled_accum": dict(on=True, min_readers=20, min_pending=200, ops_version=2)})
    assert "at least 20 reading router ops and at least 200 gradients would wait for a sum" in now
    assert "keep their output h" not in now                       # results before session 29 do not say
    for mode, says in (("auto", "in the LayerNorm output's dtype"), ("fp32", "in float32 (DARTOOL_ROUTER_H=fp32)")):
        md = bench.markdown({"env": env, "skipped": [], "compiled_accum": dict(
            on=True, min_readers=20, min_pending=200, ops_version=3, ln_h=mode)})
        assert f"LayerNorm-fused routers keep their output h for the backward {says}" in md
    for sq, rq, says in (("auto", True, "all at widths >= 1024, the last two thirds below (auto)"),
                         ("12", True, "the last 12 (DARTOOL_SAVE_QUERY_LAST)"),
                         ("auto", False, "every one (DARTOOL_RECOMPUTE_DYNAMIC_QUERY=0)")):
        md = bench.markdown({"env": env, "skipped": [], "compiled_accum": dict(
            on=True, min_readers=20, min_pending=200, ops_version=3, ln_h="auto", save_query_last=sq,
            recompute_query=rq)})
        assert "dynamic routers keep q for the backward: " + says in md, md
    md = bench.markdown({"env": env, "skipped": [], "compiled_accum": dict(
        on=True, min_readers=20, min_pending=200, ops_version=3, ln_h="fp32", save_query_last="auto")})
    assert "in float32 (DARTOOL_ROUTER_H=fp32); dynamic routers keep q for the backward: none" in md
    assert "write dq" not in md                                   # results before session 30 do not say
    for over, rp, acc, says in (
            (False, False, "", "write dq into a fresh buffer; launches that add into gradient sums stay off the "
                               "row-pipelined backward."),
            (True, True, "", "write dq over it (DARTOOL_DQ_OVER_Q=1); launches that add into gradient sums may take "
                             "the row-pipelined backward (DARTOOL_ROW_PIPE_ACCUM=1)."),
            (False, False, "pipe=3", "write dq into a fresh buffer; launches that add into gradient sums stay off the "
                                     "row-pipelined backward, launched with pipe=3 (DARTOOL_ROUTER_BWD_ACCUM).")):
        md = bench.markdown({"env": env, "skipped": [], "compiled_accum": dict(
            on=True, min_readers=20, min_pending=200, ops_version=3, ln_h="auto", save_query_last="auto",
            recompute_query=True, dq_over_q=over, row_pipe_accum=rp, accum_bwd=acc)})
        assert "Dynamic routers that recompute q " + says in md, md


def test_markdown_shows_the_hosts_work_per_eager_step():
    """Eager training rows carry the host's work per step (the step at batch 1); rows without it (compiled ones,
    results from before session 17) show a dash, and the column's note says what it means."""
    from dartool import bench

    env = bench.env_info()
    row = dict(model="SiT-XL/2", batch=64, variant="DAR static c4", routing="dar", query="static", chunk=4,
               fused=True, compiled=False, step_ms=170.0, img_per_s=376.0, peak_gb=30.0, host_ms=183.4)
    old = dict(row, compiled=True, step_ms=150.0)
    old.pop("host_ms")
    md = bench.markdown({"env": env, "skipped": [], "train": [row, old]})
    lines = [x for x in md.splitlines() if x.startswith("| SiT-XL/2 | 64 | DAR static c4")]
    assert lines[0].endswith("| 183.4 |") and lines[1].endswith("| - |")
    assert "host ms / step |" in md and "where the GPU has little to do" in md
