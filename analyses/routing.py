"""Source importance and routing: which earlier outputs each block reads, and how that moves with the noise level
(DAR-METHOD.md section 6.4, the paper's Figure 3).

* DAR stores: the learned weights ``alpha[noise_level, router, source]`` (averaged over tokens and samples) and
  their per-token entropy ``alpha_entropy[noise_level, router]`` (nats).
* Residual stores: the counterfactual importance ``importance[noise_level, router, source]`` = dL/dg_{i->r}.
  Its ``share`` is |importance| normalised to sum to 1 over the sources a router reads, and ``relative`` is the
  signed importance divided by its largest magnitude at that (noise level, router), in [-1, 1].

"Block b" (1-based) means the router that builds the input of block b's attention: router 2 (b - 1).
Entropy: DAR uses the stored mean per-token entropy of α; a residual model gets the entropy of its importance
shares (a measure of how concentrated its reliance is, not a routing weight). ``normalized_entropy`` =
entropy / ln(number of sources the router reads) (1 = uniform); ``effective_sources`` = exp(entropy).
Per chosen block, ``top_source_changes`` counts how often the top source changes between neighbouring noise
levels and ``mean_tv_step`` is the mean total-variation distance between the share distributions at
neighbouring noise levels (0 = frozen, 1 = disjoint): small values mean the routing moves smoothly with s.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from .common import (Result, StoreContentError, StoreLike, block_router, depth, fmt_s, has_values, load,
                     noise_levels, router_block, router_label, source_label, store_name)

PAPER = ("source × t maps at blocks 3 and 13: the residual baseline's preferred sources already shift with t; "
         "DAR's routing concentrates on a few sources and moves smoothly with t")


def default_blocks(K: int) -> list[int]:
    """Blocks 3 and 13 (1-based) when the model has 13 blocks, else about K/4 and K/2."""
    if K >= 13:
        return [3, 13]
    return sorted({max(1, round(K / 4)), max(1, round(K / 2))})


def routing_kind(ds: xr.Dataset) -> str:
    """"alpha" for a DAR store with α values, "importance" for a residual store with importance values."""
    routing = ds.attrs.get("routing") or (ds.attrs.get("config") or {}).get("routing")
    if has_values(ds, "alpha") and routing != "residual":
        return "alpha"
    if has_values(ds, "importance"):
        return "importance"
    if has_values(ds, "alpha"):
        return "alpha"
    raise StoreContentError(
        f"routing: store {store_name(ds)} has neither 'alpha' (DAR) nor 'importance' (residual) values "
        "(the store may be from an older probe; re-run `dartool probe`)")


def _weights(ds: xr.Dataset, kind: str) -> np.ndarray:
    """[S, R, V] raw weights (α or importance), NaN where a router does not read a source."""
    return np.asarray(ds[kind].transpose("noise_level", "router", "source").values, dtype=float)


def shares(w: np.ndarray, kind: str) -> np.ndarray:
    """Per (noise level, router): α as is, or |importance| normalised to sum to 1 over the read sources."""
    if kind == "alpha":
        return w
    a = np.abs(w)
    tot = np.nansum(a, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, a / tot, np.nan)


def entropy_table(ds: xr.Dataset, kind: str, sh: np.ndarray) -> pd.DataFrame:
    """(noise_level, router, router_name, block, entropy, n_sources, normalized_entropy, effective_sources)."""
    L = int(ds.sizes["router"]) - 1
    n_src = np.isfinite(sh).sum(-1)  # [S, R]
    if kind == "alpha" and has_values(ds, "alpha_entropy"):
        ent = np.asarray(ds["alpha_entropy"].transpose("noise_level", "router").values, float)
        metric = "alpha_entropy"
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = -np.nansum(np.where(sh > 0, sh * np.log(sh), 0.0), axis=-1)
        ent = np.where(n_src > 0, ent, np.nan)
        metric = "alpha_entropy_of_mean" if kind == "alpha" else "importance_entropy"
    s = noise_levels(ds)
    S, R = ent.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.where(n_src > 1, ent / np.log(np.maximum(n_src, 2)), np.nan)
    r = np.tile(np.arange(R), S)
    return pd.DataFrame({
        "noise_level": np.repeat(s, R), "router": r, "router_name": [router_label(i, L) for i in r],
        "block": [router_block(i, L) for i in r], "metric": metric, "entropy": ent.ravel(),
        "n_sources": n_src.ravel(), "normalized_entropy": norm.ravel(), "effective_sources": np.exp(ent).ravel(),
    })


def source_map_table(ds: xr.Dataset, kind: str, w: np.ndarray, sh: np.ndarray, blocks: list[int]) -> pd.DataFrame:
    """Tidy source x noise-level maps for the chosen 1-based blocks (only the sources each router reads)."""
    L = int(ds.sizes["router"]) - 1
    s = noise_levels(ds)
    frames = []
    for b in blocks:
        r = block_router(b)
        read = np.isfinite(w[:, r, :]).any(0)
        src = np.flatnonzero(read)
        big = np.nanmax(np.abs(w[:, r, :]), axis=-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = w[:, r, :] / np.where(big > 0, big, np.nan)
        frames.append(pd.DataFrame({
            "block": b, "router": r, "router_name": router_label(r, L),
            "noise_level": np.repeat(s, len(src)), "source": np.tile(src, len(s)),
            "source_name": [source_label(i) for i in np.tile(src, len(s))], "metric": kind,
            "value": w[:, r, src].ravel(), "share": sh[:, r, src].ravel(), "relative": rel[:, src].ravel(),
        }))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def block_summary(sh: np.ndarray, s: np.ndarray, blocks: list[int]) -> pd.DataFrame:
    """Per chosen block: top source (and its share) at the lowest and highest noise level, changes, smoothness."""
    rows = []
    for b in blocks:
        p = sh[:, block_router(b), :]
        filled = np.where(np.isfinite(p), p, -np.inf)
        top = filled.argmax(-1)
        q = np.nan_to_num(p)
        tv = 0.5 * np.abs(np.diff(q, axis=0)).sum(-1) if len(s) > 1 else np.array([np.nan])
        rows.append(dict(block=b, top_source_low=source_label(int(top[0])), top_share_low=float(q[0, top[0]]),
                         top_source_high=source_label(int(top[-1])), top_share_high=float(q[-1, top[-1]]),
                         noise_level_low=float(s[0]), noise_level_high=float(s[-1]),
                         top_source_changes=int(np.sum(top[1:] != top[:-1])),
                         distinct_top_sources=int(len(set(top.tolist()))),
                         mean_top_share=float(np.mean(q.max(-1))), mean_tv_step=float(np.mean(tv))))
    return pd.DataFrame(rows)


def analyze(store: StoreLike, blocks: list[int] | None = None) -> Result:
    """Source maps at ``blocks`` (1-based; default :func:`default_blocks`) and routing entropy over depth and s."""
    ds = load(store)
    kind = routing_kind(ds)
    K = depth(ds)
    blocks = [b for b in (blocks or default_blocks(K)) if 1 <= b <= K]
    if not blocks:
        raise ValueError(f"routing: no chosen block lies in 1..{K}")
    w = _weights(ds, kind)
    sh = shares(w, kind)
    ent = entropy_table(ds, kind, sh)
    summ = block_summary(sh, noise_levels(ds), blocks)
    sublayer_ent = ent[ent.router < int(ds.sizes["router"]) - 1]
    verdict = {
        "kind": kind,
        "blocks": ",".join(str(b) for b in blocks),
        "mean_normalized_entropy": float(np.nanmean(sublayer_ent.normalized_entropy)),
        "mean_effective_sources": float(np.nanmean(sublayer_ent.effective_sources)),
        "mean_n_sources": float(np.nanmean(sublayer_ent.n_sources)),
    }
    for row in summ.itertuples():
        verdict[f"block{row.block}_top_source_low"] = row.top_source_low
        verdict[f"block{row.block}_top_source_high"] = row.top_source_high
        verdict[f"block{row.block}_top_source_changes"] = int(row.top_source_changes)
        verdict[f"block{row.block}_mean_tv_step"] = float(row.mean_tv_step)
    tables = {"source_map": source_map_table(ds, kind, w, sh, blocks), "entropy": ent, "blocks": summ}
    return Result("routing", tables, verdict, _findings(kind, summ, verdict, len(noise_levels(ds))))


def _findings(kind: str, summ: pd.DataFrame, v: dict, S: int) -> list[str]:
    def share(x: float) -> str:
        return f"α = {x:.0%}" if kind == "alpha" else f"{x:.0%} of |importance|"

    out = []
    for r in summ.itertuples():
        out.append(
            f"block {r.block} reads mostly {r.top_source_low} ({share(r.top_share_low)}) at noise level "
            f"{fmt_s(r.noise_level_low)} and {r.top_source_high} ({share(r.top_share_high)}) at noise level "
            f"{fmt_s(r.noise_level_high)}; its top source changes {r.top_source_changes}× over {S} noise levels "
            f"(mean step {r.mean_tv_step:.2f} in total variation)")
    label = "routing entropy" if kind == "alpha" else "entropy of the importance shares"
    out.append(f"{label} is {v['mean_normalized_entropy']:.0%} of uniform on average over routers and noise levels "
               f"({v['mean_effective_sources']:.1f} effective sources of {v['mean_n_sources']:.1f} read)")
    return out
