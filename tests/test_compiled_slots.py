"""dartool.kernels.compiled_slots: the bookkeeping by which the compiled routers' backward ops add each shared
source's gradient into one buffer (no Triton needed: the backward ops are played by hand here; the kernels under
torch.compile are checked by ``python -m dartool.kernels.check --only compiled-accum``, in the interpreter below
when Triton is installed, and on CUDA)."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dartool.kernels import compiled_slots as cs

ROOT = Path(__file__).resolve().parents[1]


def _play(monkeypatch, reads_per_router, grads, min_readers=1, min_pending=1):
    """Routers r = 0.. read the sources named in reads_per_router[r] (forward order); each one's backward
    (reverse order) writes or adds grads[r][source] as a backward op would. Returns what every router hands back
    to autograd, in backward order, and the ctx objects."""
    monkeypatch.setattr(cs, "active", lambda sources=(): True)
    monkeypatch.setattr(cs, "MIN_READERS", min_readers)
    monkeypatch.setattr(cs, "MIN_PENDING", min_pending)
    src = {n: torch.zeros(2, 3, requires_grad=True) for rs in reads_per_router for n in rs}
    ctxs = []
    for rs in reads_per_router:
        ctx = SimpleNamespace()
        cs.note_readers(ctx, [src[n] for n in rs])
        ctxs.append(ctx)
    handed = []
    for r in reversed(range(len(reads_per_router))):
        names = reads_per_router[r]
        into, flags = cs.buffers(ctxs[r], [src[n] for n in names])
        if into is None:                                   # the plain op: fresh gradients
            out = cs.hand_back(ctxs[r], None, [grads[r][n].clone() for n in names])
        else:                                              # the *_into op: write (0) or add (1)
            for buf, f, n in zip(into, flags, names):
                buf.copy_(buf + grads[r][n] if f else grads[r][n])
            out = cs.hand_back(ctxs[r], into, None)
        handed.append((r, dict(zip(names, out)), flags))
    return handed


def test_each_source_sum_leaves_through_its_first_reader(monkeypatch):
    """c1-like: router r reads sources 0..r. Every source's gradient is handed back once, by the router that read
    it first in the forward (last in the backward), and equals the sum over its readers; the others hand back None;
    the last router writes fresh buffers (flags 0), the earlier ones add (flags 1)."""
    reads = [["a"], ["a", "b"], ["a", "b", "c"]]
    g = [{n: torch.full((2, 3), float(10 ** r * (i + 1))) for i, n in enumerate("abc")} for r in range(3)]
    handed = _play(monkeypatch, reads, g)
    (r2, out2, f2), (r1, out1, f1), (r0, out0, f0) = handed
    assert (r2, r1, r0) == (2, 1, 0)
    assert f2 == [0, 0, 0] and f1 == [1, 1] and f0 == [1]
    assert out2["a"] is None and out2["b"] is None
    torch.testing.assert_close(out2["c"], g[2]["c"])
    assert out1["a"] is None
    torch.testing.assert_close(out1["b"], g[2]["b"] + g[1]["b"])
    torch.testing.assert_close(out0["a"], g[2]["a"] + g[1]["a"] + g[0]["a"])


def test_unshared_sources_take_the_plain_op_and_duplicates_are_left_out(monkeypatch):
    """A router none of whose sources is still shared runs the plain op (fresh gradients); a source a router lists
    twice is not tracked (each position gets its own gradient)."""
    reads = [["a", "a"], ["b"]]
    g = [{"a": torch.ones(2, 3), "b": torch.ones(2, 3)}, {"b": 2 * torch.ones(2, 3)}]
    handed = _play(monkeypatch, reads, g)
    (r1, out1, f1), (r0, out0, f0) = handed
    assert f1 == [] and f0 == []                         # both plain
    torch.testing.assert_close(out1["b"], g[1]["b"])
    torch.testing.assert_close(out0["a"], g[0]["a"])


def test_a_router_without_gradient_still_hands_on_the_sum(monkeypatch):
    """skip(): the router that would have handed a source's sum back got no output gradient: it hands the sum on."""
    monkeypatch.setattr(cs, "active", lambda sources=(): True)
    monkeypatch.setattr(cs, "MIN_READERS", 1)
    monkeypatch.setattr(cs, "MIN_PENDING", 1)
    a = torch.zeros(2, 3, requires_grad=True)
    c0, c1 = SimpleNamespace(), SimpleNamespace()
    cs.note_readers(c0, [a])
    cs.note_readers(c1, [a])
    into, flags = cs.buffers(c1, [a])
    into[0].fill_(3.0)
    assert flags == [0] and cs.hand_back(c1, into, None) == [None]
    (out,) = cs.skip(c0)
    torch.testing.assert_close(out, torch.full((2, 3), 3.0))


def test_graphs_whose_sources_have_few_readers_take_the_plain_ops(monkeypatch):
    """Below MIN_READERS readers for every source of the graph (S = 4 and up: measured slower with accumulation,
    same memory) every router runs the plain op and hands back fresh gradients; one source read often enough
    turns accumulation on for its whole group of sources (S = 1)."""
    reads = [["a"], ["a", "b"], ["a", "b", "c"]]
    g = [{n: torch.full((2, 3), float(r + 1)) for n in "abc"} for r in range(3)]
    assert all(f == [] for _, _, f in _play(monkeypatch, reads, g, min_readers=4))
    handed = _play(monkeypatch, reads, g, min_readers=3)          # "a" has 3 readers: all three sources join
    assert [f for _, _, f in handed] == [[0, 0, 0], [1, 1], [1]]


