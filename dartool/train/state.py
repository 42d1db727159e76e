"""Training checkpoints: atomic writes, ``last.pt``, pruning, and finding a consistent point to resume from.

A training checkpoint is a dartool checkpoint (:func:`dartool.checkpoints.save_checkpoint`: ``model``, ``ema``,
``config``) plus plain entries: ``optimizer`` (its state dict), ``step``, ``arm``, ``seed``, ``train_config``,
``data_kind``, ``meters``, ``aux`` (auxiliary-loss modules), ``rng`` (torch CPU / CUDA generator states as
uint8 tensors). Everything loads with ``torch.load(weights_only=True)``.

Layout: ``RUN/<arm>/checkpoints/step_XXXXXXX.pt`` and ``last.pt`` (a hard link to the newest step file, swapped
in atomically; a copy where links are impossible). A step file is written to a temporary name, fsynced and
renamed, so a full disk or a killed process never leaves a half-written file under a checkpoint name; ``last.pt``
moves only after its step file is complete.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..checkpoints import atomic_save, save_checkpoint

STEP_RE = re.compile(r"^step_(\d{7,})\.pt$")


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, permissions); the previous one is intact."""


def step_path(folder: Path, step: int) -> Path:
    return folder / f"step_{step:07d}.pt"


def step_files(folder: Path) -> dict[int, Path]:
    """``{step: path}`` of the complete step files in ``folder`` (temporary files are ignored)."""
    if not folder.is_dir():
        return {}
    out = {}
    for p in folder.iterdir():
        m = STEP_RE.match(p.name)
        if m:
            out[int(m.group(1))] = p
    return out


def rng_state() -> dict[str, Any]:
    st: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return st


def set_rng_state(st: dict[str, Any] | None) -> None:
    if not st:
        return
    torch.set_rng_state(st["torch"].cpu())
    if "cuda" in st and torch.cuda.is_available() and len(st["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in st["cuda"]])


def _link_last(src: Path, last: Path) -> None:
    """Point ``last`` at ``src`` atomically (hard link, else an atomic copy)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{last.name}.", suffix=".tmp", dir=last.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        os.link(src, tmp)
        os.replace(tmp, last)
    except OSError:
        if os.path.exists(tmp):
            os.unlink(tmp)
        atomic_save(torch.load(src, map_location="cpu", weights_only=True), last)


def write_checkpoint(folder: Path, step: int, model, *, ema=None, keep: int = 0, **extra: Any) -> Path:
    """Write ``step_XXXXXXX.pt`` then move ``last.pt`` to it; prune to ``keep`` step files (0 = keep all)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = step_path(folder, step)
    try:
        save_checkpoint(path, model, ema=ema, overwrite=True, step=step, **extra)
        _link_last(path, folder / "last.pt")
    except OSError as e:
        raise CheckpointWriteError(
            f"could not write checkpoint {path} ({e.strerror or e}); the previous checkpoint is intact"
        ) from None
    if keep > 0:
        steps = sorted(step_files(folder))
        for s in steps[:-keep]:
            try:
                step_files(folder)[s].unlink()
            except OSError:
                pass
    return path


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any] | None:
    """The checkpoint object, or None if the file is unreadable (truncated, corrupt)."""
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
    except Exception:  # noqa: BLE001 - a damaged file is skipped, the caller falls back
        return None
    if not isinstance(obj, dict) or "model" not in obj or "step" not in obj:
        return None
    return obj


def find_resume_point(folders: list[Path], device: torch.device | str = "cpu",
                      log=None) -> tuple[int, list[dict[str, Any]]] | None:
    """The newest step at which *every* folder holds a readable checkpoint, and those checkpoints.

    Arms train in lockstep and are saved at the same steps, so a crash between two arms' writes resumes all
    arms from the last step they have in common. Unreadable files are reported and skipped.
    """
    per = [step_files(f) for f in folders]
    if not per or not all(per):
        return None
    common = sorted(set.intersection(*(set(p) for p in per)), reverse=True)
    for step in common:
        objs = []
        for f, p in zip(folders, per):
            obj = read_checkpoint(p[step], device)
            if obj is None:
                if log:
                    log(f"warning: {p[step]} is unreadable (truncated?); trying an older checkpoint")
                break
            objs.append(obj)
        else:
            return step, objs
    return None
