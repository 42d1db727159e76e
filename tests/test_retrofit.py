"""Retrofitting a *trained* residual model into DAR (DAR-METHOD.md section 5; issue #8 item 2).

A freshly initialised model is a poor test of conversion: with adaLN-Zero every block is an identity map, so
almost any stream computes the same function. Here a tiny residual SiT is first trained for 30 AdamW steps
(weights move well off zero), then converted, in Python and through ``dartool convert``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dartool.checkpoints import load_checkpoint, save_checkpoint
from dartool.cli import app
from dartool.diffusion import diffusion_loss
from dartool.models import ModelConfig, SiT
from dartool.models.convert import residual_to_dar


def tiny_config() -> ModelConfig:
    return ModelConfig(input_size=16, patch_size=4, in_channels=1, hidden_size=64, depth=3, num_heads=4,
                       num_classes=10, learn_sigma=False)


def training_data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST at 16 px when installed, else seeded random images."""
    from dartool.data import DataError, load_dataset

    try:
        ds = load_dataset()
        idx = np.random.default_rng(0).permutation(len(ds))[:n]
        return ds.batch(idx, size=16)
    except DataError:
        g = torch.Generator().manual_seed(0)
        return torch.rand(n, 1, 16, 16, generator=g) * 2 - 1, torch.randint(0, 10, (n,), generator=g)


@pytest.fixture(scope="module")
def trained() -> SiT:
    """A residual SiT after 30 AdamW steps (lr 1e-3) on the velocity loss. float32."""
    torch.manual_seed(0)
    model = SiT(tiny_config())
    x, y = training_data()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    for step in range(30):
        i = torch.randint(0, len(x), (16,), generator=g)
        s = torch.rand(16, generator=g)
        eps = torch.randn(x[i].shape, generator=g)
        loss = diffusion_loss(model, x[i], y[i], s, eps=eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    # trained, not fresh: the adaLN-Zero gates and the head have left zero
    for block in model.blocks:
        assert block.adaLN_modulation[-1].weight.abs().max() > 1e-3
    assert model.final_layer.linear.weight.abs().max() > 1e-3
    return model


def probe_batch(cfg: ModelConfig, n: int = 6, dtype=torch.float64):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g, dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    y = torch.randint(0, cfg.num_classes, (n,), generator=g)
    return x.to(dtype), t.to(dtype), y


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm())


@pytest.mark.parametrize("query", ["static", "static_t", "dynamic"])
def test_converted_trained_model_computes_the_same_function(trained, query):
    res = SiT(trained.config).double()
    res.load_state_dict(trained.state_dict())
    res.eval()
    dar = residual_to_dar(res, query=query).eval()
    assert dar.config.routing == "dar" and dar.config.chunk_size == 1 and dar.config.query == query
    assert next(dar.parameters()).dtype == torch.float64
    x, t, y = probe_batch(res.config)
    with torch.no_grad():
        a, b = res(x, t, y), dar(x, t, y)
        assert a.abs().max() > 1e-2                        # a non-trivial function
        assert rel_err(a, b) < 1e-5
        # classifier-free guidance (a second, null-label pass) agrees as well
        assert rel_err(res.forward_with_cfg(x, t, y, 1.5), dar.forward_with_cfg(x, t, y, 1.5)) < 1e-5


def test_converted_model_can_be_fine_tuned(trained):
    """Right after conversion the routers get gradients from the training loss, so fine-tuning moves them."""
    dar = residual_to_dar(trained).train()
    x, y = training_data(8)
    g = torch.Generator().manual_seed(3)
    loss = diffusion_loss(dar, x, y, torch.rand(8, generator=g), eps=torch.randn(x.shape, generator=g))
    loss.backward()
    router_grads = [r.query.grad for r in dar.routers]
    assert all(gr is not None for gr in router_grads)
    assert sum(float(gr.abs().sum()) for gr in router_grads) > 0


def test_convert_cli_writes_a_safe_checkpoint_that_reproduces_the_function(trained, tmp_path):
    src, out = tmp_path / "residual.pt", tmp_path / "dar.pt"
    save_checkpoint(src, trained)
    runner = CliRunner()
    r = runner.invoke(app, ["convert", str(src), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "relative output difference" in r.output

    obj = torch.load(out, map_location="cpu", weights_only=True)        # plain data and tensors only
    assert obj["config"]["routing"] == "dar" and obj["config"]["chunk_size"] == 1
    assert obj["converted_from_sha256"] == load_checkpoint(src).sha256
    dar = SiT(ModelConfig.from_dict(obj["config"]))
    dar.load_state_dict(obj["model"], strict=True)
    dar = dar.double().eval()
    res = SiT(trained.config).double().eval()
    res.load_state_dict(trained.state_dict())
    x, t, y = probe_batch(res.config)
    with torch.no_grad():
        assert rel_err(res(x, t, y), dar(x, t, y)) < 1e-5
    # the regular reader sees the same model
    ck = load_checkpoint(out)
    assert ck.layout == "dartool" and ck.config.label.endswith("DAR static c1")

    # refusals are one line, exit code 2: an existing output, and a model that is already DAR
    r = runner.invoke(app, ["convert", str(src), "--out", str(out)])
    assert r.exit_code == 2 and "exists" in r.output
    r = runner.invoke(app, ["convert", str(out), "--out", str(tmp_path / "again.pt")])
    assert r.exit_code == 2 and "residual" in r.output
