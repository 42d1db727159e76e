"""REPA alignment: the projector's key layout, the loss against a plain float64 reference, the resizing of
encoder features to the token grid, the capture of exactly ``blocks.k.hook_out``, encoders, and errors."""
from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dartool.checkpoints import load_checkpoint
from dartool.models import ModelConfig, SiT, tapped
from dartool.repa import (
    EfficientNetLite0Encoder, RepaAligner, RepaConfig, RepaError, TimmEncoder, config_with_projector,
    default_align_block, ensure_projector, repa_loss, resize_to_grid, tap_name,
)


def tiny(routing="residual", depth=3, channels=1, size=16, patch=4, **kw) -> ModelConfig:
    return ModelConfig(input_size=size, patch_size=patch, in_channels=channels, hidden_size=64, depth=depth,
                       num_heads=4, num_classes=5, routing=routing, learn_sigma=False, **kw)


def randomize(model: nn.Module, std=0.1, seed=0) -> nn.Module:
    """Move trainable weights off their zero initialisation (adaLN-Zero makes fresh blocks identity maps)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and not name.startswith("projectors."):
                base = 1.0 if name.endswith("norm.weight") else 0.0
                p.copy_(base + std * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
    return model


class FakeEncoder:
    """A deterministic stand-in encoder: a fixed random 1x1 conv on 4x4 average-pooled pixels."""

    def __init__(self, dim=12, name="fake"):
        self.name, self.dim = name, dim
        self.w = torch.randn(dim, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def patch_features(self, x):
        x = F.adaptive_avg_pool2d(x.expand(-1, 3, -1, -1), 4)                        # [B, 3, 4, 4]
        return torch.einsum("dc,bchw->bdhw", self.w.to(x.dtype), x)                   # [B, dim, 4, 4]


def batch(cfg, n=2, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g, dtype=torch.float64) * 2 - 1
    t = torch.rand(n, generator=g, dtype=torch.float64)
    return x.to(dtype), t.to(dtype), torch.randint(0, cfg.num_classes, (n,), generator=g)


# ---------------------------------------------------------------------------------------------- config


def test_default_block_and_tap_names():
    assert [default_align_block(d) for d in (28, 24, 12, 6, 3, 2, 1)] == [8, 8, 4, 2, 1, 1, 1]
    assert tap_name(8) == "blocks.7.hook_out"
    assert RepaConfig().weight == 0.5 and RepaConfig().encoder == "efficientnet-lite0"
    with pytest.raises(RepaError, match="unknown REPA encoder"):
        RepaConfig(encoder="dinov2")
    with pytest.raises(RepaError, match="1-based"):
        RepaConfig(block=0)
    with pytest.raises(RepaError, match="outside the model's blocks 1..3"):
        RepaAligner(SiT(config_with_projector(tiny(), 12)), RepaConfig(block=4), encoder=FakeEncoder())


def test_projector_layout_matches_repa():
    model = SiT(config_with_projector(tiny(), 1280))
    sd = model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items() if k.startswith("projectors.")}
    assert shapes == {
        "projectors.0.0.weight": (2048, 64), "projectors.0.0.bias": (2048,),
        "projectors.0.2.weight": (2048, 2048), "projectors.0.2.bias": (2048,),
        "projectors.0.4.weight": (1280, 2048), "projectors.0.4.bias": (1280,),
    }


def test_ensure_projector_adds_a_loadable_projector_and_keeps_weights(tmp_path):
    model = randomize(SiT(tiny()))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert ensure_projector(model, 12) is True
    assert ensure_projector(model, 12) is False                      # already fits
    assert model.config.projector_dims == (12,)
    sd = model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in before.items())
    rebuilt = SiT(model.config)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in sd.items()}
    rebuilt.load_state_dict(sd, strict=True)
    # a REPA-layout raw state dict (projectors present) loads through the checkpoint reader, as REPA's last.pt
    path = tmp_path / "repa_like.pt"
    torch.save(sd, path)
    ck = load_checkpoint(path, num_heads=4)
    assert ck.config.projector_dims == (12,) and ck.config.time_convention == "repa"


# ---------------------------------------------------------------------------------------------- loss


def test_loss_equals_plain_float64_reference():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(3, 5, 7, generator=g, dtype=torch.float64)
    q = torch.randn(3, 5, 7, generator=g, dtype=torch.float64)
    total = 0.0
    for b in range(3):
        for n in range(5):
            a, c = p[b, n].tolist(), q[b, n].tolist()
            dot = sum(x * y for x, y in zip(a, c))
            na, nc = sum(x * x for x in a) ** 0.5, sum(y * y for y in c) ** 0.5
            total += dot / (na * nc)
    ref = -total / 15
    got = repa_loss(p, q)
    assert got.dtype == torch.float64
    assert abs(got.item() - ref) < 1e-12
    assert abs(repa_loss(p, 3 * p).item() + 1) < 1e-12 and abs(repa_loss(p, -p).item() - 1) < 1e-12
    assert abs(repa_loss(p.float(), q.float()).item() - ref) < 1e-5
    with pytest.raises(RepaError, match="differ"):
        repa_loss(p, q[:, :4])


# ---------------------------------------------------------------------------------------------- resizing


def test_resize_to_grid_area_definition():
    # constant maps stay constant, at every ratio (7 -> 16 is not an integer ratio)
    c = torch.full((2, 3, 7, 7), 2.5)
    for grid in (16, 7, 4, 1):
        out = resize_to_grid(c, grid)
        assert out.shape == (2, grid * grid, 3) and torch.allclose(out, torch.full_like(out, 2.5))
    # same size: unchanged, tokens row-major (token n = i * grid + j), channels last
    m = (10 * torch.arange(3.0)[:, None] + torch.arange(3.0)[None]).expand(1, 2, 3, 3).clone()
    m[0, 1] *= -1
    out = resize_to_grid(m, 3)
    assert out[0, :, 0].tolist() == [0, 1, 2, 10, 11, 12, 20, 21, 22]
    assert torch.equal(out[0, :, 1], -out[0, :, 0])
    # 2x2 checker -> 4x4: each cell copied into its 2x2 block
    checker = torch.tensor([[1.0, 0.0], [0.0, 1.0]])[None, None]
    up = resize_to_grid(checker, 4).reshape(4, 4)
    assert up.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
    # 4x4 -> 2x2: block means
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert resize_to_grid(x, 2).reshape(2, 2).tolist() == [[2.5, 4.5], [10.5, 12.5]]
    # patch tokens [B, N, C] are read as a row-major square grid
    assert torch.equal(resize_to_grid(out, 3), out)
    with pytest.raises(RepaError, match="not a square grid"):
        resize_to_grid(torch.zeros(1, 5, 2), 2)


# ---------------------------------------------------------------------------------------------- capture


def manual_residual_z(model: SiT, x, t, y, k: int) -> torch.Tensor:
    """z after 1-based block k of a residual SiT, written out by hand."""
    cfg = model.config
    h = model.x_embedder(x) + model.pos_embed
    c, _ = model.condition(t, y)
    for block in model.blocks[:k]:
        mod = block.modulation(c)
        h = h + block.sublayer(0, h, mod, cfg.norm_eps)
        h = h + block.sublayer(1, h, mod, cfg.norm_eps)
    return h


@pytest.mark.parametrize("routing", ["residual", "dar"])
def test_capture_is_exactly_the_tap_and_keeps_the_graph(routing):
    enc = FakeEncoder()
    cfg = config_with_projector(tiny(routing, depth=3).replace(projector_hidden=32), enc.dim)
    model = randomize(SiT(cfg)).double()
    x, t, y = batch(cfg, dtype=torch.float64)
    aligner = RepaAligner(model, RepaConfig(block=2), encoder=enc)
    assert aligner.tap == "blocks.1.hook_out"
    seen = {}
    with aligner.capture(model):
        model(x, t, y)
        z = aligner._z
        loss = aligner.loss(x)
    assert aligner._z is None                                         # nothing outlives the step
    if routing == "residual":
        ref = manual_residual_z(model, x, t, y, 2)
    else:  # an independent hook on the same tap
        with tapped(model, {"blocks.1.hook_out": lambda n, v: seen.__setitem__(n, v.detach().clone())}):
            model(x, t, y)
        ref = seen["blocks.1.hook_out"]
    torch.testing.assert_close(z.detach(), ref.detach(), rtol=1e-12, atol=1e-12)
    # the loss is weight * repa_loss(projector(z), target) and backpropagates into blocks <= k only
    expected = 0.5 * repa_loss(model.projectors[0](ref), aligner.target(x))
    torch.testing.assert_close(loss.detach(), expected.detach())
    loss.backward()
    grad = lambda m: sum(float(p.grad.abs().sum()) for p in m.parameters() if p.grad is not None)  # noqa: E731
    assert grad(model.projectors) > 0 and grad(model.blocks[0]) > 0 and grad(model.blocks[1]) > 0
    assert grad(model.blocks[2]) == 0 and grad(model.final_layer) == 0


@pytest.mark.parametrize("routing", ["residual", "dar"])
def test_return_block_gives_the_tap_and_the_same_loss_and_gradients(routing):
    """model(..., return_block=k) returns (out, z_k) with out the plain forward's and z_k the hook's tensor; the
    aligner's loss of that explicit z_k (loss_of, the path torch.compile sees) equals the hook path's loss, and
    both give the same gradients (float64)."""
    enc = FakeEncoder()
    cfg = config_with_projector(tiny(routing, depth=3).replace(projector_hidden=32), enc.dim)
    model = randomize(SiT(cfg)).double()
    x, t, y = batch(cfg, dtype=torch.float64)
    aligner = RepaAligner(model, RepaConfig(block=2), encoder=enc)
    grads = []
    for explicit in (False, True):
        model.zero_grad(set_to_none=True)
        if explicit:
            out, z = model(x, t, y, return_block=2)
            loss = aligner.loss_of(Wrapped(model), z, x)
        else:
            with aligner.capture(model):
                out = model(x, t, y)
                z = aligner._z
                loss = aligner.loss(x)
        (out.square().mean() + loss).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        if explicit:
            torch.testing.assert_close(out, plain, rtol=0, atol=0)
            torch.testing.assert_close(z, z_hook, rtol=0, atol=0)
            torch.testing.assert_close(loss, loss_hook, rtol=0, atol=0)
        plain, z_hook, loss_hook = out.detach(), z.detach(), loss.detach()
    assert grads[0].keys() == grads[1].keys() and any(k.startswith("projectors.") for k in grads[0])
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="return_block must be a block in 1..3"):
        model(x, t, y, return_block=4)


class Wrapped(nn.Module):
    """Like DDP: the real model under ``.module``."""

    def __init__(self, model):
        super().__init__()
        self.module = model

    def forward(self, *a, **kw):
        return self.module(*a, **kw)


def test_capture_through_a_ddp_like_wrapper():
    enc = FakeEncoder()
    model = randomize(SiT(config_with_projector(tiny(), enc.dim).replace(projector_hidden=16)))
    wrapped = Wrapped(model)
    aligner = RepaAligner(wrapped, RepaConfig(block=3), encoder=enc)
    x, t, y = batch(model.config)
    with aligner.capture(wrapped):
        wrapped(x, t, y)
        loss = aligner.loss(x)
    loss.backward()
    assert model.projectors[0][0].weight.grad is not None and model.blocks[2].attn.qkv.weight.grad is not None


def test_aligner_with_the_bundled_encoder_trains_the_projector():
    """EfficientNet-Lite0's 7x7 map, area-resized to a 4x4 token grid; a few steps lower the alignment loss."""
    enc = EfficientNetLite0Encoder()
    model = SiT(config_with_projector(tiny(), enc.dim).replace(projector_hidden=64))
    aligner = RepaAligner(model, encoder=enc)
    assert aligner.block == 1 and "efficientnet-lite0 (1280-d)" in aligner.describe()
    x, t, y = batch(model.config, n=4)
    target = aligner.target(x)
    assert target.shape == (4, 16, 1280) and not target.requires_grad
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for step in range(6):
        with aligner.capture(model):
            out = model(x, t, y)
            loss = aligner.loss(target=target) if step else aligner.loss(x)   # images or a precomputed target
        (out.pow(2).mean() + loss).backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(aligner.last_loss))
    assert -1 <= losses[-1] < losses[0] <= 1


