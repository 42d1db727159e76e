"""The probe against tiny models where the right answer is known by construction (CPU, float64 models)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dartool.probe as probe_mod
from dartool.diffusion import diffusion_loss, model_time, noised
from dartool.models import tapped
from dartool.models.sit import DARStream, dar_source_plan
from dartool.probe import (
    ProbeConfig, StepContext, capturing, probe_step, resolve_noise_levels, router_sources, run_probe, sample_noise,
)
from dartool.store import StoreError, open_store, read_attrs

sys.path.insert(0, str(Path(__file__).parent))
from probe_helpers import (  # noqa: E402
    fix_sublayers, hand_dar_forward, hand_residual, np64, patchify, tiny_data, tiny_model, token_cos,
)

LEVELS = [0.0, 0.4, 0.9]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run faster on one thread (and steadier on a busy machine); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cfg_(**kw) -> ProbeConfig:
    base = dict(noise_levels=LEVELS, num_samples=5, batch_size=2, pooled_samples=3, projection_dim=8,
                progress=False, background_writes=False)
    base.update(kw)
    return ProbeConfig(**base)


def per_sample(ds, name: str) -> np.ndarray:
    return ds[f"{name}_per_sample"].values


# --------------------------------------------------------------------------------------------------
# pure pieces
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("L", [2, 4, 6, 8])
@pytest.mark.parametrize("S", [1, 2, 3, 4, 5])
def test_router_sources_follow_darstream(L, S):
    """Tag every source with its index, drive DARStream as SiT.forward does, read the indices back."""
    tag = lambda i: torch.full((1, 1, 1), float(i))  # noqa: E731
    stream = DARStream(tag(0), S, "last")
    seen = [[int(t.item()) for t in stream.sources()]]
    for l in range(L):
        stream.write(tag(l + 1))
        seen.append([int(t.item()) for t in stream.sources(final=l + 1 == L)])
    assert router_sources(L, S) == seen
    counts, head = dar_source_plan(L, S)
    assert [len(s) for s in seen] == counts + [head]


def test_noise_levels_and_model_time():
    s, t = resolve_noise_levels(ProbeConfig(num_noise_levels=32), "sit")
    assert len(s) == 32 and s[0] == 0 and s[-1] == 1 and np.all(np.diff(s) > 0)
    np.testing.assert_allclose(t, 1 - s)
    s, t = resolve_noise_levels(ProbeConfig(noise_levels=[0.5, 0.1, 0.5]), "dit")
    assert np.all(t == np.round(t)) and len(s) == 2 and np.allclose(s, t / 999)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        resolve_noise_levels(ProbeConfig(noise_levels=[1.5]), "sit")


def test_noise_is_per_sample():
    a = sample_noise(3, range(6), (1, 4, 4))
    b = torch.cat([sample_noise(3, range(0, 2), (1, 4, 4)), sample_noise(3, range(2, 6), (1, 4, 4))])
    assert torch.equal(a, b) and not torch.equal(a[0], a[1])


# --------------------------------------------------------------------------------------------------
# known by construction: fixed sublayer outputs
# --------------------------------------------------------------------------------------------------


def _fixed(model, seed=5):
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    return torch.randn(cfg.num_sublayers, cfg.num_tokens, cfg.hidden_size, generator=g, dtype=torch.float64) * 0.7


def test_residual_fixed_sublayers_match_hand_computation(tmp_path):
    model = tiny_model("residual", depth=3)
    with torch.no_grad():  # a head without adaLN: out = W LN(h) + b, so dL/dh is written out by hand
        model.final_layer.adaLN_modulation[-1].weight.zero_()
        model.final_layer.adaLN_modulation[-1].bias.zero_()
    fixed = _fixed(model)
    fix_sublayers(model, fixed)
    cfg = model.config
    x, y = tiny_data(5, cfg)
    ds = open_store(run_probe(model, (x, y), cfg_(), tmp_path / "s.zarr"))
    eps = np64(sample_noise(0, range(5), x.shape[1:]))
    hands = [hand_residual(model, np64(fixed), np64(x), eps, s) for s in LEVELS]
    for i, hand in enumerate(hands):
        for name in ("loss", "z_rms", "z_grad_rms", "adjacent_cos", "h_rms", "v_rms", "h_grad_rms"):
            np.testing.assert_allclose(per_sample(ds, name)[i], hand[name], rtol=2e-5, err_msg=name)
        for name in ("update_ratio", "block_cos", "importance", "loss", "z_grad_rms"):
            np.testing.assert_allclose(ds[name].values[i], hand[name].mean(0), rtol=2e-5, atol=1e-9, err_msg=name)
    # time neighbours: cos(z_k at s_i, z_k at s_{i+1}), NaN at the last level
    for i in range(len(LEVELS) - 1):
        want = np.stack([token_cos(hands[i]["z"][k], hands[i + 1]["z"][k]) for k in range(cfg.depth)], 1)
        np.testing.assert_allclose(per_sample(ds, "time_cos")[i], want, rtol=2e-5)
        np.testing.assert_allclose(ds.time_cos.values[i], want.mean(0), rtol=2e-5)
    assert np.isnan(ds.time_cos.values[-1]).all()
    # pooled router inputs: token means times the documented seeded projection
    gen = torch.Generator().manual_seed(0)
    Ph = torch.randn(cfg.hidden_size, 8, generator=gen, dtype=torch.float64).numpy() / np.sqrt(cfg.hidden_size)
    pc = cfg.patch_size**2 * cfg.in_channels
    Px = torch.randn(pc, 8, generator=gen, dtype=torch.float64).numpy() / np.sqrt(pc)
    for i, s in enumerate(LEVELS):
        want_h = np.stack([hands[i]["h"][r][:3].mean(1) @ Ph for r in range(cfg.num_sublayers + 1)], 1)
        np.testing.assert_allclose(ds.pooled_h.values[i].astype(np.float64), want_h, rtol=2e-3, atol=2e-3)
        xt = (1 - s) * np64(x[:3]) + s * eps[:3]
        want_x = patchify(xt, cfg.patch_size, "head").mean(1) @ Px
        np.testing.assert_allclose(ds.pooled_x.values[i].astype(np.float64), want_x, rtol=2e-3, atol=2e-3)
    assert np.isnan(ds.alpha.values).all() and np.isnan(ds.alpha_entropy.values).all()


def test_dar_fixed_sublayers_alpha_by_hand(tmp_path):
    model = tiny_model("dar", depth=2, chunk_size=3)
    fixed = _fixed(model)
    fix_sublayers(model, fixed)
    x, y = tiny_data(5, model.config)
    ds = open_store(run_probe(model, (x, y), cfg_(), tmp_path / "s.zarr"))
    eps = np64(sample_noise(0, range(5), x.shape[1:]))
    for i, s in enumerate(LEVELS):
        hand = hand_dar_forward(model, np64(fixed), np64(x), eps, s)
        np.testing.assert_allclose(ds.alpha.values[i], hand["alpha"].mean(0), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(ds.alpha_entropy.values[i], hand["alpha_entropy"].mean(0), rtol=1e-5)
        np.testing.assert_allclose(per_sample(ds, "h_rms")[i], hand["h_rms"], rtol=1e-5)
        np.testing.assert_allclose(per_sample(ds, "z_rms")[i], hand["z_rms"], rtol=1e-5)
    assert np.isnan(ds.importance.values).all()
    # alpha rows sum to one over the sources each router reads
    np.testing.assert_allclose(np.nansum(ds.alpha.values, -1), 1.0, rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# gradients and importance against finite differences; alpha against a direct forward
# --------------------------------------------------------------------------------------------------


def _summed_loss(model, x, y, eps, s, taps=None) -> float:
    """Sum over the batch of the per-sample loss, in float64 (diffusion_loss reduces in float32)."""
    level = torch.full((x.shape[0],), s, dtype=torch.float64)
    xt, t, target = noised(x, eps, level, model.config.time_convention)
    with torch.no_grad(), tapped(model, taps or {}):
        out = model(xt, t, y)[:, : x.shape[1]]
    return float((out - target).pow(2).flatten(1).mean(1).sum())


def test_importance_equals_finite_difference_of_a_real_gate(tmp_path):
    """dL/dg_{i->r} from the store vs (L(g = 1 + d) - L(g = 1 - d)) / 2d with h_r -> h_r + d v_i in a tap."""
    model = tiny_model("residual", depth=2)
    cfg = model.config
    K, L = cfg.depth, cfg.num_sublayers
    x, y = tiny_data(3, cfg)
    x, s = x.double(), 0.6
    ds = open_store(run_probe(model, (x, y), cfg_(noise_levels=[s], num_samples=3, batch_size=3), tmp_path / "s.zarr"))
    eps = sample_noise(0, range(3), x.shape[1:]).double()
    src_taps = ["hook_embed"] + [f"blocks.{k}.hook_{w}_out" for k in range(K) for w in ("attn", "mlp")]
    in_taps = [f"blocks.{k}.hook_{w}_in" for k in range(K) for w in ("attn", "mlp")] + [f"blocks.{K - 1}.hook_out"]
    d = 1e-6
    for r in range(L + 1):
        for i in range(r + 1):
            def fd(delta):
                seen = {}

                def keep(name, t):
                    seen[name] = t

                def gate(name, t):
                    return t + delta * seen[src_taps[i]]

                return _summed_loss(model, x, y, eps, s, {**{n: keep for n in src_taps[: i + 1]}, in_taps[r]: gate})

            want = (fd(d) - fd(-d)) / (2 * d) / 3   # the store holds the sample mean
            got = float(ds.importance.values[0, r, i])
            assert got == pytest.approx(want, rel=1e-4, abs=1e-8), (r, i)
        assert np.isnan(ds.importance.values[0, r, r + 1:]).all()


@pytest.mark.parametrize("routing", ["residual", "dar"])
def test_block_output_gradient_matches_autograd_and_finite_difference(routing):
    """z_grad_rms from a probe step equals the RMS of dL/dz_0 taken independently (a leaf at the block-output
    tap), and that gradient agrees with a finite difference along a random direction."""
    model = tiny_model(routing, depth=2)
    x, y = tiny_data(2, model.config)
    x, s = x.double(), 0.3
    eps = sample_noise(0, range(2), x.shape[1:]).double()
    level = torch.full((2,), s, dtype=torch.float64)
    leaf = {}

    def make_leaf(name, t):
        leaf["z"] = t.detach().requires_grad_(True)
        return leaf["z"]

    with torch.enable_grad(), tapped(model, {"blocks.0.hook_out": make_leaf}):
        total = diffusion_loss(model, x, y, level, eps, reduce="none").sum()
    g = torch.autograd.grad(total, leaf["z"])[0]                             # [B, T, D]
    u = torch.randn(g.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    d = 1e-6
    fd = [_summed_loss(model, x, y, eps, s, {"blocks.0.hook_out": lambda n, t, dd=dd: t + dd * u}) for dd in (d, -d)]
    assert float((g * u).sum()) == pytest.approx((fd[0] - fd[1]) / (2 * d), rel=1e-5)
    ctx = StepContext.build(model, torch.device("cpu"))
    with capturing(ctx) as cap:
        stats, _ = probe_step(ctx, cap, x, y, eps, s)
    np.testing.assert_allclose(stats["z_grad_rms"][:, 0].numpy(), g.pow(2).mean((1, 2)).sqrt().numpy(), rtol=1e-6)
    np.testing.assert_allclose(stats["h_grad_rms"][:, 2].numpy(), g.pow(2).mean((1, 2)).sqrt().numpy(), rtol=1e-6)


@pytest.mark.parametrize("query", ["static", "dynamic"])
def test_alpha_in_store_equals_direct_forward(tmp_path, query):
    model = tiny_model("dar", depth=2, chunk_size=2, query=query)
    x, y = tiny_data(5, model.config)
    ds = open_store(run_probe(model, (x, y), cfg_(), tmp_path / "s.zarr"))
    eps = sample_noise(0, range(5), x.shape[1:]).double()
    L = model.config.num_sublayers
    for i, s in enumerate(LEVELS):
        level = torch.full((5,), s, dtype=torch.float64)
        seen = {}
        with torch.no_grad(), tapped(model, {"routers.*.hook_alpha": lambda n, a: seen.__setitem__(n, a)}):
            diffusion_loss(model, x.double(), y, level, eps)
        for r, src in enumerate(router_sources(L, 2)):
            direct = seen[f"routers.{r}.hook_alpha"].double().mean((0, 1)).numpy()
            np.testing.assert_allclose(ds.alpha.values[i, r, src], direct, rtol=1e-5)
            assert np.isnan(np.delete(ds.alpha.values[i, r], src)).all()
    assert np.all(ds.alpha.values[:, 0, 0] == 1) and float(seen["routers.1.hook_alpha"].std()) > 0.01  # it routes


@pytest.mark.parametrize("convention", ["sit", "repa", "dit"])
def test_loss_is_the_models_own_training_loss(tmp_path, convention):
    model = tiny_model("residual", depth=2, time_convention=convention)
    x, y = tiny_data(4, model.config)
    ds = open_store(run_probe(model, (x, y), cfg_(num_samples=4), tmp_path / "s.zarr"))
    eps = sample_noise(0, range(4), x.shape[1:]).double()
    np.testing.assert_allclose(ds.model_t.values, model_time(torch.tensor(ds.noise_level.values), convention).numpy())
    for i, s in enumerate(ds.noise_level.values):
        level = torch.full((4,), float(s), dtype=torch.float64)
        with torch.no_grad():
            want = diffusion_loss(model, x.double(), y, level, eps, reduce="none").numpy()
        np.testing.assert_allclose(per_sample(ds, "loss")[i], want, rtol=1e-5)
    assert read_attrs(tmp_path / "s.zarr")["time_convention"] == convention


# --------------------------------------------------------------------------------------------------
# the run: determinism, batching, OOM halving, resume, refusal
# --------------------------------------------------------------------------------------------------

SAMPLE_NAMES = ("loss", "z_rms", "z_grad_rms", "adjacent_cos", "time_cos", "h_rms", "v_rms", "h_grad_rms")


def _same(a, b, rtol=1e-5):
    for n in SAMPLE_NAMES:
        np.testing.assert_allclose(per_sample(a, n), per_sample(b, n), rtol=rtol, atol=1e-7, err_msg=n)
    for n in ("block_cos", "importance", "update_ratio", "loss", "pooled_h"):
        np.testing.assert_allclose(a[n].values.astype(float), b[n].values.astype(float), rtol=max(rtol, 1e-3) if n == "pooled_h" else rtol, atol=1e-6, err_msg=n)


@pytest.fixture(scope="module")
def small():
    model = tiny_model("residual", depth=2, dtype=torch.float32)
    return model, tiny_data(5, model.config)


@pytest.fixture(scope="module")
def reference(small, tmp_path_factory):
    model, data = small
    return open_store(run_probe(model, data, cfg_(), tmp_path_factory.mktemp("ref") / "ref.zarr"))


def test_batching_does_not_change_results_and_is_deterministic(small, reference, tmp_path):
    model, data = small
    again = open_store(run_probe(model, data, cfg_(background_writes=True), tmp_path / "a.zarr"))
    for n in SAMPLE_NAMES:
        assert np.array_equal(per_sample(again, n), per_sample(reference, n), equal_nan=True), n
    other = open_store(run_probe(model, data, cfg_(batch_size=4, max_batch=1), tmp_path / "b.zarr"))
    _same(other, reference)
    assert list(other.label.values) == list(data[1].numpy()) and list(other.data_index.values) == list(range(5))


def test_out_of_memory_halves_the_step(small, reference, tmp_path, monkeypatch):
    model, data = small
    real, sizes = probe_mod.probe_step, []

    def flaky(ctx, cap, x, *a, **kw):
        sizes.append(x.shape[0])
        if x.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(ctx, cap, x, *a, **kw)

    monkeypatch.setattr(probe_mod, "probe_step", flaky)
    logs = []
    got = open_store(run_probe(model, data, cfg_(), tmp_path / "o.zarr", log=logs.append))
    _same(got, reference)
    assert sizes[0] == 2 and set(sizes[1:]) == {1} and any("out of memory" in m for m in logs)

    def hopeless(*a, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(probe_mod, "probe_step", hopeless)
    with pytest.raises(probe_mod.ProbeOutOfMemory, match="one sample per step"):
        run_probe(model, data, cfg_(), tmp_path / "p.zarr", log=logs.append)


def test_resume_continues_and_refuses_without_a_flag(small, reference, tmp_path, monkeypatch):
    model, data = small
    out = tmp_path / "r.zarr"
    real, calls = probe_mod.probe_step, []

    def dies(*a, **kw):
        calls.append(1)
        if len(calls) == 5:   # during the second batch
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(probe_mod, "probe_step", dies)
    with pytest.raises(KeyboardInterrupt):
        run_probe(model, data, cfg_(), out)
    monkeypatch.setattr(probe_mod, "probe_step", real)
    assert read_attrs(out)["status"] == "in_progress"
    with pytest.raises(StoreError, match="unfinished probe .*--resume"):
        open_store(out)
    with pytest.raises(StoreError, match="pass --resume to continue it or --overwrite"):
        run_probe(model, data, cfg_(), out)
    with pytest.raises(StoreError, match="other settings \\(seed"):
        run_probe(model, data, cfg_(resume=True, seed=1), out)
    partial = open_store(out, allow_partial=True)
    assert np.isfinite(per_sample(partial, "loss")[:, :2]).all() and np.isnan(per_sample(partial, "loss")[:, 2:]).all()
    run_probe(model, data, cfg_(resume=True), out)
    _same(open_store(out), reference, rtol=1e-6)
    with pytest.raises(StoreError, match="complete probe; pass --overwrite"):
        run_probe(model, data, cfg_(), out)
    run_probe(model, data, cfg_(resume=True), out)      # complete: nothing to do
    run_probe(model, data, cfg_(overwrite=True, seed=2), out)
    assert read_attrs(out)["seed"] == 2


def test_root_attributes_record_what_was_run(reference):
    a = reference.attrs
    for key in ("schema_version", "dartool_version", "created", "status", "checkpoint", "checkpoint_sha256", "model",
                "config", "routing", "time_convention", "noise_level_definition", "data", "num_samples", "batch_size",
                "seed", "precision", "device", "projection_seed", "pooled_samples", "loss"):
        assert key in a, key
    assert a["status"] == "complete" and a["precision"] == "float32" and a["device"] == "cpu"
    assert a["config"]["depth"] == 2 and a["noise_levels"] == LEVELS


def test_data_choices(tmp_path):
    from dartool.data import DataError

    latent = tiny_model("residual", depth=2, in_channels=4, dtype=torch.float32)
    with pytest.raises(DataError, match="--gaussian"):
        run_probe(latent, None, cfg_(), tmp_path / "l.zarr")
    ds = open_store(run_probe(latent, None, cfg_(gaussian=True, null_class=True), tmp_path / "g.zarr"))
    assert ds.attrs["data_kind"] == "gaussian" and (ds.label.values == 10).all()
    fm = tiny_model("residual", depth=2, input_size=28, patch_size=7, dtype=torch.float32)
    ds = open_store(run_probe(fm, None, cfg_(num_samples=3, pooled_samples=0, split="test"), tmp_path / "f.zarr"))
    assert ds.attrs["data"] == "fashion-mnist:test" and "pooled_h" not in ds and "feature" not in ds.dims


def test_bf16_autocast_runs_and_is_close(small, reference, tmp_path):
    model, data = small
    got = open_store(run_probe(model, data, cfg_(precision="bf16"), tmp_path / "h.zarr"))
    assert got.attrs["precision"] == "bfloat16"
    np.testing.assert_allclose(got.z_rms.values, reference.z_rms.values, rtol=5e-2)
    np.testing.assert_allclose(got.block_cos.values, reference.block_cos.values, atol=5e-2)


def test_parameters_are_left_as_they_were(small):
    model, data = small
    flags = [p.requires_grad for p in model.parameters()]
    ctx = StepContext.build(model, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="boom"):
        with capturing(ctx):
            assert not any(p.requires_grad for p in model.parameters())
            raise RuntimeError("boom")
    assert [p.requires_grad for p in model.parameters()] == flags
    assert not any(h._forward_hooks for h in model.modules() if hasattr(h, "tap_name"))


# --------------------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------------------


def test_cli_end_to_end(tmp_path):
    from typer.testing import CliRunner

    from dartool.checkpoints import save_checkpoint
    from dartool.cli import app

    torch.manual_seed(0)
    fm = tiny_model("residual", depth=2, input_size=28, patch_size=7, dtype=torch.float32)
    ck = tmp_path / "ck.pt"
    save_checkpoint(ck, fm)
    out = tmp_path / "s.zarr"
    run = CliRunner().invoke
    args = ["probe", str(ck), "--out", str(out), "--samples", "4", "--timesteps", "3", "--batch-size", "2", "--no-progress",
            "--split", "test"]
    res = run(app, args)
    assert res.exit_code == 0, res.output
    ds = open_store(out)
    assert ds.sizes["noise_level"] == 3 and ds.sizes["sample"] == 4
    assert ds.attrs["checkpoint_sha256"] and ds.attrs["checkpoint_layout"] == "dartool"
    res = run(app, args)
    assert res.exit_code == 2 and "--overwrite" in res.output
    res = run(app, args + ["--overwrite", "--noise-levels", "0.1,0.9"])
    assert res.exit_code == 0, res.output
    assert list(open_store(out).noise_level.values) == [0.1, 0.9]
    latent = tiny_model("residual", depth=2, in_channels=4, dtype=torch.float32)
    save_checkpoint(tmp_path / "lat.pt", latent)
    res = run(app, ["probe", str(tmp_path / "lat.pt"), "--out", str(tmp_path / "l.zarr"), "--no-progress"])
    assert res.exit_code == 2 and "--gaussian" in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("layout", ["dit", "repa"])
def test_public_checkpoint_layouts(tmp_path, layout):
    """Raw DiT / REPA state dicts: the architecture and time convention are inferred, the sha256 recorded."""
    from dartool.checkpoints import load_checkpoint, sha256_file

    extra = {"projector_dims": (16,), "projector_hidden": 16} if layout == "repa" else {}
    model = tiny_model("residual", depth=2, learn_sigma=layout == "dit", dtype=torch.float32, **extra)
    path = tmp_path / ("DiT-tiny.pt" if layout == "dit" else "last.pt")
    torch.save({"ema": model.state_dict()}, path)
    ck = load_checkpoint(path, num_heads=4)
    assert ck.config.time_convention == layout
    x, y = tiny_data(3, model.config)
    ds = open_store(run_probe(ck, (x, y), cfg_(num_samples=3), tmp_path / "s.zarr"))
    a = ds.attrs
    assert a["checkpoint_layout"] == "dit-sit-repa" and a["weights"] == "ema" and a["time_convention"] == layout
    assert a["checkpoint_sha256"] == sha256_file(path) and a["checkpoint"] == str(path.resolve())
    assert np.isfinite(ds.loss.values).all() and (layout != "dit" or np.all(ds.model_t.values % 1 == 0))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("routing", ["residual", "dar"])
def test_cuda_matches_cpu(tmp_path, routing):
    model = tiny_model(routing, depth=2, dtype=torch.float32)
    data = tiny_data(5, model.config)
    cpu = open_store(run_probe(model, data, cfg_(), tmp_path / "cpu.zarr"))
    gpu = open_store(run_probe(model.cuda(), data, cfg_(), tmp_path / "gpu.zarr"))
    assert gpu.attrs["device"] != "cpu"
    _same(gpu, cpu, rtol=1e-3)
    half = open_store(run_probe(model, data, cfg_(precision="bf16"), tmp_path / "bf16.zarr"))
    np.testing.assert_allclose(half.z_rms.values, cpu.z_rms.values, rtol=5e-2)
    model.cpu()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_side_stream_reductions_match_inline(tmp_path, monkeypatch):
    """The reductions on a side stream (overlapping the next step, the CUDA default) give the inline values."""
    model = tiny_model("residual", depth=2, dtype=torch.float32).cuda()
    data = tiny_data(5, model.config)
    on = open_store(run_probe(model, data, cfg_(), tmp_path / "on.zarr"))
    monkeypatch.setenv("DARTOOL_PROBE_OVERLAP", "0")
    off = open_store(run_probe(model, data, cfg_(), tmp_path / "off.zarr"))
    _same(on, off, rtol=1e-6)
    model.cpu()


def test_statistics_matmuls_run_in_full_float32_and_restore_the_setting():
    """A trainer switches TF32 on (``torch.set_float32_matmul_precision('high')``); the probe's Gram matrices must
    not inherit it (10-bit mantissa: too coarse for cosines near 1), and the user's setting comes back after."""
    from dartool.probe import exact_fp32_matmul

    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        with exact_fp32_matmul():
            assert torch.get_float32_matmul_precision() == "highest"
        assert torch.get_float32_matmul_precision() == "high"
        with pytest.raises(RuntimeError):
            with exact_fp32_matmul():
                raise RuntimeError("boom")
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(old)
