"""Probing during and after training, through the probe's public API (:func:`dartool.probe.run_probe`).

* periodic (``--probe-every N``): a few noise levels (``--probe-levels``, default 0.1, 0.5, 0.9) on
  ``--probe-samples`` training images, one store per step: ``RUN/<arm>/probes/step_XXXXXXX.zarr``; the stores
  carry ``train_step`` / ``run`` attributes so the evolution of inflation / decay / redundancy can be plotted;
* final (``--probe``, implied by ``--report``): the probe's full default grid (32 noise levels, 256 samples):
  ``RUN/<arm>/probe.zarr``.

The weights probed are the EMA weights (``--eval-weights model`` probes the raw weights).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import TrainConfig


class ProbeUnavailable(RuntimeError):
    """``dartool.probe`` is missing from this installation."""


def probe_model(model, data, out: Path, cfg: TrainConfig, *, final: bool, step: int, run: str,
                checkpoint: str | None = None, log=None) -> Path | None:
    """Write one probe store of ``model`` (in memory) on ``data``; returns its path."""
    try:
        from ..probe import ProbeConfig, run_probe
    except ImportError as e:
        raise ProbeUnavailable(f"dartool.probe cannot be imported ({e})") from None
    n = len(data)
    if final:
        m = min(cfg.probe_final_samples, n)
        pc = ProbeConfig(num_samples=m, batch_size=min(64, m), seed=0, device="auto",
                         pooled_samples=min(cfg.probe_pooled_samples, m),
                         projection_dim=cfg.probe_projection_dim, progress=True, overwrite=True)
    else:
        m = min(cfg.probe_samples, n)
        pc = ProbeConfig(noise_levels=list(cfg.probe_noise_levels), num_samples=m, batch_size=min(64, m), seed=0,
                         device="auto", progress=False, overwrite=True, background_writes=False)
    attrs: dict[str, Any] = dict(train_step=int(step), run=run, final=bool(final), weights=cfg.eval_weights,
                                 train_checkpoint=checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    return run_probe(model, data, pc, out, log=log or (lambda msg: None), attrs=attrs)
