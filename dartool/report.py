"""``dartool report STORE [STORE ...] --out DIR``: a self-contained HTML report (figures embedded, opens from
disk with no network) plus PNGs and CSVs, from one or more probe stores.

This module holds the typer command only, so that ``dartool --help`` stays fast; the builder (analyses,
figures, HTML) is :mod:`dartool.report_build`, re-exported here: ``from dartool.report import make_report``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import typer

_LAZY = ("make_report", "ReportOutput", "REPORT_FILE", "findings_table", "summary_table", "render_html",
         "store_figures")


def __getattr__(name: str):
    if name in _LAZY:
        from . import report_build

        return getattr(report_build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def report_command(
    stores: list[Path] = typer.Argument(..., metavar="STORE",
                                        help="Probe stores (zarr folders written by `dartool probe`)."),
    out: Path = typer.Option(..., "--out", help="Report directory (report.html + figures/ + tables/)."),
    label: Optional[list[str]] = typer.Option(
        None, "--label", metavar="LABEL", help="Arm label of each store, in order (repeat once per store). "
        "Default: the store's model label. Stores with the same label are seeds of one arm."),
    baseline: Optional[str] = typer.Option(
        None, help="The arm the others are compared with: a label or a 1-based store number. Default: the first."),
    noise_level: float = typer.Option(
        0.0, help="Noise level of the line plots and verdicts (0 = data, 1 = pure noise; the paper's SiT t = 1.0 "
        "is 0)."),
    blocks: Optional[str] = typer.Option(
        None, help="1-based blocks for the source x noise-level maps, e.g. '3,13'. Default: 3 and 13 if the model "
        "has 13 blocks, else about K/4 and K/2."),
    n_boot: int = typer.Option(1000, help="Bootstrap draws for the comparison intervals."),
    seed: int = typer.Option(0, help="Seed of the bootstrap and of the decodability train/test split."),
    partial: bool = typer.Option(False, "--partial", help="Also read stores whose probe is still in progress."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace files of an existing report directory."),
    title: Optional[str] = typer.Option(None, help="Title of the report."),
    training: Optional[Path] = typer.Option(
        None, "--training", metavar="RUN_DIR", help="A `dartool train` run folder: add an 'Over training' section "
        "from its periodic probe stores RUN_DIR/<arm>/probes/step_*.zarr (arm = folder name; unfinished or "
        "unreadable stores are skipped with a warning)."),
) -> None:
    """Write an HTML report (with PNGs and CSVs) of one or more probe stores; compares arms when there are several."""
    from .cli import _errors, console
    from .report_build import make_report

    with _errors():
        blk = _parse_blocks(blocks)
        by_arm = _training_stores(training, lambda msg: console.print(msg, style="yellow", markup=False, highlight=False)) if training else None
        res = make_report(stores, out, labels=label, baseline=baseline, noise_level=noise_level, blocks=blk,
                          n_boot=n_boot, seed=seed, allow_partial=partial, overwrite=overwrite, title=title,
                          training=by_arm)
    console.print(f"wrote {res.html} ({len(res.files)} files, {res.seconds:.1f} s)")


def _training_stores(run_dir: Path, warn) -> dict:
    """``--training RUN_DIR``: {arm folder name: {step: store}}; an error when there is no usable store."""
    from .train.probing import periodic_stores

    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"--training {run_dir}: no such run folder")
    found = periodic_stores(run_dir, warn=warn)
    if not found:
        raise ValueError(f"--training {run_dir}: no complete periodic probe stores (<arm>/probes/step_*.zarr; "
                         "train with --probe-every N)")
    return found


def _parse_blocks(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in re.split(r"[,\s]+", text.strip()) if x]
    except ValueError:
        raise ValueError(f"--blocks {text!r}: give 1-based block numbers separated by commas, e.g. 3,13") from None


__all__ = ["report_command", *_LAZY]
