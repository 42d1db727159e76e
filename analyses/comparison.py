"""Compare two arms (residual vs DAR, or two checkpoints) metric by metric, with confidence intervals.

An *arm* is one store or several stores of the same model trained with different seeds.

* Cell by cell (``differences`` table): for every metric with a per-sample array (``z_rms``, ``z_grad_rms``,
  ``adjacent_cos``, ``loss``) and every (noise level, block): the means of A and B, the difference B − A and,
  for the positive metrics (RMS, gradient RMS, loss), the log-ratio ln(B / A) and ratio B / A — each with a
  ``ci`` (default 95 %) interval.
* Headline statistics (``headline`` table) at one noise level: RMS growth block 1 → K, last-block RMS, the
  early/deep gradient ratio, deep-block gradient RMS, deep adjacent cosine, loss there and loss averaged over
  noise levels. Ratio statistics are compared as ratios B / A (interval from the log-ratio), the rest as B − A.

Intervals:

* **one store per arm** — percentile bootstrap over samples (``n_boot`` draws of the samples with replacement,
  using the ``*_per_sample`` arrays; every metric and statistic of one draw uses the same resampled samples).
  The draw is *paired* (the same resampled indices for A and B) when both stores measured the same samples:
  same number of samples, same ``seed`` and ``data`` attributes and, where stored, the same ``data_index`` (the
  probe draws sample j's image and noise from the seed alone) — or when ``paired=True``.
* **several stores in either arm** (seeds) — Welch t-interval over the per-store values (store means, or the
  statistic computed per store). An arm with a single store contributes no seed variance.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from .common import (Result, StoreContentError, StoreLike, depth, fmt_s, load, n_early, nearest_noise_level,
                     noise_levels, store_name, times)

# metric -> compared on the log scale (positive quantities) as well as by difference?
METRICS: dict[str, bool] = {"z_rms": True, "z_grad_rms": True, "adjacent_cos": False, "loss": True}


@dataclass
class Arm:
    """One side of a comparison: a label and its stores (one per seed)."""

    label: str
    stores: list[xr.Dataset]

    @classmethod
    def of(cls, stores: StoreLike | Sequence[StoreLike], label: str | None = None,
           allow_partial: bool = False) -> "Arm":
        items = [stores] if isinstance(stores, (str, xr.Dataset)) or hasattr(stores, "__fspath__") else list(stores)
        if not items:
            raise ValueError("comparison: an arm needs at least one store")
        dss = [load(x, allow_partial=allow_partial) for x in items]
        return cls(label or str(dss[0].attrs.get("model", "arm")), dss)


# ------------------------------------------------------------------------------------------ per-sample data


def per_sample(ds: xr.Dataset, metric: str) -> np.ndarray:
    """``{metric}_per_sample`` as float64 [S, N, K] (loss: [S, N, 1])."""
    name = f"{metric}_per_sample"
    if name not in ds.variables:
        raise StoreContentError(f"comparison: store {store_name(ds)} has no variable {name!r} (the store may be "
                                "from an older probe; re-run `dartool probe`)")
    da = ds[name]
    dims = ["noise_level", "sample"] + (["block"] if "block" in da.dims else [])
    x = np.asarray(da.transpose(*dims).values, dtype=float)
    return x if x.ndim == 3 else x[..., None]


def bootstrap_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """[n_boot, n] resampling weights (multinomial counts / n): row b averages a resample with replacement."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot) / n