def _dar_reads(num_sublayers: int, chunk: int) -> list:
    """The sources every router of a DAR stream reads when none goes through a shared prefix (dynamic queries):
    v_0 and the finished chunks' summaries, then the current chunk's raw outputs; the head last."""
    reads, summaries, current = [], ["v0"], []
    for l in range(num_sublayers):
        if len(current) == chunk:
            summaries, current = summaries + [f"c{len(summaries)}"], []
        reads.append(summaries + current)
        current = current + [f"o{l}"]
    return reads + [summaries + current]


@pytest.mark.parametrize("sublayers,chunk,most,pending,on", [
    (24, 1, 25, 300, True),      # SiT-B/2, S = 1: every source read by all later routers
    (24, 4, 25, 105, False),     # SiT-B/2 dynamic c4: v_0 by all 25, the rest by few (measured: off is faster)
    (56, 4, 57, 465, True),      # SiT-XL/2 dynamic c4 (measured: on, the same time at less memory)
    (24, 8, 25, 118, False),     # SiT-B/2 dynamic c8
])
def test_accumulation_only_where_many_gradients_would_wait(monkeypatch, sublayers, chunk, most, pending, on):
    """The rule: some source read by >= MIN_READERS router ops AND >= MIN_PENDING gradients waiting for a sum in
    all (a source read k times: k - 1). At the defaults, S = 1 and SiT-XL/2 dynamic c4 accumulate, SiT-B/2 dynamic
    c4 / c8 do not, though v_0 has 25 readers there too."""
    from dartool.models.sit import dar_source_plan

    reads = _dar_reads(sublayers, chunk)
    counts, head = dar_source_plan(sublayers, chunk)               # the model's own plan: the same source counts
    assert [len(r) for r in reads] == counts + [head]
    monkeypatch.setattr(cs, "active", lambda sources=(): True)
    monkeypatch.setattr(cs, "MIN_READERS", 20)
    monkeypatch.setattr(cs, "MIN_PENDING", 200)
    src = {n: torch.zeros(1, requires_grad=True) for rs in reads for n in rs}
    ctxs = [SimpleNamespace() for _ in reads]
    for ctx, rs in zip(ctxs, reads):
        cs.note_readers(ctx, [src[n] for n in rs])
    group = ctxs[-1].reads[0].group
    assert (group.most, group.pending) == (most, pending)
    assert ctxs[-1].reads[0].on is on
    into, _ = cs.buffers(ctxs[-1], [src[n] for n in reads[-1]])
    assert (into is not None) is on


def test_not_tracked_outside_compile():
    ctx = SimpleNamespace()
    cs.note_readers(ctx, [torch.zeros(2, requires_grad=True)])
    assert ctx.reads == [None]
    assert cs.buffers(ctx, [torch.zeros(2)]) == (None, [])


def test_the_compile_cache_key_carries_the_ops_version_the_switch_and_the_thresholds():
    """torch.compile's caches key a graph on its forward only: the ops' version, the switch, the two
    thresholds and the dtype LN-fused routers keep h in (all decide the backward) go into the key, beside a tag
    of the user's."""
    import torch.compiler.config as cc

    old_tag, old_on, old_min, old_pend = cc.cache_key_tag, cs.ENABLED, cs.MIN_READERS, cs.MIN_PENDING
    try:
        cc.cache_key_tag = "mine"
        cs.set_enabled(False)
        h = cs.ln_h_mode()
        assert h in ("auto", "fp32")
        assert cc.cache_key_tag == f"mine,dartool-ops-{cs.OPS_VERSION}-accum0-min{old_min}-pend{old_pend}-h{h}"
        cs.set_enabled(True)
        cs.set_min_readers(7)
        cs.set_min_pending(50)
        assert (cs.MIN_READERS, cs.MIN_PENDING) == (7, 50)
        assert cc.cache_key_tag == f"mine,dartool-ops-{cs.OPS_VERSION}-accum1-min7-pend50-h{h}"
        with pytest.raises(ValueError, match=">= 1"):
            cs.set_min_readers(0)
        with pytest.raises(ValueError, match=">= 1"):
            cs.set_min_pending(0)
    finally:
        cs.set_enabled(old_on)
        cs.set_min_readers(old_min)
        cs.set_min_pending(old_pend)
        cc.cache_key_tag = old_tag


@pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                    reason="triton not installed (CI): the interpreter check needs it")
def test_interpreter_check_compiled_accum():
    """A small DAR SiT compiled by Inductor on the CPU (kernels in Triton's interpreter), accumulation on and off,
    against the eager fused model (about 40 s)."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    p = subprocess.run([sys.executable, "-m", "dartool.kernels.check", "--interpret", "--only", "compiled-accum"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "compiled-accum-static-c1" in p.stdout and "PASS" in p.stdout


@pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                    reason="triton not installed (CI): Inductor's CPU compile of the kernels needs the interpreter")
def test_compiled_c1_keeps_one_gradient_buffer_per_source_and_reads_them_only_through_ops():
    """benchmarks/compiled_grad_lifetimes.py on a small c1 model (9 sources) with every shared source summed in the
    graph: at most 9 router gradients alive (24 without), and no kernel other than the dartool ops reads a buffer
    the *_into ops wrote (the tool exits 1 if one does)."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "benchmarks/compiled_grad_lifetimes.py", "--chunk", "1", "--depth", "4",
                        "--min-readers", "1", "--min-pending", "1"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "at most 9 alive" in p.stdout
