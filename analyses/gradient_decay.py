"""Backward gradient decay: RMS(dL/dz_k) across depth, per noise level (DAR-METHOD.md section 6.2).

Per noise level s, from ``z_grad_rms[noise_level, block]``:

* ``early_mean`` = arithmetic mean of the gradient RMS over the first ``n_early = max(1, round(K/5))`` blocks
  (K = 28 -> 6, close to the paper's "first ~5 blocks"); ``deep_mean`` = the mean over the remaining blocks;
* ``ratio_early_deep`` = early_mean / deep_mean;
* where the drop happens: ``drop_block`` = the 1-based block k whose gradient RMS fell most, relative to block
  k - 1 (the most negative step of ln RMS), and ``drop_factor`` = RMS[k-1] / RMS[k] for that step.

Rule: a noise level is *decaying* when ratio_early_deep > :data:`DECAY_THRESHOLD` (3); the store is decaying
when at least half of its noise levels are.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .common import (Result, StoreLike, depth, fmt_s, load, n_early, nearest_noise_level, noise_levels,
                     per_block_values, require, sci, tidy, times)

DECAY_THRESHOLD = 3.0
PAPER = "large in the first ~5 blocks (≈5e-7), then more than an order of magnitude (>10×) lower"


def per_noise_level(g: np.ndarray, s: np.ndarray) -> pd.DataFrame:
    """One row per noise level: early_mean, deep_mean, ratio_early_deep, drop_block (1-based), drop_factor."""
    K = g.shape[1]
    ne = n_early(K)
    rows = []
    for i, si in enumerate(s):
        gi = g[i]
        early = float(np.mean(gi[:ne]))
        deep = float(np.mean(gi[ne:])) if K > ne else np.nan
        with np.errstate(divide="ignore", invalid="ignore"):
            steps = np.diff(np.log(gi))
        if len(steps) and np.isfinite(steps).any():
            j = int(np.nanargmin(np.where(np.isfinite(steps), steps, np.inf)))
            drop_block, drop_factor = j + 2, float(np.exp(-steps[j]))
        else:
            drop_block, drop_factor = 0, np.nan
        ratio = early / deep if deep and np.isfinite(deep) and deep > 0 else np.nan
        rows.append(dict(noise_level=float(si), n_early=ne, early_mean=early, deep_mean=deep,
                         ratio_early_deep=ratio, drop_block=drop_block, drop_factor=drop_factor,
                         first=float(gi[0]), last=float(gi[-1]),
                         decaying=bool(np.isfinite(ratio) and ratio > DECAY_THRESHOLD)))
    return pd.DataFrame(rows)


def analyze(store: StoreLike, noise_level: float | None = None) -> Result:
    """Gradient-decay analysis of one store; verdict numbers at the noise level nearest ``noise_level``."""
    ds = load(store)
    require(ds, ["z_grad_rms"], "gradient decay")
    K = depth(ds)
    table = per_noise_level(per_block_values(ds, "z_grad_rms"), noise_levels(ds))
    ref = nearest_noise_level(ds, noise_level)
    row = table.loc[table.noise_level == ref].iloc[0]
    frac = float(table.decaying.mean())
    verdict = {
        "noise_level": ref,
        "n_early": int(row.n_early),
        "early_mean": float(row.early_mean),
        "deep_mean": float(row.deep_mean),
        "ratio_early_deep": float(row.ratio_early_deep),
        "drop_block": int(row.drop_block),
        "drop_factor": float(row.drop_factor),
        "ratio_early_deep_median": float(table.ratio_early_deep.median()),
        "decaying_fraction": frac,
        "decaying_at_noise_level": bool(row.decaying),
        "decaying": bool(frac >= 0.5),
    }
    return Result("gradient_decay", {"by_block": tidy(ds["z_grad_rms"], "z_grad_rms"), "per_noise_level": table},
                  verdict, _findings(verdict, K))


def _findings(v: dict, K: int) -> list[str]:
    s = fmt_s(v["noise_level"])
    ne = v["n_early"]
    early = "block 1" if ne == 1 else f"blocks 1–{ne}"
    out = [f"gradient RMS in {early} is {times(v['ratio_early_deep'])} that of blocks {ne + 1}–{K} "
           f"at noise level {s} "
           f"({sci(v['early_mean'])} vs {sci(v['deep_mean'])})"]
    if v["drop_block"] >= 2:
        out.append(f"the largest single drop is from block {v['drop_block'] - 1} to {v['drop_block']} "
                   f"({times(v['drop_factor'])} lower); decaying (early/deep > {DECAY_THRESHOLD:g}) at "
                   f"{v['decaying_fraction']:.0%} of noise levels")
    return out
