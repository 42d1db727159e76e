"""Sample quality offline: Fréchet distance and precision/recall in a frozen feature network.

Feature networks (nothing downloads):

* ``effnet`` (default): the bundled ImageNet EfficientNet-Lite0 of :mod:`dartool.features` (1280-d pooled
  features). Its Fréchet distance ranks real < blurred < noise, but it is **not** comparable with published
  FIDs; every number says so.
* ``inception``: the FID Inception-v3 (2048-d pool3 features), only from a local weights file in the
  pytorch-fid format (``pt_inception-2015-12-05-6726825d.pth``) passed with ``--inception-weights``. The network
  is built here (no torchvision): the TF-FID variant of Inception-v3 with count-exclude-pad average pools and the
  max pool in the last block, input resized to 299 (bilinear) and scaled to [-1, 1]. Its numbers are "FID" in the
  usual sense only up to resizing details: ADM's suite resizes differently, so quote ADM numbers for papers.

Metrics: the Fréchet distance (float64; the trace of the matrix square root through symmetric eigendecompositions,
  exact for PSD covariances; singular covariances need no eps: round-off eigenvalues are clipped at 0) and the k-NN manifold precision / recall of Kynkäänniemi et al. (2019), k = 3.

Reference statistics are computed once from the training images (at the model's resolution) and cached under
``$DARTOOL_CACHE`` (default ``~/.cache/dartool``)/``ref_stats/``, keyed by a fingerprint of the dataset, the image
size, the number of reference images and the feature network.

Every metric is a record labelled with its feature network, sample count, reference, sampler, steps and guidance.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
import typer
from torch import nn

NETS = ("effnet", "inception")
INCEPTION_NAME = "Inception-v3 (TF-FID weights, pytorch-fid format, pool3 2048-d)"


class EvalError(ValueError):
    """An evaluation that cannot run; one line that says what to do."""


# --------------------------------------------------------------------------------------------------
# Fréchet distance and precision / recall
# --------------------------------------------------------------------------------------------------


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), in float64.

    The trace of the square root is computed exactly through symmetric eigendecompositions:
    S1 S2 is similar to the PSD matrix A = S1^(1/2) S2 S1^(1/2), so Tr (S1 S2)^(1/2) = sum sqrt(eig(A)).
    This is several times faster than ``scipy.linalg.sqrtm`` of S1 S2 (about 0.5 s instead of 3 s at 1280-d
    on two cores), has no complex round-off to discard, and handles singular covariances without the eps
    fallback (negative round-off eigenvalues are clipped at 0). ``eps`` is kept for API compatibility.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape:
        raise EvalError(f"mean vectors differ in size: {mu1.shape} vs {mu2.shape}")
    if s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise EvalError(f"covariances {s1.shape} / {s2.shape} do not fit means of size {mu1.size}")
    if not (np.isfinite(s1).all() and np.isfinite(s2).all() and np.isfinite(mu1).all() and np.isfinite(mu2).all()):
        raise EvalError("the feature statistics contain NaN or inf; were the images finite?")
    diff = mu1 - mu2
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T                       # S1^(1/2)
    a = root1 @ s2 @ root1
    lam = np.linalg.eigvalsh((a + a.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(lam, 0, None)).sum())
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def _pairwise_blocks(a: torch.Tensor, b: torch.Tensor, block: int):
    for i in range(0, len(a), block):
        yield i, torch.cdist(a[i: i + block], b)


def knn_radii(feats: torch.Tensor, k: int = 3, block: int = 1024) -> torch.Tensor:
    """Distance of every point to its k-th nearest neighbour in the same set (itself excluded)."""
    if len(feats) <= k:
        raise EvalError(f"precision/recall with k={k} needs more than {k} points, got {len(feats)}")
    out = torch.empty(len(feats), device=feats.device, dtype=feats.dtype)
    for i, d in _pairwise_blocks(feats, feats, block):
        out[i: i + len(d)] = d.kthvalue(k + 1, dim=1).values
    return out


def manifold_coverage(query: torch.Tensor, ref: torch.Tensor, radii: torch.Tensor, block: int = 1024) -> float:
    """Fraction of ``query`` points inside at least one k-NN ball of ``ref``."""
    inside = 0
    for _, d in _pairwise_blocks(query, ref, block):
        inside += int((d <= radii[None, :]).any(dim=1).sum())
    return inside / len(query)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, device: str | torch.device = "cpu") -> tuple[float, float]:
    """Kynkäänniemi et al. (2019): precision = fake inside the real manifold, recall = real inside the fake one."""
    r = torch.as_tensor(np.asarray(real), dtype=torch.float32, device=device)
    f = torch.as_tensor(np.asarray(fake), dtype=torch.float32, device=device)
    precision = manifold_coverage(f, r, knn_radii(r, k))
    recall = manifold_coverage(r, f, knn_radii(f, k))
    return precision, recall


# --------------------------------------------------------------------------------------------------
# statistics of a feature set
# --------------------------------------------------------------------------------------------------


@dataclass
class FeatureStats:
    """Mean and covariance (float64) of N feature vectors, plus a subset kept for precision/recall."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    subset: np.ndarray                      # float32 [M, D], M <= pr_samples
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_features(cls, feats: np.ndarray, keep: int = 10_000, seed: int = 0, meta: dict | None = None) -> "FeatureStats":
        feats = np.asarray(feats, np.float64)
        if feats.ndim != 2 or len(feats) < 2:
            raise EvalError(f"need at least 2 feature vectors, got shape {feats.shape}")
        mu = feats.mean(0)
        sigma = np.cov(feats, rowvar=False)
        idx = np.arange(len(feats))
        if keep < len(feats):
            idx = np.sort(np.random.default_rng(seed).choice(len(feats), keep, replace=False))
        return cls(mu, sigma, len(feats), feats[idx].astype(np.float32), dict(meta or {}))

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.npz", dir=path.parent)
        os.close(fd)
        try:
            np.savez(tmp, mu=self.mu, sigma=self.sigma, n=np.int64(self.n), subset=self.subset,
                     meta=np.array(json.dumps(self.meta)))
            from .sample import _umask

            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: str | Path) -> "FeatureStats":
        try:
            with np.load(path) as f:
                return cls(f["mu"], f["sigma"], int(f["n"]), f["subset"], json.loads(str(f["meta"])))
        except Exception as e:  # noqa: BLE001
            raise EvalError(f"could not read reference statistics {path} ({e}); delete the file to recompute") from None


