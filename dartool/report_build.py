"""The report builder behind ``dartool report`` (imported lazily, so the CLI starts fast): a self-contained
HTML report (plus PNGs and CSVs) from one or more probe stores.

Layout of ``--out DIR``::

    report.html                 everything, figures embedded as base64 PNG (opens from disk, no network)
    summary.csv, findings.csv   the headline numbers and the findings of every store
    figures/<store>/*.png       every figure of a store; figures/comparison/*.png for the comparisons
    tables/<store>/*.csv        the tidy tables of every analysis; tables/comparison/*.csv
    figures/training/over_training.png, tables/training/over_training.csv
                                only with ``training=``: the periodic probes of a training run, per arm and step

Stores that share a label (the store's ``model`` attribute, or ``--label``) are seeds of one *arm*. With two or
more arms, every arm is compared with the baseline arm (the first store's, or ``--baseline``): bootstrap over
samples for one store per arm, a t-interval over seeds when an arm has several stores.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from analyses import comparison as cmp
from analyses import decodability, gradient_decay, inflation, redundancy, routing
from analyses import training as training_analysis
from analyses.common import (Result, StoreContentError, StoreLike, depth, fmt_s, has_values, load,
                             nearest_noise_level, noise_levels, sci, source_label, times)

from . import __version__
from . import plots
from .diffusion import time_axis_label
from .store import StoreError

REPORT_FILE = "report.html"


# ============================================================================================== data model


@dataclass
class Figure:
    """One figure: where its PNG goes (relative to the report dir), a caption, the PNG bytes."""

    rel: str
    caption: str
    png: bytes
    wide: bool = False


@dataclass
class StoreEntry:
    """A store in the report, its arm label, a unique display name and slug, and its analysis results."""

    ds: xr.Dataset
    label: str
    name: str
    slug: str
    source: str
    results: dict[str, Result] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)

    @property
    def time_label(self) -> str:
        return time_axis_label(self.ds.attrs.get("time_convention"))


@dataclass
class Pair:
    """A comparison of arm ``b`` against the baseline arm ``a``."""

    a: str
    b: str
    result: Result | None
    missing: str = ""
    figures: list[Figure] = field(default_factory=list)


@dataclass
class TrainingPart:
    """The "Over training" section: per arm the :mod:`analyses.training` result (or why it is missing), the
    tidy table of all arms (column ``arm`` first) and the figure."""

    results: dict[str, Result] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    table: pd.DataFrame | None = None
    figure: Figure | None = None


@dataclass
class ReportOutput:
    """What :func:`make_report` wrote."""

    html: Path
    files: list[Path]
    seconds: float


# ============================================================================================== output dir


class OutDir:
    """The report directory. Refuses to replace existing files unless ``overwrite`` (checked before any work);
    writes atomically; files of an earlier report that this one does not write are left in place."""

    def __init__(self, root: Path, overwrite: bool) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise FileExistsError(f"--out {self.root} is a file, not a directory")
        if self.root.is_dir() and any(self.root.iterdir()) and not overwrite:
            raise FileExistsError(f"report directory {self.root} already has files; pass --overwrite to replace them")
        self.written: list[Path] = []  # the directory itself is made at the first write

    def write(self, rel: str, data: bytes | str) -> Path:
        """Write ``data`` to ``root/rel`` through a temporary file and an atomic rename."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = data.encode("utf-8") if isinstance(data, str) else data
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.written.append(path)
        return path

    def csv(self, rel: str, df: pd.DataFrame) -> Path:
        return self.write(rel, df.to_csv(index=False, float_format="%.6g"))


# ============================================================================================== entry points


def make_report(stores: Sequence[str | Path | xr.Dataset], out: str | Path, labels: Sequence[str] | None = None,
                baseline: str | None = None, noise_level: float = 0.0, blocks: Sequence[int] | None = None,
                n_boot: int = 1000, seed: int = 0, allow_partial: bool = False, overwrite: bool = False,
                title: str | None = None,
                training: Mapping[str, Mapping[int, StoreLike]] | None = None) -> ReportOutput:
    """Analyse ``stores`` and write the report into ``out``. See the module docstring for the layout.

    ``training``: arm label -> {train step: periodic probe store} (``RUN/<arm>/probes/step_*.zarr`` of a
    ``dartool train`` run) adds an "Over training" section; without it the report is unchanged.
    """
    t0 = time.perf_counter()
    if not stores:
        raise ValueError("report: give at least one probe store")
    if labels and len(labels) != len(stores):
        raise ValueError(f"report: {len(labels)} --label values for {len(stores)} stores; give one per store")
    outdir = OutDir(Path(out), overwrite)
    entries = _entries(stores, labels, allow_partial)
    arms = _arms(entries)
    base = _baseline(baseline, arms, entries)
    for e in entries:
        _analyse(e, noise_level, blocks, seed)
        e.figures = store_figures(e, noise_level)
    pairs = [_compare(arms, base, lab, noise_level, n_boot, seed) for lab in arms if lab != base]
    comp_figs = comparison_figures(entries, arms, base, pairs, noise_level) if len(arms) > 1 else []
    train_part = training_part(training, noise_level) if training else None
    for e in entries:
        _write_store_files(outdir, e)
    for p in pairs:
        _write_pair_files(outdir, p, arms)
    for f in comp_figs:
        outdir.write(f.rel, f.png)
    if train_part is not None:
        if train_part.table is not None:
            outdir.csv(TRAINING_CSV, train_part.table)
        if train_part.figure is not None:
            outdir.write(train_part.figure.rel, train_part.figure.png)
    summary = summary_table(entries)
    findings = findings_table(entries)
    outdir.csv("summary.csv", summary)
    outdir.csv("findings.csv", findings)
    page = render_html(entries, arms, base, pairs, comp_figs, summary, findings, noise_level, title,
                       training=train_part)
    html_path = outdir.write(REPORT_FILE, page)
    return ReportOutput(html_path, list(outdir.written), time.perf_counter() - t0)


# ============================================================================================== analyses


