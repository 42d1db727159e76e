"""The SiT/DiT family with a residual or DAR stream: layout, variants, the router against a float64
reference, and the invariants the design promises."""
from __future__ import annotations

import math

import pytest
import torch

from dartool.models import ModelConfig, SiT, dar_source_plan, model_config, tapped
from dartool.models.convert import max_conversion_error, residual_to_dar
from dartool.models.sit import timestep_frequencies

VARIANTS = [("residual", "static")] + [("dar", q) for q in ("static", "static_t", "dynamic")]


def tiny(routing="residual", query="static", chunk=4, depth=3, hidden=64, heads=4, size=8, patch=2, channels=3,
         classes=5, **kw) -> ModelConfig:
    return ModelConfig(input_size=size, patch_size=patch, in_channels=channels, hidden_size=hidden, depth=depth,
                       num_heads=heads, num_classes=classes, routing=routing, query=query, chunk_size=chunk, **kw)


def randomize(model: torch.nn.Module, std=0.2, seed=0) -> torch.nn.Module:
    """Move every trainable weight off its (often zero) initialisation so nothing is trivially identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                noise = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
                p.copy_((1.0 if name.endswith("norm.weight") else 0.0) + std * noise)
    return model


def batch(cfg: ModelConfig, n=2, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g, dtype=torch.float64).to(dtype)
    t = torch.rand(n, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randint(0, cfg.num_classes, (n,), generator=g)
    return x, t, y


# ---------------------------------------------------------------------------------------- layout


def reference_xl2_shapes(c_in=4, classes=1000, depth=28, D=1152, p=2, T=256):
    """REFERENCE.md's DiT/SiT key table for XL/2 at 32x32x4 (learn_sigma: C_out = 2 C_in)."""
    shapes = {
        "x_embedder.proj.weight": (D, c_in, p, p), "x_embedder.proj.bias": (D,),
        "pos_embed": (1, T, D),
        "t_embedder.mlp.0.weight": (D, 256), "t_embedder.mlp.0.bias": (D,),
        "t_embedder.mlp.2.weight": (D, D), "t_embedder.mlp.2.bias": (D,),
        "y_embedder.embedding_table.weight": (classes + 1, D),
        "final_layer.adaLN_modulation.1.weight": (2 * D, D), "final_layer.adaLN_modulation.1.bias": (2 * D,),
        "final_layer.linear.weight": (p * p * 2 * c_in, D), "final_layer.linear.bias": (p * p * 2 * c_in,),
    }
    for k in range(depth):
        b = f"blocks.{k}."
        shapes.update({
            b + "attn.qkv.weight": (3 * D, D), b + "attn.qkv.bias": (3 * D,),
            b + "attn.proj.weight": (D, D), b + "attn.proj.bias": (D,),
            b + "mlp.fc1.weight": (4 * D, D), b + "mlp.fc1.bias": (4 * D,),
            b + "mlp.fc2.weight": (D, 4 * D), b + "mlp.fc2.bias": (D,),
            b + "adaLN_modulation.1.weight": (6 * D, D), b + "adaLN_modulation.1.bias": (6 * D,),
        })
    return shapes


@pytest.mark.parametrize("family", ["DiT", "SiT"])
def test_xl2_state_dict_matches_reference_table(family):
    with torch.device("meta"):
        model = SiT(model_config("XL", 2))
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == reference_xl2_shapes()
    assert model.num_params() == 675_129_632  # "SiT-XL/2 = 675 M parameters"


def test_dynamic_c4_parameter_count_matches_paper():
    with torch.device("meta"):
        model = SiT(model_config("XL", 2, routing="dar", query="dynamic", chunk_size=4))
    assert len(model.routers) == 57
    assert round(model.num_params() / 1e6) == 751


