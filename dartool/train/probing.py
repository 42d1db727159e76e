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


def periodic_stores(run_dir: str | Path, arms: list[str] | None = None,
                    warn=None) -> dict[str, dict[int, Path]]:
    """The periodic probe stores of a ``dartool train`` run folder: ``{arm folder name: {train step: store}}``.

    Reads ``RUN/<arm>/probes/step_*.zarr`` (of the named arm folders, or of every folder that has ``probes/``).
    Only stores whose ``status`` is ``"complete"`` are kept; an unreadable or unfinished one is skipped with a
    one-line message to ``warn``. The step is the store's ``train_step`` attribute (else the file name's number).
    Arms without any usable store are left out.
    """
    from ..store import read_attrs

    run_dir = Path(run_dir)
    warn = warn or (lambda msg: None)
    if arms is not None:
        folders = [run_dir / a for a in arms]
    else:
        folders = sorted(p for p in run_dir.iterdir() if (p / "probes").is_dir()) if run_dir.is_dir() else []
    out: dict[str, dict[int, Path]] = {}
    for folder in folders:
        by_step: dict[int, Path] = {}
        for path in sorted((folder / "probes").glob("step_*.zarr")):
            try:
                attrs = read_attrs(path)
            except Exception as e:  # noqa: BLE001 - any unreadable store is skipped with its reason
                warn(f"warning: skipping periodic probe store {path}: unreadable ({e})")
                continue
            if attrs.get("status") != "complete":
                warn(f"warning: skipping periodic probe store {path}: status {attrs.get('status')!r}, not complete")
                continue
            step = attrs.get("train_step")
            try:
                step = int(step) if step is not None else int(path.stem.split("_", 1)[1])
            except ValueError:
                warn(f"warning: skipping periodic probe store {path}: no train_step attribute or step in its name")
                continue
            by_step[step] = path
        if by_step:
            out[folder.name] = dict(sorted(by_step.items()))
    return out