def _entries(stores, labels, allow_partial) -> list[StoreEntry]:
    entries = []
    for i, st in enumerate(stores):
        ds = load(st, allow_partial=allow_partial)
        label = (labels[i] if labels else None) or str(ds.attrs.get("model") or f"store {i + 1}")
        source = str(st) if not isinstance(st, xr.Dataset) else str(ds.attrs.get("store_path", f"dataset {i + 1}"))
        entries.append(StoreEntry(ds, label, label, f"{i + 1}-{_slug(label)}", source))
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.label] = counts.get(e.label, 0) + 1
    seen: dict[str, int] = {}
    for e in entries:
        if counts[e.label] > 1:
            seen[e.label] = seen.get(e.label, 0) + 1
            e.name = f"{e.label} · {Path(e.source).stem or 'store'} (#{seen[e.label]})"
    return entries


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "store"


def _arms(entries: list[StoreEntry]) -> dict[str, list[StoreEntry]]:
    arms: dict[str, list[StoreEntry]] = {}
    for e in entries:
        arms.setdefault(e.label, []).append(e)
    return arms


def _baseline(baseline: str | None, arms: dict, entries: list[StoreEntry]) -> str:
    if baseline is None:
        return entries[0].label
    if baseline in arms:
        return baseline
    if baseline.isdigit() and 1 <= int(baseline) <= len(entries):
        return entries[int(baseline) - 1].label
    raise ValueError(f"--baseline {baseline!r} is neither an arm label ({', '.join(arms)}) nor a store number "
                     f"1..{len(entries)}")


def _analyse(e: StoreEntry, s: float, blocks, seed: int) -> None:
    runs = {
        "inflation": lambda: inflation.analyze(e.ds, noise_level=s),
        "gradient_decay": lambda: gradient_decay.analyze(e.ds, noise_level=s),
        "redundancy": lambda: redundancy.analyze(e.ds, noise_level=s),
        "routing": lambda: routing.analyze(e.ds, blocks=list(blocks) if blocks else None),
        "decodability": lambda: decodability.analyze(e.ds, seed=seed),
    }
    for name, fn in runs.items():
        try:
            e.results[name] = fn()
        except StoreContentError as err:
            e.missing[name] = str(err)


def _compare(arms, base, lab, s, n_boot, seed) -> Pair:
    A = cmp.Arm(base, [e.ds for e in arms[base]])
    B = cmp.Arm(lab, [e.ds for e in arms[lab]])
    try:
        return Pair(base, lab, cmp.compare(A, B, noise_level=s, n_boot=n_boot, seed=seed))
    except StoreContentError as err:
        return Pair(base, lab, None, str(err))


# ============================================================================================== figures


def _grid(ds: xr.Dataset, name: str, dim: str) -> np.ndarray:
    """Variable [noise_level, dim] as [dim, S] float (depth on rows)."""
    return np.asarray(ds[name].transpose(dim, "noise_level").values, dtype=float)


def _sub_positions(n: int) -> np.ndarray:
    """Depth coordinate of sublayers/routers: attention of block b at b, its MLP at b + 1/2, the head at K + 1."""
    return np.arange(n) / 2 + 1


HEATMAPS = [
    # name, dim, title, colour-bar label, log, cmap
    ("z_rms", "block", r"Hidden-state RMS of $z_k$", plots.RMS_LABEL, True, "viridis"),
    ("z_grad_rms", "block", r"Gradient RMS of $\partial L/\partial z_k$", plots.GRAD_LABEL, True, "plasma"),
    ("adjacent_cos", "block", r"Adjacent-block cosine " + plots.ADJ_COS, "cosine (block 1: vs the embedding)",
     False, "cividis"),
    ("time_cos", "block", r"Cosine of $z_k$ between neighbouring noise levels", r"cosine ($s_i$ vs $s_{i+1}$)",
     False, "cividis"),
    ("update_ratio", "sublayer", r"Update ratio RMS($v_l$) / RMS($h_l$)", "ratio (unitless)", True, "viridis"),
    ("h_grad_rms", "sublayer", r"Gradient RMS of $\partial L/\partial h_l$ (sublayer inputs)",
     r"RMS of $\partial L/\partial h_l$", True, "plasma"),
    ("h_rms", "sublayer", r"RMS of sublayer inputs $h_l$", r"RMS of $h_l$ (a.u.)", True, "viridis"),
    ("v_rms", "sublayer", r"RMS of sublayer outputs $v_l$", r"RMS of $v_l$ (a.u.)", True, "viridis"),
]


def store_figures(e: StoreEntry, s_ref: float) -> list[Figure]:
    """All figures of one store, in page order."""
    figs = [f for f in [_figure2([e], {e.label: [e]}, s_ref, f"figures/{e.slug}/figure2_lines.png")] if f]
    figs += _heatmaps(e)
    figs += [f for f in (_loss_curve(e), _block_matrix(e, s_ref), _source_maps(e), _entropy(e),
                         _decodability_curve([e], f"figures/{e.slug}/decodability.png")) if f]
    return figs


def _heatmaps(e: StoreEntry) -> list[Figure]:
    ds, K = e.ds, depth(e.ds)
    s = noise_levels(ds)
    out = []
    for name, dim, title, cbar, log, cmap in HEATMAPS:
        if not has_values(ds, name) or dim not in ds[name].dims:
            continue
        grid = _grid(ds, name, dim)
        kw = {}
        if dim == "sublayer":
            kw = dict(y_values=_sub_positions(grid.shape[0]), yticks=plots.depth_ticks(K),
                      ylabel="block (attention at b, MLP at b + ½)")
        fig = plots.heatmap(grid, s, title, cbar, e.time_label, log=log, cmap=cmap, **kw)
        out.append(Figure(f"figures/{e.slug}/heatmap_{name}.png",
                          f"{_plain(title)}: depth × noise level ({'log' if log else 'linear'} colour scale; "
                          "block 1 at the bottom; grey = undefined).", plots.png_bytes(fig)))
    return out


