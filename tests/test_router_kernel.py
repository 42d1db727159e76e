"""The fused DAR router (dartool.kernels): dispatch rules everywhere, the kernels themselves where they can run.

* CPU (CI): the dispatch falls back to the PyTorch reference; probes on ``hook_alpha`` force the reference;
  ``tap_source`` is the identity.
* Triton importable (no GPU needed): a quick run of ``python -m dartool.kernels.check --interpret --quick``
  in a subprocess (Triton's CPU interpreter, a few seconds), skipped cleanly without Triton.
* CUDA present: the full correctness matrix against float64 (``dartool.kernels.check``) and torch.compile
  of a small DAR model with the fused router against eager.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import numpy as np
import torch

from dartool.kernels import dispatch
from dartool.models import SiT, model_config, tapped
from dartool.models.sit import Router
from tests.benchmark_scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS_CUDA = torch.cuda.is_available()


def _run_interpreted(code: str, unset: str, timeout: int = 300) -> None:
    """Run ``code`` in a fresh Python under Triton's interpreter (TRITON_INTERPRET=1 must be set before Triton loads),
    with the environment variable ``unset`` removed so the module default is what runs; it must print "ok"."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop(unset, None)
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0 and "ok" in p.stdout, p.stdout[-3000:] + p.stderr[-3000:]


def _tiny(query="static", chunk=2, depth=2):
    cfg = model_config("S", 2, input_size=8, routing="dar", query=query, chunk_size=chunk).replace(
        depth=depth, hidden_size=64, num_heads=4)
    torch.manual_seed(0)
    return SiT(cfg)


def test_cpu_tensors_take_the_reference_path():
    r = Router(16, "static")
    srcs = [torch.randn(2, 3, 16) for _ in range(4)]
    q = torch.randn(16)
    assert not dispatch.use_fused(r, srcs, q)
    with dispatch.fused(True):
        assert not dispatch.use_fused(r, srcs, q)
    v = torch.randn(2, 3, 16, requires_grad=True)
    assert dispatch.tap_source(v) is v


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_backward_launch_configuration_per_shape():
    """The backward's launch configuration follows the shape (the sweep's winners) unless one is given; a
    configuration given in a ``configs`` block holds for every shape and the per-shape choice comes back after."""
    from dartool.kernels import router_triton as rt

    if not rt._AUTO["bwd"]:
        pytest.skip("DARTOOL_ROUTER_BWD is set")
    narrow, wide = rt.bwd_config(6, 768), rt.bwd_config(9, 1152)
    assert (narrow["num_warps"], narrow["split"], narrow["unroll"], narrow["part_slot"]) == (1, 1, 2, 0)
    assert (wide["num_warps"], wide["split"], wide["unroll"], wide["prefetch"], wide["part_slot"]) == (1, 1, 1, 0, 1)
    assert narrow["ln_slot"] == wide["ln_slot"] == 1
    assert narrow["vec4"] == wide["vec4"] == 1
    # the source loop pipelined at D >= 1024 only, deeper with a static query than with a dynamic one
    assert (narrow["pipe"], rt.bwd_config(6, 768, dynamic=True)["pipe"]) == (1, 1)
    assert (wide["pipe"], rt.bwd_config(9, 1152, dynamic=True)["pipe"]) == (4, 3)
    assert rt.bwd_config(17, 1152) == wide
    # few sources (a c4 model's routers with shared prefixes): at D >= 1024 the static backward's source loop
    # unpipelined; at every width its row loop pipelined (ROW_PIPE, session 23), with a dynamic query at D < 1024
    # (DYN_ROW_PIPE_N, sessions 27-28)
    rows = dict(rpipe=rt.ROW_PIPE, rslot=rt.ROW_SLOTS) if rt.ROW_PIPE > 1 else {}
    assert (rt.bwd_config(rt.FEW_SOURCES, 1152) == dict(wide, pipe=1, part_slot=0, **rows)) == (rt.FEW_SOURCES > 0)
    assert rt.bwd_config(1, 1152, dynamic=True)["pipe"] == 3 and rt.bwd_config(2, 768) == dict(narrow, **rows)
    assert ("rpipe" in rt.bwd_config(2, 768, dynamic=True)) == (
        rt.ROW_PIPE > 1 and (rt.DYN_ROW_PIPE_N is None or rt.DYN_ROW_PIPE_N >= 2))
    assert "rpipe" not in rt.bwd_config(5, 768)
    # fewer registers held across the backward's row loop (LEAN, session 26) at D >= 1024 only
    if rt.LEAN is None:
        assert wide["lean"] == 3 and "lean" not in narrow
    fixed = dict(rt.BWD_CONFIG, num_warps=4, split=0)
    with rt.configs(bwd=fixed):
        assert rt.bwd_config(6, 768) == fixed == rt.bwd_config(17, 1152)
    assert rt.bwd_config(6, 768) == narrow and rt._AUTO["bwd"]


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_recompute_h_policy():
    """LN-fused routers keep h for the backward unless they have few sources (auto: N <= 3; N <= 2 for static /
    static_t queries at D >= 1024, where the row-pipelined backward's extra pass costs more), routers over a shared
    prefix too (their partial counted); RECOMPUTE_H_MAX_N forces the count; all / none override; anything else is
    refused with the values that work."""
    from dartool.kernels import router_triton as rt

    old = rt.RECOMPUTE_H, rt.RECOMPUTE_H_MAX_N, rt.RECOMPUTE_H_PREFIX
    try:
        rt.RECOMPUTE_H, rt.RECOMPUTE_H_MAX_N = "auto", None
        assert [rt.keep_h_for(n, 768) for n in (1, 3, 4, 57)] == [False, False, True, True]
        assert [rt.keep_h_for(n, 1152) for n in (1, 2, 3, 57)] == [False, False, True, True]
        assert not rt.keep_h_for(3, 1152, dynamic=True) and rt.keep_h_for(4, 1152, dynamic=True)
        assert [rt.keep_h_for(n, 768, prefix=True) for n in (1, 3, 4)] == [False, False, True]
        assert [rt.keep_h_for(n, 1152, prefix=True) for n in (2, 3)] == [False, True]
        rt.RECOMPUTE_H_MAX_N = 0
        assert rt.keep_h_for(1, 768) and rt.keep_h_for(1, 1152, prefix=True)
        rt.RECOMPUTE_H_MAX_N, rt.RECOMPUTE_H_PREFIX = None, False
        assert rt.keep_h_for(1, 768, prefix=True) and not rt.keep_h_for(1, 768)
        rt.RECOMPUTE_H_PREFIX = True
        rt.RECOMPUTE_H = "all"
        assert not rt.keep_h_for(57, 768)
        rt.RECOMPUTE_H = "none"
        assert rt.keep_h_for(1, 768)
        rt.RECOMPUTE_H = "sometimes"
        with pytest.raises(ValueError, match="auto, all or none"):
            rt.keep_h_for(4, 768)
    finally:
        rt.RECOMPUTE_H, rt.RECOMPUTE_H_MAX_N, rt.RECOMPUTE_H_PREFIX = old


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_forward_launch_configuration_per_shape():
    """The forward drops its register prefetch at the source counts of a chunked model and pipelines its source
    loop instead (D >= 768), and a configuration given in a ``configs`` block holds for every N."""
    from dartool.kernels import router_triton as rt

    if not rt._AUTO["fwd"]:
        pytest.skip("DARTOOL_ROUTER_FWD is set")
    assert rt.fwd_config(9, 1152)["prefetch"] == 0 and rt.fwd_config(57, 384) == rt.FWD_CONFIG
    assert rt.fwd_config(57, 1152) == dict(rt.FWD_CONFIG, pipe=3, unroll=1, prefetch=0)
    # chunked source counts at D >= 768: one source per iteration, pipelined 4 deep, 4-wide accesses
    assert {k: rt.fwd_config(6, 768)[k] for k in ("unroll", "pipe", "vec4")} == dict(unroll=1, pipe=4, vec4=1)
    assert rt.fwd_config(6, 384)["pipe"] == 1
    # few sources at D >= 1024: unpipelined (the pipeline's prologue costs more than it hides)
    few = rt.FEW_SOURCES
    if few:
        assert rt.fwd_config(few, 1152) == dict(rt.fwd_config(few + 1, 1152), pipe=1)
        assert rt.fwd_config(few, 768)["pipe"] == 4
    with rt.configs(fwd=dict(prefetch=1)):
        assert rt.fwd_config(9, 1152)["prefetch"] == 1
    assert rt.fwd_config(6, 768)["prefetch"] == 0 and rt._AUTO["fwd"]


