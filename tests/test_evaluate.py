"""Fréchet distance against closed forms, k-NN precision/recall, the reference cache, Inception loading, eval CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dartool import evaluate as E


def test_frechet_distance_of_diagonal_gaussians_matches_the_closed_form():
    rng = np.random.default_rng(0)
    d = 16
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    exact = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = E.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert abs(got - exact) < 1e-9 * max(1.0, exact)
    assert abs(E.frechet_distance(mu1, np.diag(s1), mu1, np.diag(s1))) < 1e-9


def test_frechet_distance_with_rotated_covariances():
    # S2 = R S1 R^T (same spectrum): FD = Tr(S1 + S2) - 2 Tr((S1 S2)^(1/2)); check against a float64 eigen route
    rng = np.random.default_rng(1)
    A = rng.normal(size=(8, 8))
    s1 = A @ A.T + np.eye(8)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    s2 = q @ s1 @ q.T
    w, V = np.linalg.eigh(s1)
    r1 = V @ np.diag(np.sqrt(w)) @ V.T                      # S1^(1/2)
    m = r1 @ s2 @ r1                                        # (S1 S2)^(1/2) has the trace of (S1^1/2 S2 S1^1/2)^1/2
    tr = np.sqrt(np.clip(np.linalg.eigvalsh(m), 0, None)).sum()
    exact = np.trace(s1) + np.trace(s2) - 2 * tr
    assert abs(E.frechet_distance(np.zeros(8), s1, np.zeros(8), s2) - exact) < 1e-8 * exact


def test_frechet_distance_survives_singular_covariances_and_checks_shapes():
    rng = np.random.default_rng(2)
    f1, f2 = rng.normal(size=(5, 20)), rng.normal(size=(5, 20)) + 1      # 5 samples in 20-d: rank 4
    s = E.FeatureStats.from_features(f1), E.FeatureStats.from_features(f2)
    fd = E.frechet_distance(s[0].mu, s[0].sigma, s[1].mu, s[1].sigma)
    assert np.isfinite(fd) and fd > 0
    with pytest.raises(E.EvalError, match="differ in size"):
        E.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_frechet_distance_from_samples_approaches_the_population_value():
    rng = np.random.default_rng(3)
    a = rng.normal(0.0, 1.0, size=(20000, 4))
    b = rng.normal(0.5, 2.0, size=(20000, 4))
    sa, sb = E.FeatureStats.from_features(a), E.FeatureStats.from_features(b)
    exact = 4 * 0.25 + 4 * (1 + 4 - 2 * 2)
    assert abs(E.frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma) - exact) < 0.1


def test_precision_recall_knn_manifolds():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(400, 8))
    p, r = E.precision_recall(real, real.copy(), k=3)
    assert p == 1.0 and r == 1.0
    p, r = E.precision_recall(real, rng.normal(size=(400, 8)) + 100, k=3)
    assert p == 0.0 and r == 0.0
    # fakes collapsed onto one region of the real data: precise, but low recall
    fake = real[real[:, 0] > 1.0]
    p, r = E.precision_recall(real, fake, k=3)
    assert p == 1.0 and r < 0.5
    with pytest.raises(E.EvalError, match="more than 3 points"):
        E.knn_radii(torch.zeros(3, 2), k=3)


def _fake_net(calls: list) -> E.FeatureNet:
    def fn(images, progress=None):
        calls.append(len(images))
        x = images.reshape(len(images), -1).astype(np.float64)
        return np.stack([x.mean(1), x.std(1), x[:, 0]], 1)

    return E.FeatureNet("fake", "fake net (mean, std, first pixel)", 3, fn, "fake/1")


def test_reference_statistics_are_cached_per_dataset_size_and_net(tmp_path, monkeypatch):
    from dartool.data import Dataset

    monkeypatch.setenv("DARTOOL_CACHE", str(tmp_path))
    rng = np.random.default_rng(5)
    data = Dataset(rng.integers(0, 255, (50, 8, 8, 1), dtype=np.uint8), np.zeros(50, np.int64), "tiny", "pixels", 1)
    calls: list = []
    net = _fake_net(calls)
    a = E.reference_stats(data, net, n=40, keep=20)
    b = E.reference_stats(data, net, n=40, keep=20)
    assert calls == [40]                                   # the second call read the cache
    assert np.array_equal(a.mu, b.mu) and np.array_equal(a.sigma, b.sigma) and a.subset.shape == (20, 3)
    E.reference_stats(data, net, n=40, keep=20, size=4)    # another image size: another entry
    assert calls == [40, 40] and len(list((tmp_path / "ref_stats").iterdir())) == 2
    recs = E.evaluate_images(data.x[:30], a, net, k=3, pr_samples=20,
                             context=E.describe_sampler({"label": "ODE Euler, 5 steps, no guidance", "steps": 5,
                                                         "cfg_scale": 1.0, "method": "euler"}))
    assert [r["metric"] for r in recs] == ["fd_effnet", "precision", "recall"]
    for r in recs:
        assert r["feature_net"].startswith("fake net") and r["n_samples"] == 30 and r["n_reference"] == 40
        assert r["sampler"].startswith("ODE Euler") and r["steps"] == 5 and r["guided_channels"] == "all"
    with pytest.raises(E.EvalError, match="latents"):
        E.reference_images(Dataset(np.zeros((2, 4, 4, 4), np.float32), np.zeros(2, np.int64), "l", "latents", 1), 4)


def test_inception_is_built_without_torchvision_and_loads_a_pytorch_fid_file(tmp_path):
    net = E.InceptionFID()
    assert sum(p.numel() for p in net.parameters()) == 23_850_960        # torchvision Inception3, 1008 classes, no aux
    sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "pt_inception.pth")
    fn = E.inception(tmp_path / "pt_inception.pth", "cpu", batch_size=2)
    feats = fn.fn(np.zeros((1, 16, 16, 1), np.uint8))
    assert feats.shape == (1, 2048) and np.isfinite(feats).all()
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(E.EvalError, match="not a pytorch-fid Inception"):
        E.load_inception(tmp_path / "bad.pth")
    with pytest.raises(E.EvalError, match="nothing is downloaded"):
        E.load_inception(tmp_path / "missing.pth")


def test_eval_command_on_an_adm_npz(tmp_path, monkeypatch):
    pytest.importorskip("efficientnet_lite_pytorch")
    from typer.testing import CliRunner

    from dartool.cli import app
    from dartool.sample import save_npz

    monkeypatch.setenv("DARTOOL_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(6)
    data = tmp_path / "data.npz"
    np.savez(data, x=rng.integers(0, 255, (24, 8, 8), dtype=np.uint8), y=np.zeros(24, np.int64))
    samples = save_npz(tmp_path / "s.npz", rng.integers(0, 255, (12, 8, 8, 1), dtype=np.uint8), np.zeros(12),
                       {"sampler": {"method": "heun", "steps": 7, "cfg_scale": 1.5, "guided_channels": None,
                                    "label": "ODE Heun, 7 steps, cfg 1.5 (all channels)"}, "model": "tiny"})
    out = tmp_path / "m.json"
    r = CliRunner().invoke(app, ["eval", str(samples), "--data", str(data), "--ref-samples", "20", "--pr-samples", "10",
                                 "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    recs = json.loads(out.read_text())["metrics"]
    fd = next(x for x in recs if x["metric"] == "fd_effnet")
    assert fd["value"] > 0 and fd["n_samples"] == 12 and fd["n_reference"] == 20
    assert fd["feature_net"].startswith("EfficientNet-Lite0") and fd["steps"] == 7 and fd["cfg_scale"] == 1.5
    assert "not comparable" in r.output