# --------------------------------------------------------------------------------------------------
# feature networks
# --------------------------------------------------------------------------------------------------


@dataclass
class FeatureNet:
    """A frozen feature network: ``fn(uint8 NHWC) -> float64 [N, D]``, with its name for labels."""

    key: str                                  # effnet | inception
    name: str
    dim: int
    fn: Callable[[np.ndarray], np.ndarray]
    id: str                                   # for cache keys (includes a weights hash for inception)
    note: str = ""


def effnet(device: str | torch.device = "cpu", batch_size: int | None = None) -> FeatureNet:
    from . import features as feat

    def fn(images: np.ndarray, progress: bool | None = None) -> np.ndarray:
        return feat.pooled_features(images, batch_size=batch_size, device=device, progress=progress)

    return FeatureNet("effnet", feat.FEATURE_NET_NAME, feat.FEATURE_DIM, fn, f"effnet-lite0/{feat.FEATURE_NET_NAME}",
                      "not comparable with Inception-based published FIDs")


# ---- Inception-v3, FID variant (written for dartool; key names follow the pytorch-fid weights file)


class _Conv(nn.Module):
    """conv (no bias) + BatchNorm (eps 1e-3) + ReLU; keys ``conv.weight``, ``bn.*``."""

    def __init__(self, cin: int, cout: int, k, stride: int = 1, pad=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _MixedA(nn.Module):  # 35 x 35
    def __init__(self, cin: int, pool: int) -> None:
        super().__init__()
        self.branch1x1 = _Conv(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = _Conv(cin, 48, 1), _Conv(48, 64, 5, pad=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = _Conv(64, 96, 3, pad=1), _Conv(96, 96, 3, pad=1)
        self.branch_pool = _Conv(cin, pool, 1)

    def forward(self, x):
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg3(x)),
        ], 1)


