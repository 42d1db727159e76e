"""Timestep decodability: how linearly the noise level can be read from each router input
(DAR-METHOD.md section 6.5).

Features: ``pooled_h[noise_level, sample, router, feature]`` (token-mean of router input h_r, randomly projected
to P features) and the raw-input baseline ``pooled_x[noise_level, sample, feature]``; the sample dimension is
``pooled_sample`` when the probe pooled fewer samples than it measured.

Method: the pooled samples are split once into disjoint train and test sets (seeded permutation,
``test_fraction`` of the samples, at least one, go to test), so no image/noise draw is seen in both. For every
router, features at every noise level of the train samples are standardised and fitted with
``RidgeCV(alphas=ALPHAS)`` to the target t = the canonical noise level s; R² is reported on the test samples.
R² is invariant to an affine change of the target, so it is the same for SiT's t = 1 - s or REPA's t = s
(DiT's rounded t differs by < 0.001). Synthetic checks: features linear in s plus small noise give R² ≈ 1;
pure noise gives R² ≈ 0 (slightly negative is possible on a held-out split).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from .common import (Result, StoreContentError, StoreLike, load, noise_levels, require, router_block, router_label,
                     store_name)

ALPHAS = np.logspace(-3, 4, 15)
R2_HIGH = 0.95
PAPER_RAW = 0.80
PAPER = "R² ≈ 0.80 from the raw x_t, > 0.95 within the first five blocks, ≈ 1.0 deeper"


def _sample_dim(da: xr.DataArray) -> str:
    return "pooled_sample" if "pooled_sample" in da.dims else "sample"


def split_samples(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint (train, test) sample indices from a seeded permutation."""
    if n < 2:
        raise StoreContentError(f"decodability needs at least 2 pooled samples, the store has {n}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = min(n - 1, max(1, int(round(n * test_fraction))))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def fit_r2(X: np.ndarray, s: np.ndarray, train: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """Ridge from features X[S, M, P] to s[S]; (test R², chosen alpha)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def rows(idx):
        x = X[:, idx, :].reshape(-1, X.shape[-1])
        y = np.repeat(s, len(idx))
        ok = np.isfinite(x).all(1)
        return x[ok], y[ok]

    xtr, ytr = rows(train)
    xte, yte = rows(test)
    if len(ytr) < 2 or len(yte) < 2 or np.ptp(yte) == 0:
        return float("nan"), float("nan")
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS))
    model.fit(xtr, ytr)
    return float(r2_score(yte, model.predict(xte))), float(model[-1].alpha_)


def analyze(store: StoreLike, test_fraction: float = 0.25, seed: int = 0) -> Result:
    """Test R² of s from every router input and from the raw input, on a held-out split of samples."""
    ds = load(store)
    if "pooled_h" not in ds.variables and str(ds.attrs.get("pooled_samples")) == "0":
        raise StoreContentError(f"decodability: store {store_name(ds)} has no pooled features (the probe ran with "
                                "pooled_samples = 0; re-run it with pooled samples to measure decodability)")
    require(ds, ["pooled_h", "pooled_x"], "decodability")
    s = noise_levels(ds)
    if len(s) < 3:
        raise StoreContentError(f"decodability: store {store_name(ds)} has {len(s)} noise levels; needs at least 3")
    h = ds["pooled_h"]
    H = np.asarray(h.transpose("noise_level", _sample_dim(h), "router", "feature").values, dtype=np.float64)
    x = ds["pooled_x"]
    Xr = np.asarray(x.transpose("noise_level", _sample_dim(x), "feature").values, dtype=np.float64)
    train, test = split_samples(H.shape[1], test_fraction, seed)
    L = H.shape[2] - 1
    rows = []
    r2, alpha = fit_r2(Xr, s, train, test)
    rows.append(dict(router=-1, router_name="raw x_t", block=0, r2=r2, alpha=alpha))
    for r in range(H.shape[2]):
        r2, alpha = fit_r2(H[:, :, r, :], s, train, test)
        rows.append(dict(router=r, router_name=router_label(r, L), block=router_block(r, L), r2=r2, alpha=alpha))
    table = pd.DataFrame(rows)
    table["n_train"], table["n_test"] = len(train), len(test)
    table.insert(3, "metric", "r2")
    return Result("decodability", {"r2": table}, _verdict(table, L), _findings(_verdict(table, L)))


def _verdict(table: pd.DataFrame, L: int) -> dict:
    routers = table[table.router >= 0]
    sub = routers[routers.router < L]
    early = sub[sub.block <= 5]
    deep = sub[sub.block > 5]
    above = sub[sub.r2 > R2_HIGH]
    v = {
        "baseline_r2": float(table.loc[table.router == -1, "r2"].iloc[0]),
        "first_router_r2": float(sub.r2.iloc[0]) if len(sub) else float("nan"),
        "max_r2_first5_blocks": float(early.r2.max()) if len(early) else float("nan"),
        "median_r2_deep": float(deep.r2.median()) if len(deep) else float("nan"),
        "head_r2": (float(routers.loc[routers.router == L, "r2"].iloc[0]) if (routers.router == L).any()
                    else float("nan")),
        "first_router_above_0.95": str(above.router_name.iloc[0]) if len(above) else "none",
        "first_block_above_0.95": int(above.block.iloc[0]) if len(above) else 0,
        "n_train_samples": int(table.n_train.iloc[0]),
        "n_test_samples": int(table.n_test.iloc[0]),
    }
    v["decodable_early"] = bool(np.isfinite(v["max_r2_first5_blocks"]) and v["max_r2_first5_blocks"] > R2_HIGH)
    return v


def _findings(v: dict) -> list[str]:
    out = [f"the noise level is linearly decodable from the raw input x_t with held-out R² {v['baseline_r2']:.2f} "
           f"(ridge on {v['n_train_samples']} train / {v['n_test_samples']} test samples)"]
    if v["first_block_above_0.95"]:
        deep = f"; median over blocks 6+ is {v['median_r2_deep']:.3f}" if np.isfinite(v["median_r2_deep"]) else ""
        out.append(f"R² first exceeds {R2_HIGH} at the input of {v['first_router_above_0.95']} "
                   f"(block {v['first_block_above_0.95']}){deep}")
    else:
        out.append(f"no router input reaches R² {R2_HIGH}; the best within the first five blocks is "
                   f"{v['max_r2_first5_blocks']:.2f}")
    return out
