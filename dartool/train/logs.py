"""Metrics of a run: on-device meters, the JSONL/CSV log of each arm, and the progress display.

``RUN/<arm>/log.jsonl`` holds every record (``kind``: ``train`` | ``eval`` | ``probe`` | ``event``);
``RUN/<arm>/metrics.csv`` the training rows only (fixed columns). TensorBoard scalars are optional.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from . import ddp as D


def band_names(n: int) -> list[str]:
    """Column names of the loss per band of noise level s, e.g. ``loss_s0.00_0.25``."""
    edges = [i / n for i in range(n + 1)]
    return [f"loss_s{a:.2f}_{b:.2f}" for a, b in zip(edges[:-1], edges[1:])]


class Meters:
    """Sums kept on the device between log steps (no host sync per step), plus the non-finite watch.

    ``bad`` is set when a loss or gradient norm is not finite; ``first_bad`` keeps the first such step.
    """

    def __init__(self, bands: int, device: torch.device, aux_names: tuple[str, ...] = ()) -> None:
        self.bands, self.device, self.aux_names = bands, device, tuple(aux_names)
        f64 = dict(device=device, dtype=torch.float64)
        self.band_sum = torch.zeros(bands, **f64)
        self.band_n = torch.zeros(bands, **f64)
        self.gnorm = torch.zeros((), **f64)
        self.aux = torch.zeros(max(1, len(self.aux_names)), **f64)
        self.steps = 0
        self.first_bad = torch.full((), -1, device=device, dtype=torch.long)
        self.seconds = 0.0   # time spent in this arm's steps since the last log

    @torch.no_grad()
    def add(self, step: int, per_sample: torch.Tensor, s: torch.Tensor, gnorm: torch.Tensor,
            aux: dict[str, torch.Tensor] | None = None) -> None:
        per = per_sample.detach().double()
        band = (s.detach().double() * self.bands).long().clamp_(0, self.bands - 1)
        self.band_sum.index_add_(0, band, per)
        self.band_n.index_add_(0, band, torch.ones_like(per))
        g = gnorm.detach().double()
        self.gnorm += g
        for i, name in enumerate(self.aux_names):
            if aux and name in aux:
                self.aux[i] += aux[name].detach().double()
        self.steps += 1
        bad = ~torch.isfinite(per.sum()) | ~torch.isfinite(g)
        self.first_bad = torch.where(bad & (self.first_bad < 0), torch.full_like(self.first_bad, step), self.first_bad)

    def check_finite(self, d: D.Dist) -> int | None:
        """The first step with a non-finite loss or gradient on any rank (one host sync), else None."""
        flag = (self.first_bad >= 0).double().reshape(1)
        D.all_reduce(d, flag, "max")
        if float(flag) == 0.0:
            return None
        return int(self.first_bad) if int(self.first_bad) >= 0 else -1

    def collect(self, d: D.Dist) -> dict[str, float]:
        """Reduce over ranks, return means since the last call, and reset."""
        packed = torch.cat([self.band_sum, self.band_n, self.gnorm.reshape(1), self.aux])
        D.all_reduce(d, packed, "sum")
        b = self.bands
        sums, ns = packed[:b], packed[b: 2 * b]
        out: dict[str, float] = {"loss": float(sums.sum() / ns.sum().clamp_min(1))}
        for name, sm, n in zip(band_names(b), sums.tolist(), ns.tolist()):
            out[name] = sm / n if n else float("nan")
        steps = max(1, self.steps)
        out["grad_norm"] = float(packed[2 * b]) / d.world_size / steps
        for i, name in enumerate(self.aux_names):
            out[f"loss_{name}"] = float(packed[2 * b + 1 + i]) / d.world_size / steps
        self.reset()
        return out

    def reset(self) -> None:
        for t in (self.band_sum, self.band_n, self.gnorm, self.aux):
            t.zero_()
        self.steps = 0
        self.seconds = 0.0

    def state_dict(self) -> dict[str, Any]:
        return dict(band_sum=self.band_sum.cpu(), band_n=self.band_n.cpu(), gnorm=self.gnorm.cpu(),
                    aux=self.aux.cpu(), steps=self.steps)

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        for k in ("band_sum", "band_n", "gnorm", "aux"):
            getattr(self, k).copy_(sd[k].to(self.device))
        self.steps = int(sd["steps"])


class StepTimer:
    """Wall time of one arm's steps; CUDA events (no host sync per step) or perf_counter on the CPU.

    The first step this timer sees is also kept apart (``first_seconds``, set by the :meth:`take` that covers it):
    it holds torch.compile's compiling and CUDA graphs' recording, so a run's throughput leaves it out.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.pending: list[tuple[Any, Any]] = []
        self.cpu_seconds = 0.0
        self._t0: Any = None
        self.first_seconds: float | None = None
        self._first: Any = None             # the first step's (start, end) events / seconds until a take() reads it

    def start(self) -> None:
        if self.cuda:
            self._t0 = torch.cuda.Event(enable_timing=True)
            self._t0.record()
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> None:
        first = self.first_seconds is None and self._first is None
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.pending.append((self._t0, end))
            if first:
                self._first = (self._t0, end)
        else:
            secs = time.perf_counter() - self._t0
            self.cpu_seconds += secs
            if first:
                self._first = secs

    def take(self) -> float:
        """Seconds since the last call (synchronises the CUDA events); sets ``first_seconds`` once the first step
        is among them."""
        if self.cuda:
            secs = 0.0
            for a, b in self.pending:
                b.synchronize()
                secs += a.elapsed_time(b) / 1000.0
            self.pending = []
        else:
            secs, self.cpu_seconds = self.cpu_seconds, 0.0
        if self._first is not None:
            f = self._first
            self.first_seconds = f[0].elapsed_time(f[1]) / 1000.0 if self.cuda else f
            self._first = None
        return secs