def test_sizes_patches_and_inputs():
    for size, (depth, D) in {"S": (12, 384), "B": (12, 768), "L": (24, 1024), "XL": (28, 1152)}.items():
        for p in (2, 4, 8):
            cfg = model_config(size, p, input_size=32, in_channels=3)
            assert (cfg.depth, cfg.hidden_size, cfg.num_tokens) == (depth, D, (32 // p) ** 2)
    with pytest.raises(ValueError, match="not divisible"):
        model_config("S", 8, input_size=28)


# ---------------------------------------------------------------------------------------- variants


STREAMS = [("residual", "static", 4)] + [("dar", q, s) for q in ("static", "static_t", "dynamic") for s in (1, 2, 4, 5)]


@pytest.mark.parametrize("routing,query,chunk", STREAMS)
@pytest.mark.parametrize("shape", [dict(size=8, patch=2, channels=3), dict(size=12, patch=4, channels=1, depth=2)])
def test_forward_backward_every_variant(routing, query, chunk, shape):
    cfg = tiny(routing, query, chunk, **shape)
    model = randomize(SiT(cfg))
    x, t, y = batch(cfg, n=3)
    out = model(x, t, y)
    assert out.shape == (3, cfg.out_channels, cfg.input_size, cfg.input_size)
    out.square().mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    if routing == "dar":  # the routers learn: queries and RMSNorm gains get gradients
        assert any(g.abs().sum() > 0 for n, g in grads.items() if n.startswith("routers."))


@pytest.mark.parametrize("summary", ["last", "sum"])
def test_label_dropout_and_cfg(summary):
    cfg = tiny("dar", "static_t", summary=summary)
    model = randomize(SiT(cfg)).double().eval()
    x, t, y = batch(cfg, dtype=torch.float64)
    drop = torch.tensor([True, False])
    a = model(x, t, y, drop_labels=drop)
    b = model(x, t, torch.tensor([cfg.num_classes, y[1]]))
    torch.testing.assert_close(a, b)
    # guidance on all channels by default; scale 1 = the conditional prediction
    torch.testing.assert_close(model.forward_with_cfg(x, t, y, 1.0)[:, :3], model(x, t, y)[:, :3])
    g_all = model.forward_with_cfg(x, t, y, 4.0)
    g_3 = model.forward_with_cfg(x, t, y, 4.0, guided_channels=2)
    torch.testing.assert_close(g_all[:, :2], g_3[:, :2])
    assert not torch.allclose(g_all[:, 2], g_3[:, 2])


# ---------------------------------------------------------------------------------------- float64 reference


def plain_dar_forward(model: SiT, x, t, y):
    """DAR written plainly from DAR-METHOD.md (Eq. 5 / Eq. 7), float64, loops over tokens and sources.

    Returns the output and the alpha of every router, as a list of [B, T, N] tensors.
    """
    cfg = model.config
    S, L, D = cfg.chunk_size, cfg.num_sublayers, cfg.hidden_size
    v0 = model.x_embedder(x) + model.pos_embed
    c, _ = model.condition(t, y)
    e_t = model.router_t_embedder(timestep_frequencies(t)) if cfg.query == "static_t" else None
    outputs = [v0]  # v_0 .. v_l

    def source_ids(l, final=False):
        """Indices into `outputs` read by sublayer l (1-based), or by the head."""
        if final:
            last_chunk = (L - 1) // S            # 0-based chunk holding sublayer L
            done = last_chunk                    # chunks finished before the last one
            raw = list(range(last_chunk * S + 1, L + 1))
        else:
            n = (l - 1) // S                     # 0-based chunk of sublayer l
            done = n
            raw = list(range(n * S + 1, l))
        summaries = [0] + [(m + 1) * S for m in range(done)]  # c_0 = v_0, c_m = v_{mS} (last output)
        return summaries + raw

    def summary_value(i):
        # with sum summaries a summary index i = mS stands for the sum of chunk m's outputs
        if cfg.summary == "sum" and i > 0 and i % S == 0:
            return sum(outputs[j] for j in range(i - S + 1, i + 1))
        return outputs[i]

    def router(r, ids, is_summary):
        rt = model.routers[r]
        B, T, _ = v0.shape
        srcs = [summary_value(i) if s else outputs[i] for i, s in zip(ids, is_summary)]
        prev = outputs[-1]
        h = torch.zeros(B, T, D, dtype=torch.float64)
        alpha = torch.zeros(B, T, len(srcs), dtype=torch.float64)
        for b in range(B):
            for tok in range(T):
                if cfg.query == "dynamic":
                    q = rt.q_proj.weight @ prev[b, tok]
                elif cfg.query == "static_t":
                    q = rt.query + e_t[b]
                else:
                    q = rt.query
                logits = []
                for v in srcs:
                    vi = v[b, tok]
                    k = vi / torch.sqrt((vi * vi).mean() + 1e-6) * rt.norm.weight
                    logits.append(float((q @ k).detach()) / math.sqrt(D))
                m = max(logits)
                w = [math.exp(z - m) for z in logits]
                w = [wi / sum(w) for wi in w]
                alpha[b, tok] = torch.tensor(w, dtype=torch.float64)
                h[b, tok] = sum(wi * v[b, tok] for wi, v in zip(w, srcs))
        return h, alpha

    def plan(l, final=False):
        ids = source_ids(l, final)
        n_summ = 1 + (((L - 1) // S) if final else ((l - 1) // S))
        return ids, [j < n_summ for j in range(len(ids))]

    alphas = []
    h, a = router(0, *plan(1))
    alphas.append(a)
    for k, block in enumerate(model.blocks):
        mod = block.modulation(c)
        for which in (0, 1):
            l = 2 * k + which + 1
            outputs.append(block.sublayer(which, h, mod, cfg.norm_eps))
            final = l == L
            h, a = router(l, *plan(l + 1, final)) if not final else router(L, *plan(L, True))
            alphas.append(a)
    out = model.unpatchify(model.final_layer(h, c, cfg.norm_eps))
    return out, alphas


@pytest.mark.parametrize("query", ["static", "static_t", "dynamic"])
@pytest.mark.parametrize("chunk,summary", [(1, "last"), (2, "last"), (4, "last"), (3, "sum")])
def test_router_matches_plain_float64_reference(query, chunk, summary):
    cfg = tiny("dar", query, chunk, depth=3, hidden=16, heads=2, size=4, patch=2, summary=summary)  # L = 6
    model = randomize(SiT(cfg), std=0.5).double()
    x, t, y = batch(cfg, n=2, dtype=torch.float64)
    got_alpha = {}
    with tapped(model, {"routers.*.hook_alpha": lambda n, a: got_alpha.__setitem__(int(n.split(".")[1]), a.detach())}):
        out = model(x, t, y)
    ref_out, ref_alpha = plain_dar_forward(model, x, t, y)
    assert len(ref_alpha) == len(got_alpha) == cfg.num_sublayers + 1
    for r, a in enumerate(ref_alpha):
        assert got_alpha[r].shape == a.shape, r
        torch.testing.assert_close(got_alpha[r], a, rtol=1e-10, atol=1e-12)
        if a.shape[-1] > 1:
            assert not torch.allclose(a, torch.full_like(a, 1 / a.shape[-1])), "reference must not be trivially uniform"
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)


def test_source_plan_counts():
    counts, head = dar_source_plan(56, 4)        # SiT-XL/2 c4: L = 56, 57 routers
    assert len(counts) + 1 == 57
    assert counts[:5] == [1, 2, 3, 4, 2] and head == 14 + 4
    assert max(counts + [head]) <= 4 + 56 // 4 + 1
    dense, head1 = dar_source_plan(6, 1)
    assert dense == [1, 2, 3, 4, 5, 6] and head1 == 7


# ---------------------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("query", ["static", "static_t", "dynamic"])
@pytest.mark.parametrize("chunk", [1, 4])
def test_zero_queries_route_uniformly(query, chunk):
    cfg = tiny("dar", query, chunk)
    model = SiT(cfg)  # queries start at zero
    randomize_except = {n for n, _ in model.named_parameters() if n.startswith(("routers.", "router_t_embedder.mlp.2"))}
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for n, p in model.named_parameters():
            if n not in randomize_except and p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    x, t, y = batch(cfg)
    seen = []
    with tapped(model, {"routers.*.hook_alpha": lambda n, a: seen.append(a.detach())}):
        model(x, t, y)
    assert len(seen) == cfg.num_sublayers + 1
    for a in seen:
        torch.testing.assert_close(a, torch.full_like(a, 1.0 / a.shape[-1]))


def test_static_t_equals_static_at_initialisation():
    cfg = tiny("dar", "static")
    torch.manual_seed(0)
    static = randomize(SiT(cfg))
    static_t = SiT(cfg.replace(query="static_t"))
    missing, unexpected = static_t.load_state_dict(static.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("router_t_embedder.") for k in missing)
    x, t, y = batch(cfg)
    torch.testing.assert_close(static_t(x, t, y), static(x, t, y), rtol=0, atol=0)


@pytest.mark.parametrize("depth", [2, 4])
def test_residual_to_dar_conversion_preserves_the_function(depth):
    cfg = tiny("residual", depth=depth, learn_sigma=True)
    res = randomize(SiT(cfg), std=0.3).double()
    dar = residual_to_dar(res)
    assert dar.config.routing == "dar" and dar.config.chunk_size == 1
    x, t, y = batch(cfg, n=3, dtype=torch.float64)
    assert max_conversion_error(res, dar, x, t, y) < 1e-5
    # and it really is a DAR model: moving a query changes the function
    with torch.no_grad():
        dar.routers[3].query.add_(1.0)
    assert max_conversion_error(res, dar, x, t, y) > 1e-6


@pytest.mark.parametrize("routing", ["residual", "dar"])
def test_stream_is_contiguous_whatever_the_input_layout(routing):
    """From NCHW noise and from channels-last images alike, the patch embedding and every state the blocks hand on
    are contiguous [B, T, D] (a transposed stream cost the compiled residual step 5 %, session 21), and the
    output does not depend on the input's layout."""
    cfg = tiny(routing, "static", 2)
    model = randomize(SiT(cfg)).double()  # float64: the two layouts' convolutions sum in different orders
    x, t, y = batch(cfg, n=3, dtype=torch.float64)
    outs = []
    for xin in (x.contiguous(), x.contiguous(memory_format=torch.channels_last)):
        seen = {}
        with tapped(model, {"hook_embed": lambda n, z: seen.__setitem__(n, z),
                            "blocks.*.hook_out": lambda n, z: seen.__setitem__(n, z)}):
            outs.append(model(xin, t, y))
        assert len(seen) == cfg.depth + 1
        for name, z in seen.items():
            assert z.shape == (3, (cfg.input_size // cfg.patch_size) ** 2, cfg.hidden_size) and z.is_contiguous(), name
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-10, atol=1e-10)


def test_block_output_tap_is_the_state_handed_on():
    """z_k of a residual model is h after block k; of a DAR model it is the next sublayer's input."""
    for routing in ("residual", "dar"):
        cfg = tiny(routing, "static", 2)
        model = randomize(SiT(cfg))
        seen = {}
        with tapped(model, {"blocks.*.hook_out": lambda n, z: seen.__setitem__(n, z),
                            "blocks.*.hook_attn_in": lambda n, z: seen.__setitem__(n, z)}):
            model(*batch(cfg))
        for k in range(cfg.depth - 1):
            torch.testing.assert_close(seen[f"blocks.{k}.hook_out"], seen[f"blocks.{k + 1}.hook_attn_in"])


def test_hooks_are_removed_even_on_error():
    model = SiT(tiny())
    with pytest.raises(RuntimeError):
        with tapped(model, {"blocks.0.hook_out": lambda n, z: None}):
            raise RuntimeError("boom")
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(KeyError, match="no tap point"):
        with tapped(model, {"blocks.99.hook_out": lambda n, z: None}):
            pass


def test_prefix_groups_split_long_chunks():
    from dartool.kernels.dispatch import prefix_groups

    assert prefix_groups(range(3, 11), 4) == [[3, 4, 5, 6], [7, 8, 9, 10]]
    assert prefix_groups(range(3, 8), 4) == [[3, 4, 5, 6]]          # the fifth router makes its own pass
    assert prefix_groups(range(3, 9), 4) == [[3, 4, 5, 6], [7, 8]]
    assert prefix_groups(range(3, 11), 0) == [list(range(3, 11))]   # 0: the whole chunk in one pass
    assert prefix_groups([5], 4) == [] and prefix_groups([], 0) == []


@pytest.mark.parametrize("group, passes", [(4, [[0, 1, 2, 3], [4, 5, 6, 7]]), (0, [list(range(8))]),
                                           (3, [[0, 1, 2], [3, 4, 5], [6, 7]])])
def test_shared_prefix_runs_one_pass_per_group(monkeypatch, group, passes):
    """SiT.shared_prefix at the start of a chunk of 8: one prefix pass per group of routers, each with that group's
    queries and gains in order; every router of a group gets its own state filed, the first's is returned."""
    import dartool.kernels as kernels
    from dartool.models.sit import DARStream

    torch.manual_seed(0)
    cfg = model_config("S", 2, input_size=8, routing="dar", query="static", chunk_size=8).replace(depth=8)
    model = SiT(cfg)
    for i, ro in enumerate(model.routers):
        ro.query.data.fill_(float(i))                  # router i's query is all i: the calls show who is in them
    monkeypatch.setattr(kernels.dispatch, "SHARED_PREFIX_GROUP", group)
    calls = []

    def fake(summaries, qs, gs, eps):
        K = qs.shape[0]
        calls.append([int(q[0]) for q in qs])
        return [torch.full((1,), float(int(q[0]))) for q in qs], torch.arange(K, dtype=torch.float32)

    monkeypatch.setattr(kernels, "shared_prefix", fake)
    D = cfg.hidden_size
    stream = DARStream(torch.zeros(1, 4, D), 8, "last")
    stream.summaries += [torch.zeros(1, 4, D)] * 3     # a chunk start with 4 summaries
    model.share_prefixes = True
    first = model.shared_prefix(0, stream, None)
    assert calls == passes
    assert float(first[0]) == 0.0 and first[2] == 4
    filed = sorted(stream.prefix)
    assert filed == sorted(i for grp in passes for i in grp if i != 0)
    for i in filed:
        assert float(stream.prefix[i][0]) == float(i)


def test_triton_flag_is_resolved_before_torch_compile_traces_a_router(monkeypatch):
    """dispatch.triton_available() caches its answer in a module global; traced by Dynamo while still unset, the
    global became a guard that failed at the second call and recompiled every DAR model once (session 19, seen
    with TORCH_LOGS=recompiles on an H200). Building a DAR SiT, and compile_model, resolve it first."""
    from dartool.kernels import dispatch
    from dartool.models import compiling

    monkeypatch.setattr(compiling.torch, "compile", lambda m, **kw: m)
    monkeypatch.setattr(dispatch, "_triton_ok", None)
    SiT(model_config("S", 2, input_size=8).replace(depth=1))                          # residual: left alone
    assert dispatch._triton_ok is None
    model = SiT(model_config("S", 2, input_size=8, routing="dar").replace(depth=1))
    assert dispatch._triton_ok is not None
    monkeypatch.setattr(dispatch, "_triton_ok", None)
    compiling.compile_model(model)
    assert dispatch._triton_ok is not None


def test_each_compiled_model_raises_dynamos_recompile_limit(monkeypatch, recompile_limit):
    """Arms of other configurations are other versions of SiT.forward for Dynamo: compiling more SiTs than its
    recompile limit (8) must not leave the rest running uncompiled."""
    from dartool.models import compiling

    dyn = torch._dynamo.config
    monkeypatch.setattr(compiling, "_compiled_models", 0)
    monkeypatch.setattr(compiling.torch, "compile", lambda m, **kw: m)
    model = SiT(model_config("S", 2, input_size=8).replace(depth=1))
    for _ in range(12):
        compiling.compile_model(model)
    assert getattr(dyn, recompile_limit) == 20
    compiling.compile_model(torch.nn.Linear(2, 2))                 # not a SiT: not counted
    assert getattr(dyn, recompile_limit) == 20


def test_compile_model_passes_the_models_inductor_options(monkeypatch):
    """compile_model: torch.compile with models.compiling's options for the model (none by default; OVERRIDE forces
    a set, as benchmarks/compile_options.py does between models)."""
    from dartool.models import compiling

    seen = []
    monkeypatch.setattr(compiling.torch, "compile", lambda m, **kw: seen.append(kw) or m)
    model = SiT(model_config("S", 2, input_size=8, routing="dar", chunk_size=1).replace(depth=1))
    assert compiling.compile_model(model, dynamic=False) is model and seen[-1] == {"dynamic": False}
    monkeypatch.setattr(compiling, "OVERRIDE", {"realize_acc_reads_threshold": 2})
    compiling.compile_model(model)
    assert seen[-1] == {"options": {"realize_acc_reads_threshold": 2}}
    compiling.compile_model(torch.nn.Linear(2, 2))              # not a SiT: no options
    assert seen[-1] == {}


def test_compile_mode_cudagraphs_is_full_under_reduce_overhead_with_graph_safe_tables(monkeypatch):
    """mode="cudagraphs": torch.compile of the whole model with mode="reduce-overhead" (options passed on), and the
    offset tables switched to their graph-safe path (no cache; the capture arena allocated before any capture)."""
    from dartool.kernels import tables
    from dartool.models import compiling

    seen = []
    monkeypatch.setattr(compiling.torch, "compile", lambda m, **kw: seen.append(kw) or m)
    monkeypatch.setattr(tables, "GRAPH_SAFE", False)
    monkeypatch.setattr(tables, "_ARENA", {"host": None, "used": 0, "tables": 0})
    model = SiT(model_config("S", 2, input_size=8, routing="dar", chunk_size=1).replace(depth=1))
    assert compiling.compile_model(model, "cudagraphs", dynamic=False) is model
    assert seen == [{"mode": "reduce-overhead", "dynamic": False}]
    assert tables.GRAPH_SAFE and tables._ARENA["host"] is not None
    tables.set_graph_safe(False)
    assert "cudagraphs" in compiling.COMPILE_MODES


def test_compile_mode_blocks_compiles_attention_and_mlp_only(monkeypatch):
    """mode="blocks": every block's attention and MLP and the head's linear compiled in place (options passed on),
    the model itself returned and left eager; a bad mode or a model without blocks is a clear error."""
    from dartool.models import compiling

    model = SiT(model_config("S", 2, input_size=8, routing="dar", chunk_size=1).replace(depth=2))
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append((self, kw)))
    monkeypatch.setattr(compiling, "OVERRIDE", {"max_fusion_size": 8})
    assert compiling.compile_model(model, "blocks") is model
    want = [m for b in model.blocks for m in (b.attn, b.mlp)] + [model.final_layer.linear]
    assert [m for m, _ in compiled] == want
    assert all(kw == {"options": {"max_fusion_size": 8}} for _, kw in compiled)
    with pytest.raises(ValueError, match="compile mode 'graph'"):
        compiling.compile_model(model, "graph")
    with pytest.raises(ValueError, match="needs a SiT"):
        compiling.compile_model(torch.nn.Linear(2, 2), "blocks")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["blocks", "regions"])
def test_compile_modes_compute_the_eager_function(mode):
    """A DAR SiT compiled by blocks or by regions (Inductor on the CPU) gives the eager loss and gradients."""
    import shutil

    if not (shutil.which("g++") or shutil.which("c++")):
        pytest.skip("Inductor on the CPU needs a C++ compiler")
    from dartool.diffusion import diffusion_loss
    from dartool.models.compiling import compile_model

    torch.manual_seed(0)
    cfg = model_config("S", 2, input_size=8, routing="dar", chunk_size=1).replace(depth=2, hidden_size=32,
                                                                                   num_heads=4)
    model = SiT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, y, s = torch.randn(2, cfg.in_channels, 8, 8), torch.randint(0, 10, (2,)), torch.rand(2)

    def loss_and_grads(f):
        model.zero_grad(set_to_none=True)
        loss = diffusion_loss(f, x, y, s, eps=torch.ones_like(x))
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref = loss_and_grads(model)
    torch._dynamo.reset()
    try:
        got = loss_and_grads(compile_model(model, mode))
    finally:
        torch._dynamo.reset()
        model.compile_regions = False
    assert torch.allclose(got[0], ref[0], rtol=1e-5, atol=1e-6) and set(got[1]) == set(ref[1])
    for n in ref[1]:
        assert torch.allclose(got[1][n], ref[1][n], rtol=1e-4, atol=1e-6), n


@pytest.fixture
def recompile_limit():
    """Dynamo's recompile limit set to 8 for a test and put back after it by plain assignment (monkeypatch's undo
    leaves the option hidden on torch 2.13's config module, and every later torch.compile then fails); yields its
    name."""
    dyn = torch._dynamo.config
    name = "recompile_limit" if hasattr(dyn, "recompile_limit") else "cache_size_limit"
    before = getattr(dyn, name)
    setattr(dyn, name, 8)
    try:
        yield name
    finally:
        setattr(dyn, name, before)


def test_compile_mode_regions_breaks_the_graph_per_block(monkeypatch, recompile_limit):
    """mode="regions": the model asks for a graph break after each block, Dynamo may compile once per block, and
    the whole model goes to torch.compile; uncompiled, the break is a no-op."""
    from dartool.models import compiling

    model = SiT(model_config("S", 2, input_size=8, routing="dar", chunk_size=1).replace(depth=3))
    assert model.compile_regions is False
    seen = []
    monkeypatch.setattr(compiling.torch, "compile", lambda m, **kw: seen.append(m) or m)
    assert compiling.compile_model(model, "regions") is model and seen == [model]
    assert model.compile_regions is True and getattr(torch._dynamo.config, recompile_limit) >= 2 * 3 + 16
    breaks = []
    monkeypatch.setattr(torch._dynamo, "graph_break", lambda: breaks.append(1))
    model(torch.randn(1, 4, 8, 8), torch.rand(1), torch.zeros(1, dtype=torch.long))
    assert len(breaks) == 3
    with pytest.raises(ValueError, match="needs a SiT"):
        compiling.compile_model(torch.nn.Linear(2, 2), "regions")
