"""Samplers: shapes, conventions (SiT / REPA / DiT) against a closed-form Gaussian model, guidance, files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from dartool.models import ModelConfig, SiT
from dartool.diffusion import dit_alpha_bar
from dartool.sample import (SamplerConfig, SamplingError, generate, make_grid, predict, run_sampler, sample_images,
                            save_npz)

SIGMA = 0.5      # data ~ N(0, SIGMA^2 I): the exact velocity / epsilon field is known in closed form


class GaussModel(nn.Module):
    """The exact network for data N(0, SIGMA^2 I), in the SiT, REPA or DiT convention (class-independent)."""

    def __init__(self, convention: str, size: int = 4, channels: int = 2) -> None:
        super().__init__()
        self.config = ModelConfig(input_size=size, patch_size=2, in_channels=channels, hidden_size=8, depth=1,
                                  num_heads=1, num_classes=3, learn_sigma=False, time_convention=convention)
        self.y_embedder = nn.Module()
        self.y_embedder.embedding_table = nn.Embedding(4, 1)
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x, t, y, drop_labels=None):
        v = SIGMA**2
        t = t.reshape(-1, 1, 1, 1).double()
        x = x.double()
        if self.config.time_convention == "dit":                      # epsilon-prediction, VP schedule
            a = dit_alpha_bar()[t.long().flatten()].reshape(-1, 1, 1, 1)
            out = (1 - a).sqrt() * x / (a * v + 1 - a)
        else:
            tau = t if self.config.time_convention == "sit" else 1 - t    # data time, 0 = noise
            u = (tau * v - (1 - tau)) / (tau**2 * v + (1 - tau) ** 2) * x
            out = u if self.config.time_convention == "sit" else -u
        return out.float()

    def forward_with_cfg(self, x, t, y, scale, guided_channels=None):
        return self(x, t, y)


@pytest.mark.parametrize("convention,method,steps", [("sit", "euler", 100), ("sit", "heun", 20), ("repa", "heun", 20),
                                                     ("sit", "sde", 250), ("repa", "sde", 250), ("dit", "ddim", 250)])
def test_samplers_reach_the_data_distribution(convention, method, steps):
    model = GaussModel(convention)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1000, 2, 4, 4, generator=g)
    x = run_sampler(model, noise, torch.zeros(1000, dtype=torch.long), SamplerConfig(method=method, steps=steps), g)
    assert x.shape == noise.shape
    assert abs(float(x.std()) - SIGMA) < 0.02 * SIGMA * (3 if method == "sde" else 1), float(x.std())
    assert abs(float(x.mean())) < 0.02


def test_sit_and_repa_conventions_give_the_same_ode_samples():
    noise = torch.randn(8, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.zeros(8, dtype=torch.long)
    cfg = SamplerConfig(method="heun", steps=10)
    a = run_sampler(GaussModel("sit"), noise, y, cfg)
    b = run_sampler(GaussModel("repa"), noise, y, cfg)
    assert torch.allclose(a, b, atol=1e-5)


def test_sampler_model_mismatches_are_one_line_errors():
    with pytest.raises(SamplingError, match="ddim"):
        run_sampler(GaussModel("dit"), torch.randn(1, 2, 4, 4), torch.zeros(1, dtype=torch.long), SamplerConfig("euler"))
    with pytest.raises(SamplingError, match="DiT epsilon"):
        run_sampler(GaussModel("sit"), torch.randn(1, 2, 4, 4), torch.zeros(1, dtype=torch.long), SamplerConfig("ddim"))
    with pytest.raises(SamplingError, match="unknown sampler"):
        SamplerConfig("dopri5")
    nonull = SiT(ModelConfig(input_size=4, patch_size=2, in_channels=1, hidden_size=16, depth=1, num_heads=2,
                             num_classes=3, class_dropout_prob=0.0, learn_sigma=False))
    with pytest.raises(SamplingError, match="no null class"):
        run_sampler(nonull, torch.randn(1, 1, 4, 4), torch.zeros(1, dtype=torch.long), SamplerConfig(cfg_scale=2.0))


def _random_sit(channels: int = 4, **kw) -> SiT:
    torch.manual_seed(0)
    m = SiT(ModelConfig(input_size=8, patch_size=2, in_channels=channels, hidden_size=32, depth=2, num_heads=4,
                        num_classes=5, **kw))
    with torch.no_grad():
        for p in m.parameters():          # leave adaLN-zero: outputs must depend on the class
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


def test_guidance_on_all_channels_and_the_legacy_three():
    m = _random_sit(channels=4, learn_sigma=False)
    x = torch.randn(3, 4, 8, 8)
    t = torch.full((3,), 0.4)
    y = torch.tensor([0, 1, 2])
    with torch.no_grad():
        cond = m(x, t, y)
        unc = m(x, t, torch.full_like(y, 5))
        full = predict(m, x, t, y, SamplerConfig(cfg_scale=3.0))
        legacy = predict(m, x, t, y, SamplerConfig(cfg_scale=3.0, guided_channels=3))
    want = unc + 3.0 * (cond - unc)
    assert torch.allclose(full, want, atol=1e-5)
    assert torch.allclose(legacy[:, :3], want[:, :3], atol=1e-5)
    assert torch.allclose(legacy[:, 3:], cond[:, 3:], atol=1e-5)          # DiT/SiT leave channel 4 unguided
    assert not torch.allclose(full[:, 3:], cond[:, 3:], atol=1e-4)
    assert "cfg 3 (first 3 channels)" in SamplerConfig(cfg_scale=3.0, guided_channels=3).label


def test_generation_is_deterministic_and_independent_of_the_number_of_ranks():
    m = _random_sit(channels=1, learn_sigma=False)
    cfg = SamplerConfig("sde", steps=4)
    one = {j: (x, y) for j, x, y in generate(m, 10, cfg, seed=3, batch_size=4)}
    two = {j: (x, y) for r in range(2) for j, x, y in generate(m, 10, cfg, seed=3, batch_size=4, rank=r, world_size=2)}
    assert sorted(one) == sorted(two) == [0, 1, 2]
    for j in one:
        assert torch.equal(one[j][0], two[j][0]) and torch.equal(one[j][1], two[j][1])
    assert one[2][0].shape == (2, 1, 8, 8)
    imgs, labels = sample_images(m, 10, cfg, seed=3, batch_size=4, latent=False)
    assert imgs.shape == (10, 8, 8, 1) and imgs.dtype == np.uint8 and labels.shape == (10,)
    fixed = sample_images(m, 6, SamplerConfig("euler", steps=3), labels=np.array([4] * 6), latent=False)[1]
    assert (fixed == 4).all()


def test_grid_and_adm_npz(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 255, (5, 6, 6, 1), dtype=np.uint8)
    grid = make_grid(imgs, ncol=3, pad=2)
    assert grid.shape == (2 * 8 + 2, 3 * 8 + 2, 1)
    assert np.array_equal(grid[2:8, 2:8], imgs[0])
    p = save_npz(tmp_path / "s.npz", imgs, np.arange(5), {"sampler": {"method": "euler"}})
    with np.load(p) as f:
        assert f["arr_0"].shape == (5, 6, 6, 3) and f["arr_0"].dtype == np.uint8     # ADM: NHWC RGB uint8
        assert np.array_equal(f["arr_0"][..., 2], imgs[..., 0])
        assert list(f["arr_1"]) == list(range(5))
        assert json.loads(str(f["meta"]))["sampler"]["method"] == "euler"


def test_sample_command_writes_grid_npz_and_metadata(tmp_path):
    from typer.testing import CliRunner

    from dartool.checkpoints import save_checkpoint
    from dartool.cli import app

    m = _random_sit(channels=1, learn_sigma=False)
    ck = tmp_path / "m.pt"
    save_checkpoint(ck, m, ema=m)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["sample", str(ck), "--out", str(out), "--n", "6", "--sampler", "heun", "--steps", "3",
                                 "--cfg-scale", "1.5", "--classes", "1,2", "--batch-size", "4", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert (out / "grid.png").exists()
    with np.load(out / "samples.npz") as f:
        assert f["arr_0"].shape == (6, 8, 8, 3)
        assert list(f["arr_1"]) == [1, 2, 1, 2, 1, 2]
    meta = json.loads((out / "samples.json").read_text())
    assert meta["sampler"]["steps"] == 3 and meta["sampler"]["cfg_scale"] == 1.5 and meta["n"] == 6
    r = CliRunner().invoke(app, ["sample", str(ck), "--out", str(out), "--n", "2", "--device", "cpu"])
    assert r.exit_code == 2 and "--overwrite" in r.output