class RunLogger:
    """Append-only ``log.jsonl`` + ``metrics.csv`` (+ TensorBoard) of one arm; rank 0 only."""

    def __init__(self, folder: Path, bands: int, aux_names: tuple[str, ...] = (), tensorboard: bool = False) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.jsonl = folder / "log.jsonl"
        self.csv = folder / "metrics.csv"
        self.columns = (["step", "epoch", "loss"] + band_names(bands) + ["grad_norm"]
                        + [f"loss_{a}" for a in aux_names] + ["lr", "img_per_s", "elapsed_s"])
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ImportError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
            self.tb = SummaryWriter(str(folder / "tensorboard"))

    def truncate(self, step: int) -> None:
        """Drop records after ``step`` (resuming from a checkpoint written at ``step``)."""
        if self.jsonl.exists():
            keep = [ln for ln in self.jsonl.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= step]
            _atomic_text(self.jsonl, "".join(ln + "\n" for ln in keep))
        if self.csv.exists():
            rows = list(csv.reader(io.StringIO(self.csv.read_text())))
            if rows:
                head, body = rows[0], [r for r in rows[1:] if r and int(r[0]) <= step]
                buf = io.StringIO()
                csv.writer(buf, lineterminator="\n").writerows([head] + body)
                _atomic_text(self.csv, buf.getvalue())

    def write(self, rec: dict[str, Any]) -> None:
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(rec, default=_plain) + "\n")
        if rec.get("kind") == "train":
            new = not self.csv.exists() or self.csv.stat().st_size == 0
            with open(self.csv, "a", newline="") as f:
                w = csv.writer(f, lineterminator="\n")
                if new:
                    w.writerow(self.columns)
                w.writerow([_fmt(rec.get(c)) for c in self.columns])
        if self.tb is not None:
            kind = rec.get("kind", "train")
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch") and math.isfinite(float(v)):
                    self.tb.add_scalar(f"{kind}/{k}", v, rec.get("step", 0))
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _plain(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_log(path: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Records of a ``log.jsonl`` (optionally of one kind)."""
    p = Path(path)
    if not p.exists():
        return []
    recs = [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()]
    return [r for r in recs if kind is None or r.get("kind") == kind]


class Progress:
    """A rich progress bar on a terminal; on a pipe, one plain line per log step."""

    def __init__(self, total: int, start: int, enabled: bool, title: str = "training") -> None:
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.bar = None
        if self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RP, TextColumn, TimeElapsedColumn

            self.bar = RP(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          TextColumn("{task.fields[info]}"), console=Console(stderr=True))
            self.bar.start()
            self.task = self.bar.add_task(title, total=total, completed=start, info="")

    def step(self, step: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step)

    def info(self, line: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, info=line)
        elif self.enabled:
            print(line, file=sys.stderr, flush=True)

    def message(self, line: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.console.print(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