def weighted_means(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x [S, N, K], w [B, N] -> bootstrap means [B, S, K]."""
    return np.tensordot(w, np.nan_to_num(x), axes=([1], [1]))


def percentile_interval(draws: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    q = 100 * (1 - ci) / 2
    return np.nanpercentile(draws, q, axis=0), np.nanpercentile(draws, 100 - q, axis=0)


def welch_interval(a: np.ndarray, b: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mean(b) − mean(a) and its Welch t-interval over the leading axis (seeds). Arrays [n, ...]."""
    from scipy import stats

    na, nb = len(a), len(b)
    va = a.var(axis=0, ddof=1) / na if na > 1 else np.zeros(a.shape[1:])
    vb = b.var(axis=0, ddof=1) / nb if nb > 1 else np.zeros(b.shape[1:])
    d = b.mean(0) - a.mean(0)
    se2 = va + vb
    with np.errstate(invalid="ignore", divide="ignore"):
        df = se2**2 / ((va**2 / (na - 1) if na > 1 else 0) + (vb**2 / (nb - 1) if nb > 1 else 0))
    df = np.where(np.isfinite(df) & (df > 0), df, max(na, nb) - 1)
    half = stats.t.ppf(0.5 + ci / 2, np.maximum(df, 1)) * np.sqrt(se2)
    return d, d - half, d + half


# ------------------------------------------------------------------------------------------ headline stats


def headline_stats(K: int, i: int) -> dict[str, tuple[str, bool, Callable[[dict], np.ndarray]]]:
    """name -> (metric it needs, is a ratio, f(means dict [..., S, K]) -> [...]) at noise-level index i."""
    ne = n_early(K)
    deep = slice(ne, None) if K > ne else slice(None)
    return {
        f"RMS growth, block 1 → {K}": ("z_rms", True, lambda m: m["z_rms"][..., i, -1] / m["z_rms"][..., i, 0]),
        f"RMS of the last block ({K})": ("z_rms", True, lambda m: m["z_rms"][..., i, -1]),
        f"gradient RMS, blocks 1–{ne} / rest": (
            "z_grad_rms", True,
            lambda m: m["z_grad_rms"][..., i, :ne].mean(-1) / m["z_grad_rms"][..., i, deep].mean(-1)),
        "gradient RMS, deep blocks (mean)": ("z_grad_rms", True, lambda m: m["z_grad_rms"][..., i, deep].mean(-1)),
        "adjacent cosine, deep blocks (mean)": ("adjacent_cos", False,
                                                lambda m: m["adjacent_cos"][..., i, deep].mean(-1)),
        "loss": ("loss", False, lambda m: m["loss"][..., i, 0]),
        "loss, mean over noise levels": ("loss", False, lambda m: m["loss"][..., :, 0].mean(-1)),
    }


# ------------------------------------------------------------------------------------------ the comparison


def _check_compatible(A: Arm, B: Arm) -> None:
    grids = [tuple(np.round(noise_levels(d), 6)) for d in A.stores + B.stores]
    if len(set(grids)) > 1:
        raise StoreContentError("comparison: the stores use different noise-level grids; probe them on the same "
                                "grid (--noise-levels) to compare")


def is_paired(A: Arm, B: Arm) -> bool:
    """True when both arms are single stores that measured the same samples (same N, seed and data)."""
    if len(A.stores) != 1 or len(B.stores) != 1:
        return False
    a, b = A.stores[0], B.stores[0]
    same = all(str(a.attrs.get(k)) == str(b.attrs.get(k)) for k in ("seed", "data"))
    same = same and a.sizes.get("sample") == b.sizes.get("sample") and a.attrs.get("seed") is not None
    if same and "data_index" in a.variables and "data_index" in b.variables:  # the probe records the images
        same = bool(np.array_equal(a["data_index"].values, b["data_index"].values))
    return same


def compare(a: StoreLike | Sequence[StoreLike] | Arm, b: StoreLike | Sequence[StoreLike] | Arm,
            label_a: str | None = None, label_b: str | None = None, noise_level: float | None = None,
            n_boot: int = 1000, ci: float = 0.95, seed: int = 0, paired: bool | None = None,
            metrics: Sequence[str] | None = None) -> Result:
    """Compare arm B against baseline arm A (each: a store, a list of stores (seeds), or an :class:`Arm`)."""
    A = a if isinstance(a, Arm) else Arm.of(a, label_a)
    B = b if isinstance(b, Arm) else Arm.of(b, label_b)
    _check_compatible(A, B)
    metrics = [m for m in (metrics or METRICS) if all(f"{m}_per_sample" in d.variables for d in A.stores + B.stores)]
    if not metrics:
        raise StoreContentError("comparison: the stores have no per-sample arrays (*_per_sample) in common (the "
                                "stores may be from an older probe; re-run `dartool probe`)")
    ds0 = A.stores[0]
    s = noise_levels(ds0)
    ref = nearest_noise_level(ds0, noise_level)
    i_ref = int(np.argmin(np.abs(s - ref)))
    KA, KB = depth(A.stores[0]), depth(B.stores[0])
    seeds = len(A.stores) > 1 or len(B.stores) > 1
    if seeds:
        method = f"Welch t over seeds ({len(A.stores)} vs {len(B.stores)} stores)"
        pair = False
    else:
        pair = is_paired(A, B) if paired is None else bool(paired)
        method = f"bootstrap over samples ({'paired' if pair else 'unpaired'}, {n_boot} draws)"
    engine = _SeedEngine(A, B, metrics, ci) if seeds else _BootEngine(A, B, metrics, ci, n_boot, seed, pair)
    diffs = engine.cells(s, same_depth=KA == KB)
    head = engine.headline(KA, KB, i_ref)
    for t in (diffs, head):
        t.insert(0, "arm_b", B.label)
        t.insert(0, "arm_a", A.label)
        t["method"] = method
        t["n_a"] = len(A.stores) if seeds else A.stores[0].sizes["sample"]
        t["n_b"] = len(B.stores) if seeds else B.stores[0].sizes["sample"]
    head.insert(3, "noise_level", ref)
    verdict = _verdict(diffs, head, method, ref, ci)
    return Result("comparison", {"differences": diffs, "headline": head}, verdict,
                  _findings(A.label, B.label, head, diffs, ref, ci, method))


class _BootEngine:
    """Percentile bootstrap over samples; one weight matrix per arm (shared when paired)."""

    def __init__(self, A: Arm, B: Arm, metrics, ci, n_boot, seed, paired):
        rng = np.random.default_rng(seed)
        self.metrics, self.ci = metrics, ci
        self.xa = {m: per_sample(A.stores[0], m) for m in metrics}
        self.xb = {m: per_sample(B.stores[0], m) for m in metrics}
        na, nb = A.stores[0].sizes["sample"], B.stores[0].sizes["sample"]
        if paired and na != nb:
            raise ValueError(f"comparison: paired=True needs the same number of samples ({na} vs {nb})")
        self.wa = bootstrap_weights(na, n_boot, rng)
        self.wb = self.wa if paired else bootstrap_weights(nb, n_boot, rng)
        self.pa = {m: x.mean(1) for m, x in self.xa.items()}
        self.pb = {m: x.mean(1) for m, x in self.xb.items()}
        self.ba = {m: weighted_means(x, self.wa) for m, x in self.xa.items()}
        self.bb = {m: weighted_means(x, self.wb) for m, x in self.xb.items()}

    def cells(self, s, same_depth: bool) -> pd.DataFrame:
        frames = []
        for m in self.metrics:
            if m != "loss" and not same_depth:
                continue
            pa, pb, ba, bb = self.pa[m], self.pb[m], self.ba[m], self.bb[m]
            lo, hi = percentile_interval(bb - ba, self.ci)
            cols = dict(diff=pb - pa, diff_lo=lo, diff_hi=hi)
            if METRICS.get(m, False):
                with np.errstate(divide="ignore", invalid="ignore"):
                    llo, lhi = percentile_interval(np.log(bb / ba), self.ci)
                    cols.update(log_ratio=np.log(pb / pa), log_ratio_lo=llo, log_ratio_hi=lhi)
            frames.append(_cell_frame(m, s, pa, pb, cols))
        return _finish_cells(frames)

    def headline(self, KA, KB, i) -> pd.DataFrame:
        fa, fb = headline_stats(KA, i), headline_stats(KB, i)
        rows = []
        for (name, (m, ratio, f)), (_, (_, _, g)) in zip(fa.items(), fb.items()):
            if m not in self.metrics:
                continue
            va, vb = f(self.pa), g(self.pb)
            da, db = f(self.ba), g(self.bb)
            rows.append(_headline_row(name, m, ratio, va, vb, da, db, self.ci))
        return pd.DataFrame(rows)


class _SeedEngine:
    """Welch t-intervals over the per-store values of each arm."""

    def __init__(self, A: Arm, B: Arm, metrics, ci):
        self.metrics, self.ci = metrics, ci
        self.ma = {m: np.stack([per_sample(d, m).mean(1) for d in A.stores]) for m in metrics}  # [n, S, K]
        self.mb = {m: np.stack([per_sample(d, m).mean(1) for d in B.stores]) for m in metrics}

    def cells(self, s, same_depth: bool) -> pd.DataFrame:
        frames = []
        for m in self.metrics:
            if m != "loss" and not same_depth:
                continue
            a, b = self.ma[m], self.mb[m]
            d, lo, hi = welch_interval(a, b, self.ci)
            cols = dict(diff=d, diff_lo=lo, diff_hi=hi)
            if METRICS.get(m, False):
                with np.errstate(divide="ignore", invalid="ignore"):
                    lr, llo, lhi = welch_interval(np.log(a), np.log(b), self.ci)
                cols.update(log_ratio=lr, log_ratio_lo=llo, log_ratio_hi=lhi)
            frames.append(_cell_frame(m, s, a.mean(0), b.mean(0), cols))
        return _finish_cells(frames)

    def headline(self, KA, KB, i) -> pd.DataFrame:
        fa, fb = headline_stats(KA, i), headline_stats(KB, i)
        rows = []
        for (name, (m, ratio, f)), (_, (_, _, g)) in zip(fa.items(), fb.items()):
            if m not in self.metrics:
                continue
            va, vb = f(self.ma), g(self.mb)  # one value per store
            if ratio:
                with np.errstate(divide="ignore", invalid="ignore"):
                    d, lo, hi = welch_interval(np.log(va), np.log(vb), self.ci)
                est = dict(estimate=float(np.exp(d)), lo=float(np.exp(lo)), hi=float(np.exp(hi)))
            else:
                d, lo, hi = welch_interval(va, vb, self.ci)
                est = dict(estimate=float(d), lo=float(lo), hi=float(hi))
            rows.append(dict(statistic=name, metric=m, kind="ratio B/A" if ratio else "difference B−A",
                             a=float(np.exp(np.mean(np.log(va))) if ratio else np.mean(va)),
                             b=float(np.exp(np.mean(np.log(vb))) if ratio else np.mean(vb)), **est,
                             significant=_excludes(est, ratio)))
        return pd.DataFrame(rows)


def _headline_row(name, m, ratio, va, vb, da, db, ci) -> dict:
    if ratio:
        with np.errstate(divide="ignore", invalid="ignore"):
            lo, hi = percentile_interval(np.log(db / da), ci)
        est = dict(estimate=float(vb / va), lo=float(np.exp(lo)), hi=float(np.exp(hi)))
    else:
        lo, hi = percentile_interval(db - da, ci)
        est = dict(estimate=float(vb - va), lo=float(lo), hi=float(hi))
    return dict(statistic=name, metric=m, kind="ratio B/A" if ratio else "difference B−A", a=float(va), b=float(vb),
                **est, significant=_excludes(est, ratio))


def _excludes(est: dict, ratio: bool) -> bool:
    null = 1.0 if ratio else 0.0
    return bool(est["lo"] > null or est["hi"] < null)


def _cell_frame(metric: str, s: np.ndarray, pa: np.ndarray, pb: np.ndarray, cols: dict) -> pd.DataFrame:
    S, K = pa.shape
    block = np.tile(np.arange(1, K + 1), S) if metric != "loss" else np.zeros(S, int)
    data = dict(metric=metric, noise_level=np.repeat(s, K), block=block, mean_a=pa.ravel(), mean_b=pb.ravel())
    data.update({k: np.asarray(v, float).ravel() for k, v in cols.items()})
    return pd.DataFrame(data)


def _finish_cells(frames: list[pd.DataFrame]) -> pd.DataFrame:
    df = pd.concat(frames, ignore_index=True)
    for c in ("log_ratio", "log_ratio_lo", "log_ratio_hi"):
        if c not in df:
            df[c] = np.nan
    df["ratio"] = np.exp(df.log_ratio)
    df["ci_excludes_zero"] = (df.diff_lo > 0) | (df.diff_hi < 0)
    return df


def _verdict(diffs: pd.DataFrame, head: pd.DataFrame, method: str, ref: float, ci: float) -> dict:
    v: dict = {"method": method, "noise_level": ref, "ci": ci}
    for m, g in diffs.groupby("metric", sort=False):
        v[f"{m}_frac_cells_differ"] = float(g.ci_excludes_zero.mean())
    for r in head.itertuples():
        v[f"{r.statistic}"] = r.estimate
        v[f"{r.statistic} lo"] = r.lo
        v[f"{r.statistic} hi"] = r.hi
    return v


def _findings(la, lb, head, diffs, ref, ci, method) -> list[str]:
    out = []
    for r in head.itertuples():
        where = "" if "mean over" in r.statistic else f" at noise level {fmt_s(ref)}"
        if r.kind.startswith("ratio"):
            val = f"{times(r.estimate)} the baseline's [{ci:.0%} CI {times(r.lo)}–{times(r.hi)}]"
        else:
            val = f"{r.estimate:+.3g} [{ci:.0%} CI {r.lo:+.3g} to {r.hi:+.3g}]"
        sig = "" if r.significant else " (not significant)"
        out.append(f"{lb} vs {la}: {r.statistic}{where} is {val}{sig}")
    for m, g in diffs.groupby("metric", sort=False):
        out.append(f"{m}: the {ci:.0%} interval of B − A excludes 0 in {g.ci_excludes_zero.mean():.0%} of "
                   f"{len(g)} (noise level{', block' if m != 'loss' else ''}) cells")
    out.append(f"intervals: {method}")
    return out
