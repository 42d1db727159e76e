"""Figures of the report (matplotlib, Agg backend). Every function returns a ``Figure``.

Conventions: depth on the vertical axis with block 1 at the bottom; the noise level on the horizontal axis
(0 = data → 1 = pure noise, labelled with :func:`dartool.diffusion.time_axis_label`); colour bars carry units;
RMS and gradient maps use a log colour scale; differences use a diverging map centred at zero (at ratio 1 for
ratios).
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import colors, ticker  # noqa: E402

STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
    "legend.fontsize": 8, "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": 100,
    "savefig.dpi": 130, "axes.titleweight": "bold", "figure.facecolor": "white",
}
NAN_COLOUR = "#e6e6e6"
PALETTE = ["#1f4e79", "#c0392b", "#2e8b57", "#8e44ad", "#d35400", "#16a085", "#7f8c8d", "#b7950b"]
# Mathtext labels (rendered by matplotlib, no LaTeX needed).
RMS_LABEL = r"RMS of $z_k$ (a.u.)"
GRAD_LABEL = r"RMS of $\partial L/\partial z_k$"
ADJ_COS = r"$\cos(z_{k-1}, z_k)$"


@dataclass
class Series:
    """One line of a line plot: a label, x, y, an optional (lo, hi) band, and a colour."""

    label: str
    x: np.ndarray
    y: np.ndarray
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    colour: str | None = None
    thin: bool = False
    ls: str = "-"


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes (and the figure closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    plt.close(fig)
    return buf.getvalue()


def _edges(v: np.ndarray) -> np.ndarray:
    """Cell edges around (possibly uneven) centres."""
    v = np.asarray(v, dtype=float)
    if len(v) == 1:
        return np.array([v[0] - 0.5, v[0] + 0.5])
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])


def depth_ticks(n: int, start: int = 1) -> list[int]:
    """Readable ticks start..start+n-1: every value up to 16, else 1 and the multiples of a stride (the last
    value always shown, replacing a multiple that would crowd it)."""
    last = start + n - 1
    if n <= 16:
        return list(range(start, last + 1))
    step = 4 if n <= 40 else 8 if n <= 80 else 16
    ticks = [start] + list(range(step, last + 1, step))
    if ticks[-1] != last:
        if last - ticks[-1] < step / 2:
            ticks[-1] = last
        else:
            ticks.append(last)
    return ticks


def _tick_text(v: float, plain: bool) -> str:
    """A log-axis tick: a plain number (0.002, 15, 1500) on axes that stay within 1e-3..1e4, else 10^k."""
    if v <= 0 or not np.isfinite(v):
        return ""
    if plain:
        return f"{v:g}"
    e = np.log10(v)
    if abs(e - round(e)) < 1e-9:
        return rf"$10^{{{int(round(e))}}}$"
    m = v / 10 ** np.floor(e)
    return rf"${m:.0f}\times10^{{{int(np.floor(e))}}}$"


def plain_log_ticks(axis, lo: float, hi: float) -> None:
    """Readable log-axis labels: plain numbers when the range allows, the same notation on every tick, and
    labelled 2/3/5 minor ticks when the axis spans less than two decades."""
    plain = lo >= 1e-3 and hi < 1e4
    fmt = ticker.FuncFormatter(lambda v, _: _tick_text(v, plain))
    axis.set_major_formatter(fmt)
    if lo > 0 and hi / lo < 100:
        axis.set_minor_locator(ticker.LogLocator(base=10, subs=(2.0, 3.0, 5.0)))
        axis.set_minor_formatter(fmt)
    else:
        axis.set_minor_formatter(ticker.NullFormatter())


def _norm(values: np.ndarray, log: bool, diverging: bool, ratio: bool):
    """A colour norm: symmetric around 0 (or around ratio 1, in log space) for differences, log or linear."""
    v = np.asarray(values, dtype=float)
    fin = v[np.isfinite(v)]
    if fin.size == 0:
        return colors.Normalize(0, 1)
    if diverging and ratio:
        pos = fin[fin > 0]
        m = float(np.max(np.abs(np.log10(pos)))) if pos.size else 1.0
        m = max(m, 0.05)
        return colors.LogNorm(10 ** -m, 10**m)
    if diverging:
        m = float(np.max(np.abs(fin))) or 1.0
        return colors.TwoSlopeNorm(vcenter=0.0, vmin=-m, vmax=m)
    if log and (fin > 0).all():
        lo, hi = float(fin.min()), float(fin.max())
        if hi / lo < 1.01:
            lo, hi = lo / 1.1, hi * 1.1
        return colors.LogNorm(lo, hi)
    lo, hi = float(fin.min()), float(fin.max())
    if hi - lo < 1e-9:
        lo, hi = lo - 0.05, hi + 0.05
    return colors.Normalize(lo, hi)


def heatmap(grid: np.ndarray, s: np.ndarray, title: str, cbar_label: str, time_label: str, *,
            y_values: np.ndarray | None = None, ylabel: str = "block (1 = first)", yticks=None,
            yticklabels=None, log: bool = False, diverging: bool = False, ratio: bool = False,
            cmap: str = "viridis", mask: np.ndarray | None = None, mask_note: str = "", subtitle: str = "",
            limits: tuple[float, float] | None = None, figsize=(5.4, 3.7)):
    """Depth x noise-level heatmap. ``grid`` is [depth, S]; row 0 (block 1) is drawn at the bottom.

    ``mask`` marks cells (True) that get a small dot, explained by ``mask_note`` (e.g. CI includes 0).
    ``limits`` fixes a linear colour range (e.g. (0, 1) for a normalised entropy).
    """
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=figsize)
        n = grid.shape[0]
        y = np.arange(1, n + 1) if y_values is None else np.asarray(y_values, float)
        norm = colors.Normalize(*limits) if limits else _norm(grid, log, diverging, ratio)
        cm = plt.get_cmap("RdBu_r" if diverging else cmap).with_extremes(bad=NAN_COLOUR)
        mesh = ax.pcolormesh(_edges(s), _edges(y), np.ma.masked_invalid(grid), cmap=cm, norm=norm,
                             shading="flat", rasterized=True)
        cb = fig.colorbar(mesh, ax=ax, pad=0.02, fraction=0.05)
        cb.set_label(cbar_label)
        if isinstance(norm, colors.LogNorm):
            plain_log_ticks(cb.ax.yaxis, norm.vmin, norm.vmax)
        if mask is not None and mask.any():
            yy, xx = np.nonzero(mask)
            ax.scatter(np.asarray(s)[xx], y[yy], s=3, c="#333333", marker="o", linewidths=0)
        ax.set_xlabel(time_label)
        ax.set_ylabel(ylabel)
        ax.set_yticks(depth_ticks(n) if yticks is None else yticks)
        if yticklabels is not None:
            ax.set_yticklabels(yticklabels)
        sub = [x for x in (subtitle, mask_note if mask is not None and mask.any() else "") if x]
        ax.set_title(title, loc="left", pad=18 if sub else 6)
        if sub:
            ax.text(0.0, 1.015, "\n".join(sub) if len(sub) > 1 else sub[0], transform=ax.transAxes, fontsize=7.5,
                    color="#444444", va="bottom", ha="left")
            if len(sub) > 1:
                ax.set_title(title, loc="left", pad=28)
        ax.spines[["top", "right"]].set_visible(True)
        fig.tight_layout()
        return fig


def line_panels(panels: list[dict], suptitle: str, figsize=(12.5, 3.6), shared_legend: bool = False):
    """Side-by-side line plots; each panel dict: series (list of Series), title, xlabel, ylabel, logy, hlines
    ([(y, label, linestyle[, colour])]), ylim, xticks, legend, legend_loc. With ``shared_legend`` the series
    are named once, in a legend below the panels, and each panel's legend keeps only its reference lines."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(panels), figsize=figsize, squeeze=False, layout="constrained")
        shared: dict[str, object] = {}
        for ax, p in zip(axes[0], panels):
            for i, sr in enumerate(p["series"]):
                c = sr.colour or PALETTE[i % len(PALETTE)]
                (line,) = ax.plot(sr.x, sr.y, marker=None if sr.thin else "o", ms=3, lw=0.8 if sr.thin else 1.8,
                                  alpha=0.45 if sr.thin else 1.0, color=c, ls=sr.ls,
                                  label=None if sr.thin else sr.label)
                if not sr.thin:
                    shared.setdefault(sr.label, line)
                if sr.lo is not None and sr.hi is not None:
                    ax.fill_between(sr.x, sr.lo, sr.hi, color=c, alpha=0.18, lw=0)
            refs = []
            for hl in p.get("hlines", []):
                yv, lab, style = hl[:3]
                refs.append(ax.axhline(yv, color=hl[3] if len(hl) > 3 else "#555555", ls=style, lw=1.0, label=lab))
            if p.get("logy"):
                ax.set_yscale("log")
                ys = np.concatenate([np.asarray(sr.y, float) for sr in p["series"]] or [np.ones(1)])
                ys = ys[np.isfinite(ys) & (ys > 0)]
                if ys.size:
                    plain_log_ticks(ax.yaxis, float(ys.min()), float(ys.max()))
            if p.get("ylim"):
                ax.set_ylim(*p["ylim"])
            if p.get("xticks") is not None:
                ax.set_xticks(p["xticks"])
                if p.get("xticklabels") is not None:
                    ax.set_xticklabels(p["xticklabels"])
            ax.set_title(p["title"], loc="left")
            ax.set_xlabel(p["xlabel"])
            ax.set_ylabel(p["ylabel"])
            ax.grid(True, which="major", color="#dddddd", lw=0.6)
            if shared_legend:
                if refs:
                    ax.legend(handles=refs, frameon=False, loc=p.get("legend_loc", "best"))
            elif p.get("legend", True) and ax.get_legend_handles_labels()[0]:
                ax.legend(frameon=False, loc=p.get("legend_loc", "best"))
        if shared_legend and shared:
            # below the panels: above them it collides with the left-aligned suptitle once it needs two rows
            width_chars = figsize[0] * 11                                   # ~11 legend characters per inch
            ncol = max(1, min(len(shared), int(width_chars // (max(len(k) for k in shared) + 6))))
            fig.legend(list(shared.values()), list(shared), loc="outside lower center", ncol=ncol, frameon=False)
        if suptitle:
            fig.suptitle(suptitle, x=0.01, ha="left", fontsize=10, fontweight="bold")
        return fig


def source_maps(panels: list[dict], time_label: str, kind: str, figsize_per=(4.3, 3.9)):
    """Figure 3 style: one panel per block; y = sources (embedding at the bottom), x = noise level.

    Each panel dict: title, grid [n_sources, S], s, source_names. ``kind`` "alpha" (sequential 0..max) or
    "importance" (signed, relative to the largest magnitude at each noise level, diverging at 0).
    """
    with plt.rc_context(STYLE):
        n = len(panels)
        fig, axes = plt.subplots(1, n, figsize=(figsize_per[0] * n + 0.6, figsize_per[1]), squeeze=False)
        for ax, p in zip(axes[0], panels):
            g = p["grid"]
            if kind == "alpha":
                norm = colors.Normalize(0.0, max(float(np.nanmax(g)) if np.isfinite(g).any() else 1.0, 1e-3))
                cm = plt.get_cmap("viridis")
                label = "α: mean routing weight (sums to 1 over sources)"
            else:
                norm = colors.TwoSlopeNorm(vcenter=0.0, vmin=-1.0, vmax=1.0)
                cm = plt.get_cmap("RdBu_r")
                label = r"$\partial L/\partial g$ ÷ max $|\partial L/\partial g|$ at that noise level"
            cm = cm.with_extremes(bad=NAN_COLOUR)
            ys = np.arange(g.shape[0])
            mesh = ax.pcolormesh(_edges(p["s"]), _edges(ys), np.ma.masked_invalid(g), cmap=cm, norm=norm,
                                 shading="flat", rasterized=True)
            names = p["source_names"]
            step = 1 if len(names) <= 24 else 2 if len(names) <= 48 else 4
            ax.set_yticks(ys[::step])
            ax.set_yticklabels(names[::step])
            ax.set_xlabel(time_label)
            ax.set_ylabel("source")
            ax.set_title(p["title"], loc="left")
            cb = fig.colorbar(mesh, ax=ax, pad=0.02, fraction=0.06)
            cb.set_label(label)
        fig.tight_layout()
        return fig


def matrix_panels(mats: list[tuple[str, np.ndarray]], cbar_label: str, figsize_per=(3.6, 3.3)):
    """Block x block matrices side by side, block 1 at the bottom-left."""
    with plt.rc_context(STYLE):
        n = len(mats)
        fig, axes = plt.subplots(1, n, figsize=(figsize_per[0] * n + 0.8, figsize_per[1]), squeeze=False,
                                 layout="constrained")
        vals = np.concatenate([m.ravel() for _, m in mats])
        fin = vals[np.isfinite(vals)]
        norm = colors.Normalize(min(float(fin.min()), 0.0) if fin.size else 0.0, 1.0)
        mesh = None
        for ax, (title, m) in zip(axes[0], mats):
            K = m.shape[0]
            e = np.arange(0.5, K + 1.0)
            mesh = ax.pcolormesh(e, e, np.ma.masked_invalid(m), cmap="cividis", norm=norm, shading="flat",
                                 rasterized=True)
            ax.set_aspect("equal")
            ax.set_xticks(depth_ticks(K))
            ax.set_yticks(depth_ticks(K))
            ax.set_xlabel("block")
            ax.set_ylabel("block")
            ax.set_title(title, loc="left")
            ax.spines[["top", "right"]].set_visible(True)
        fig.colorbar(mesh, ax=list(axes[0]), pad=0.02, fraction=0.04).set_label(cbar_label)
        return fig