def test_repa_checkpoint_fine_tunes_and_wrong_encoder_is_one_line(tmp_path):
    # a REPA-style file with a 768-d projector (DINOv2-B's width), its time convention read off the weights
    src = randomize(SiT(config_with_projector(tiny(), 768).replace(projector_hidden=32)))
    torch.save(src.state_dict(), tmp_path / "last.pt")
    model = load_checkpoint(tmp_path / "last.pt", num_heads=4).model.train()
    assert model.config.time_convention == "repa"
    with pytest.raises(RepaError, match="outputs 768 features but encoder efficientnet-lite0 gives 1280") as e:
        RepaAligner(model)
    assert "\n" not in str(e.value)
    aligner = RepaAligner(model, encoder=FakeEncoder(768, "dinov2-like"))      # the matching encoder
    x, t, y = batch(model.config)
    with aligner.capture(model):
        model(x, t, y)
        aligner.loss(x).backward()
    assert model.projectors[0][4].weight.grad.abs().sum() > 0
    # or swap in a projector for another encoder; the rest of the weights are kept
    assert ensure_projector(model, 1280) and RepaAligner(model).encoder.dim == 1280


def test_errors_are_one_line():
    enc = FakeEncoder()
    with pytest.raises(RepaError, match="no REPA projector.*ensure_projector"):
        RepaAligner(SiT(tiny()), encoder=enc)
    model = SiT(config_with_projector(tiny(), enc.dim).replace(projector_hidden=16))
    aligner = RepaAligner(model, encoder=enc)
    x, t, y = batch(model.config)
    with pytest.raises(RepaError, match="no hidden state captured at blocks.0.hook_out"):
        aligner.loss(x)
    with aligner.capture(model):
        with pytest.raises(RepaError, match="no hidden state captured"):
            aligner.loss(x)                                       # no forward yet
        model(x, t, y)
        with pytest.raises(RepaError, match="2 target images for a forward of batch 3"):
            model(torch.cat([x, x[:1]]), torch.cat([t, t[:1]]), torch.cat([y, y[:1]]))
            aligner.loss(x)


