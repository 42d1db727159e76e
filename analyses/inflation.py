"""Forward magnitude inflation: how RMS(z_k) grows across depth, per noise level (DAR-METHOD.md section 6.1).

Per noise level s, from ``z_rms[noise_level, block]``:

* ``ratio_last_first`` = z_rms[block K] / z_rms[block 1];
* ``monotone_fraction`` = fraction of the K - 1 block-to-block steps where z_rms strictly grows;
* ``log_slope`` = least-squares slope of **ln** z_rms against the block index (natural log per block), and
  ``growth_per_block`` = exp(log_slope). A stack z_rms = c * g**k gives exactly ratio g**(K-1) and slope ln g.

Rule: a noise level is *inflating* when ratio_last_first > :data:`RATIO_THRESHOLD` (2) and
monotone_fraction >= :data:`MONOTONE_THRESHOLD` (0.8). The store is inflating when at least half of its
noise levels are.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .common import (Result, StoreLike, depth, fmt_s, load, log_slope, nearest_noise_level, noise_levels,
                     per_block_values, require, sci, tidy, times)

RATIO_THRESHOLD = 2.0
MONOTONE_THRESHOLD = 0.8
PAPER = "≈100× (15.5 at block 1 → 1576 at block 28, SiT-XL/2, t = 1.0 i.e. noise level 0)"


def per_noise_level(z_rms: np.ndarray, s: np.ndarray) -> pd.DataFrame:
    """One row per noise level: first, last, ratio_last_first, monotone_fraction, log_slope, inflating."""
    rows = []
    for i, si in enumerate(s):
        z = z_rms[i]
        steps = np.diff(z)
        ratio = z[-1] / z[0] if z[0] > 0 else np.nan
        mono = float(np.mean(steps > 0)) if len(steps) else 0.0
        slope = log_slope(z)
        rows.append(dict(noise_level=float(si), first=float(z[0]), last=float(z[-1]), ratio_last_first=float(ratio),
                         max_over_first=float(np.nanmax(z) / z[0]) if z[0] > 0 else np.nan,
                         monotone_fraction=mono, log_slope=slope, growth_per_block=float(np.exp(slope)),
                         inflating=bool(ratio > RATIO_THRESHOLD and mono >= MONOTONE_THRESHOLD)))
    return pd.DataFrame(rows)


def analyze(store: StoreLike, noise_level: float | None = None) -> Result:
    """Inflation analysis of one store; verdict numbers at the noise level nearest ``noise_level``
    (default 0 = data, the paper's SiT t = 1.0)."""
    ds = load(store)
    require(ds, ["z_rms"], "inflation")
    K = depth(ds)
    s = noise_levels(ds)
    z = per_block_values(ds, "z_rms")
    table = per_noise_level(z, s)
    ref = nearest_noise_level(ds, noise_level)
    row = table.loc[table.noise_level == ref].iloc[0]
    frac = float(table.inflating.mean())
    worst = table.loc[table.ratio_last_first.idxmax()]
    verdict = {
        "noise_level": ref,
        "ratio_last_first": float(row.ratio_last_first),
        "first": float(row["first"]),
        "last": float(row["last"]),
        "monotone_fraction": float(row.monotone_fraction),
        "log_slope": float(row.log_slope),
        "log_slope_base": "e (natural log per block)",
        "growth_per_block": float(row.growth_per_block),
        "ratio_last_first_median": float(table.ratio_last_first.median()),
        "ratio_last_first_max": float(worst.ratio_last_first),
        "noise_level_of_max": float(worst.noise_level),
        "inflating_fraction": frac,
        "inflating_at_noise_level": bool(row.inflating),
        "inflating": bool(frac >= 0.5),
    }
    return Result("inflation", {"by_block": tidy(ds["z_rms"], "z_rms"), "per_noise_level": table}, verdict,
                  _findings(verdict, K))


def _findings(v: dict, K: int) -> list[str]:
    s = fmt_s(v["noise_level"])
    grow = "grows" if v["ratio_last_first"] >= 1 else "shrinks"
    out = [
        f"hidden-state RMS {grow} {times(v['ratio_last_first'])} from block 1 to {K} at noise level {s} "
        f"({sci(v['first'])} → {sci(v['last'])}); it rises in {v['monotone_fraction']:.0%} of block-to-block steps, "
        f"{times(v['growth_per_block'])} per block on a log fit",
        f"{'inflating' if v['inflating'] else 'not inflating'} (ratio > {RATIO_THRESHOLD:g} and ≥ "
        f"{MONOTONE_THRESHOLD:.0%} rising steps) at {v['inflating_fraction']:.0%} of noise levels; "
        f"the largest growth is {times(v['ratio_last_first_max'])} at noise level {fmt_s(v['noise_level_of_max'])}",
    ]
    return out