def _band(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sample array [N, K] -> mean, and mean ± 1.96 standard errors."""
    m = x.mean(0)
    se = x.std(0, ddof=1) / np.sqrt(x.shape[0]) if x.shape[0] > 1 else np.zeros_like(m)
    return m, m - 1.96 * se, m + 1.96 * se


def _metric_series(e: StoreEntry, metric: str, i: int, colour: str, thin: bool = False) -> plots.Series | None:
    ds = e.ds
    if not has_values(ds, metric):
        return None
    K = depth(ds)
    x = np.arange(1, K + 1)
    per = f"{metric}_per_sample"
    if per in ds.variables and not thin:
        arr = np.asarray(ds[per].transpose("noise_level", "sample", "block").values, float)[i]
        m, lo, hi = _band(arr)
        if metric != "adjacent_cos":
            lo = np.maximum(lo, m * 1e-3)
        return plots.Series(e.name, x, np.asarray(ds[metric].transpose("noise_level", "block").values, float)[i],
                            lo, hi, colour)
    y = np.asarray(ds[metric].transpose("noise_level", "block").values, float)[i]
    return plots.Series(e.name, x, y, colour=colour, thin=thin)


def _figure2(entries: list[StoreEntry], arms: dict, s_ref: float, rel: str) -> Figure | None:
    """The paper's Figure 2 at one noise level: RMS, gradient RMS and adjacent cosine vs block."""
    ds0 = entries[0].ds
    if not has_values(ds0, "z_rms"):
        return None
    s_used = nearest_noise_level(ds0, s_ref)
    i = int(np.argmin(np.abs(noise_levels(ds0) - s_used)))
    specs = [("z_rms", r"Hidden-state RMS of $z_k$", plots.RMS_LABEL, True),
             ("z_grad_rms", r"Gradient RMS of $\partial L/\partial z_k$", plots.GRAD_LABEL, True),
             ("adjacent_cos", "Adjacent-block cosine", plots.ADJ_COS, False)]
    panels = []
    for metric, title, ylabel, logy in specs:
        series = []
        for j, (lab, members) in enumerate(arms.items()):
            colour = plots.PALETTE[j % len(plots.PALETTE)]
            if len(members) == 1:
                sr = _metric_series(members[0], metric, i, colour)
                if sr:
                    sr.label = lab
                    series.append(sr)
                continue
            lines = [_metric_series(m, metric, i, colour, thin=True) for m in members]
            lines = [ln for ln in lines if ln]
            if not lines:
                continue
            ys = np.stack([ln.y for ln in lines]) if len({len(ln.y) for ln in lines}) == 1 else None
            series += lines
            if ys is not None:
                series.append(plots.Series(f"{lab} (mean of {len(lines)} seeds; band = range)", lines[0].x,
                                           ys.mean(0), ys.min(0), ys.max(0), colour))
        hl = [(0.9, "cos = 0.9 (paper: baseline stays above)", ":")] if metric == "adjacent_cos" else []
        K = max(depth(e.ds) for e in entries)
        panels.append(dict(series=series, title=title, xlabel="block", ylabel=ylabel, logy=logy, hlines=hl,
                           xticks=plots.depth_ticks(K)))
    name = entries[0].name if len(entries) == 1 else "all stores"
    fig = plots.line_panels(panels, f"Figure 2 style — {name} at noise level {fmt_s(s_used)} "
                                    f"({_t_note(ds0, s_used)})", shared_legend=True)
    return Figure(rel, f"RMS of z_k (log y), gradient RMS (log y) and adjacent-block cosine against depth at noise "
                       f"level {fmt_s(s_used)}. Bands: mean ± 1.96 standard errors over samples (arms with several "
                       "seeds: thin lines per seed, band = range over seeds). Paper (SiT-XL/2): RMS 15.5 → 1576, "
                       "gradients >10× lower after ~5 blocks, adjacent cosine > 0.9 deep.",
                  plots.png_bytes(fig), wide=True)


def _t_note(ds: xr.Dataset, s: float) -> str:
    conv = ds.attrs.get("time_convention")
    if conv == "sit":
        return f"SiT t = {1 - s:.3g}"
    if conv == "dit":
        return f"DiT t = {round(999 * s)}"
    if conv == "repa":
        return f"REPA t = {s:.3g}"
    return "0 = data, 1 = noise"


def _loss_curve(e: StoreEntry) -> Figure | None:
    ds = e.ds
    if not has_values(ds, "loss"):
        return None
    s = noise_levels(ds)
    y = np.asarray(ds["loss"].values, float)
    lo = hi = None
    if "loss_per_sample" in ds.variables:
        arr = np.asarray(ds["loss_per_sample"].transpose("sample", "noise_level").values, float)
        _, lo, hi = _band(arr)
    panel = dict(series=[plots.Series(e.name, s, y, lo, hi, plots.PALETTE[0])], title="Training loss per noise level",
                 xlabel=e.time_label, ylabel=_loss_name(ds), logy=False,
                 legend=False)
    fig = plots.line_panels([panel], "", figsize=(5.4, 3.7))
    return Figure(f"figures/{e.slug}/loss.png", "The model's own loss at each noise level (band: mean ± 1.96 "
                  "standard errors over samples).", plots.png_bytes(fig))


def _loss_name(ds: xr.Dataset) -> str:
    conv = ds.attrs.get("time_convention")
    return {"sit": "velocity MSE", "repa": "velocity MSE", "dit": "ε MSE"}.get(conv, "loss")


def _block_matrix(e: StoreEntry, s_ref: float) -> Figure | None:
    ds = e.ds
    if not has_values(ds, "block_cos"):
        return None
    s = noise_levels(ds)
    picks = sorted({nearest_noise_level(ds, s_ref), float(s[len(s) // 2]), float(s[-1])})
    mats = [(f"noise level {fmt_s(p)}",
             np.asarray(ds["block_cos"].sel(noise_level=p).transpose("block", "block2").values, float))
            for p in picks]
    fig = plots.matrix_panels(mats, "cos(z_j, z_k), per token, averaged")
    eff = e.results.get("redundancy")
    extra = ""
    if eff and "effective_blocks" in eff.verdict:
        extra = (f" At noise level {fmt_s(eff.verdict['noise_level'])} the {depth(ds)} blocks act like "
                 f"{eff.verdict['effective_blocks']:.1f} distinct blocks (participation ratio).")
    return Figure(f"figures/{e.slug}/block_matrix.png", "Block × block cosine similarity of the block outputs "
                  f"(block 1 at the bottom left).{extra}", plots.png_bytes(fig), wide=True)


def _source_maps(e: StoreEntry) -> Figure | None:
    res = e.results.get("routing")
    if not res:
        return None
    t = res.tables["source_map"]
    kind = str(res.verdict["kind"])
    panels = []
    for b, g in t.groupby("block", sort=True):
        srcs = sorted(g.source.unique())
        s = np.sort(g.noise_level.unique())
        col = "value" if kind == "alpha" else "relative"
        grid = g.pivot_table(index="source", columns="noise_level", values=col, dropna=False).reindex(
            index=srcs, columns=s).to_numpy(float)
        panels.append(dict(title=f"block {b} (reads {len(srcs)} source{'s' if len(srcs) != 1 else ''})", grid=grid, s=s,
                           source_names=[source_label(int(i)) for i in srcs]))
    fig = plots.source_maps(panels, e.time_label, kind)
    what = ("learned routing weights α (averaged over tokens and samples)" if kind == "alpha" else
            "counterfactual source importance ∂L/∂g_{i→l} = Σ_tokens ⟨∂L/∂h_l, v_i⟩ (red: raising the "
            "source's weight would raise the loss; blue: lower it), scaled by the largest magnitude at each noise "
            "level")
    return Figure(f"figures/{e.slug}/source_maps.png",
                  f"Figure 3 style — {what}, for the input of each chosen block's attention. "
                  "Sources: embed = h_0, b<i>.attn/mlp = outputs of that sublayer.", plots.png_bytes(fig), wide=True)


def _entropy(e: StoreEntry) -> Figure | None:
    res = e.results.get("routing")
    if not res:
        return None
    t = res.tables["entropy"]
    s = np.sort(t.noise_level.unique())
    grid = t.pivot(index="router", columns="noise_level", values="normalized_entropy").reindex(columns=s)
    grid = grid.to_numpy(float)
    K = depth(e.ds)
    alpha = res.verdict["kind"] == "alpha"
    title = "Routing entropy of α" if alpha else "Entropy of the importance shares"
    fig = plots.heatmap(grid, s, title, "entropy ÷ ln(#sources)  (1 = uniform)", e.time_label,
                        y_values=_sub_positions(grid.shape[0]), yticks=plots.depth_ticks(K + 1),
                        ylabel="router → block (attn b, MLP b + ½, head K + 1)", cmap="magma", limits=(0.0, 1.0))
    note = ("mean per-token entropy of α" if alpha else "entropy of |importance| normalised over the sources a "
            "router could read (how concentrated the residual model's reliance is)")
    return Figure(f"figures/{e.slug}/entropy.png", f"{title}: {note}, divided by ln(number of sources read).",
                  plots.png_bytes(fig))


def _decodability_curve(entries: list[StoreEntry], rel: str) -> Figure | None:
    series, hlines = [], []
    for j, e in enumerate(entries):
        res = e.results.get("decodability")
        if not res:
            continue
        t = res.tables["r2"]
        r = t[t.router >= 0]
        colour = plots.PALETTE[j % len(plots.PALETTE)]
        series.append(plots.Series(e.name, _sub_positions(int(r.router.max()) + 1)[r.router.to_numpy()],
                                   r.r2.to_numpy(float), colour=colour))
        base = float(t.loc[t.router == -1, "r2"].iloc[0])
        if np.isfinite(base):
            hlines.append((base, f"raw $x_t${'' if len(entries) == 1 else ' — ' + e.name}: R² {base:.2f}", "--",
                           colour))
    if not series:
        return None
    hlines.append((0.95, "R² = 0.95", ":", "#555555"))
    lows = [np.nanmin(s.y) for s in series] + [h[0] for h in hlines]
    K = max(depth(e.ds) for e in entries)
    panel = dict(series=series, hlines=hlines, title="Timestep decodability (held-out R² of a ridge probe)",
                 xlabel="router → block (attn b, MLP b + ½, head K + 1)", ylabel="test R² (target: s)",
                 ylim=(min(0.0, float(np.nanmin(lows)) - 0.05), 1.02), xticks=_head_ticks(K),
                 xticklabels=[str(t) for t in _head_ticks(K)[:-1]] + ["head"], legend_loc="lower right")
    fig = plots.line_panels([panel], "", figsize=(6.2 if len(entries) == 1 else 7.5, 3.7))
    return Figure(rel, "Ridge regression from the pooled router input to the noise level, trained and tested on "
                       "disjoint samples; dashed: the same probe on the raw input x_t. Paper (SiT-XL/2): raw ≈ 0.80, "
                       "> 0.95 within five blocks, ≈ 1.0 deeper.", plots.png_bytes(fig))


def _head_ticks(K: int) -> list[int]:
    """Block ticks 1..K (thinned like the heatmaps) plus K + 1 for the head router; on a thinned axis the tick
    at K would crowd the head's, so it is left out."""
    ticks = plots.depth_ticks(K)
    if K > 16 and ticks[-1] == K:
        ticks = ticks[:-1]
    return ticks + [K + 1]


def comparison_figures(entries, arms, base, pairs: list[Pair], s_ref: float) -> list[Figure]:
    """Overlaid Figure 2 and decodability, and the difference maps of every pair."""
    figs = [f for f in (_figure2(entries, arms, s_ref, "figures/comparison/figure2_lines.png"),
                        _decodability_curve(entries, "figures/comparison/decodability.png")) if f]
    for p in pairs:
        if p.result is None:
            continue
        p.figures = _difference_maps(p, entries[0].time_label)
        figs += p.figures
    return figs


DIFF_MAPS = [
    # metric, ratio?, title, colour-bar label
    ("z_rms", True, r"RMS of $z_k$", "ratio B / A (log scale, 1 = equal)"),
    ("z_grad_rms", True, r"Gradient RMS of $\partial L/\partial z_k$", "ratio B / A (log scale, 1 = equal)"),
    ("adjacent_cos", False, "Adjacent-block cosine", "difference B − A (cosine)"),
]


def _short(label: str, n: int = 38) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


def _difference_maps(p: Pair, time_label: str) -> list[Figure]:
    d = p.result.tables["differences"]
    slug = f"{_slug(p.b)}-vs-{_slug(p.a)}"
    ci = p.result.verdict["ci"]
    figs = []
    for metric, ratio, title, cbar in DIFF_MAPS:
        g = d[d.metric == metric]
        if g.empty:
            continue
        s = np.sort(g.noise_level.unique())
        val = g.pivot(index="block", columns="noise_level", values="ratio" if ratio else "diff").reindex(columns=s)
        sig = g.pivot(index="block", columns="noise_level", values="ci_excludes_zero").reindex(columns=s)
        fig = plots.heatmap(val.to_numpy(float), s, f"{title}: {'B / A' if ratio else 'B − A'}", cbar, time_label,
                            diverging=True, ratio=ratio, mask=~sig.to_numpy(bool),
                            subtitle=f"B = {_short(p.b)},  A = {_short(p.a)}",
                            mask_note=f"dots: the {ci:.0%} CI includes no change")
        figs.append(Figure(f"figures/comparison/{slug}_diff_{metric}.png",
                           f"{_plain(title)}, {p.b} (B) against the baseline {p.a} (A): "
                           f"{'ratio B / A on a log colour scale centred at 1' if ratio else 'B − A, centred at 0'}; "
                           f"red = higher in B. Dots mark cells whose {ci:.0%} interval includes no change.",
                           plots.png_bytes(fig)))
    g = d[d.metric == "loss"].sort_values("noise_level")
    if not g.empty:
        s = g.noise_level.to_numpy(float)
        panels = [
            dict(series=[plots.Series(p.a, s, g.mean_a.to_numpy(float), colour=plots.PALETTE[0]),
                         plots.Series(p.b, s, g.mean_b.to_numpy(float), colour=plots.PALETTE[1])],
                 title="Loss per noise level", xlabel=time_label, ylabel="loss"),
            dict(series=[plots.Series("B − A", s, g["diff"].to_numpy(float), g.diff_lo.to_numpy(float),
                                      g.diff_hi.to_numpy(float), plots.PALETTE[2])],
                 hlines=[(0.0, "no change", ":")], title=f"Loss difference B − A ({ci:.0%} CI)", xlabel=time_label,
                 ylabel="loss B − A"),
        ]
        fig = plots.line_panels(panels, f"{p.b} (B) vs {p.a} (A)", figsize=(11, 3.6), shared_legend=False)
        figs.append(Figure(f"figures/comparison/{slug}_loss.png", "Loss of both arms and their difference with its "
                           f"{ci:.0%} interval ({p.result.verdict['method']}).", plots.png_bytes(fig), wide=True))
    return figs


# ============================================================================================== over training

TRAINING_FIG = "figures/training/over_training.png"
TRAINING_CSV = "tables/training/over_training.csv"
LINESTYLES = ["-", "--", ":", "-."]
TRAINING_PANELS = [
    # metric, title, y label, log y, reference line
    ("inflation_ratio", "Hidden-state RMS growth", r"RMS($z_K$) / RMS($z_1$)  (ratio, ×)", True,
     (inflation.RATIO_THRESHOLD, f"{inflation.RATIO_THRESHOLD:g}× (inflating above)", ":")),
    ("gradient_early_deep", "Gradient decay", r"gradient RMS, early / deep blocks  (ratio, ×)", True,
     (gradient_decay.DECAY_THRESHOLD, f"{gradient_decay.DECAY_THRESHOLD:g}× (decaying above)", ":")),
    ("deep_adjacent_cos", "Block redundancy", r"mean $\cos(z_{k-1}, z_k)$, deep blocks", False,
     (redundancy.COS_THRESHOLD, f"cos = {redundancy.COS_THRESHOLD:g} (redundant above)", ":")),
    ("loss", "Training loss", "loss at that noise level (MSE)", False, None),
]


def training_part(training: Mapping[str, Mapping[int, StoreLike]], s_ref: float) -> TrainingPart:
    """Analyse every arm's periodic stores with :func:`analyses.training.analyze`; an arm whose stores cannot be
    read or hold none of the statistics is listed in ``missing`` instead of failing the report."""
    part = TrainingPart()
    tables = []
    for arm, by_step in training.items():
        try:
            res = training_analysis.analyze(by_step, noise_level=s_ref)
        except (StoreContentError, StoreError, FileNotFoundError) as err:
            part.missing[arm] = str(err)
            continue
        part.results[arm] = res
        tables.append(res.tables["by_step"].assign(arm=arm))
    if tables:
        df = pd.concat(tables, ignore_index=True)
        part.table = df[["arm"] + [c for c in df.columns if c != "arm"]]
        part.figure = _training_figure(part.table)
    return part


def _training_figure(table: pd.DataFrame) -> Figure | None:
    """Metric against training step: one small panel per metric, one line per arm (colour) x noise level (style)."""
    levels = sorted(table.noise_level.unique())
    arms = list(dict.fromkeys(table.arm))
    steps = sorted(table.train_step.unique())
    panels = []
    for metric, title, ylabel, logy, ref in TRAINING_PANELS:
        m = table[table.metric == metric]
        series = []
        for j, arm in enumerate(arms):
            for i, s in enumerate(levels):
                g = m[(m.arm == arm) & (m.noise_level == s)].sort_values("train_step")
                if g.empty or not np.isfinite(g.value.to_numpy(float)).any():
                    continue
                series.append(plots.Series(f"{arm} · s = {fmt_s(s)}", g.train_step.to_numpy(float),
                                           g.value.to_numpy(float), colour=plots.PALETTE[j % len(plots.PALETTE)],
                                           ls=LINESTYLES[i % len(LINESTYLES)]))
        if series:
            panels.append(dict(series=series, title=title, xlabel="training step (optimizer steps)", ylabel=ylabel,
                               logy=logy, hlines=[ref] if ref else [],
                               xticks=steps if len(steps) <= 8 else None))
    if not panels:
        return None
    fig = plots.line_panels(panels, f"Over training — colour: arm; line style: {time_axis_label()}",
                            figsize=(3.6 * len(panels) + 0.6, 3.9), shared_legend=True)
    return Figure(TRAINING_FIG, "The headline statistics of the periodic probe stores against the training step "
                  "(ratios on a log scale): RMS growth from block 1 to K, early / deep gradient RMS, mean adjacent "
                  "cosine over the deep blocks and the loss, one line per arm and noise level s (0 = data, 1 = pure "
                  "noise). The periodic probes use a few noise levels and fewer samples than the final probe.",
                  plots.png_bytes(fig), wide=True)


# ============================================================================================== tables


SYMPTOMS = [
    # (analysis, symptom, paper text, verdict key saying "present")
    ("inflation", "Forward magnitude inflation", inflation.PAPER, "inflating"),
    ("gradient_decay", "Backward gradient decay", gradient_decay.PAPER, "decaying"),
    ("redundancy", "Block redundancy", redundancy.PAPER, "redundant"),
    ("routing", "Source use / routing", routing.PAPER, None),
    ("decodability", "Timestep decodability", decodability.PAPER, None),
]


def findings_table(entries: list[StoreEntry]) -> pd.DataFrame:
    """One row per (store, symptom, finding sentence) with the paper's number and whether the rule fires."""
    rows = []
    for e in entries:
        for key, symptom, paper, flag in SYMPTOMS:
            res = e.results.get(key)
            if res is None:
                rows.append(dict(store=e.name, symptom=symptom, finding=f"not measured: {e.missing.get(key, '')}",
                                 paper=paper, present=""))
                continue
            present = ("yes" if res.verdict.get(flag) else "no") if flag else ""
            for j, text in enumerate(res.findings):
                rows.append(dict(store=e.name, symptom=symptom if j == 0 else "", finding=text,
                                 paper=paper if j == 0 else "", present=present if j == 0 else ""))
        if has_values(e.ds, "loss"):
            s = noise_levels(e.ds)
            y = np.asarray(e.ds["loss"].values, float)
            rows.append(dict(store=e.name, symptom="Loss", finding=f"loss averages {np.nanmean(y):.4g} over {len(s)} "
                             f"noise levels ({sci(y[0])} at noise level {fmt_s(s[0])}, {sci(y[-1])} at "
                             f"{fmt_s(s[-1])})", paper="", present=""))
    return pd.DataFrame(rows)


def summary_table(entries: list[StoreEntry]) -> pd.DataFrame:
    """Headline numbers, one column per store."""
    def get(e, key, field, fmt):
        r = e.results.get(key)
        v = r.verdict.get(field) if r else None
        if v is None:
            return "—"
        return fmt(v) if not isinstance(v, str) else v

    rows = [
        ("model", lambda e: str(e.ds.attrs.get("model", "?"))),
        ("routing", lambda e: str(e.ds.attrs.get("routing") or (e.ds.attrs.get("config") or {}).get("routing", "?"))),
        ("blocks × noise levels × samples", lambda e: f"{depth(e.ds)} × {e.ds.sizes.get('noise_level', 0)} × "
                                                      f"{e.ds.sizes.get('sample', 0)}"),
        ("reference noise level", lambda e: get(e, "inflation", "noise_level", fmt_s)),
        ("RMS growth, block 1 → K", lambda e: get(e, "inflation", "ratio_last_first", times)),
        ("rising block steps", lambda e: get(e, "inflation", "monotone_fraction", lambda v: f"{v:.0%}")),
        ("gradient RMS, early / deep", lambda e: get(e, "gradient_decay", "ratio_early_deep", times)),
        ("largest gradient drop into block", lambda e: get(e, "gradient_decay", "drop_block", lambda v: str(int(v)))),
        ("adjacent cosine, deep blocks", lambda e: get(e, "redundancy", "deep_adjacent_cos", lambda v: f"{v:.3f}")),
        ("effectively distinct blocks", lambda e: get(e, "redundancy", "effective_blocks", lambda v: f"{v:.1f}")),
        ("routing / importance entropy (÷ uniform)",
         lambda e: get(e, "routing", "mean_normalized_entropy", lambda v: f"{v:.0%}")),
        ("decodability R², raw x_t", lambda e: get(e, "decodability", "baseline_r2", lambda v: f"{v:.3f}")),
        ("decodability R² > 0.95 from block", lambda e: get(e, "decodability", "first_block_above_0.95",
                                                            lambda v: str(int(v)) if v else "never")),
        ("loss, mean over noise levels", lambda e: f"{float(np.nanmean(e.ds['loss'].values)):.4g}"
         if has_values(e.ds, "loss") else "—"),
    ]
    data = {"quantity": [r[0] for r in rows]}
    for e in entries:
        data[e.name] = [r[1](e) for r in rows]
    data["paper: SiT-XL/2 residual"] = [PAPER_SUMMARY.get(r[0], "") for r in rows]
    return pd.DataFrame(data)


# The paper's numbers for the summary rows (DAR-METHOD.md section 6; SiT-XL/2 at t = 1.0, i.e. noise level 0).
PAPER_SUMMARY = {
    "model": "SiT-XL/2", "routing": "residual", "blocks × noise levels × samples": "28 × 1 × 4096",
    "reference noise level": "0 (SiT t = 1.0)", "RMS growth, block 1 → K": "≈100× (15.5 → 1576)",
    "rising block steps": "monotone", "gradient RMS, early / deep": ">10×",
    "largest gradient drop into block": "≈ 6 (after ~5 blocks)",
    "adjacent cosine, deep blocks": "> 0.9", "decodability R², raw x_t": "≈ 0.80",
    "decodability R² > 0.95 from block": "≤ 5",
}


def _write_store_files(outdir: OutDir, e: StoreEntry) -> None:
    for name, res in e.results.items():
        for tname, df in res.tables.items():
            outdir.csv(f"tables/{e.slug}/{name}_{tname}.csv", df)
        outdir.csv(f"tables/{e.slug}/{name}_verdict.csv", res.verdict_frame())
    for f in e.figures:
        outdir.write(f.rel, f.png)


def _write_pair_files(outdir: OutDir, p: Pair, arms) -> None:
    if p.result is None:
        return
    slug = f"{_slug(p.b)}-vs-{_slug(p.a)}"
    for tname, df in p.result.tables.items():
        outdir.csv(f"tables/comparison/{slug}_{tname}.csv", df)


# ============================================================================================== HTML

CSS = """
:root{--ink:#1d2733;--muted:#5b6b7b;--line:#d9e0e7;--bg:#f6f8fa;--accent:#1f4e79}
*{box-sizing:border-box}
body{margin:0;font-family:"DejaVu Sans","Segoe UI",Helvetica,Arial,sans-serif;color:var(--ink);background:#fff;
 font-size:14px;line-height:1.45}
header{background:var(--accent);color:#fff;padding:18px 32px 14px}
header h1{margin:0 0 4px;font-size:22px}
header p{margin:2px 0;color:#dce6f0;font-size:13px}
nav{padding:8px 32px;background:var(--bg);border-bottom:1px solid var(--line);font-size:13px}
nav a{margin-right:14px;color:var(--accent);text-decoration:none}
main{padding:8px 32px 40px;max-width:1500px}
h2{font-size:19px;border-bottom:2px solid var(--accent);padding-bottom:4px;margin:30px 0 10px}
h3{font-size:15px;margin:20px 0 8px;color:var(--accent)}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid var(--line);padding:5px 9px;text-align:left;vertical-align:top}
th{background:var(--bg);font-weight:600}
tr:nth-child(even) td{background:#fbfcfd}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.badge{display:inline-block;padding:1px 8px;border-radius:9px;font-size:12px;font-weight:600}
.yes{background:#fbe3e1;color:#a61b1b}.no{background:#e2f3e7;color:#1b6b35}.na{background:#eceff2;color:#5b6b7b}
.note{background:#fff8e5;border-left:4px solid #e0b341;padding:8px 12px;margin:10px 0;font-size:13px}
.read{background:var(--bg);border:1px solid var(--line);padding:10px 14px;margin:12px 0;font-size:13px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:16px}
figure{margin:0;padding:8px;border:1px solid var(--line);border-radius:4px;background:#fff}
figure.wide{grid-column:1/-1}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{font-size:12px;color:var(--muted);margin-top:6px}
.prov{display:grid;grid-template-columns:max-content minmax(0,1fr) max-content minmax(0,1fr);gap:3px 14px;
 font-size:12.5px;margin:6px 0;background:var(--bg);border:1px solid var(--line);padding:8px 12px}
.prov div:nth-child(odd){color:var(--muted)}
.prov div{overflow-wrap:anywhere}
code{background:var(--bg);padding:0 3px;border-radius:3px;font-size:12px}
details{margin:6px 0}summary{cursor:pointer;color:var(--accent)}
ul.f{margin:0;padding-left:16px}ul.f li{margin:2px 0}
table.findings td:first-child{width:150px}table.findings td:nth-child(3){width:300px;color:var(--muted)}
table.findings td:last-child{white-space:nowrap}
footer{color:var(--muted);font-size:12px;padding:16px 32px;border-top:1px solid var(--line)}
"""

PROVENANCE_KEYS = ["model", "status", "checkpoint", "checkpoint_sha256", "checkpoint_layout", "weights", "routing",
                   "chunk_size", "query", "summary", "time_convention", "noise_level_definition",
                   "model_time_definition", "data", "data_kind", "data_split", "labels", "samples", "num_samples",
                   "batch_size", "max_batch", "pooled_samples", "projection_dim", "projection_seed", "seed",
                   "precision", "device", "loss", "created", "completed", "dartool_version", "torch_version",
                   "zarr_version", "schema_version"]


def _e(x) -> str:
    return html.escape(str(x))


def _plain(text: str) -> str:
    """A mathtext figure title as plain text for HTML captions ($\\partial L/\\partial z_k$ -> ∂L/∂z_k)."""
    text = text.replace("\\partial ", "∂").replace("\\partial", "∂").replace("\\cos", "cos").replace("$", "")
    text = re.sub(r"_\{([^}]{2,})\}", r"_(\1)", text)
    return re.sub(r"[{}]", "", text).replace("-1", "−1")


def _img(f: Figure) -> str:
    b64 = base64.b64encode(f.png).decode("ascii")
    alt = _e(f.caption.split(":")[0][:120])
    return (f'<figure class="{"wide" if f.wide else ""}"><img src="data:image/png;base64,{b64}" alt="{alt}" '
            f'data-file="{_e(f.rel)}"><figcaption>{_e(f.caption)} <a href="{_e(f.rel)}">PNG</a></figcaption></figure>')


def _table(df: pd.DataFrame, num_cols: Sequence[str] = (), badge_col: str | None = None) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        cells = []
        for c, v in zip(df.columns, row):
            if c == badge_col and v in ("yes", "no"):
                cells.append(f'<td><span class="badge {v}">{"symptom present" if v == "yes" else "absent"}</span></td>')
            elif c in num_cols:
                cells.append(f'<td class="num">{_e(v)}</td>')
            else:
                cells.append(f"<td>{_e(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _findings_html(f: pd.DataFrame) -> str:
    """The findings of one store: one row per symptom (merged cells), one line per finding sentence."""
    groups: list[list] = []
    for r in f.itertuples(index=False):
        if r.symptom or not groups:
            groups.append([r.symptom, [r.finding], r.paper, r.present])
        else:
            groups[-1][1].append(r.finding)
    rows = []
    for symptom, texts, paper, present in groups:
        badge = (f'<span class="badge {present}">{"symptom present" if present == "yes" else "absent"}</span>'
                 if present in ("yes", "no") else '<span class="badge na">—</span>')
        lines = "".join(f"<li>{_e(t)}</li>" for t in texts)
        rows.append(f"<tr><td><b>{_e(symptom)}</b></td><td><ul class='f'>{lines}</ul></td><td>{_e(paper)}</td>"
                    f"<td>{badge}</td></tr>")
    return ("<table class='findings'><thead><tr><th>symptom</th><th>measured in this store</th>"
            "<th>paper (SiT-XL/2 residual, §3)</th><th>verdict</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table>")


def _provenance(e: StoreEntry) -> str:
    """Every root attribute of the store (the known ones first), the grid, and the model config folded away."""
    a = e.ds.attrs
    skip = {"config", "store_path"}
    keys = [k for k in PROVENANCE_KEYS if k in a] + sorted(k for k in a if k not in PROVENANCE_KEYS and k not in skip)
    items = [("store", e.source)] + [(k, _attr_text(a[k])) for k in keys]
    s = noise_levels(e.ds)
    items.append(("grid", f"{len(s)} noise levels {fmt_s(s[0])} … {fmt_s(s[-1])}, {depth(e.ds)} blocks, "
                          f"{e.ds.sizes.get('sample', 0)} samples"))
    cells = "".join(f"<div>{_e(k)}</div><div>{_e(v)}</div>" for k, v in items)
    cfg = a.get("config")
    cfg_html = (f"<details><summary>model config</summary><pre>{_e(json.dumps(cfg, indent=1, default=str))}</pre>"
                "</details>") if cfg else ""
    return f'<div class="prov">{cells}</div>{cfg_html}'


def _attr_text(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt_s(x) if isinstance(x, float) else str(x) for x in v)
    return str(v)


def _store_section(i: int, e: StoreEntry, findings: pd.DataFrame) -> str:
    f = findings[findings.store == e.name]
    figs = {fig.rel.rsplit("/", 1)[-1]: fig for fig in e.figures}
    parts = [f'<h2 id="{_e(e.slug)}">{i}. {_e(e.name)}</h2>', "<h3>Provenance</h3>", _provenance(e),
             "<h3>Findings</h3>", _findings_html(f)]
    for key, msg in e.missing.items():
        parts.append(f'<div class="note">not measured — {_e(msg)}</div>')

    def block(title: str, names: list[str]) -> None:
        chosen = [figs[n] for n in names if n in figs]
        if chosen:
            parts.append(f"<h3>{_e(title)}</h3><div class='grid'>" + "".join(_img(x) for x in chosen) + "</div>")

    block("The paper's three curves at one noise level (Figure 2 style)", ["figure2_lines.png"])
    block("Depth × noise-level maps", [f"heatmap_{h[0]}.png" for h in HEATMAPS] + ["loss.png"])
    block("Block × block similarity", ["block_matrix.png"])
    block("Which sources each block reads (Figure 3 style)", ["source_maps.png", "entropy.png"])
    block("Timestep decodability", ["decodability.png"])
    parts.append(f"<p>Tables (CSV): <code>tables/{_e(e.slug)}/</code></p>")
    return "\n".join(parts)


def _pair_section(p: Pair) -> str:
    if p.result is None:
        return f'<h3>{_e(p.b)} vs {_e(p.a)}</h3><div class="note">not compared: {_e(p.missing)}</div>'
    h = p.result.tables["headline"].copy()
    ci = p.result.verdict["ci"]

    def est(r):
        if r.kind.startswith("ratio"):
            return f"{times(r.estimate)}  [{times(r.lo)} – {times(r.hi)}]"
        return f"{r.estimate:+.4g}  [{r.lo:+.4g} – {r.hi:+.4g}]"

    tab = pd.DataFrame({
        "statistic": h.statistic,
        f"A: {p.a}": [sci(v) for v in h.a],
        f"B: {p.b}": [sci(v) for v in h.b],
        f"B vs A [{ci:.0%} CI]": [est(r) for r in h.itertuples()],
        "compared as": h.kind,
        "verdict": ["differs" if v else "no clear change" for v in h.significant],
    })
    parts = [f"<h3>{_e(p.b)} (B) vs {_e(p.a)} (A) — at noise level {fmt_s(p.result.verdict['noise_level'])}</h3>",
             _table(tab, num_cols=[f"A: {p.a}", f"B: {p.b}", f"B vs A [{ci:.0%} CI]"]),
             f"<p class='read'>Intervals: {_e(p.result.verdict['method'])}.</p>",
             "<ul>" + "".join(f"<li>{_e(x)}</li>" for x in p.result.findings[len(h):-1]) + "</ul>",
             "<div class='grid'>" + "".join(_img(f) for f in p.figures) + "</div>"]
    return "\n".join(parts)


def _training_section(part: TrainingPart) -> str:
    parts = ['<h2 id="training">Over training</h2>',
             "<div class='read'>Periodic probe stores written during training (<code>RUN/&lt;arm&gt;/probes/"
             "step_*.zarr</code>: a few noise levels, fewer samples than the final probe), one point per probed "
             "step. Noise level s: 0 = data, 1 = pure noise. Findings compare the first and last probed step at the "
             "noise level nearest the report's.</div>"]
    for arm, res in part.results.items():
        parts.append(f"<h3>{_e(arm)}</h3><ul>" + "".join(f"<li>{_e(x)}</li>" for x in res.findings) + "</ul>")
    for arm, msg in part.missing.items():
        parts.append(f'<div class="note">{_e(arm)}: not shown over training — {_e(msg)}</div>')
    if part.figure is not None:
        parts.append("<div class='grid'>" + _img(part.figure) + "</div>")
    if part.table is not None:
        parts.append(f"<p>Table (CSV): <code>{_e(TRAINING_CSV)}</code> (one row per arm, step, noise level and "
                     "metric)</p>")
    return "\n".join(parts)


def render_html(entries, arms, base, pairs, comp_figs, summary, findings, s_ref, title,
                training: TrainingPart | None = None) -> str:
    """The whole page as one string (no scripts, no external resources)."""
    names = " vs ".join(arms) if len(arms) > 1 else entries[0].name
    title = title or f"dartool report — {names}"
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    nav = ['<a href="#summary">Summary</a>']
    if len(arms) > 1:
        nav.append('<a href="#comparison">Comparison</a>')
    if training is not None:
        nav.append('<a href="#training">Over training</a>')
    nav += [f'<a href="#{_e(e.slug)}">{i}. {_e(e.name)}</a>' for i, e in enumerate(entries, 1)]
    conv = sorted({str(e.ds.attrs.get("time_convention", "?")) for e in entries})
    body = [
        f"<header><h1>{_e(title)}</h1><p>{len(entries)} probe store{'s' if len(entries) > 1 else ''}, "
        f"{len(arms)} arm{'s' if len(arms) > 1 else ''}{'; baseline: ' + _e(base) if len(arms) > 1 else ''} · "
        f"generated {_e(now)} by dartool {_e(__version__)}</p></header>",
        "<nav>" + "".join(nav) + "</nav><main>",
        '<h2 id="summary">Summary</h2>',
        "<div class='read'><b>How to read.</b> Depth runs up the vertical axis (block 1 at the bottom). The "
        "horizontal axis is the canonical <b>noise level s: 0 = clean data → 1 = pure noise</b> "
        f"(time convention{'s' if len(conv) > 1 else ''} of the checkpoints: {_e(', '.join(conv))}; SiT t = 1 − s, "
        "so the paper's t = 1.0 is s = 0). Block numbers are 1-based. Line plots and verdicts use the noise level "
        f"nearest to {fmt_s(s_ref)}. \"Early\" blocks are the first round(K/5); \"deep\" blocks are the rest.</div>",
        _table(summary, num_cols=[c for c in summary.columns if c not in ("quantity", "paper: SiT-XL/2 residual")]),
    ]
    if len(arms) > 1:
        body.append('<h2 id="comparison">Comparison</h2>')
        body.append("<div class='grid'>" + "".join(_img(f) for f in comp_figs if f.rel.rsplit("/", 1)[-1]
                                                     in ("figure2_lines.png", "decodability.png")) + "</div>")
        for p in pairs:
            body.append(_pair_section(p))
    if training is not None:
        body.append(_training_section(training))
    for i, e in enumerate(entries, 1):
        body.append(_store_section(i, e, findings))
    body.append("</main><footer>Self-contained report: every figure is embedded; the PNGs and tidy CSV tables are "
                "in <code>figures/</code> and <code>tables/</code> beside this file. Method and paper numbers: "
                "Xu et al., <i>Rethinking Cross-Layer Information Routing in Diffusion Transformers</i> (2026), "
                "§3.</footer>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>" + "\n".join(body) + "</body></html>")


__all__ = ["make_report", "ReportOutput", "TrainingPart", "training_part", "store_figures", "findings_table", "summary_table",
           "render_html", "REPORT_FILE"]