# ---------------------------------------------------------------------------------------------- timm


def test_timm_encoder_needs_weights_and_timm(monkeypatch, tmp_path):
    with pytest.raises(RepaError, match="needs a local weights file"):
        TimmEncoder("vit_base_patch14_dinov2", None)
    with pytest.raises(RepaError, match="no encoder weights at"):
        TimmEncoder("vit_base_patch14_dinov2", str(tmp_path / "missing.pth"))
    w = tmp_path / "w.pth"
    w.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "timm", None)             # as if timm were not installed
    with pytest.raises(RepaError, match=r"pip install 'dartool\[timm\]'"):
        TimmEncoder("vit_base_patch14_dinov2", str(w))


class FakeViT(nn.Module):
    """timm-like ViT: 16 px patches, one class token in front, ``forward_features`` -> [B, 1 + N, C]."""

    num_prefix_tokens = 1

    def __init__(self, img_size=224, dim=24):
        super().__init__()
        self.num_features = dim
        self.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
        self.proj = nn.Conv2d(3, dim, 16, 16)
        self.img_size = img_size

    def forward_features(self, x):
        assert x.shape[-1] == self.img_size
        tok = self.proj(x).flatten(2).transpose(1, 2)             # [B, N, C]
        return torch.cat([torch.full_like(tok[:, :1], 1e3), tok], dim=1)


