"""Block redundancy: how similar consecutive (and all pairs of) block outputs are (DAR-METHOD.md section 6.3).

Inputs: ``adjacent_cos[noise_level, block]`` (block k: cos(z_{k-1}, z_k), block 1: cos(h_0, z_1)) and
``block_cos[noise_level, block, block2]`` (cos(z_j, z_k)).

Per noise level:

* ``deep_adjacent_cos`` = mean adjacent cosine over the deep blocks (all but the first n_early = round(K/5));
  ``deep_min_adjacent_cos`` its minimum; ``frac_adjacent_above`` = share of blocks with adjacent cos > 0.9;
* ``effective_blocks`` — the number of effectively distinct blocks, defined as the **participation ratio** of
  the eigenvalues λ of the K x K cosine matrix C: (Σλ)² / Σλ². C = I gives K; C = all ones gives 1; m
  equal-sized groups of identical blocks (block-diagonal ones) give exactly m;
* ``clusters_at_0.9`` — the number of clusters of complete-linkage clustering on distance 1 - cos cut at 0.1,
  i.e. the fewest groups such that every pair of blocks inside a group has cos >= 0.9.

Rule: a noise level is *redundant* when deep_adjacent_cos > :data:`COS_THRESHOLD` (0.9, the paper's level);
the store is redundant when at least half of its noise levels are.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .common import (Result, StoreLike, depth, fmt_s, has_values, load, n_early, nearest_noise_level,
                     noise_levels, per_block_values, require, tidy)

COS_THRESHOLD = 0.9
PAPER = "adjacent-block cosine stays > 0.9 deep in the stack (SiT-XL/2, t = 1.0)"


def participation_ratio(matrix: np.ndarray) -> float:
    """(Σλ)² / Σλ² of the eigenvalues of a symmetric PSD matrix (negative round-off clipped to 0)."""
    m = np.asarray(matrix, dtype=float)
    m = 0.5 * (m + m.T)
    lam = np.clip(np.linalg.eigvalsh(m), 0.0, None)
    denom = float(np.sum(lam**2))
    return float(np.sum(lam) ** 2 / denom) if denom > 0 else float("nan")


def clusters_at(matrix: np.ndarray, threshold: float = COS_THRESHOLD) -> int:
    """Number of complete-linkage clusters such that every within-cluster pair has cos >= ``threshold``."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    m = np.asarray(matrix, dtype=float)
    if m.shape[0] < 2:
        return int(m.shape[0])
    dist = np.clip(1.0 - 0.5 * (m + m.T), 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    z = linkage(squareform(dist, checks=False), method="complete")
    return int(fcluster(z, t=1.0 - threshold + 1e-12, criterion="distance").max())


def per_noise_level(adj: np.ndarray, block_cos: np.ndarray | None, s: np.ndarray) -> pd.DataFrame:
    """One row per noise level with the adjacent-cosine summary and the effective number of blocks."""
    K = adj.shape[1]
    ne = n_early(K)
    rows = []
    for i, si in enumerate(s):
        deep = adj[i, ne:] if K > ne else adj[i]
        row = dict(noise_level=float(si), deep_adjacent_cos=float(np.nanmean(deep)),
                   deep_min_adjacent_cos=float(np.nanmin(deep)),
                   frac_adjacent_above=float(np.mean(adj[i] > COS_THRESHOLD)),
                   redundant=bool(np.nanmean(deep) > COS_THRESHOLD))
        if block_cos is not None and np.isfinite(block_cos[i]).all():
            row["effective_blocks"] = participation_ratio(block_cos[i])
            row["clusters_at_0.9"] = clusters_at(block_cos[i])
        rows.append(row)
    return pd.DataFrame(rows)


def analyze(store: StoreLike, noise_level: float | None = None) -> Result:
    """Redundancy analysis of one store; verdict numbers at the noise level nearest ``noise_level``."""
    ds = load(store)
    require(ds, ["adjacent_cos"], "redundancy")
    K = depth(ds)
    adj = per_block_values(ds, "adjacent_cos")
    bc = (np.asarray(ds["block_cos"].transpose("noise_level", "block", "block2").values, float)
          if has_values(ds, "block_cos") else None)
    table = per_noise_level(adj, bc, noise_levels(ds))
    ref = nearest_noise_level(ds, noise_level)
    row = table.loc[table.noise_level == ref].iloc[0]
    frac = float(table.redundant.mean())
    verdict = {
        "noise_level": ref,
        "n_early": n_early(K),
        "deep_adjacent_cos": float(row.deep_adjacent_cos),
        "deep_min_adjacent_cos": float(row.deep_min_adjacent_cos),
        "frac_adjacent_above_0.9": float(row.frac_adjacent_above),
        "redundant_fraction": frac,
        "redundant_at_noise_level": bool(row.redundant),
        "redundant": bool(frac >= 0.5),
    }
    tables = {"adjacent": tidy(ds["adjacent_cos"], "adjacent_cos"), "per_noise_level": table}
    if bc is not None:
        verdict["effective_blocks"] = float(row.effective_blocks)
        verdict["clusters_at_0.9"] = int(row["clusters_at_0.9"])
        tables["block_matrix"] = tidy(ds["block_cos"], "block_cos")
    if has_values(ds, "time_cos"):
        tables["time_cos"] = tidy(ds["time_cos"], "time_cos")
    return Result("redundancy", tables, verdict, _findings(verdict, K))


def _findings(v: dict, K: int) -> list[str]:
    s = fmt_s(v["noise_level"])
    ne = v["n_early"]
    out = [f"adjacent-block cosine averages {v['deep_adjacent_cos']:.3f} over blocks {ne + 1}–{K} at noise level {s} "
           f"(minimum {v['deep_min_adjacent_cos']:.3f}); {v['frac_adjacent_above_0.9']:.0%} of blocks have cos > 0.9"]
    if "effective_blocks" in v:
        out.append(f"the {K} blocks act like {v['effective_blocks']:.1f} effectively distinct blocks (participation "
                   f"ratio of the block × block cosine matrix); {v['clusters_at_0.9']} groups with all pairs at "
                   "cos ≥ 0.9")
    return out