class _ReduceB(nn.Module):  # 35 -> 17
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = _Conv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = _Conv(64, 96, 3, pad=1), _Conv(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class _MixedC(nn.Module):  # 17 x 17, factorised 7x7
    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        h, v = ((1, 7), (0, 3)), ((7, 1), (3, 0))
        self.branch1x1 = _Conv(cin, 192, 1)
        self.branch7x7_1 = _Conv(cin, c7, 1)
        self.branch7x7_2 = _Conv(c7, c7, h[0], pad=h[1])
        self.branch7x7_3 = _Conv(c7, 192, v[0], pad=v[1])
        self.branch7x7dbl_1 = _Conv(cin, c7, 1)
        self.branch7x7dbl_2 = _Conv(c7, c7, v[0], pad=v[1])
        self.branch7x7dbl_3 = _Conv(c7, c7, h[0], pad=h[1])
        self.branch7x7dbl_4 = _Conv(c7, c7, v[0], pad=v[1])
        self.branch7x7dbl_5 = _Conv(c7, 192, h[0], pad=h[1])
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x):
        b = self.branch7x7dbl_1(x)
        for m in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            b = m(b)
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            b,
            self.branch_pool(_avg3(x)),
        ], 1)


class _ReduceD(nn.Module):  # 17 -> 8
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = _Conv(cin, 192, 1), _Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _Conv(cin, 192, 1)
        self.branch7x7x3_2 = _Conv(192, 192, (1, 7), pad=(0, 3))
        self.branch7x7x3_3 = _Conv(192, 192, (7, 1), pad=(3, 0))
        self.branch7x7x3_4 = _Conv(192, 192, 3, stride=2)

    def forward(self, x):
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b, F.max_pool2d(x, 3, stride=2)], 1)


class _MixedE(nn.Module):  # 8 x 8, expanded filter banks; ``max_pool`` in the second (TF-FID quirk)
    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _Conv(cin, 320, 1)
        self.branch3x3_1 = _Conv(cin, 384, 1)
        self.branch3x3_2a, self.branch3x3_2b = _Conv(384, 384, (1, 3), pad=(0, 1)), _Conv(384, 384, (3, 1), pad=(1, 0))
        self.branch3x3dbl_1, self.branch3x3dbl_2 = _Conv(cin, 448, 1), _Conv(448, 384, 3, pad=1)
        self.branch3x3dbl_3a = _Conv(384, 384, (1, 3), pad=(0, 1))
        self.branch3x3dbl_3b = _Conv(384, 384, (3, 1), pad=(1, 0))
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x):
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pool = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(a), self.branch3x3_2b(a),
            self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b),
            self.branch_pool(pool),
        ], 1)