def test_timm_encoder_through_a_fake_timm(monkeypatch, tmp_path):
    w = tmp_path / "dinov2.pth"
    w.write_bytes(b"x")
    calls = []

    def create_model(name, **kw):
        calls.append((name, kw))
        if name == "cnn" and "img_size" in kw:
            raise TypeError("unexpected keyword argument 'img_size'")
        if name == "cnn":
            m = FakeViT()
            m.forward_features = lambda x: torch.ones(x.shape[0], 24, 7, 7)
            return m
        return FakeViT(kw["img_size"])

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    cfg = RepaConfig(encoder="timm:vit_fake", encoder_weights=str(w), encoder_resolution=224)
    model = SiT(config_with_projector(tiny(), 24).replace(projector_hidden=16))
    aligner = RepaAligner(model, cfg)
    name, kw = calls[0]
    assert name == "vit_fake" and kw["pretrained"] is True and kw["img_size"] == 224
    assert kw["pretrained_cfg_overlay"] == {"file": str(w)} and kw["num_classes"] == 0
    x, t, y = batch(model.config)
    feats = aligner.encoder.patch_features(x)
    assert feats.shape == (2, 196, 24) and feats.abs().max() < 1e3           # class token dropped
    assert aligner.target(x).shape == (2, 16, 24)
    with aligner.capture(model):
        model(x, t, y)
        assert torch.isfinite(aligner.loss(x))
    cnn = TimmEncoder("cnn", str(w))                                          # retried without img_size
    assert cnn.patch_features(x).shape == (2, 24, 7, 7)
