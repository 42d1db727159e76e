"""How the diagnosis evolves over training: the periodic probe stores of one arm (``dartool train --probe-every N``
writes ``RUN/<arm>/probes/step_XXXXXXX.zarr``), one statistic per (train_step, noise_level).

Metrics (each taken from the per-noise-level table of the existing analysis, not re-defined here):

* ``inflation_ratio`` — :func:`analyses.inflation.per_noise_level` ``ratio_last_first`` = z_rms[block K] / z_rms[block 1];
* ``gradient_early_deep`` — :func:`analyses.gradient_decay.per_noise_level` ``ratio_early_deep`` (mean gradient RMS
  of the first round(K/5) blocks / that of the rest);
* ``deep_adjacent_cos`` — :func:`analyses.redundancy.per_noise_level` ``deep_adjacent_cos`` (mean adjacent-block
  cosine over the deep blocks);
* ``loss`` — the store's ``loss`` variable (the model's own training loss at that noise level).

A metric whose variable a store lacks is left out for that store (no row), not filled with NaN.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from . import gradient_decay, inflation, redundancy
from .common import (Result, StoreContentError, StoreLike, fmt_s, has_values, load, noise_levels, per_block_values,
                     times)

# metric -> how findings name it
METRICS = {
    "inflation_ratio": "hidden-state RMS growth (last / first block)",
    "gradient_early_deep": "gradient RMS ratio (early / deep blocks)",
    "deep_adjacent_cos": "mean adjacent-block cosine over the deep blocks",
    "loss": "training loss",
}
RATIO_METRICS = ("inflation_ratio", "gradient_early_deep")
COLUMNS = ["train_step", "noise_level", "metric", "value"]


def _per_noise_level(ds) -> dict[str, pd.Series]:
    """metric -> values indexed by noise level, for the metrics this store has."""
    s = noise_levels(ds)
    out: dict[str, pd.Series] = {}
    if has_values(ds, "z_rms"):
        t = inflation.per_noise_level(per_block_values(ds, "z_rms"), s)
        out["inflation_ratio"] = t.set_index("noise_level").ratio_last_first
    if has_values(ds, "z_grad_rms"):
        t = gradient_decay.per_noise_level(per_block_values(ds, "z_grad_rms"), s)
        out["gradient_early_deep"] = t.set_index("noise_level").ratio_early_deep
    if has_values(ds, "adjacent_cos"):
        t = redundancy.per_noise_level(per_block_values(ds, "adjacent_cos"), None, s)
        out["deep_adjacent_cos"] = t.set_index("noise_level").deep_adjacent_cos
    if has_values(ds, "loss"):
        out["loss"] = pd.Series(np.asarray(ds["loss"].transpose("noise_level").values, float), index=s)
    return out


def analyze(stores_by_step: Mapping[int, StoreLike], noise_level: float | None = None) -> Result:
    """The evolution of the headline statistics over training, from one arm's periodic stores ``{step: store}``.

    ``tables["by_step"]``: tidy, one row per (train_step, noise_level, metric, value), sorted by step.
    Findings and verdict compare the first and last step at the store noise level nearest ``noise_level``
    (default: the lowest one, nearest to the data).
    """
    if not stores_by_step:
        raise StoreContentError("training: no periodic probe stores given")
    rows = []
    for step in sorted(stores_by_step, key=int):
        ds = load(stores_by_step[step])
        for metric, values in _per_noise_level(ds).items():
            rows += [dict(train_step=int(step), noise_level=float(s), metric=metric, value=float(v))
                     for s, v in values.items()]
    table = pd.DataFrame(rows, columns=COLUMNS)
    if table.empty:
        raise StoreContentError("training: the periodic probe stores hold none of z_rms, z_grad_rms, adjacent_cos, "
                                "loss")
    levels = np.sort(table.noise_level.unique())
    ref = float(levels[0] if noise_level is None else levels[int(np.argmin(np.abs(levels - noise_level)))])
    steps = sorted(table.train_step.unique())
    verdict: dict = {"noise_level": ref, "first_step": int(steps[0]), "last_step": int(steps[-1]),
                     "num_steps": len(steps)}
    findings = []
    at = table[table.noise_level == ref]
    for metric, desc in METRICS.items():
        m = at[at.metric == metric].sort_values("train_step")
        if m.empty:
            continue
        a, b = m.iloc[0], m.iloc[-1]
        verdict[f"{metric}_first"] = float(a.value)
        verdict[f"{metric}_last"] = float(b.value)
        fmt = times if metric in RATIO_METRICS else (lambda v: f"{v:.3g}")
        if len(m) == 1:
            findings.append(f"{desc}: {fmt(a.value)} at step {int(a.train_step)} at noise level {fmt_s(ref)} "
                            "(only one probed step)")
        else:
            findings.append(f"{desc} went from {fmt(a.value)} at step {int(a.train_step)} to {fmt(b.value)} at step "
                            f"{int(b.train_step)} at noise level {fmt_s(ref)}")
    return Result("training", {"by_step": table}, verdict, findings)