class InceptionFID(nn.Module):
    """The FID Inception-v3 up to the 2048-d average pool (input: float NCHW in [0, 1], any size)."""

    def __init__(self, num_classes: int = 1008) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = _Conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = _Conv(32, 64, 3, pad=1)
        self.Conv2d_3b_1x1 = _Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = _Conv(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = _MixedA(192, 32), _MixedA(256, 64), _MixedA(288, 64)
        self.Mixed_6a = _ReduceB(288)
        self.Mixed_6b, self.Mixed_6c = _MixedC(768, 128), _MixedC(768, 160)
        self.Mixed_6d, self.Mixed_6e = _MixedC(768, 160), _MixedC(768, 192)
        self.Mixed_7a = _ReduceD(768)
        self.Mixed_7b, self.Mixed_7c = _MixedE(1280, max_pool=False), _MixedE(2048, max_pool=True)
        self.fc = nn.Linear(2048, num_classes)   # present in the weights file; unused for features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for m in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                  self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = m(x)
        return x.mean(dim=(2, 3))                 # [N, 2048]


def load_inception(path: str | Path, device: str | torch.device = "cpu") -> InceptionFID:
    """The FID Inception from a local pytorch-fid weights file; one clear line if it does not fit."""
    p = Path(path)
    if not p.is_file():
        raise EvalError(f"no Inception weights at {p}: pass the pytorch-fid file pt_inception-2015-12-05-6726825d.pth "
                        f"(nothing is downloaded)")
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise EvalError(f"could not read {p} as a torch weights file ({str(e).splitlines()[0]})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    net = InceptionFID()
    if not isinstance(sd, dict):
        raise EvalError(f"{p} holds a {type(sd).__name__}, not a pytorch-fid Inception state dict")
    sd = {k: v for k, v in sd.items() if not k.startswith("AuxLogits.")}
    own = net.state_dict()
    shapes = [k for k, v in sd.items() if k in own and tuple(own[k].shape) != tuple(getattr(v, "shape", ()))]
    if shapes:
        raise EvalError(f"{p} is not a pytorch-fid Inception weights file: {shapes[0]} has shape "
                        f"{tuple(sd[shapes[0]].shape)}, expected {tuple(own[shapes[0]].shape)}")
    missing, unexpected = net.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise EvalError(f"{p} is not a pytorch-fid Inception weights file: "
                        f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}")
    return net.to(device).eval().requires_grad_(False)


def inception(path: str | Path, device: str | torch.device = "cpu", batch_size: int = 100) -> FeatureNet:
    from .checkpoints import sha256_file

    net = load_inception(path, device)

    def fn(images: np.ndarray, progress: bool | None = None) -> np.ndarray:
        out = np.empty((len(images), 2048), np.float64)
        show = progress if progress is not None else len(images) >= 2048
        from .sample import _progress

        with torch.no_grad(), _progress(show, math.ceil(len(images) / batch_size), "features (Inception)") as tick:
            for a in range(0, len(images), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[a: a + batch_size])).to(device)
                x = x.permute(0, 3, 1, 2).float() / 255.0
                if x.shape[1] == 1:
                    x = x.expand(-1, 3, -1, -1)
                out[a: a + len(x)] = net(x).double().cpu().numpy()
                tick()
        return out

    return FeatureNet("inception", INCEPTION_NAME, 2048, fn, f"inception/{sha256_file(path)[:16]}",
                      "resizing differs from ADM's suite; quote ADM numbers for papers")


# --------------------------------------------------------------------------------------------------
# reference statistics, cached
# --------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("DARTOOL_CACHE", Path.home() / ".cache" / "dartool")) / "ref_stats"


def data_fingerprint(data) -> str:
    """A short hash of a Dataset's name, shape and (up to 2048 evenly spaced) images + labels."""
    h = hashlib.sha256()
    h.update(f"{data.name}|{data.kind}|{data.x.shape}|{data.x.dtype}".encode())
    idx = np.linspace(0, len(data) - 1, min(len(data), 2048)).astype(np.int64)
    h.update(np.ascontiguousarray(data.x[idx]).tobytes())
    h.update(np.ascontiguousarray(data.y[idx]).tobytes())
    return h.hexdigest()[:16]


def reference_images(data, size: int | None, n: int | None = None, seed: int = 0) -> np.ndarray:
    """uint8 NHWC training images at the model's resolution (a seeded subset of n when n < len)."""
    if data.kind != "pixels":
        raise EvalError(f"{data.name} holds latents: image metrics need pixels (decode the samples with your VAE "
                        f"and evaluate the images with `dartool eval`)")
    sub = data.subset(n, seed=seed)
    if size is None or size == sub.size:
        return sub.x
    from .data import to_model_input, to_uint8

    out = []
    for a in range(0, len(sub), 1024):
        out.append(to_uint8(to_model_input(torch.from_numpy(sub.x[a: a + 1024]), size)))
    return np.concatenate(out)


def reference_stats(
    data, net: FeatureNet, *, size: int | None = None, n: int | None = 50_000, keep: int = 10_000,
    cache: bool = True, log: Callable[[str], None] | None = None,
) -> FeatureStats:
    """Feature statistics of ``n`` training images at ``size`` px, computed once and cached."""
    n_eff = len(data) if n is None else min(n, len(data))
    sz = size or data.size
    key = f"{data_fingerprint(data)}-{sz}px-n{n_eff}-keep{keep}-{hashlib.sha256(net.id.encode()).hexdigest()[:12]}"
    path = cache_dir() / f"{net.key}-{key}.npz"
    if cache and path.exists():
        return FeatureStats.load(path)
    if log:
        log(f"computing reference statistics: {n_eff} images of {data.name} at {sz} px in {net.name} "
            f"(cached at {path})")
    imgs = reference_images(data, sz, n_eff)
    feats = net.fn(imgs)
    stats = FeatureStats.from_features(feats, keep=keep, meta=dict(
        dataset=data.name, fingerprint=data_fingerprint(data), size=sz, n=n_eff, feature_net=net.name,
        created=time.strftime("%Y-%m-%dT%H:%M:%S")))
    if cache:
        stats.save(path)
    return stats


# --------------------------------------------------------------------------------------------------
# evaluating a set of images
# --------------------------------------------------------------------------------------------------


def describe_sampler(sampler: dict | None) -> dict[str, Any]:
    s = sampler or {}
    g = s.get("guided_channels")
    return dict(
        sampler=s.get("label", s.get("method", "unknown")), method=s.get("method"), steps=s.get("steps"),
        cfg_scale=s.get("cfg_scale"), guided_channels="all" if g is None else g,
    )


def evaluate_images(
    images: np.ndarray, ref: FeatureStats, net: FeatureNet, *, k: int = 3, pr_samples: int = 10_000,
    context: dict | None = None, device: str | torch.device = "cpu", fake_feats: np.ndarray | None = None,
    ref_hf: float | None = None,
) -> list[dict[str, Any]]:
    """FD + precision + recall of uint8 NHWC ``images`` against ``ref``, each a fully labelled record; with
    ``ref_hf`` (the data's :func:`dartool.detail.hf_energy`) also the high-frequency energy ratio."""
    feats = net.fn(images) if fake_feats is None else fake_feats
    fake = FeatureStats.from_features(feats, keep=pr_samples, seed=1)
    fd = frechet_distance(fake.mu, fake.sigma, ref.mu, ref.sigma)
    m = min(len(ref.subset), len(fake.subset))
    precision = recall = float("nan")
    if m > k:
        rng = np.random.default_rng(0)
        pick = lambda a: a if len(a) == m else a[np.sort(rng.choice(len(a), m, replace=False))]  # noqa: E731
        precision, recall = precision_recall(pick(ref.subset), pick(fake.subset), k=k, device=device)
    base = dict(
        feature_net=net.name, feature_dim=net.dim, n_samples=len(feats), n_reference=ref.n,
        reference=f"{ref.meta.get('dataset', '?')} @ {ref.meta.get('size', '?')} px", note=net.note,
        **(context or {}),
    )
    fd_name = "fid" if net.key == "inception" else "fd_effnet"
    extra = []
    if ref_hf is not None:
        from .detail import hf_energy

        hf = hf_energy(images)
        extra.append(dict(metric="hf_energy_ratio", value=hf / ref_hf, hf_samples=hf, hf_data=ref_hf, cutoff=0.5,
                          definition="share of spectral energy above half the Nyquist frequency, samples / data",
                          **{**base, "n_samples": len(images), "feature_net": "pixel spectrum (no feature net)",
                             "feature_dim": None, "note": "a detail measure, not a distance"}))
    return extra + [
        dict(metric=fd_name, value=fd, **base),
        dict(metric="precision", value=precision, k=k, n_pr=m, **base),
        dict(metric="recall", value=recall, k=k, n_pr=m, **base),
    ]


def metric_label(rec: dict[str, Any]) -> str:
    """One line for a metric record, e.g. ``fd_effnet 12.3 [EfficientNet-Lite0 ..., 10000 samples vs 50000,
    ODE Euler, 50 steps, no guidance]``."""
    return (f"{rec['metric']} {rec['value']:.4g} [{rec['feature_net']}; {rec['n_samples']} samples vs "
            f"{rec['n_reference']} {rec['reference']}; {rec.get('sampler', 'unknown sampler')}]")


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def eval_command(
    samples: Path = typer.Argument(..., help="An ADM-format .npz (arr_0 uint8 NHWC) or a checkpoint to sample from."),
    data: str = typer.Option("fashion-mnist", help="Training data for the reference statistics (path or 'fashion-mnist')."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the metric records here (JSON)."),
    n: int = typer.Option(10_000, "--n", help="Samples to draw when SAMPLES is a checkpoint."),
    sampler: str = typer.Option("euler", help="Sampler when SAMPLES is a checkpoint: euler | heun | sde | ddim."),
    steps: Optional[int] = typer.Option(None, help="Sampler steps (default: euler/heun/ddim 50, sde 250)."),
    cfg_scale: float = typer.Option(1.0, help="Classifier-free guidance scale (1 = none)."),
    legacy_cfg_channels: Optional[int] = typer.Option(None, help="Guide only the first N channels (3 = DiT/SiT)."),
    seed: int = typer.Option(0, help="Sampling seed."),
    batch_size: int = typer.Option(250, help="Sampling batch size."),
    weights: str = typer.Option("ema", help="ema | model (training checkpoints)."),
    ref_samples: int = typer.Option(50_000, help="Training images in the reference statistics."),
    size: Optional[int] = typer.Option(None, help="Reference image size (default: the samples' size)."),
    pr_k: int = typer.Option(3, help="k of the k-NN precision/recall."),
    pr_samples: int = typer.Option(10_000, help="Points per side for precision/recall."),
    inception_weights: Optional[Path] = typer.Option(
        None, help="Local pytorch-fid Inception weights (pt_inception-2015-12-05-6726825d.pth): adds FID."),
    no_effnet: bool = typer.Option(False, help="Skip the EfficientNet-Lite0 metrics."),
    no_cache: bool = typer.Option(False, help="Recompute the reference statistics (do not read/write the cache)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
) -> None:
    """Fréchet distance + precision/recall in EfficientNet-Lite0 features (and FID with local Inception weights)."""
    from rich.console import Console
    from rich.table import Table

    from .cli import _errors, fail
    from .data import load_dataset
    from .sample import SamplerConfig, read_npz_meta, sample_images
    from .train import ddp as D

    console = Console()
    if no_effnet and inception_weights is None:
        fail("--no-effnet leaves no feature network: pass --inception-weights too")
    with _errors():
        d = D.setup(device)
        try:
            dataset = load_dataset(data)
            meta: dict[str, Any] = {}
            if samples.suffix == ".npz":
                if not samples.exists():
                    raise EvalError(f"no samples at {samples}")
                with np.load(samples) as f:
                    if "arr_0" not in f.files:
                        raise EvalError(f"{samples} has no arr_0 (ADM format: uint8 N x H x W x C)")
                    images = f["arr_0"]
                meta = read_npz_meta(samples)
                if images.dtype != np.uint8 or images.ndim != 4:
                    raise EvalError(f"{samples}: arr_0 must be uint8 N x H x W x C, got {images.dtype} {images.shape}")
            else:
                from .checkpoints import load_checkpoint

                ck = load_checkpoint(samples, device=d.device, prefer=weights)
                scfg = SamplerConfig(method=sampler, steps=steps, cfg_scale=cfg_scale, guided_channels=legacy_cfg_channels)
                res = sample_images(ck.model, n, scfg, seed=seed, batch_size=batch_size, dist=d, progress=True,
                                    latent=False)
                meta = dict(checkpoint=str(samples), model=ck.config.label, sampler=scfg.to_dict(), seed=seed)
                if res is None:
                    return
                images = res[0]
            if not d.main:
                return
            if dataset.kind == "pixels" and images.shape[-1] == 3 and dataset.channels == 1:
                images = images[..., :1]           # ADM export repeats grey; compare grey with grey
            ctx = describe_sampler(meta.get("sampler"))
            ctx.update(model=meta.get("model"), checkpoint=meta.get("checkpoint"))
            nets: list[FeatureNet] = []
            if not no_effnet:
                nets.append(effnet(d.device))
            if inception_weights is not None:
                nets.append(inception(inception_weights, d.device))
            records = []
            ref_hf = None
            if dataset.kind == "pixels":
                from .detail import dataset_hf_energy

                ref_hf = dataset_hf_energy(dataset, size or images.shape[1])
            for j, net in enumerate(nets):
                ref = reference_stats(dataset, net, size=size or images.shape[1], n=ref_samples, keep=pr_samples,
                                      cache=not no_cache, log=console.print)
                records += evaluate_images(images, ref, net, k=pr_k, pr_samples=pr_samples, context=ctx, device=d.device,
                                           ref_hf=ref_hf if j == 0 else None)
            table = Table(title=f"{samples.name}: {len(images)} samples; {ctx['sampler']}")
            for col in ("metric", "value", "feature net", "samples", "reference"):
                table.add_column(col)
            for r in records:
                table.add_row(r["metric"], f"{r['value']:.4f}", r["feature_net"], str(r["n_samples"]),
                              f"{r['n_reference']} ({r['reference']})")
            console.print(table)
            if any(r["feature_net"] != INCEPTION_NAME for r in records):
                console.print("EfficientNet-Lite0 distances are not comparable with published (Inception) FIDs.")
            if out is not None:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps({"samples": str(samples), "metrics": records}, indent=2, default=str))
                console.print(f"wrote {out}")
        finally:
            D.cleanup(d)