def test_probe_on_hook_alpha_forces_reference():
    model = _tiny()
    r = model.routers[1]
    assert not dispatch._probed(r)
    with tapped(model, {"routers.1.hook_alpha": lambda n, a: None}):
        assert dispatch._probed(r)
    assert not dispatch._probed(r)


def test_readers_keep_the_fused_path_and_see_alpha():
    model = _tiny(query="dynamic")
    x, y, s = torch.randn(2, 4, 8, 8), torch.tensor([1, 2]), torch.tensor([0.3, 0.7])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hooked, read = {}, {}
    with tapped(model, {"routers.*.hook_alpha": lambda n, a: hooked.__setitem__(n, a)}), torch.no_grad():
        out_hooked = model(x, s, y)
    with tapped(model, readers={"routers.*.hook_alpha": lambda n, a: read.__setitem__(n, a)}):
        assert not any(dispatch._probed(r) for r in model.routers)         # readers do not force the reference
        assert all(r.hook_alpha.has_readers for r in model.routers)
        with torch.no_grad():
            out_read = model(x, s, y)
    assert not any(r.hook_alpha.has_readers for r in model.routers)        # removed on exit
    assert torch.equal(out_hooked, out_read) and hooked.keys() == read.keys() and len(read) == len(model.routers)
    for n in hooked:
        assert torch.equal(hooked[n], read[n])


def test_readers_are_removed_when_the_body_raises():
    model = _tiny()
    with pytest.raises(RuntimeError):
        with tapped(model, readers={"routers.*.hook_alpha": lambda n, a: None}):
            raise RuntimeError("boom")
    assert not any(r.hook_alpha.has_readers for r in model.routers)


def test_fused_switch():
    old = dispatch.fused_enabled()
    try:
        dispatch.set_fused(False)
        assert not dispatch.fused_enabled()
        assert "disabled" in dispatch.why_not_fused()
        with dispatch.fused(True):
            assert dispatch.fused_enabled()
        assert not dispatch.fused_enabled()
    finally:
        dispatch.set_fused(old)


def test_model_outputs_unchanged_on_cpu():
    """The hook in Router.forward / DARStream must not change the CPU (reference) result."""
    model = _tiny(query="dynamic", chunk=1)
    x = torch.randn(2, 4, 8, 8)
    t = torch.rand(2)
    y = torch.randint(0, 10, (2,))
    with dispatch.fused(True):
        a = model(x, t, y)
    with dispatch.fused(False):
        b = model(x, t, y)
    assert torch.equal(a, b)


def test_as_built_floor_follows_the_kernels_switches(monkeypatch):
    """traffic.as_built: the fused LayerNorm off is the own-reads floor (the bench's router_traffic_bytes); dynamic
    queries never share prefixes; shared prefixes only on chunks of SHARED_PREFIX_MIN summaries or more; partials
    in fp32 cost 2 bytes per element more for each of the 5 partial reads / writes (forward: write, read;
    backward: write, read, read) of every router that reads one; each kept h in bf16 (2 bytes), or in float32
    with DARTOOL_ROUTER_H=fp32."""
    from dartool.bench import router_traffic_bytes
    from dartool.kernels import compiled_slots, dispatch, traffic

    monkeypatch.setattr(compiled_slots, "ln_h_mode", lambda: "auto")

    monkeypatch.setattr(traffic, "_keep_h_rule", lambda size, dynamic: None)   # every h kept (recompute: below)
    monkeypatch.setattr(dispatch, "FUSE_LN", True)
    monkeypatch.setattr(dispatch, "SHARED_PREFIX", True)
    monkeypatch.setattr(dispatch, "SHARED_PREFIX_MIN", 3)
    monkeypatch.setattr(dispatch, "SHARED_PREFIX_GROUP", 4)
    monkeypatch.setattr(dispatch, "PREFIX_PARTIAL", "auto")
    u = 32 * 256 * 1152
    static, dyn = traffic.as_built("XL", 32, 4, "static"), traffic.as_built("XL", 32, 4, "dynamic")
    assert dyn == traffic.router_bytes("XL", 32, 4, ln_fused=True, h_bytes=2)
    monkeypatch.setattr(compiled_slots, "ln_h_mode", lambda: "fp32")
    dyn32 = traffic.as_built("XL", 32, 4, "dynamic")
    assert dyn32 == traffic.router_bytes("XL", 32, 4, ln_fused=True)
    assert dyn32["fwd"] - dyn["fwd"] == dyn32["bwd"] - dyn["bwd"] == 2 * u * 57      # 56 sublayers + the head
    monkeypatch.setattr(compiled_slots, "ln_h_mode", lambda: "auto")
    assert static["total"] < 0.6 * dyn["total"]
    readers = sum(len(grp) - 1 for c0 in range(0, 56, 4)
                  for grp in [traffic.chunk_routers(56, 4)[c0:c0 + 4]] if grp[0][0] >= 3)
    assert readers == 3 * 12                    # 12 of the 14 chunks have >= 3 summaries; 3 routers each read a partial
    monkeypatch.setattr(dispatch, "PREFIX_PARTIAL", "fp32")
    assert traffic.as_built("XL", 32, 4, "static")["total"] - static["total"] == 5 * 2 * u * readers
    monkeypatch.setattr(dispatch, "SHARED_PREFIX_MIN", 100)          # no chunk has that many summaries
    assert traffic.as_built("XL", 32, 4, "static") == dyn
    monkeypatch.setattr(dispatch, "FUSE_LN", False)                  # shared prefixes need the fused LayerNorm
    plain = traffic.as_built("XL", 32, 4, "static")
    assert plain["total"] == router_traffic_bytes("XL", 32, 4)["total"] and plain == traffic.router_bytes("XL", 32, 4)
    # groups: c8 chunks run in two passes of 4 routers, each pass reading the summaries
    monkeypatch.setattr(dispatch, "FUSE_LN", True)
    monkeypatch.setattr(dispatch, "SHARED_PREFIX_MIN", 3)
    monkeypatch.setattr(dispatch, "PREFIX_PARTIAL", "auto")
    one = traffic.router_bytes("XL", 32, 8, shared=True, ln_fused=True, partial_bytes=2, min_summaries=3, group=0)
    assert traffic.as_built("XL", 32, 8, "static") != one


def test_traffic_counts_routers_that_recompute_h():
    """A router that recomputes h (keep_h False) writes no h forward and reads none backward: one h (fp32, 4 bytes
    an element) fewer each way per router, shared prefix or not; counted only with the fused LayerNorm; the rule
    sees a prefix router's partial as one of its sources."""
    from dartool.kernels import traffic

    u, L = 32 * 256 * 1152, 56
    kw = dict(shared=True, ln_fused=True, partial_bytes=2, min_summaries=3, group=4)
    kept = traffic.router_bytes("XL", 32, 4, **kw)
    none = traffic.router_bytes("XL", 32, 4, keep_h=lambda n, prefix: False, **kw)
    assert kept["fwd"] - none["fwd"] == kept["bwd"] - none["bwd"] == 4 * u * (L + 1)     # 56 sublayers + the head
    unshared = traffic.router_bytes("XL", 32, 4, ln_fused=True)
    assert unshared["total"] - traffic.router_bytes("XL", 32, 4, ln_fused=True, keep_h=lambda n, p: False)[
        "total"] == 2 * 4 * u * (L + 1)
    assert traffic.router_bytes("XL", 32, 4, keep_h=lambda n, p: False) == traffic.router_bytes("XL", 32, 4)
    seen = set()
    traffic.router_bytes("XL", 32, 4, keep_h=lambda n, p: seen.add((n, p)) or True, **kw)
    assert {(n, True) for n in (1, 2, 3, 4)} <= seen            # partial + 0..3 raw sources
    assert all(n >= 1 for n, _ in seen) and any(not p for _, p in seen)   # chunks 0-2 and the head read their own
    # only prefix routers of <= 2 sources recompute (the D >= 1024 rule): 2 of each shared group of 4
    two = traffic.router_bytes("XL", 32, 4, keep_h=lambda n, p: not (p and n <= 2), **kw)
    assert kept["fwd"] - two["fwd"] == 4 * u * 2 * 12           # 12 chunks share their prefix
    # kept h in bf16 (h_bytes=2, session 29): half an fp32 h's bytes fewer each way per router that keeps it
    kept16 = traffic.router_bytes("XL", 32, 4, h_bytes=2, **kw)
    assert kept["fwd"] - kept16["fwd"] == kept["bwd"] - kept16["bwd"] == 2 * u * (L + 1)
    assert traffic.router_bytes("XL", 32, 4, h_bytes=2, keep_h=lambda n, p: False, **kw) == none
    assert traffic.router_bytes("XL", 32, 4, h_bytes=2) == traffic.router_bytes("XL", 32, 4)   # unfused: not counted


