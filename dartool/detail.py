"""A high-frequency detail measure: the share of an image's spectral energy at high spatial frequencies.

Used to compare how much fine detail samples carry against the data they imitate (DAR-METHOD.md section 5:
the paper reports that a retrofitted DAR model "keeps detail better"). For each image (grey = mean over
channels, per-image mean removed) the 2-D power spectrum |FFT|^2 is split at radius ``r0 = cutoff * 0.5``
cycles per pixel (``cutoff`` is a fraction of the Nyquist frequency 0.5); the measure is the energy above
``r0`` over the total (the DC term is zero after the mean is removed). Averaged over images.

``hf_energy_ratio(samples, data) = hf_energy(samples) / hf_energy(data)``: 1 = as much fine detail as the
data, < 1 = smoother than the data, > 1 = more high-frequency energy (detail or noise).

For white noise the expected share is exactly the fraction of non-DC frequency-grid points beyond ``r0``
(:func:`white_noise_share`), which the tests check.
"""
from __future__ import annotations

import numpy as np


def _radius(h: int, w: int) -> np.ndarray:
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    return np.sqrt(fx**2 + fy**2)                                            # [H, W] cycles / pixel


def _grey(images: np.ndarray) -> np.ndarray:
    """uint8 or float images (N, H, W), (N, H, W, C) NHWC, or (N, C, H, W) NCHW -> float64 (N, H, W)."""
    x = np.asarray(images)
    if x.ndim == 3:
        g = x.astype(np.float64)
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4):
        g = x.astype(np.float64).mean(-1)
    elif x.ndim == 4 and x.shape[1] in (1, 3, 4):
        g = x.astype(np.float64).mean(1)
    else:
        raise ValueError(f"images must be N x H x W, NHWC or NCHW with 1, 3 or 4 channels, got shape {x.shape}")
    return g


def hf_energy(images: np.ndarray, cutoff: float = 0.5, batch: int = 512) -> float:
    """Mean share of spectral energy above ``cutoff`` x Nyquist (0 < cutoff < sqrt(2))."""
    if not 0.0 < cutoff < 2**0.5:
        raise ValueError(f"cutoff must be in (0, sqrt(2)) as a fraction of the Nyquist frequency, got {cutoff}")
    g = _grey(images)
    if len(g) == 0:
        raise ValueError("no images")
    high = _radius(*g.shape[1:]) > cutoff * 0.5
    shares = []
    for i in range(0, len(g), batch):
        x = g[i: i + batch]
        x = x - x.mean(axis=(1, 2), keepdims=True)
        p = np.abs(np.fft.fft2(x)) ** 2                                      # [n, H, W]
        total = p.sum(axis=(1, 2))
        ok = total > 0                                                       # flat images carry no energy
        shares.append(p[:, high].sum(1)[ok] / total[ok])
    s = np.concatenate(shares)
    return float(s.mean()) if len(s) else float("nan")


def dataset_hf_energy(dataset, size: int, n: int = 5000, seed: int = 0) -> float:
    """:func:`hf_energy` of up to ``n`` images of a pixel :class:`dartool.data.Dataset` at the model's size."""
    idx = np.sort(np.random.default_rng(seed).permutation(len(dataset))[: min(n, len(dataset))])
    return hf_energy(dataset.batch(idx, size=size)[0].numpy())


def hf_energy_ratio(samples: np.ndarray, data: np.ndarray, cutoff: float = 0.5) -> float:
    """hf_energy(samples) / hf_energy(data)."""
    return hf_energy(samples, cutoff) / hf_energy(data, cutoff)


def white_noise_share(h: int, w: int, cutoff: float = 0.5) -> float:
    """The exact expected share for i.i.d. noise: non-DC grid frequencies beyond the cutoff, over all non-DC."""
    r = _radius(h, w)
    return float(((r > cutoff * 0.5).sum()) / (h * w - 1))
