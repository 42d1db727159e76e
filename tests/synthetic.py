"""Synthetic probe stores with chosen values (docs/STORE.md schema, version 1) for the analysis tests.

``make_store(...)`` returns an ``xr.Dataset``; ``write_store(ds, path)`` writes it as zarr v3 like the probe.
Every variable the analyses read can be set to an exact array; the rest get plausible defaults.
Per-sample arrays are built so that their sample mean equals the mean variable exactly.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import xarray as xr


def inflating(S: int, K: int, c: float = 2.0, g: float = 1.2) -> np.ndarray:
    """z_rms = c * g**k for every noise level (k = 0-based block)."""
    return np.tile(c * g ** np.arange(K, dtype=float), (S, 1))


def decaying_gradients(S: int, K: int, early: int, hi: float = 1e-3, lo: float = 1e-5) -> np.ndarray:
    """Gradient RMS = ``hi`` in the first ``early`` blocks, ``lo`` after (one sharp drop)."""
    g = np.where(np.arange(K) < early, hi, lo).astype(float)
    return np.tile(g, (S, 1))


def _per_sample(mean: np.ndarray, N: int, rng: np.random.Generator, rel: float) -> np.ndarray:
    """[S, N, ...] samples whose mean over axis 1 equals ``mean`` exactly (multiplicative spread ``rel``)."""
    eps = rng.normal(0.0, rel, size=(mean.shape[0], N) + mean.shape[1:])
    eps -= eps.mean(axis=1, keepdims=True)
    return mean[:, None] * (1.0 + eps)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - np.nanmax(x, axis=axis, keepdims=True))
    e = np.where(np.isfinite(e), e, 0.0)
    return e / e.sum(axis=axis, keepdims=True)


def make_store(
    K: int = 6, S: int = 5, N: int = 16, P: int = 16, pooled_samples: int | None = None,
    z_rms: np.ndarray | None = None, z_grad_rms: np.ndarray | None = None,
    adjacent_cos: np.ndarray | None = None, block_cos: np.ndarray | None = None,
    loss: np.ndarray | None = None, routing: str = "residual", model: str | None = None,
    decodable: bool = True, seed: int = 0, rel_spread: float = 0.1, time_convention: str = "sit",
    status: str = "complete", drop: tuple[str, ...] = (),
) -> xr.Dataset:
    """A complete synthetic probe store.

    Defaults: an inflating stack (z_rms = 2 * 1.2**k), gradients decaying after the first K/5 blocks,
    adjacent cosine rising to 0.95, a block-cosine matrix exp(-|j - k| / 3), pooled features that encode s
    linearly (``decodable``) or are pure noise (``decodable=False``). ``drop`` removes variables.
    """
    rng = np.random.default_rng(seed)
    L = 2 * K
    s = np.linspace(0.0, 1.0, S)
    M = N if pooled_samples is None else pooled_samples
    z_rms = inflating(S, K) if z_rms is None else np.asarray(z_rms, float)
    z_grad = decaying_gradients(S, K, max(1, round(K / 5))) if z_grad_rms is None else np.asarray(z_grad_rms, float)
    if adjacent_cos is None:
        adjacent_cos = np.tile(np.linspace(0.5, 0.95, K), (S, 1))
    if block_cos is None:
        kk = np.arange(K)
        block_cos = np.tile(np.exp(-np.abs(kk[:, None] - kk[None, :]) / 3.0), (S, 1, 1))
    loss = (0.5 + 0.5 * s) if loss is None else np.asarray(loss, float)

    sub = np.arange(L)
    h_rms = np.repeat(z_rms, 2, axis=1)
    v_rms = 0.3 * h_rms
    data: dict[str, tuple] = {
        "model_t": (("noise_level",), 1.0 - s if time_convention == "sit" else s),
        "sublayer_kind": (("sublayer",), np.array(["attn" if i % 2 == 0 else "mlp" for i in sub])),
        "sublayer_block": (("sublayer",), sub // 2),
        "router_name": (("router",), np.array([f"block{i // 2}.{'attn' if i % 2 == 0 else 'mlp'}" for i in sub]
                                              + ["head"])),
        "loss": (("noise_level",), loss),
        "z_rms": (("noise_level", "block"), z_rms),
        "h_rms": (("noise_level", "sublayer"), h_rms),
        "v_rms": (("noise_level", "sublayer"), v_rms),
        "update_ratio": (("noise_level", "sublayer"), v_rms / h_rms),
        "z_grad_rms": (("noise_level", "block"), z_grad),
        "h_grad_rms": (("noise_level", "sublayer"), np.repeat(z_grad, 2, axis=1)),
        "adjacent_cos": (("noise_level", "block"), np.asarray(adjacent_cos, float)),
        "block_cos": (("noise_level", "block", "block2"), np.asarray(block_cos, float)),
        "time_cos": (("noise_level", "block"), np.vstack([np.full((S - 1, K), 0.98), np.full((1, K), np.nan)])),
        "loss_per_sample": (("noise_level", "sample"), _per_sample(loss[:, None], N, rng, rel_spread)[..., 0]),
        "z_rms_per_sample": (("noise_level", "sample", "block"), _per_sample(z_rms, N, rng, rel_spread)),
        "z_grad_rms_per_sample": (("noise_level", "sample", "block"), _per_sample(z_grad, N, rng, rel_spread)),
        "adjacent_cos_per_sample": (("noise_level", "sample", "block"),
                                    _per_sample(np.asarray(adjacent_cos, float), N, rng, 0.02)),
    }
    data.update(_routing_vars(routing, s, L, rng))
    data.update(_pooled_vars(s, L, M, N, P, rng, decodable))
    coords = {
        "noise_level": s, "block": np.arange(K), "block2": np.arange(K), "sublayer": sub,
        "router": np.arange(L + 1), "source": np.arange(L + 1), "sample": np.arange(N), "feature": np.arange(P),
    }
    if M != N:
        coords["pooled_sample"] = np.arange(M)
    ds = xr.Dataset({k: (d, v.astype(np.float32) if v.dtype.kind == "f" and k not in ("pooled_h", "pooled_x")
                         else v) for k, (d, v) in data.items()}, coords=coords)
    ds.attrs.update(_attrs(K, N, M, routing, model, seed, time_convention, status))
    return ds.drop_vars([d for d in drop if d in ds.variables])


def _routing_vars(routing: str, s: np.ndarray, L: int, rng: np.random.Generator) -> dict:
    """alpha/alpha_entropy for DAR (dense: router r reads sources 0..r), importance for residual."""
    S = len(s)
    r = np.arange(L + 1)[:, None]
    i = np.arange(L + 1)[None, :]
    valid = i <= np.minimum(r, L)
    nan = np.full((S, L + 1, L + 1), np.nan)
    if routing == "dar":
        # Concentrated on two sources; which one wins moves smoothly with s.
        logits = np.where(valid, 0.0, -np.inf)[None] + 4.0 * (
            (i == 0) * s[:, None, None] + (i == np.maximum(r - 1, 0)) * (1 - s)[:, None, None])
        alpha = np.where(valid[None], _softmax(logits, axis=2), np.nan)
        ent = -np.nansum(np.where(alpha > 0, alpha * np.log(alpha), 0.0), axis=2)
        return {"alpha": (("noise_level", "router", "source"), alpha),
                "alpha_entropy": (("noise_level", "router"), ent),
                "importance": (("noise_level", "router", "source"), nan)}
    imp = np.where(valid[None], rng.normal(0, 1, size=(S, L + 1, L + 1)) * np.exp(-(r - i) / 4.0)[None]
                   + (i == 0) * s[:, None, None], np.nan)
    return {"importance": (("noise_level", "router", "source"), imp),
            "alpha": (("noise_level", "router", "source"), nan),
            "alpha_entropy": (("noise_level", "router"), np.full((S, L + 1), np.nan))}


def _pooled_vars(s: np.ndarray, L: int, M: int, N: int, P: int, rng: np.random.Generator, decodable: bool) -> dict:
    """Pooled features: a fixed random direction times s (signal grows with depth) plus unit noise."""
    S = len(s)
    dim = "sample" if M == N else "pooled_sample"
    noise_h = rng.normal(0, 1, size=(S, M, L + 1, P))
    noise_x = rng.normal(0, 1, size=(S, M, P))
    if not decodable:
        return {"pooled_h": (("noise_level", dim, "router", "feature"), noise_h.astype(np.float16)),
                "pooled_x": (("noise_level", dim, "feature"), noise_x.astype(np.float16))}
    w = rng.normal(0, 1, size=P)
    strength = np.linspace(5.0, 200.0, L + 1)  # router r: signal strength grows with depth
    h = noise_h + strength[None, None, :, None] * s[:, None, None, None] * w[None, None, None, :]
    x = noise_x + 2.0 * s[:, None, None] * w[None, None, :]
    return {"pooled_h": (("noise_level", dim, "router", "feature"), h.astype(np.float16)),
            "pooled_x": (("noise_level", dim, "feature"), x.astype(np.float16))}


def _attrs(K, N, M, routing, model, seed, time_convention, status) -> dict:
    label = model or (f"synthetic-{K}" if routing == "residual" else f"synthetic-{K} DAR static c1")
    return {
        "schema_version": 1, "dartool_version": "0.1.0", "created": "2026-01-01T00:00:00+00:00",
        "status": status, "checkpoint": f"/synthetic/{label.replace(' ', '_')}.pt",
        "checkpoint_sha256": "0" * 64, "model": label,
        "config": {"depth": K, "routing": routing, "time_convention": time_convention},
        "routing": routing, "time_convention": time_convention,
        "noise_level_definition": "1 = pure noise, 0 = data", "data": "synthetic", "num_samples": N,
        "batch_size": N, "seed": seed, "precision": "float32", "device": "cpu", "projection_seed": 0,
        "pooled_samples": M, "loss": "synthetic velocity MSE",
    }


def write_store(ds: xr.Dataset, path: Path) -> Path:
    """Write ``ds`` as a zarr v3 store at ``path`` (like the probe does) and return the path."""
    with warnings.catch_warnings():  # fixed-length strings and consolidated metadata are "unstable" in v3
        warnings.simplefilter("ignore")
        ds.to_zarr(path, zarr_format=3, mode="w", consolidated=True)
    return Path(path)


def paper_like_pair(K: int = 28, S: int = 32, N: int = 48, seed: int = 0) -> tuple[xr.Dataset, xr.Dataset]:
    """A *synthetic* residual store shaped like the paper's SiT-XL/2 diagnosis (RMS 15.5 → 1576 at noise level 0,
    gradients >10× lower after block 5, adjacent cosine > 0.9 deep) and a DAR store without those symptoms.
    For demonstrating the report only; the labels say "synthetic"."""
    s = np.linspace(0.0, 1.0, S)[:, None]
    k = np.arange(K)[None, :] / (K - 1)
    growth = (1576 / 15.5) ** (1 - 0.45 * s)
    res_z = 15.5 * growth ** k
    res_g = np.where(np.arange(K)[None, :] < 5, 5e-7, 2.5e-8) * (1 + 0.6 * s) * (1 + 0.1 * np.sin(7 * k))
    res_adj = np.clip(0.35 + 0.6 * (1 - np.exp(-np.arange(K)[None, :] / 2.0)) + 0.02 * s, 0, 0.985)
    dar_z = 18.0 * (1 + 0.6 * k) * (1 + 0.15 * np.sin(4 * k + 3 * s))
    dar_g = 3e-7 * (1 + 0.6 * s) * (1 - 0.35 * k)
    dar_adj = 0.55 + 0.15 * np.sin(5 * k) * (1 - 0.3 * s) + 0.05 * s
    kk = np.arange(K)
    res_bc = np.exp(-np.abs(kk[:, None] - kk[None, :]) / 14.0)[None] * np.ones((S, 1, 1))
    dar_bc = np.exp(-np.abs(kk[:, None] - kk[None, :]) / 2.5)[None] * np.ones((S, 1, 1))
    loss = 0.35 + 0.9 * s[:, 0] - 0.4 * s[:, 0] ** 2
    res = make_store(K=K, S=S, N=N, P=16, z_rms=res_z, z_grad_rms=res_g, adjacent_cos=res_adj, block_cos=res_bc,
                     loss=loss, model="synthetic SiT-XL/2-like (residual)", seed=seed, rel_spread=0.25)
    dar = make_store(K=K, S=S, N=N, P=16, z_rms=dar_z, z_grad_rms=dar_g, adjacent_cos=dar_adj, block_cos=dar_bc,
                     loss=loss * 0.93, routing="dar", model="synthetic SiT-XL/2-like DAR static c4", seed=seed,
                     rel_spread=0.25)
    return res, dar


if __name__ == "__main__":  # python -m tests.synthetic OUT_DIR: write the paper-like pair for a demo report
    import sys

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/synthetic")
    out.mkdir(parents=True, exist_ok=True)
    r, d = paper_like_pair()
    print(write_store(r, out / "residual.zarr"), write_store(d, out / "dar.zarr"))