@pytest.mark.skipif(not HAS_TRITON, reason="needs Triton (router_triton.keep_h_for)")
def test_as_built_floor_follows_keep_h_for(monkeypatch):
    """as_built asks router_triton.keep_h_for, at its current settings, which routers recompute h (each kept h in
    bf16, router_triton.LN_H auto)."""
    from dartool.kernels import compiled_slots, dispatch, router_triton as rt, traffic

    monkeypatch.setattr(compiled_slots, "ln_h_mode", lambda: "auto")
    monkeypatch.setattr(dispatch, "FUSE_LN", True)
    monkeypatch.setattr(rt, "RECOMPUTE_H", "none")
    kept = traffic.as_built("XL", 32, 4, "static")
    monkeypatch.setattr(rt, "RECOMPUTE_H", "all")
    assert kept["total"] - traffic.as_built("XL", 32, 4, "static")["total"] == 2 * 2 * 32 * 256 * 1152 * 57
    monkeypatch.setattr(rt, "RECOMPUTE_H", "auto")
    monkeypatch.setattr(rt, "RECOMPUTE_H_MAX_N", None)
    auto = traffic.as_built("XL", 32, 4, "static")["total"]
    assert kept["total"] - 2 * 2 * 32 * 256 * 1152 * 57 < auto < kept["total"]
    # auto at D = 1152, static queries: routers of <= 2 sources (a partial counted) recompute
    rule = traffic.router_bytes("XL", 32, 4, shared=True, ln_fused=True, partial_bytes=2,
                                min_summaries=dispatch.SHARED_PREFIX_MIN, group=dispatch.SHARED_PREFIX_GROUP,
                                keep_h=lambda n, prefix: n > 2, h_bytes=2)
    assert auto == rule["total"]


def test_floor_options_model():
    """benchmarks/floor_options.py: its 'as built' count is the bench's; bf16 v_0 and h save 2 + 2 bytes per
    element in every router's forward and 4 + 4 in its backward; shared prefixes never add bytes and save
    some where chunks have many summaries (SiT-XL/2 c4); the fused LayerNorm saves 4 + 12 (fp32 h)."""

    from dartool.bench import router_traffic_bytes

    fo = load_benchmark("floor_options")
    from dartool.kernels.traffic import chunk_routers

    assert chunk_routers(4, 2) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    unit, routers = 64 * 256 * 1152, 57
    built = fo.traffic("XL", 64)
    assert built["total"] == router_traffic_bytes("XL", 64, 4)["total"]
    bf16 = fo.traffic("XL", 64, bf16_stream=True)
    assert built["fwd"] - bf16["fwd"] == 4 * unit * routers and built["bwd"] - bf16["bwd"] == 8 * unit * routers
    for size, batch in (("S", 8), ("B", 256), ("XL", 64)):
        assert fo.traffic(size, batch, shared=True)["total"] <= fo.traffic(size, batch)["total"]
    assert fo.traffic("XL", 64, shared=True)["total"] < 0.75 * built["total"]
    # LN fused: 4 bytes per element and router saved in the forward, 12 in the backward (h in fp32); 2 + 6 in bf16
    ln = fo.traffic("XL", 64, ln_fused=True)
    assert built["fwd"] - ln["fwd"] == 4 * unit * routers and built["bwd"] - ln["bwd"] == 12 * unit * routers
    ln16 = fo.traffic("XL", 64, bf16_stream=True, ln_fused=True)
    assert bf16["total"] - ln16["total"] == 8 * unit * routers


def test_ln_modulate_backward_formula():
    """floor_options.ln_modulate_backward (what a router with the LayerNorm + modulate fused in would compute in
    its backward) equals autograd through F.layer_norm and modulate, in float64."""

    import torch.nn.functional as F

    fo = load_benchmark("floor_options")
    torch.manual_seed(0)
    B, T, D, eps = 3, 7, 24, 1e-6
    h = (torch.randn(B, T, D, dtype=torch.float64) * 3 + 1).requires_grad_()
    shift = torch.randn(B, D, dtype=torch.float64, requires_grad=True)
    scale = torch.randn(B, D, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(B, T, D, dtype=torch.float64)
    y = F.layer_norm(h, (D,), eps=eps) * (1 + scale[:, None]) + shift[:, None]
    want = torch.autograd.grad(y, (h, shift, scale), dy)
    got = fo.ln_modulate_backward(dy, h.detach(), shift.detach(), scale.detach(), eps)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("query", ["static", "static_t"])
def test_shared_prefix_layout_computes_the_same_function(query):
    """The shared-prefix layout that floor_options.py models (summaries read once per chunk, each router merging
    its partial state with its raw sources) equals the reference routers over summaries + raw sources, in float64."""

    fo = load_benchmark("floor_options")
    torch.manual_seed(0)
    B, T, D, P, S = 2, 5, 16, 3, 4
    summaries = [torch.randn(B, T, D, dtype=torch.float64) * (1 + i) for i in range(P)]
    chunk = [torch.randn(B, T, D, dtype=torch.float64) for _ in range(S - 1)]
    raws = [chunk[:j] for j in range(S)]
    routers = [Router(D, "static").double() for _ in range(S)]
    qs = []
    for r in routers:
        with torch.no_grad():
            r.norm.weight.copy_(1 + 0.3 * torch.randn(D, dtype=torch.float64))
        qs.append(torch.randn(D, dtype=torch.float64) * 2 if query == "static"
                  else torch.randn(B, 1, D, dtype=torch.float64) * 2)
    got = fo.shared_prefix_route(summaries, raws, qs, [r.norm.weight.detach() for r in routers])
    for j, r in enumerate(routers):
        with torch.no_grad():
            want = r(summaries + raws[j], qs[j])
        assert torch.allclose(got[j], want, rtol=1e-12, atol=1e-12)


def test_router_traffic_floor_by_hand():
    """Depth 2 (L = 4 sublayers), chunk 2: routers read [v0], [v0, v1], [v0, v2], [v0, v2, v3] and the head
    [v0, v2, v3, v4] (sum N = 12). In units of one [B, T, D] element count: forward = sum(4 + 2 (N - 1) + 4)
    = 5 * 6 + 2 * 12 = 54 bytes; backward = twice the sources plus dh and h in float32 = 2 * (5 * 2 + 2 * 12)
    + 5 * 8 = 108."""
    from dartool.bench import _floors, router_traffic_bytes
    from dartool.models import SIZES

    SIZES["_t"] = (2, 8, 1)
    try:
        r = router_traffic_bytes("_t", batch=3, chunk=2, tokens=5)
    finally:
        del SIZES["_t"]
    unit = 3 * 5 * 8
    assert r["sources_read"] == 12 and r["fwd"] == 54 * unit and r["bwd"] == 108 * unit
    # the XL c4 plan: 57 routers, 522 source reads (KERNEL_NOTES.md)
    assert router_traffic_bytes("XL", 128, 4)["sources_read"] == 522
    rows = [dict(model="SiT-XL/2", batch=128, routing="residual", compiled=True, step_ms=200.0, chunk=4),
            dict(model="SiT-XL/2", batch=128, routing="dar", compiled=True, step_ms=260.0, chunk=4)]
    _floors(rows, 3e12)
    floor = router_traffic_bytes("XL", 128, 4)["total"] / 3e12 * 1e3
    assert rows[1]["extra_ms"] == 60.0 and abs(rows[1]["router_floor_ms"] - floor) < 1e-9
    assert abs(rows[1]["floor_ratio"] - (200 + floor) / 200) < 1e-12 and "router_floor_ms" not in rows[0]
    from dartool.kernels.traffic import as_built       # the routers as this process runs them: fewer bytes

    built = as_built("XL", 128, 4, "static")["total"] / 3e12 * 1e3
    assert abs(rows[1]["router_floor_built_ms"] - built) < 1e-9 and built < rows[1]["router_floor_ms"]
    assert abs(rows[1]["floor_built_ratio"] - (200 + built) / 200) < 1e-12


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed (CI): the interpreter check needs it")
def test_interpreter_check_quick():
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # --quick trims the router cases and the model part only: the LayerNorm, shared-prefix and shared-model parts run
    # in full, 525 s in all on a 2-core CPU (session 17; the timeouts of 120 / 180 s were set on a faster machine)
    p = subprocess.run([sys.executable, "-m", "dartool.kernels.check", "--interpret", "--quick"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "PASS" in p.stdout


def test_check_only_rejects_an_unknown_part():
    from dartool.kernels import check

    with pytest.raises(ValueError, match="unknown check part"):
        check.run_all(device="cpu", only=["shared-prefix", "bogus"])
    p = subprocess.run([sys.executable, "-m", "dartool.kernels.check", "--only", "bogus"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")))
    assert p.returncode == 2 and "--only: unknown part(s) bogus" in p.stderr


def test_check_only_runs_a_named_part_that_quick_leaves_out(monkeypatch):
    """--quick leaves the compiled parts and --no-model the model out of a full run, but a part asked for by name
    (--only) runs: before session 31 `--quick --only compiled-accum` ran nothing and reported FAIL."""
    from dartool.kernels import check

    ran = []
    for fn, part, one in (("compiled_accum_check", "compiled-accum", False),
                          ("compiled_saved_check", "compiled-dynamic-saved", True), ("model_check", "model", False)):
        def stub(*a, _p=part, _one=one, **k):   # as the real ones return: one row, or a list of rows
            ran.append(_p)
            return dict(name=_p, ok=True) if _one else [dict(name=_p, ok=True)]
        monkeypatch.setattr(check, fn, stub)
    for part in ("compiled-accum", "compiled-dynamic-saved", "model"):
        out = check.run_all(device="cpu", quick=True, model=False, only=[part])
        assert out["ok"] and [m["name"] for m in out["models"]] == [part] and ran[-1] == part, out
    out = check.run_all(device="cpu", quick=True, model=False, only=["tapped-sources"])
    assert "compiled-accum" not in [m["name"] for m in out["models"]] and len(ran) == 3


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed (CI): the interpreter check needs it")
def test_interpreter_check_only_shared_prefix():
    """--only runs the named parts and nothing else (here the shared-prefix kernels against float64)."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "dartool.kernels.check", "--interpret", "--only", "shared-prefix"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0 and "PASS" in p.stdout, p.stdout[-3000:] + p.stderr[-3000:]
    assert "prefix-2pass-nocv" in p.stdout and "small-dynamic" not in p.stdout and "ln-" not in p.stdout


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed (CI): the interpreter check needs it")
def test_interpreter_check_quick_vec4():
    """Both kernels with vec4 (column offsets written as runs of 4: 4-wide accesses, no layout conversion per
    source; off by default until timed on a GPU) against float64: the backward's one-source loop (D >= 1024),
    the forward's prefetching two-source loop."""
    env = dict(os.environ, TRITON_INTERPRET="1", DARTOOL_ROUTER_BWD="1,8,1,1,1,1,0,1,1,0,1",
               DARTOOL_ROUTER_FWD="1,1,1,1,2,1,1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "dartool.kernels.check", "--interpret", "--quick"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0 and "PASS" in p.stdout, p.stdout[-3000:] + p.stderr[-3000:]


@pytest.mark.skipif(not HAS_TRITON, reason="needs Triton (router_triton)")
def test_recompute_h_max_from_the_environment():
    """DARTOOL_RECOMPUTE_H_MAX=N sets the most sources a router may have and still recompute h, at every width and
    query kind; unset, the per-width rule holds."""
    code = """
from dartool.kernels import router_triton as rt
assert rt.RECOMPUTE_H_MAX_N == 5
assert rt.recompute_h_max(768, dynamic=True) == rt.recompute_h_max(1152) == 5
assert rt.keep_h_for(6, 768, dynamic=True) and not rt.keep_h_for(5, 1152)
print("ok")
"""
    env = dict(os.environ, DARTOOL_RECOMPUTE_H_MAX="5",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("DARTOOL_RECOMPUTE_H", None)
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "ok" in p.stdout, p.stdout[-3000:] + p.stderr[-3000:]
    env["DARTOOL_RECOMPUTE_H_MAX"] = "five"                     # refused at import, saying what to use
    p = subprocess.run([sys.executable, "-c", "import dartool.kernels.router_triton"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "DARTOOL_RECOMPUTE_H_MAX='five': use a number of sources" in p.stderr, p.stderr[-2000:]


def test_which_dynamic_routers_save_their_query(monkeypatch):
    """DARTOOL_SAVE_QUERY_LAST: ``auto`` (default) saves q in every router at widths >= 1024 and in the last two
    thirds below, but in none where h is kept in float32 (DARTOOL_ROUTER_H=fp32) or the LayerNorm is not fused
    (session 28's default); ``all``; a number K; anything else is refused with what to use."""
    from dartool.kernels import compiled_slots, dispatch

    monkeypatch.setattr(dispatch, "SAVE_QUERY_LAST", "auto")
    monkeypatch.setattr(dispatch, "FUSE_LN", True)
    monkeypatch.setattr(compiled_slots, "ln_h_mode", lambda: "auto")
    assert dispatch.save_query_count(25, 768) == 17 and dispatch.save_query_count(57, 1152) == 57
    assert [dispatch.saves_query(r, 25, 768) for r in range(25)] == [False] * 8 + [True] * 17
    assert all(dispatch.saves_query(r, 57, 1152) for r in range(57))
    monkeypatch.setattr(compiled_slots, "ln_h_mode", lambda: "fp32")
    assert dispatch.save_query_count(57, 1152) == 0 and not dispatch.saves_query(56, 57, 1152)
    monkeypatch.setattr(compiled_slots, "ln_h_mode", lambda: "auto")
    monkeypatch.setattr(dispatch, "FUSE_LN", False)
    assert dispatch.save_query_count(25, 768) == 0
    for v, want in (("all", 25), ("12", 12), (40, 25), ("0", 0)):
        monkeypatch.setattr(dispatch, "SAVE_QUERY_LAST", v)
        assert dispatch.save_query_count(25, 768) == want, v
    for bad in ("most", "-1"):
        monkeypatch.setattr(dispatch, "SAVE_QUERY_LAST", bad)
        with pytest.raises(ValueError, match="DARTOOL_SAVE_QUERY_LAST.*auto, all or a number"):
            dispatch.save_query_count(25, 768)


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed (CI): the interpreter check needs it")
def test_save_query_for_the_last_routers_only():
    """DARTOOL_SAVE_QUERY_LAST=K: the last K dynamic routers (the head's included) save q for the backward, the
    others recompute it; the gradients do not change (Triton interpreter, eager autograd path)."""
    code = """
import torch
from dartool.diffusion import diffusion_loss
from dartool.kernels import dispatch, router_triton as rt
from dartool.models import SiT, model_config
dispatch.SAVE_QUERY_LAST = "0"
assert [dispatch.saves_query(r, 5, 48) for r in range(5)] == [False] * 5
calls = {"n": 0}
real = rt._FusedDynamicRouterLNFn.apply
def counting(*a):
    calls["n"] += 1
    return real(*a)
rt._FusedDynamicRouterLNFn.apply = counting
grads, recomputed = {}, {}
for k in (0, 2):
    dispatch.SAVE_QUERY_LAST = k
    calls["n"] = 0
    cfg = model_config("S", 2, input_size=8, routing="dar", query="dynamic", chunk_size=2).replace(
        depth=2, hidden_size=48, num_heads=4)
    torch.manual_seed(0)
    model = SiT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    g = torch.Generator().manual_seed(1)
    x, y, s = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([1, 2]), torch.tensor([0.3, 0.6])
    with dispatch.fused(True, allow_cpu=True):
        diffusion_loss(model, x, y, s, eps=torch.randn(2, 4, 8, 8, generator=g)).backward()
    grads[k] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    recomputed[k] = calls["n"]
assert [dispatch.saves_query(r, 5, 48) for r in range(5)] == [False, False, False, True, True]
assert recomputed == {0: 5, 2: 3}, recomputed
worst = max(((grads[2][n] - grads[0][n]).norm() / grads[0][n].norm().clamp_min(1e-12)).item() for n in grads[0])
assert worst < 1e-5, worst
print("ok", recomputed, worst)
"""
    _run_interpreted(code, "DARTOOL_SAVE_QUERY_LAST")


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed (CI): the interpreter check needs it")
def test_ln_fused_router_keeps_h_in_the_layernorm_outputs_dtype():
    """Session 29: an LN-fused router keeps h for the backward in y's dtype when that is 16-bit (bf16 autocast),
    in float32 with DARTOOL_ROUTER_H=fp32 (``set_ln_h``); the compile ops' fakes agree with the kernels, and the
    compile caches' key carries the mode (Triton interpreter)."""
    code = """
import torch
import torch.compiler.config as cc
from dartool.kernels import compiled_slots as cs, prefix_triton as pt, router_triton as rt
bf, f32 = torch.bfloat16, torch.float32
g = torch.Generator().manual_seed(0)
B, T, D = 2, 5, 40
srcs = [torch.randn(B, T, D, generator=g)] + [torch.randn(B, T, D, generator=g).to(bf) for _ in range(2)]
q, gain = torch.randn(D, generator=g), 1 + 0.1 * torch.randn(D, generator=g)
shift, scale = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)
seen = {}
for mode in ("auto", "fp32"):
    rt.set_ln_h(mode)
    assert cs.ln_h_mode() == mode and cc.cache_key_tag.endswith(f"-h{mode}"), cc.cache_key_tag
    for y_dtype in (bf, f32):
        y, h, lse = rt._fwd_ln_impl(srcs, q, gain, 1e-6, shift, scale, 1e-6, y_dtype, True)
        fy, fh, flse = rt._router_ln_fwd_fake(srcs, q, gain, 1e-6, shift, scale, 1e-6, y_dtype, True)
        assert (y.dtype, h.dtype, lse.dtype) == (fy.dtype, fh.dtype, flse.dtype), (mode, y_dtype, h.dtype, fh.dtype)
        assert fh.shape == h.shape == (B, T, D)
        part = torch.randn(B, T, D, generator=g).to(bf)
        ph = pt._router_ln_prefix_fwd_fake(part, lse, srcs[1:], q, gain, 1e-6, shift, scale, 1e-6, y_dtype, True)[1]
        assert ph.dtype == h.dtype, (ph.dtype, h.dtype)
        seen[mode, y_dtype] = h.dtype
        if mode == "auto" and y_dtype == bf:
            _, h32, _ = rt._fwd_ln_impl(srcs, q, gain, 1e-6, shift, scale, 1e-6, f32, True)
            # one bf16 step at most (round-to-nearest on the GPU; the interpreter may truncate)
            assert ((h.float() - h32).abs() <= 2 ** -7 * h32.abs()).all(), "h is y's forward h, rounded"
assert seen == {("auto", bf): bf, ("auto", f32): f32, ("fp32", bf): f32, ("fp32", f32): f32}, seen
try:
    rt.set_ln_h("fp16")
except ValueError as e:
    assert "DARTOOL_ROUTER_H" in str(e)
else:
    raise AssertionError("fp16 accepted")
print("ok")
"""
    _run_interpreted(code, "DARTOOL_ROUTER_H")


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton (its CPU interpreter)")
def test_recomputed_query_gets_dq_in_a_fresh_buffer_unless_asked():
    """Session 30: a dynamic router that recomputes q writes dq into a fresh buffer by default (writing it over q
    made the launches ~20 % slower at XL/2); DARTOOL_DQ_OVER_Q=1 (``DQ_OVER_Q``) writes over q as before. Both give
    the same gradients (Triton interpreter)."""
    code = """
import torch
from dartool.kernels import router_triton as rt
assert rt.DQ_OVER_Q is False
g = torch.Generator().manual_seed(0)
B, T, D = 2, 5, 32
srcs = [torch.randn(B, T, D, generator=g) for _ in range(3)]
v_prev, W = srcs[-1], torch.randn(D, D, generator=g) / D ** 0.5
gain = 1 + 0.1 * torch.randn(D, generator=g)
q0 = rt._project(v_prev, W, torch.float32)[0]
h, lse, _, _ = rt._fwd_impl(srcs, q0, gain, 1e-6, False, True)
dh = torch.randn(B, T, D, generator=g)
real_prepare, seen, out = rt._bwd_prepare, [], {}

def spy(dh, sources, q, *a, **kw):
    P = real_prepare(dh, sources, q, *a, **kw)
    seen.append(P["dq_rows"].data_ptr() == q.data_ptr())
    return P

rt._bwd_prepare = spy
for over in (False, True):
    rt.DQ_OVER_Q = over
    dvs, dvp, dW, dg, _ = rt._dynamic_bwd(dh, srcs, v_prev, W, gain, h, lse, 1e-6, torch.float32)
    out[over] = [x.clone() for x in (*dvs, dvp, dW, dg)]
assert seen == [False, True], seen
for a, b in zip(out[False], out[True]):
    assert torch.allclose(a, b, rtol=1e-6, atol=1e-6)
print("ok")
"""
    _run_interpreted(code, "DARTOOL_DQ_OVER_Q")


# Shared by the interpreted backward tests: one router's forward on random inputs, what its backward is given
_BWD_INPUTS = """
import torch
from dartool.kernels import router_triton as rt
B, T, D = 2, 6, 32


def bwd_inputs(query, N, ln, g):
    \"\"\"(sources, q, gain, dh, h, lse, extra _bwd_prepare kwargs) for a router of N sources; with ``ln`` the
    LayerNorm + modulate fused in (dh is dy, h the router output kept for the backward).\"\"\"
    srcs = [torch.randn(B, T, D, generator=g) for _ in range(N)]
    q = {"static": lambda: torch.randn(D, generator=g), "static_t": lambda: torch.randn(B, 1, D, generator=g),
         "dynamic": lambda: torch.randn(B, T, D, generator=g)}[query]()
    gain = 1 + 0.1 * torch.randn(D, generator=g)
    dh = torch.randn(B, T, D, generator=g)
    if ln:
        shift, scale = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)
        _, h, lse = rt._fwd_ln_impl(srcs, q, gain, 1e-6, shift, scale, 1e-6, torch.float32, True)
        return srcs, q, gain, dh, h, lse, dict(ln=(scale, 1e-6))
    h, lse, _, _ = rt._fwd_impl(srcs, q, gain, 1e-6, False, True)
    return srcs, q, gain, dh, h, lse, {}
"""


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton (its CPU interpreter)")
def test_accumulating_launches_may_take_the_row_pipeline():
    """ROW_PIPE_ACCUM (session 30, off by default): a launch that adds into running gradient sums takes the
    row-pipelined backward when every sum has an address of its own, and adds exactly the gradients a fresh launch
    writes; off, or with two positions sharing a sum, it stays on the plain loop (Triton interpreter)."""
    code = _BWD_INPUTS + """
g = torch.Generator().manual_seed(0)
for query, N, ln in (("static", 3, False), ("static_t", 4, False), ("dynamic", 6, False), ("dynamic", 1, False),
                     ("static", 4, True), ("dynamic", 5, True)):
    srcs, q, gain, dh, h, lse, kw = bwd_inputs(query, N, ln, g)
    P = rt._bwd_prepare(dh, srcs, q, gain, h, lse, 1e-6, **kw)
    rt._bwd_launch(P)
    fresh, dq0, dg0 = rt._bwd_finish(P)
    assert P["meta"]["NC"] > 0 and not P["meta"]["ACCUM"], (query, N, P["meta"])
    for on in (False, True):
        rt.ROW_PIPE_ACCUM = on
        sums = [torch.randn(B, T, D, generator=g) for _ in range(N)]
        start = [x.clone() for x in sums]
        P = rt._bwd_prepare(dh, srcs, q, gain, h, lse, 1e-6, into=(sums, [1] * N), **kw)
        assert P["meta"]["ACCUM"] and (P["meta"]["NC"] > 0) == on, (query, N, on, P["meta"]["NC"])
        rt._bwd_launch(P)
        _, dq, dg = rt._bwd_finish(P)
        for s0, s1, f in zip(start, sums, fresh):
            assert torch.allclose(s1, s0 + f, rtol=1e-5, atol=1e-5), (query, N, on)
        assert torch.allclose(dq, dq0, rtol=1e-5, atol=1e-6) and torch.allclose(dg, dg0, rtol=1e-5, atol=1e-6)
    if N > 1:      # two positions adding into one buffer: the plain loop, whatever the switch
        shared = torch.zeros(B, T, D)
        P = rt._bwd_prepare(dh, srcs, q, gain, h, lse, 1e-6, into=([shared] * 2 + sums[2:], [1] * N), **kw)
        assert P["meta"]["NC"] == 0
    rt.ROW_PIPE_ACCUM = False
print("ok")
"""
    _run_interpreted(code, "DARTOOL_ROW_PIPE_ACCUM", timeout=600)


@pytest.mark.skipif(not HAS_TRITON, reason="needs Triton (router_triton)")
def test_accum_launch_config_is_read_as_key_value_pairs(monkeypatch):
    """DARTOOL_ROUTER_BWD_ACCUM: key=integer pairs; pipe > 1 drops the unrolled loop (as a --sweep does); anything
    else is refused with what to write."""
    from dartool.kernels import router_triton as rt

    monkeypatch.setenv("DARTOOL_ROUTER_BWD_ACCUM", "")
    assert rt._parse_cfg_pairs("DARTOOL_ROUTER_BWD_ACCUM") == {}
    monkeypatch.setenv("DARTOOL_ROUTER_BWD_ACCUM", "pipe=2, num_warps=2")
    assert rt._parse_cfg_pairs("DARTOOL_ROUTER_BWD_ACCUM") == dict(pipe=2, num_warps=2, unroll=1, prefetch=0)
    monkeypatch.setenv("DARTOOL_ROUTER_BWD_ACCUM", "unroll=2,prefetch=1")
    assert rt._parse_cfg_pairs("DARTOOL_ROUTER_BWD_ACCUM") == dict(unroll=2, prefetch=1)
    for bad in ("pipe", "pipe=two", "warps=2", "pipe=-1"):
        monkeypatch.setenv("DARTOOL_ROUTER_BWD_ACCUM", bad)
        with pytest.raises(ValueError, match="key=integer pairs"):
            rt._parse_cfg_pairs("DARTOOL_ROUTER_BWD_ACCUM")


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton (its CPU interpreter)")
def test_accumulating_launches_take_their_own_config():
    """ACCUM_BWD (DARTOOL_ROUTER_BWD_ACCUM): launches that add into running sums off the row pipeline run with its
    keys, fresh launches keep the shape's configuration, and the sums are start + the fresh launch's gradients
    (Triton interpreter; dynamic and static, plain and LayerNorm-fused)."""
    code = _BWD_INPUTS + """
g = torch.Generator().manual_seed(1)
for extra in (dict(pipe=2, unroll=1, prefetch=0), dict(unroll=2, prefetch=1, pipe=1)):
    for query, N, ln in (("dynamic", 5, False), ("static", 4, True), ("dynamic", 3, True)):
        srcs, q, gain, dh, h, lse, kw = bwd_inputs(query, N, ln, g)
        rt.ACCUM_BWD = extra
        P = rt._bwd_prepare(dh, srcs, q, gain, h, lse, 1e-6, **kw)
        fresh_meta = dict(P["meta"])
        rt._bwd_launch(P)
        fresh, dq0, dg0 = rt._bwd_finish(P)
        sums = [torch.randn(B, T, D, generator=g) for _ in range(N)]
        start = [x.clone() for x in sums]
        P = rt._bwd_prepare(dh, srcs, q, gain, h, lse, 1e-6, into=(sums, [1] * N), **kw)
        m = P["meta"]
        assert m["ACCUM"] and m["NC"] == 0 and m["PIPE"] == extra["pipe"] and m["UNROLL"] == extra["unroll"] \
            and m["PREFETCH"] == bool(extra["prefetch"]), (query, N, extra, m)
        rt.ACCUM_BWD = {}
        P0 = rt._bwd_prepare(dh, srcs, q, gain, h, lse, 1e-6, **kw)
        assert {k: P0["meta"][k] for k in ("PIPE", "UNROLL", "PREFETCH", "NC")} == \
            {k: fresh_meta[k] for k in ("PIPE", "UNROLL", "PREFETCH", "NC")}, "fresh launches keep their config"
        rt._bwd_launch(P)
        _, dq, dg = rt._bwd_finish(P)
        for s0, s1, f in zip(start, sums, fresh):
            assert torch.allclose(s1, s0 + f, rtol=1e-5, atol=1e-5), (query, N, extra)
        assert torch.allclose(dq, dq0, rtol=1e-5, atol=1e-6) and torch.allclose(dg, dg0, rtol=1e-5, atol=1e-6)
print("ok")
"""
    _run_interpreted(code, "DARTOOL_ROUTER_BWD_ACCUM", timeout=600)


@pytest.mark.cuda
@pytest.mark.skipif(not (HAS_CUDA and HAS_TRITON), reason="needs CUDA and triton")
def test_cuda_fused_router_matches_float64_reference():
    from dartool.kernels.check import run_all

    out = run_all(device="cuda", model=True, verbose=True)
    bad = [c["name"] for c in out["cases"] if not c["ok"]] + [m["name"] for m in out["models"] if not m["ok"]]
    assert out["ok"], f"failed cases: {bad}"


@pytest.mark.cuda
@pytest.mark.skipif(not (HAS_CUDA and HAS_TRITON), reason="needs CUDA and triton")
@pytest.mark.parametrize("query,save_q", [("static", "auto"), ("dynamic", "auto"), ("dynamic", "0")])
def test_cuda_model_uses_fused_path_and_compile_matches_eager(query, save_q, monkeypatch):
    """Reference, fused eager and fused compiled agree (dynamic: the compiled step runs the router_ln_fwd_dynamic
    custom op, or router_fwd_dynamic with DARTOOL_FUSE_LN=0, for every router that recomputes q in the backward;
    the others keep q (dispatch.SAVE_QUERY_LAST: at the default a tiny model mixes both, "0": all recompute)."""
    from dartool.diffusion import diffusion_loss
    from dartool.kernels import router_triton

    monkeypatch.setattr(dispatch, "SAVE_QUERY_LAST", save_q)
    model = _tiny(query=query, chunk=2, depth=2).cuda()
    recomputing = len(model.routers) - dispatch.save_query_count(len(model.routers), model.routers[0].dim)
    if query == "dynamic":  # the default keeps q in the last two thirds of a narrow model's routers
        assert 0 < recomputing < len(model.routers) if save_q == "auto" else recomputing == len(model.routers)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    srcs = [torch.randn(2, 16, 64, device="cuda") for _ in range(3)]
    assert dispatch.use_fused(model.routers[2], srcs, model.routers[2].make_query(None, srcs[-1]))
    x = torch.randn(4, 4, 8, 8, device="cuda")
    y = torch.randint(0, 10, (4,), device="cuda")
    s = torch.rand(4, device="cuda")
    e = torch.randn_like(x)
    res = {}
    calls = {"n": 0}
    ops = {k: getattr(router_triton, k) for k in ("router_fwd_dynamic", "router_ln_fwd_dynamic")}

    def counting(k):
        def f(*a):
            calls["n"] += 1
            return ops[k](*a)
        return f

    for name in ("reference", "fused", "compiled"):
        model.zero_grad(set_to_none=True)
        torch._dynamo.reset()
        for k in ops:
            setattr(router_triton, k, counting(k))
        try:
            with dispatch.fused(name != "reference"):
                f = torch.compile(model) if name == "compiled" else model
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = diffusion_loss(f, x, y, s, eps=e)
                loss.backward()
        finally:
            for k, op in ops.items():
                setattr(router_triton, k, op)
        res[name] = (loss.item(), {n: p.grad.double().clone() for n, p in model.named_parameters() if p.grad is not None})
    if query == "dynamic":  # the compiled run takes the op (every recomputing router), the eager runs do not
        assert calls["n"] >= recomputing
    ref_loss, ref_g = res["reference"]
    for name in ("fused", "compiled"):
        loss, g = res[name]
        assert abs(loss - ref_loss) <= 1e-2 * abs(ref_loss)
        for n, gr in ref_g.items():
            if gr.norm() > 0:
                assert ((g[n] - gr).norm() / gr.norm()).item() < 5e-2, (name, n)


@pytest.mark.cuda
@pytest.mark.skipif(not (HAS_CUDA and HAS_TRITON), reason="needs CUDA and triton")
@pytest.mark.parametrize("query", ["static_t", "dynamic"])
def test_cuda_probe_alpha_from_fused_kernel_matches_reference(tmp_path, query):
    """The probe reads alpha through a read-only tap, so the fused router stays on; its alpha and every
    gradient statistic agree with the reference router's (bf16 autocast on both)."""
    from dartool.probe import ProbeConfig, run_probe
    from dartool.store import open_store

    model = _tiny(query=query, chunk=2, depth=3).cuda()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(6, 4, 8, 8)
    y = torch.randint(0, 10, (6,))
    cfg = dict(noise_levels=[0.1, 0.5, 0.9], num_samples=6, batch_size=3, pooled_samples=2, projection_dim=4,
               progress=False, background_writes=False, precision="bf16")
    stores = {}
    for name in ("reference", "fused"):
        with dispatch.fused(name == "fused"):
            stores[name] = open_store(run_probe(model, (x, y), ProbeConfig(**cfg), tmp_path / f"{name}.zarr"))
    a, b = stores["reference"], stores["fused"]
    np.testing.assert_allclose(b.alpha.values, a.alpha.values, rtol=2e-2, atol=2e-3, equal_nan=True)
    for var in ("loss", "z_rms", "h_rms", "z_grad_rms", "h_grad_rms", "alpha_entropy"):
        np.testing.assert_allclose(b[var].values, a[var].values, rtol=5e-2, atol=1e-6, equal_nan=True)


def test_hooks_idle_sees_every_kind_of_listener():
    """The fused LayerNorm path (PendingRoute) runs only when no tap listens: readers, module forward hooks and
    pre-hooks on any tap point of the model, and global module hooks all count; a detached hook is idle again."""
    model = SiT(model_config("S", 2, input_size=8, routing="dar", chunk_size=2).replace(depth=2, hidden_size=32,
                                                                                        num_heads=4))
    points = model._tap_points
    assert len(points) == 5 * 2 + 2 + len(model.routers) and dispatch.hooks_idle(points)   # 5 per block
    with tapped(model, readers={"blocks.1.hook_attn_in": lambda n, x: None}):
        assert not dispatch.hooks_idle(points)
    with tapped(model, hooks={"routers.2.hook_alpha": lambda n, x: None}):
        assert not dispatch.hooks_idle(points)
    h = model.blocks[0].hook_out.register_forward_pre_hook(lambda m, a: None)
    assert not dispatch.hooks_idle(points)
    h.remove()
    g = torch.nn.modules.module.register_module_forward_hook(lambda m, a, o: None)
    try:
        assert not dispatch.hooks_idle(points)
    finally:
        g.remove()
    assert dispatch.hooks_idle(points)


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton (its bundled ptxas compiles without a GPU)")
def test_kernel_resources_report_compiles_without_a_gpu(capsys):
    """benchmarks/kernel_resources.py compiles both kernels for sm_90 ahead of time and reports registers and
    stack bytes for each variant."""
    kr = load_benchmark("kernel_resources")
    assert kr.main(["--D", "384"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 384 |")]
    assert len(rows) == 10     # forward x 3 (plain, LN, LN + vec4), backward x 7 (plain, LN, LN + ln_slot,
    #                            + h recomputed, + dynamic query, LN + ln_slot with vec4 static and dynamic)
    for line in rows:
        regs, stack = (int(x) for x in line.strip("| ").split("|")[-2:])
        assert 0 < regs <= 255 and stack >= 0


def _interpreter_check_router_ln_prefix(parts: str = "router,ln-fused,shared-prefix", **env_vars: str) -> None:
    """The float64 check's router, LayerNorm-fused and shared-prefix parts (or ``parts``; quick) in the Triton
    interpreter, in a subprocess with these environment variables set (the kernels' module settings are read at
    import)."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               **env_vars)
    p = subprocess.run([sys.executable, "-m", "dartool.kernels.check", "--interpret", "--quick", "--no-model",
                        "--only", parts], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=1200)
    assert p.returncode == 0 and "PASS" in p.stdout, p.stdout[-3000:] + p.stderr[-3000:]


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed (CI): the interpreter check needs it")
def test_interpreter_check_without_the_row_pipelined_backward():
    """The few-source backward with the row pipeline switched off (DARTOOL_ROUTER_RPIPE=1: the source loops run
    over a runtime N, the partials in slots where the per-shape rule puts them), which the default (rpipe 2, in the
    other interpreter checks) no longer reaches, against float64 in the interpreter: the plain routers (N = 1 and
    small N), the LayerNorm-fused ones and the shared prefix's routers."""
    _interpreter_check_router_ln_prefix(DARTOOL_ROUTER_RPIPE="1")


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed (CI): the interpreter check needs it")
def test_interpreter_check_dynamic_row_pipelined_backward():
    """Dynamic routers on the row-pipelined backward (DYN_ROW_PIPE_N, off at D >= 1024; forced here for every source
    count the check's quick cases have, up to 18): the next rows' q is fetched while a row's dq is written over its
    own q. The plain routers, the LayerNorm-fused ones and a dynamic model's recomputed queries against float64."""
    _interpreter_check_router_ln_prefix("router,ln-fused,dynamic-recompute", DARTOOL_ROUTER_DYN_RPIPE="18",
                                        DARTOOL_ROUTER_LEAN="3")


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_dynamic_row_pipeline_only_where_asked(monkeypatch):
    """DYN_ROW_PIPE_N = k puts dynamic routers of at most k sources (never more than DYN_ROW_PIPE_MAX_N) on the
    row-pipelined backward, with the source loop unpipelined; static routers and larger ones keep their choice.
    Unset, the per-width rule: every router of a c4 SiT-B/2 (N <= 12 at D < 1024), none at D >= 1024 (sessions
    27-28)."""
    from dartool.kernels import router_triton as rt

    if not rt._AUTO["bwd"]:
        pytest.skip("DARTOOL_ROUTER_BWD is set")
    if not os.environ.get("DARTOOL_ROUTER_DYN_RPIPE"):
        assert rt.DYN_ROW_PIPE_N is None
    monkeypatch.setattr(rt, "ROW_PIPE", 2)
    monkeypatch.setattr(rt, "DYN_ROW_PIPE_N", None)
    assert rt.bwd_config(12, 768, dynamic=True)["rpipe"] == 2 and "rpipe" not in rt.bwd_config(13, 768, dynamic=True)
    assert not any("rpipe" in rt.bwd_config(n, 1152, dynamic=True) for n in (1, 4, 9))
    monkeypatch.setattr(rt, "DYN_ROW_PIPE_N", 0)
    off = {n: rt.bwd_config(n, 1152, dynamic=True) for n in (1, 8, 9)}
    static = rt.bwd_config(6, 768)
    assert not any("rpipe" in c for c in off.values())
    monkeypatch.setattr(rt, "DYN_ROW_PIPE_N", 8)
    for n in (1, 8):
        c = rt.bwd_config(n, 1152, dynamic=True)
        assert (c["rpipe"], c["pipe"], c["unroll"], c["prefetch"]) == (2, 1, 1, 0)
        assert {k: v for k, v in c.items() if k not in ("rpipe", "rslot", "pipe")} == \
            {k: v for k, v in off[n].items() if k != "pipe"}
    assert rt.bwd_config(9, 1152, dynamic=True) == off[9] and rt.bwd_config(6, 768) == static
    monkeypatch.setattr(rt, "DYN_ROW_PIPE_N", 99)
    assert "rpipe" not in rt.bwd_config(rt.DYN_ROW_PIPE_MAX_N + 1, 1152, dynamic=True)


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed (CI): the interpreter check needs it")
def test_interpreter_check_lean_backward():
    """The backward with fewer registers held across its row loop (LEAN 3: g re-read per row, each source's query-
    gradient term added straight into the partial), the default at D >= 1024 only, so the interpreter's small widths
    reach it only when forced (DARTOOL_ROUTER_LEAN=3): the plain routers (the row-pipelined few-source path and the
    two-source loop), the LayerNorm-fused ones and the shared prefix's routers against float64."""
    _interpreter_check_router_ln_prefix(DARTOOL_ROUTER_LEAN="3")


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton (its bundled ptxas compiles without a GPU)")
def test_lean_backward_spills_less_at_d1152():
    """LEAN is worth its switch only while it removes spills: at D = 1152 the row-pipelined few-source backward
    (LayerNorm fused, over a shared prefix, h kept, N = 4) spills (255 registers, a stack frame); LEAN 3 leaves it a
    smaller stack than LEAN 0 (sm_90 ptxas on the CPU: 464 -> 232 bytes with Triton 3.6)."""
    kr = load_benchmark("kernel_resources")
    from dartool.kernels import router_triton as rt

    cfg = dict(rt.bwd_config(4, 1152), unroll=1, prefetch=0, pipe=1, ln_slot=0, part_slot=0, prefix=1, rpipe=2, nc=4)
    (r0, s0), (r3, s3) = (kr.bwd_usage(1152, True, dict(cfg, lean=k)) for k in (0, 3))
    assert r0 == 255 and s0 > 0 and s3 < s0, (r0, s0, r3, s3)


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton (its bundled ptxas compiles without a GPU)")
def test_rpipe_makes_the_backward_row_loop_a_software_pipeline():
    """rpipe > 1 (with N a constant, NC) turns the row loop into a software pipeline (asynchronous copies into
    shared memory); without it, a few-source backward has none."""
    kr = load_benchmark("kernel_resources")
    from dartool.kernels import router_triton as rt

    cfg = dict(rt.bwd_config(4, 768), unroll=1, prefetch=0, pipe=1, ln_slot=0, part_slot=0, prefix=1)
    n = [kr.bwd_usage(768, True, dict(cfg, nc=nc, rpipe=r), count_async=True) for nc, r in ((0, 1), (2, 2), (2, 3))]
    assert n[0] == 0 < n[1] < n[2], n


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton (its bundled ptxas compiles without a GPU)")
def test_pipe_makes_the_backward_source_loop_a_software_pipeline():
    """pipe > 1 is only worth its config key if Triton really pipelines the pointer-table loads of the source loop
    (cp.async into shared memory): a Triton upgrade that stopped doing so would silently undo the measured gain.
    pipe = 1 has no asynchronous copies; deeper pipes have more."""
    kr = load_benchmark("kernel_resources")
    from dartool.kernels import router_triton as rt

    cfg = dict(rt.bwd_config(9, 1024), ln_slot=1)
    n = [kr.bwd_usage(1024, True, dict(cfg, pipe=p), count_async=True) for p in (1, 3, 4)]
    assert n[0] == 0 < n[1] < n[2], n


def test_router_kernels_bench_variants_sweep_and_set():
    """router_kernels_bench --sweep: every combination, keys routed to the kernel that has them (fwd. / bwd. for
    one); pipe > 1 means the one-source loop; --set is applied after the sweep, so it can override that."""
    rkb = load_benchmark("router_kernels_bench")
    fwd = dict(unroll=2, prefetch=1, pipe=1, vec4=0, num_warps=1)
    bwd = dict(unroll=2, prefetch=1, pipe=1, vec4=0, rows=8)
    v = rkb._variants(fwd, bwd, ["pipe=1,3", "bwd.rows=4,8"], [])
    assert [x[0] for x in v] == ["pipe=1 bwd.rows=4", "pipe=1 bwd.rows=8", "pipe=3 bwd.rows=4", "pipe=3 bwd.rows=8"]
    _, f3, b3 = v[2]
    assert (f3["pipe"], f3["unroll"], f3["prefetch"], b3["pipe"], b3["unroll"], b3["rows"]) == (3, 1, 0, 3, 1, 4)
    assert "rows" not in f3 and v[0][1] == fwd
    _, f, b = rkb._variants(fwd, bwd, ["bwd.pipe=3"], ["bwd.unroll=2"])[0]
    assert (b["pipe"], b["unroll"], f["pipe"]) == (3, 2, 1)
    assert rkb._variants(fwd, bwd, [], [])[0][0] == "default"


def test_prefix_partial_dtype(monkeypatch):
    """Shared prefixes keep their partials in the model's compute dtype: autocast's inside autocast, else the last
    summary's; DARTOOL_PREFIX_PARTIAL=fp32 keeps float32; anything else is a clear error."""
    from dartool.kernels import dispatch

    v0, s1 = torch.randn(2, 3, 8), torch.randn(2, 3, 8).bfloat16()
    monkeypatch.setattr(dispatch, "PREFIX_PARTIAL", "auto")
    assert dispatch.partial_dtype([v0, s1]) == torch.bfloat16
    assert dispatch.partial_dtype([v0]) == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert dispatch.partial_dtype([v0]) == torch.bfloat16
    monkeypatch.setattr(dispatch, "PREFIX_PARTIAL", "fp32")
    assert dispatch.partial_dtype([v0, s1]) == torch.float32
    monkeypatch.setattr(dispatch, "PREFIX_PARTIAL", "fp16")
    with pytest.raises(ValueError, match="auto or fp32"):
        dispatch.partial_dtype([v0, s1])


def test_shared_prefix_policy(monkeypatch):
    """Shared prefixes (prefix_triton) run where they were measured faster: chunks with at least SHARED_PREFIX_MIN
    summaries at widths below SHARED_PREFIX_MAX_D; a model's own choice (SiT.share_prefixes) ignores the width but
    not the minimum; never on the CPU reference path."""
    from dartool.kernels import dispatch
    from dartool.models import SiT, model_config

    if dispatch.SHARED_PREFIX and "DARTOOL_SHARED_PREFIX_MIN" not in os.environ:   # the default: every width
        assert dispatch.shares_prefix(1152, 3) and dispatch.shares_prefix(768, 3)
    monkeypatch.setattr(dispatch, "SHARED_PREFIX", True)
    monkeypatch.setattr(dispatch, "SHARED_PREFIX_MIN", 3)
    monkeypatch.setattr(dispatch, "SHARED_PREFIX_MAX_D", 1024)
    assert dispatch.shares_prefix(768, 3) and not dispatch.shares_prefix(768, 2)
    assert not dispatch.shares_prefix(1152, 14)
    assert dispatch.shares_prefix(1152, 14, forced=True) and not dispatch.shares_prefix(768, 6, forced=False)
    assert not dispatch.shares_prefix(1152, 2, forced=True)
    monkeypatch.setattr(dispatch, "SHARED_PREFIX", False)
    assert not dispatch.shares_prefix(768, 6) and dispatch.shares_prefix(768, 6, forced=True)
    # on the CPU the reference path runs: no prefix state is ever made, whatever the switch says
    cfg = model_config("S", 2, input_size=4, routing="dar", query="static", chunk_size=2).replace(
        depth=3, hidden_size=32, num_heads=4)
    model = SiT(cfg)
    model.share_prefixes = True
    calls = []
    monkeypatch.setattr(SiT, "shared_prefix", lambda self, *a: calls.append(a))
    model(torch.randn(2, cfg.in_channels, 4, 4), torch.rand(2), torch.randint(0, 10, (2,)))
    assert calls == []


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed (CI)")
def test_atomic_reductions_switch(monkeypatch):
    """The backward's atomic reductions (fp32 sums in a varying order) are on by default, off with
    DARTOOL_ROUTER_ATOMIC=0 or inside atomic_reductions(False), and always off under torch's deterministic mode,
    whatever was forced; the checks' accumulator-row override is scoped to its block."""
    from dartool.kernels import router_triton as rt

    monkeypatch.delenv("DARTOOL_ROUTER_ATOMIC", raising=False)
    assert rt.atomic_reduce() and rt.acc_rows() == rt.ACC_ROWS
    monkeypatch.setenv("DARTOOL_ROUTER_ATOMIC", "0")
    assert not rt.atomic_reduce()
    with rt.atomic_reductions(True, rows=3):
        assert rt.atomic_reduce() and rt.acc_rows() == 3
    assert not rt.atomic_reduce() and rt.acc_rows() == rt.ACC_ROWS
    monkeypatch.delenv("DARTOOL_ROUTER_ATOMIC")
    with rt.atomic_reductions(False):
        assert not rt.atomic_reduce()
    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with rt.atomic_reductions(True):
            assert not rt.atomic_reduce()
    finally:
        torch.use_deterministic_algorithms(old)


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_prefix_configured_per_pass():
    """prefix_triton.configured: plain keys hold for both passes, fwd= / bwd= for one pass only, grad= for the
    two-pass backward's second pass; all restored after the block."""
    from dartool.kernels import prefix_triton as pt

    f0, b0, g0 = pt.prefix_config(1152, False), pt.prefix_config(1152, True), pt.grad_config(1152)
    with pt.configured(fwd=dict(rows=2), bwd=dict(pipe=1), grad=dict(ct=64)):
        assert pt.prefix_config(1152, False) == dict(f0, rows=2)
        assert pt.prefix_config(1152, True) == dict(b0, pipe=1)
        assert pt.grad_config(1152) == dict(g0, ct=64)
    with pt.configured(rows=16):
        assert pt.prefix_config(1152, False)["rows"] == pt.prefix_config(1152, True)["rows"] == 16
    assert (pt.prefix_config(1152, False), pt.prefix_config(1152, True), pt.grad_config(1152)) == (f0, b0, g0)


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton (its bundled ptxas compiles without a GPU)")
def test_row_slots_are_read_outside_the_row_pipeline():
    """With the row-pipelined backward's partials in slots (router_triton.ROW_SLOTS), a slot is read back by the
    row after the one that stored it; a tl.load there becomes an asynchronous copy issued a row early (stale), so
    the kernel reads slots by inline asm (SLOT_ASM), which the pipeliner leaves in place: the slots then add no
    asynchronous copies, where plain loads add some."""
    kr = load_benchmark("kernel_resources")
    from dartool.kernels import router_triton as rt

    cfg = dict(rt.bwd_config(4, 768), unroll=1, prefetch=0, pipe=1, prefix=1, rpipe=2, nc=4, part_slot=0)
    none, plain, asm = (kr.bwd_usage(768, True, dict(cfg, ln_slot=ls, slot_asm=sa), count_async=True)
                        for ls, sa in ((0, 0), (1, 0), (1, 1)))
    assert 0 < none == asm < plain, (none, plain, asm)
