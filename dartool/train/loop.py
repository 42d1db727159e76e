"""The training loop: paired arms in lockstep, periodic logging / checkpoints / evaluation / probes.

Arms of one seed train **in lockstep in one process**: step k of every arm uses the same batch (one
:class:`~dartool.train.streams.PairedStreams` per seed), then the next step begins. So a ``--time-budget`` stops
every arm after the same number of steps, and the comparison is fair even though DAR steps are slower. Several
seeds run one after the other (each gets an equal share of the training time budget). Because the streams are pure functions of
(seed, step), arms trained in *separate* runs with the same seed are paired just the same (use that when two
arms do not fit on one device together).

Per step and arm: noised input in the model's own time convention (SiT t = 1 - s), velocity (or epsilon) MSE on
the first C channels, + auxiliary losses (REPA), backward, gradient norm (clipped with ``--grad-clip``), AdamW
step, EMA update (rank 0).

Run folder::

    RUN/config.json                       the TrainConfig + data / model / device description (plain JSON)
    RUN/summary.json, RUN/summary.md      per-arm results and a comparison table
    RUN/<arm>/checkpoints/step_XXXXXXX.pt, last.pt
    RUN/<arm>/log.jsonl, metrics.csv      every record / the training rows
    RUN/<arm>/samples/step_XXXXXXX.png    sample grids of the periodic evaluations; final.png, final_samples.npz
    RUN/<arm>/probes/step_XXXXXXX.zarr    periodic probe stores (a few noise levels)
    RUN/<arm>/probe.zarr                  the final full probe (--probe)
    RUN/report/                           `dartool report` of the final probes (--report)

``<arm>`` is the arm name (``residual``, ``dar-static-c4``, ...), suffixed ``-seed<k>`` when several seeds run.

``--time-budget`` limits the training phase, measured from the first step: it includes the periodic evaluations,
probes and checkpoints, but not the final checkpoint / evaluation / probe / report, which always run.
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .. import __version__
from ..data import Dataset, check_fits, load_dataset
from ..models import SiT
from . import ddp as D
from .arms import (TrainModule, apply_trainable, make_optimizer, models_from_checkpoint, optimizer_step, paired_models,
                   precision_label)
from .config import ArmConfig, ConfigError, TrainConfig
from .ema import EMA
from .logs import Meters, Progress, RunLogger, StepTimer, read_log
from .state import find_resume_point, rng_state, set_rng_state, write_checkpoint
from .streams import PairedStreams, StepBatch


class TrainError(RuntimeError):
    """Training stopped for a reason the user can act on; the message is one line."""


class NonFiniteLoss(TrainError):
    pass


Recorder = Callable[[str, StepBatch], None]


# --------------------------------------------------------------------------------------------------
# one arm
# --------------------------------------------------------------------------------------------------


@dataclass
class ArmRun:
    """Everything one arm (of one seed) owns during training."""

    arm: ArmConfig
    seed: int
    name: str
    folder: Path
    model: SiT
    module: torch.nn.Module               # TrainModule, DDP-wrapped on several ranks
    opt: torch.optim.Optimizer
    ema: EMA | None                       # rank 0 only
    meters: Meters
    timer: StepTimer
    trainable: list[str]
    logger: RunLogger | None = None
    params: list[torch.nn.Parameter] = field(default_factory=list)
    eval_copy: SiT | None = None          # ranks > 0: receives the EMA weights for sharded evaluation
    last_record: dict[str, Any] = field(default_factory=dict)
    evals: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0                  # time spent in this arm's steps after this process's first log window
    images: int = 0                       # images of those steps
    first_window: tuple[float, int, int] | None = None   # (seconds, images, steps) of this process's first window

    @property
    def ckpt_dir(self) -> Path:
        return self.folder / "checkpoints"


class Trainer:
    """Runs a :class:`TrainConfig` (see the module docstring)."""

    def __init__(self, cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False,
                 recorder: Recorder | None = None, progress: bool = True, dist: D.Dist | None = None) -> None:
        self.resume, self.overwrite = resume, overwrite
        self.recorder = recorder
        self.show = progress
        self.d = dist or D.setup(cfg.device)
        self.cfg = cfg = cfg.resolve_compile_mode(self.d.device.type)     # config.json records the mode used
        self.out = Path(cfg.out)
        self.results: list[dict[str, Any]] = []
        self.step_peak = 0          # bytes: the most GPU memory allocated in training steps (reset_peak, write_log)
        self._ref_stats: dict[str, Any] = {}
        self._notes: set[str] = set()
        self.progress: Progress | None = None
        if cfg.precision == "fp64" and self.d.device.type != "cpu":
            raise ConfigError("--precision fp64 is for CPU tests only")
        if cfg.cudagraphs and self.d.device.type != "cuda":
            raise ConfigError(f"--compile-mode cudagraphs needs a CUDA device (this run is on {self.d.device.type}); "
                              f"use --compile-mode full")
        self.dtype = torch.float64 if cfg.precision == "fp64" else torch.float32

    # ------------------------------------------------------------------ messages
    def log(self, msg: str) -> None:
        if not self.d.main:
            return
        if self.progress is not None:
            self.progress.message(msg)
        elif self.show:
            print(msg, file=sys.stderr, flush=True)

    def note_once(self, key: str, msg: str) -> None:
        if key not in self._notes:
            self._notes.add(key)
            self.log(msg)

    # ------------------------------------------------------------------ setup
    def prepare_folder(self) -> None:
        out = self.out
        if self.resume:
            if not (out / "config.json").exists():
                raise TrainError(f"--resume: {out} holds no run (no config.json); start it without --resume")
            return
        if out.exists() and any(out.iterdir()):
            if not self.overwrite:
                raise FileExistsError(f"{out} is not empty: pass --resume to continue that run or --overwrite to replace it")
            if not (out / "config.json").exists():
                raise FileExistsError(f"{out} is not empty and is not a dartool run folder; choose another --out")
            if self.d.main:
                shutil.rmtree(out)
        D.barrier(self.d)

    def load_data(self) -> Dataset:
        cfg = self.cfg
        data = load_dataset(cfg.data)
        if cfg.data_limit:
            data = data.subset(cfg.data_limit, seed=0)
        self.input_size = cfg.input_size or data.size
        if data.kind == "latents" and self.input_size != data.size:
            raise ConfigError(f"--input-size {self.input_size}: latents are {data.size} px; encode at the model's size")
        check_fits(data, data.channels, self.input_size)
        if cfg.repa and data.kind != "pixels":
            raise ConfigError("--repa needs pixel images for the encoder; latent data has none")
        return data

    def write_config(self, data: Dataset, models: list[SiT]) -> None:
        if not self.d.main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "config.json"
        info = {
            "train": self.cfg.to_dict(),
            "dartool_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "command": sys.argv,
            "data": dict(name=data.name, kind=data.kind, images=len(data), size=data.size,
                         channels=data.channels, classes=data.num_classes, model_input_size=self.input_size),
            "models": {arm.name: dict(label=m.config.label, params=m.num_params(), config=m.config.to_dict())
                       for arm, m in zip(self.cfg.arms, models)},
            "world_size": self.d.world_size,
            "device": device_name(self.d.device),
            "precision": precision_label(self.d.device, self.cfg.precision),
            "torch": torch.__version__,
        }
        if self.resume and path.exists():
            old = json.loads(path.read_text())
            info["created"] = old.get("created", info["created"])
            info["resumed"] = old.get("resumed", []) + [time.strftime("%Y-%m-%dT%H:%M:%S")]
        tmp = path.with_name(".config.json.tmp")
        tmp.write_text(json.dumps(info, indent=2))
        tmp.replace(path)

    def repa_setup(self):
        """(encoder dim, RepaConfig) for --repa, or (None, None)."""
        if not self.cfg.repa:
            return None, None
        try:
            from .. import repa as R
        except ImportError:
            raise ConfigError("--repa needs dartool.repa, which this installation lacks") from None
        enc = None if self.cfg.repa in ("", "default") else self.cfg.repa
        rc = R.RepaConfig(encoder=enc or R.DEFAULT_ENCODER, encoder_weights=self.cfg.repa_encoder_weights,
                          block=self.cfg.repa_block, weight=self.cfg.repa_weight)
        encoder = R.build_encoder(rc)
        self._repa_encoder = encoder
        return encoder.dim, rc

    def build_arms(self, seed: int, data: Dataset) -> list[ArmRun]:
        cfg, d = self.cfg, self.d
        proj_dim, repa_cfg = self.repa_setup()
        if cfg.init_from:
            models, self.init_meta = models_from_checkpoint(cfg, seed, cfg.init_from, proj_dim, log=self.log)
            for m in models:
                check_fits(data, m.config.in_channels, m.config.input_size)
                if data.num_classes > m.config.num_classes:
                    raise ConfigError(f"{data.name} has {data.num_classes} classes but {cfg.init_from} knows "
                                      f"{m.config.num_classes}")
            self.input_size = models[0].config.input_size
        else:
            self.init_meta = {}
            models = paired_models(cfg, seed, input_size=self.input_size, in_channels=data.channels,
                                   num_classes=data.num_classes, projector_dim=proj_dim)
        if (cfg.compile and cfg.compile_mode == "full" and d.device.type == "cuda"
                and any(a.routing == "dar" for a in cfg.arms)):
            self.note_once("cudagraphs", "DAR compiled as one graph waits for the host where the GPU has little work "
                                         "per step (SiT-XL/2 at 32 images per GPU: about 2x the residual's step); "
                                         "--compile-mode cudagraphs measured 1.08x there (benchmarks/COSTS.md)")
        runs = []
        names = {a.name: n for a, s, n in cfg.run_names() if s == seed}
        for arm, model in zip(cfg.arms, models):
            model = model.to(device=d.device, dtype=self.dtype).train()
            if model.config.projector_dims and not cfg.repa:
                for n, p in model.named_parameters():
                    if n.startswith("projectors."):
                        p.requires_grad_(False)       # unused without REPA (DDP needs every trainable used)
            trainable = apply_trainable(model, cfg.trainable)
            aligner = None
            if repa_cfg is not None:
                from ..repa import RepaAligner

                aligner = RepaAligner(model, repa_cfg, encoder=self._repa_encoder)
                self.note_once("repa", aligner.describe())
            module = D.wrap(TrainModule(model, aligner, compile=cfg.compile, compile_mode=cfg.compile_mode), d, cfg.strategy)
            params = [p for p in model.parameters() if p.requires_grad]
            opt = make_optimizer(params, cfg, d.device)
            ema = EMA(model, cfg.ema_decay, cfg.ema_warmup) if d.main else None
            aux_names = ("repa",) if aligner is not None else ()
            folder = self.out / names[arm.name]
            run = ArmRun(arm, seed, names[arm.name], folder, model, module, opt, ema,
                         Meters(cfg.loss_bands, d.device, aux_names), StepTimer(d.device), trainable, params=params)
            if d.main:
                run.logger = RunLogger(folder, cfg.loss_bands, aux_names, cfg.tensorboard)
            runs.append(run)
        return runs

    # ------------------------------------------------------------------ checkpoints
    def save(self, runs: list[ArmRun], step: int, data: Dataset) -> None:
        self.check_finite(runs, step)
        self.check_in_step(runs, step)
        if self.d.main:
            for r in runs:
                write_checkpoint(
                    r.ckpt_dir, step, r.model, ema=r.ema.model if r.ema else None, keep=self.cfg.keep_checkpoints,
                    optimizer=r.opt.state_dict(), arm=r.arm.to_dict(), seed=r.seed, run_name=r.name,
                    train_config=self.cfg.to_dict(), data_kind=data.kind, data_name=data.name,
                    meters=r.meters.state_dict(), rng=rng_state(), trainable=self.cfg.trainable or None,
                    world_size=self.d.world_size, **self.init_meta,
                )
        D.barrier(self.d)
        self.last_saved = step

    def restore(self, runs: list[ArmRun]) -> int:
        """Load the newest common checkpoint of the arms; the step to continue from (0 if none)."""
        point = find_resume_point([r.ckpt_dir for r in runs], device=self.d.device, log=self.log)
        if point is None:
            if any(r.ckpt_dir.exists() and any(r.ckpt_dir.iterdir()) for r in runs):
                raise TrainError(f"--resume: no readable checkpoint common to every arm under {self.out}")
            self.log(f"--resume: no checkpoint yet under {self.out}; starting at step 0")
            return 0
        step, objs = point
        for r, obj in zip(runs, objs):
            r.model.load_state_dict(obj["model"])
            r.opt.load_state_dict(obj["optimizer"])
            if r.ema is not None:
                r.ema.load_state_dict(obj["ema"] if "ema" in obj else obj["model"])
            if "meters" in obj:
                r.meters.load_state_dict(obj["meters"])
            if r.logger is not None:
                r.logger.truncate(step)
                trains = read_log(r.logger.jsonl, "train")
                r.last_record = trains[-1] if trains else {}
                r.evals = read_log(r.logger.jsonl, "eval")
        set_rng_state(objs[0].get("rng"))
        self.log(f"resumed {', '.join(r.name for r in runs)} at step {step}")
        return step

    def check_in_step(self, runs: list[ArmRun], step: int) -> None:
        """Under torchrun, before each checkpoint: every rank must hold the same weights (DDP averages the gradients
        and every rank takes the same optimizer step, so they agree bit for bit). Each parameter's float64 sum and
        sum of squares are compared across ranks (their max against their min); a difference stops training
        before the checkpoint is written."""
        if not self.d.distributed:
            return
        for r in runs:
            named = list(r.model.named_parameters())
            with torch.no_grad():
                fp = torch.stack([t for _, p in named for t in (p.double().sum(), p.double().square().sum())])
            hi = D.all_reduce(self.d, fp.clone(), "max")
            lo = -D.all_reduce(self.d, -fp, "max")
            if not torch.equal(hi, lo):
                bad = int(torch.nonzero(hi != lo)[0, 0]) // 2
                raise TrainError(
                    f"arm {r.name}: the {self.d.world_size} processes' weights differ at step {step} (first: "
                    f"{named[bad][0]}), so their gradients were not averaged alike; training stopped, "
                    f"{self.kept_checkpoint(r)}. Report it with the command line"
                    + ("; --compile-mode full avoids CUDA graphs, the likely cause" if self.cfg.cudagraphs else ""))

    def kept_checkpoint(self, r: ArmRun) -> str:
        """Where a run stopped by a check leaves the arm: its last checkpoint, or none yet."""
        last = getattr(self, "last_saved", None)
        return f"last good checkpoint: {r.ckpt_dir / 'last.pt'} (step {last})" if last else \
            "no checkpoint was written yet"

    def check_finite(self, runs: list[ArmRun], step: int) -> None:
        for r in runs:
            bad = r.meters.check_finite(self.d)
            if bad is not None:
                where = f"step {bad + 1}" if bad >= 0 else f"a step before {step} (on another rank)"
                if r.logger is not None:
                    r.logger.write(dict(kind="event", step=step, event="non_finite", first_bad_step=bad + 1))
                raise NonFiniteLoss(
                    f"arm {r.name}: non-finite loss or gradient at {where}; training stopped, "
                    f"{self.kept_checkpoint(r)}. "
                    f"Lower --lr, set --grad-clip, or check the data"
                )

    # ------------------------------------------------------------------ one step
    def train_step(self, r: ArmRun, b: StepBatch) -> None:
        r.timer.start()
        per, gnorm, aux = optimizer_step(r.module, r.model, r.params, r.opt, r.ema, b.x, b.y, b.eps, b.s, b.drop,
                                         b.step, device=self.d.device, precision=self.cfg.precision,
                                         grad_clip=self.cfg.grad_clip)
        r.meters.add(b.step, per, b.s, gnorm, aux)
        r.timer.stop()

    def reset_peak(self) -> None:
        """Start a window of the allocator's peak (host-side counters, no sync) that holds training steps only:
        before the first step and after checkpoints, evaluations and probes; :meth:`write_log` reads it."""
        if self.d.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.d.device)

    def write_log(self, runs: list[ArmRun], step: int, epoch: int, wall: float) -> None:
        self.check_finite(runs, step)
        if self.d.device.type == "cuda":      # the steps' peak since reset_peak
            self.step_peak = max(self.step_peak, torch.cuda.max_memory_allocated(self.d.device))
        parts = [f"step {step}"]
        for r in runs:
            had_first = r.timer.first_seconds is not None
            secs = r.timer.take()
            n_steps = r.meters.steps
            rec = r.meters.collect(self.d)
            # the log window's figure counts every step; the run's (summary) leaves out the first (compiling)
            rec = dict(kind="train", step=step, epoch=epoch, **rec, lr=self.cfg.lr,
                       img_per_s=(n_steps * self.cfg.batch_size / secs) if secs > 0 else float("nan"),
                       elapsed_s=round(wall, 3))
            if not had_first and r.timer.first_seconds is not None:     # this process's first window
                r.first_window = (secs, n_steps * self.cfg.batch_size, n_steps)
            else:
                r.seconds += secs
                r.images += n_steps * self.cfg.batch_size
            r.last_record = rec
            if r.logger is not None:
                r.logger.write(rec)
            parts.append(f"{r.name} {rec['loss']:.4f} ({rec['img_per_s']:.0f} img/s)")
        if self.progress is not None:
            self.progress.info(" | ".join(parts))

    # ------------------------------------------------------------------ evaluation and probes
    def eval_model(self, r: ArmRun) -> SiT:
        """The weights to evaluate on every rank (EMA from rank 0, broadcast for sharded sampling)."""
        if self.cfg.eval_weights == "model":
            return r.model
        if not self.d.distributed:
            return r.ema.model
        if r.ema is None and r.eval_copy is None:
            import copy

            r.eval_copy = copy.deepcopy(r.model).requires_grad_(False)
        m = r.ema.model if r.ema is not None else r.eval_copy
        D.broadcast_parameters(self.d, m)
        return m

    def reference(self, data: Dataset, net):
        key = net.key
        if key not in self._ref_stats:
            from ..evaluate import reference_stats

            self._ref_stats[key] = reference_stats(data, net, size=self.input_size, n=self.cfg.ref_samples,
                                                   keep=self.cfg.pr_samples, log=self.log)
        return self._ref_stats[key]

    def feature_nets(self) -> list:
        from ..evaluate import effnet, inception

        if not hasattr(self, "_nets"):
            self._nets = [effnet(self.d.device)]
            if self.cfg.inception_weights:
                self._nets.append(inception(self.cfg.inception_weights, self.d.device))
        return self._nets

    def data_hf(self, data: Dataset, size: int, n: int = 5000) -> float:
        """High-frequency energy share of (up to n) training images at the model's size (computed once)."""
        if getattr(self, "_data_hf", None) is None:
            from ..detail import dataset_hf_energy

            self._data_hf = dataset_hf_energy(data, size, n)
        return self._data_hf

    def evaluate(self, runs: list[ArmRun], step: int, data: Dataset, n: int, final: bool) -> None:
        """Sample ``n`` images per arm (sharded over ranks), write a grid, and log FD / precision / recall."""
        from ..sample import SamplerConfig, sample_images, save_grid, save_npz

        cfg = self.cfg
        scfg = SamplerConfig(method=cfg.eval_sampler, steps=cfg.eval_steps, cfg_scale=cfg.eval_cfg)
        latent = data.kind == "latents"
        for r in runs:
            t0 = time.time()
            model = self.eval_model(r)
            res = sample_images(model, n, scfg, seed=10_000 + r.seed, batch_size=cfg.eval_batch, dist=self.d,
                                precision=cfg.precision, progress=self.show and final, latent=latent)
            if res is None:          # other ranks
                continue
            x, y = res
            t_sampled = time.time()
            tag = "final" if final else f"step_{step:07d}"
            ctx = dict(kind="eval", step=step, final=final, weights=cfg.eval_weights, **_sampler_ctx(scfg))
            if latent:
                self.note_once("latent-eval", "latent data: samples are latents; image metrics and grids are skipped "
                                              "(decode them with your VAE and run `dartool eval`)")
                continue
            save_grid(x[: cfg.grid_images], r.folder / "samples" / f"{tag}.png", scale=4 if x.shape[1] <= 64 else 1)
            if final and cfg.save_final_npz:
                meta = dict(run=r.name, step=step, model=r.model.config.label, sampler=scfg.to_dict(),
                            weights=cfg.eval_weights, seed=10_000 + r.seed)
                save_npz(r.folder / "samples" / "final_samples.npz", x, y, meta)
            records = []
            from ..evaluate import evaluate_images

            for j, net in enumerate(self.feature_nets()):
                ref = self.reference(data, net)
                records += evaluate_images(x, ref, net, k=cfg.pr_k, pr_samples=cfg.pr_samples,
                                           context={**ctx, "model": r.model.config.label}, device=self.d.device,
                                           ref_hf=self.data_hf(data, r.model.config.input_size) if j == 0 else None)
            secs, sample_secs = time.time() - t0, t_sampled - t0        # sampling (all ranks) vs the metrics
            for rec in records:
                rec.update(seconds=round(secs, 2), sample_seconds=round(sample_secs, 2),
                           metric_seconds=round(secs - sample_secs, 2))
                if r.logger is not None:
                    r.logger.write(rec)
            r.evals += records
            vals = ", ".join(f"{rec['metric']} {rec['value']:.4g}" for rec in records)
            self.log(f"eval {r.name} step {step}: {vals} ({n} samples, {scfg.label}; {secs:.0f} s: "
                     f"sampling {sample_secs:.0f} s, metrics {secs - sample_secs:.0f} s)")

    def probe(self, runs: list[ArmRun], step: int, data: Dataset, final: bool) -> list[Path]:
        """Probe stores of the arms (rank 0): a few noise levels during training, the full grid at the end."""
        if not self.d.main:
            return []
        try:
            from . import probing
        except ImportError as e:  # pragma: no cover
            self.note_once("probe", f"probing skipped: {e}")
            return []
        stores = []
        for r in runs:
            out = r.folder / "probe.zarr" if final else r.folder / "probes" / f"step_{step:07d}.zarr"
            model = r.ema.model if (r.ema is not None and self.cfg.eval_weights == "ema") else r.model
            try:
                path = probing.probe_model(model, data, out, self.cfg, final=final, step=step, run=r.name,
                                           checkpoint=str(r.ckpt_dir / "last.pt"), log=self.log if final else None)
            except probing.ProbeUnavailable as e:
                self.note_once("probe", f"probing skipped: {e}")
                return []
            if path is not None:
                stores.append(path)
                if r.logger is not None:
                    r.logger.write(dict(kind="probe", step=step, final=final, store=str(path)))
        return stores

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict[str, Any]:
        cfg, d = self.cfg, self.d
        self.prepare_folder()
        data = self.load_data()
        if cfg.tf32 and d.device.type == "cuda":
            torch.set_float32_matmul_precision("high")          # TF32 matmuls
            torch.backends.cudnn.allow_tf32 = True
        d.local_batch(cfg.batch_size)
        t_start = time.time()
        all_runs: list[ArmRun] = []
        trained = 0.0        # seconds spent in the training loops of the seeds done so far
        try:
            for gi, seed in enumerate(cfg.seeds):
                runs = self.build_arms(seed, data)
                if gi == 0:
                    self.write_config(data, [r.model for r in runs])
                group_budget = None
                if cfg.time_budget:
                    # every seed gets an equal share of *training* time (its mid-run evaluations included); the
                    # final evaluation and probe of a seed come on top and do not shrink the later seeds' shares
                    group_budget = max(0.0, (cfg.time_budget - trained) / (len(cfg.seeds) - gi))
                trained += self.train_group(runs, seed, data, group_budget)
                all_runs += runs
            summary = self.summarise(all_runs, time.time() - t_start)
        finally:
            if self.progress is not None:
                self.progress.close()
            for r in all_runs:
                if r.logger is not None:
                    r.logger.close()
        return summary

    def train_group(self, runs: list[ArmRun], seed: int, data: Dataset, budget: float | None) -> float:
        """Train one seed's arms in lockstep, then probe and evaluate them; returns the training loop's seconds."""
        cfg, d = self.cfg, self.d
        streams = PairedStreams(data, seed=seed, global_batch=cfg.batch_size, input_size=self.input_size,
                                device=d.device, dtype=self.dtype, label_dropout=cfg.label_dropout, hflip=cfg.hflip,
                                rank=d.rank, world_size=d.world_size)
        start = self.restore(runs) if self.resume else 0
        self.last_saved = start if start else None
        for r in runs:
            if r.ema is not None and start == 0:
                r.ema.copy_from(r.model)
        self.progress = Progress(cfg.steps, start, self.show and d.main,
                                 f"seed {seed}: {', '.join(r.name for r in runs)}")
        t0 = time.time()
        step, stopped, epoch = start, "steps", 0
        side = 0.0          # seconds in checkpoints / evaluations / probes (not in the per-step estimate)
        self.reset_peak()
        try:
            while step < cfg.steps:
                b = streams.batch(step)
                epoch = b.epoch
                for r in runs:
                    if self.recorder is not None:
                        self.recorder(r.name, b)
                    self.train_step(r, b)
                step += 1
                self.progress.step(step)
                wall = time.time() - t0
                last = step == cfg.steps
                if step % cfg.log_every == 0 or last:
                    self.write_log(runs, step, epoch, wall)
                t_side = time.time()
                saving = step % cfg.ckpt_every == 0 and not last
                evaluating = bool(cfg.eval_every and step % cfg.eval_every == 0 and not last and cfg.eval_samples)
                probing = bool(cfg.probe_every and step % cfg.probe_every == 0 and not last)
                if saving:
                    self.save(runs, step, data)
                if evaluating:
                    self.evaluate(runs, step, data, cfg.eval_samples, final=False)
                if probing:
                    self.probe(runs, step, data, final=False)
                    D.barrier(d)
                if saving or evaluating or probing:
                    self.reset_peak()
                side += time.time() - t_side
                if budget is not None and not last and self.out_of_time(t0, budget, step - start, side):
                    stopped = "time_budget"
                    self.log(f"time budget of {budget:.0f} s reached after {step} steps; finishing")
                    break
            if step % cfg.log_every and step != cfg.steps:
                self.write_log(runs, step, epoch, time.time() - t0)
            train_seconds = time.time() - t0
            if self.last_saved != step:
                self.save(runs, step, data)
        finally:
            self.progress.close()
            self.progress = None
        # the probe first: it is cheap (seconds per arm) next to sampling thousands of images, so a run that
        # hits a hard wall-clock limit during the final evaluation still has its diagnosis on disk
        stores = []
        if cfg.probe or cfg.report:
            stores = self.probe(runs, step, data, final=True)
        if cfg.final_eval_samples:
            self.evaluate(runs, step, data, cfg.final_eval_samples, final=True)
        for r in runs:
            self.results.append(dict(
                run=r.name, arm=r.arm.to_dict(), seed=r.seed, steps=step, stopped=stopped,
                train_seconds=round(train_seconds, 2), img_per_s=throughput(r),
                first_step_s=r.timer.first_seconds,
                model=r.model.config.label, params=r.model.num_params(), trainable_params=sum(p.numel() for p in r.params),
                last_train=r.last_record, final_eval=[e for e in r.evals if e.get("final")],
                eval_steps=sorted({e["step"] for e in r.evals if not e.get("final")}),
                checkpoint=str(r.ckpt_dir / "last.pt"), folder=str(r.folder),
                probe_store=next((str(s) for s in stores if Path(s).parent == r.folder), None),
            ))
        return train_seconds

    def out_of_time(self, t0: float, budget: float, steps_done: int, side: float = 0.0) -> bool:
        """Stop when the next step would not finish inside the budget.

        One process decides on the host clock (no device sync). Under torchrun rank 0 decides every 10th step
        and broadcasts its decision, so every rank stops after the same step.
        """
        elapsed = time.time() - t0
        per_step = max(0.0, elapsed - side) / max(1, steps_done)
        late = elapsed + per_step * (10 if self.d.distributed else 1) > budget
        if not self.d.distributed:
            return late
        if steps_done % 10:
            return False
        flag = torch.tensor([1.0 if late else 0.0], device=self.d.device)
        D.broadcast_tensor(self.d, flag)
        return bool(flag.item())

    # ------------------------------------------------------------------ the end
    def summarise(self, runs: list[ArmRun], seconds: float) -> dict[str, Any]:
        cfg = self.cfg
        summary = dict(out=str(self.out), seconds=round(seconds, 2), device=device_name(self.d.device),
                       world_size=self.d.world_size, precision=precision_label(self.d.device, cfg.precision),
                       global_batch=cfg.batch_size, runs=self.results,
                       step_peak_gb=round(self.step_peak / 1e9, 3) if self.step_peak else None)
        if not self.d.main:
            return summary
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        (self.out / "summary.md").write_text(comparison_markdown(summary, cfg))
        if cfg.report:
            summary["report"] = self.report()
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        return summary

    def report(self) -> str | None:
        stores = [r["probe_store"] for r in self.results if r.get("probe_store")]
        if not stores:
            self.log("report skipped: no probe stores (the probe did not run)")
            return None
        try:
            from ..report import make_report
        except ImportError as e:  # pragma: no cover
            self.log(f"report skipped: dartool.report is unavailable ({e})")
            return None
        labels = [r["arm"]["name"] for r in self.results if r.get("probe_store")]
        from .probing import periodic_stores

        folders = list(dict.fromkeys(Path(r["folder"]).name for r in self.results))
        training = periodic_stores(self.out, arms=folders, warn=self.log) or None
        res = make_report(stores, self.out / "report", labels=labels, baseline=labels[0], overwrite=True,
                          title=f"dartool run {self.out.name}", training=training)
        self.log(f"report: {res.html}")
        return str(res.html)


def _sampler_ctx(scfg) -> dict[str, Any]:
    from ..evaluate import describe_sampler

    return describe_sampler(scfg.to_dict())


def throughput(r: ArmRun) -> float | None:
    """Images per second of an arm's steps after this process's first log window, which holds compiling and CUDA
    graphs' warm-up and recording (a DAR B/2 arm compiled with CUDA graphs: 54 s in its first step and about 7 s
    more in the next ones, session 19). A run of one window: that window without its first step, or with it if
    the window has no other."""
    if r.seconds > 0 and r.images > 0:
        return r.images / r.seconds
    if r.first_window is None:
        return None
    secs, images, steps = r.first_window
    first = r.timer.first_seconds          # this process's first step: compiling and recording
    if steps > 1 and first is not None and secs > first:
        return images * (steps - 1) / steps / (secs - first)
    return images / secs if secs > 0 else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def comparison_markdown(summary: dict[str, Any], cfg: TrainConfig) -> str:
    """A small Markdown table comparing the arms (final loss, loss per band, final metrics, speed)."""
    from .logs import band_names

    bands = band_names(cfg.loss_bands)
    metrics = sorted({e["metric"] for r in summary["runs"] for e in r["final_eval"]})
    head = ["run", "model", "steps", "loss"] + [b.replace("loss_", "") for b in bands] + metrics + ["img/s"]
    lines = [f"# dartool run {summary['out']}", "",
             f"{summary['device']} x {summary['world_size']}, {summary['precision']}, global batch "
             f"{summary['global_batch']}, {summary['seconds']:.0f} s in all"
             + (f"; peak GPU memory in training steps {summary['step_peak_gb']:.1f} GB per process (every arm's "
                f"weights, optimizer state and compiled graphs' memory resident)" if summary.get("step_peak_gb")
                else "") + ".", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary["runs"]:
        lt = r["last_train"]
        fe = {e["metric"]: e["value"] for e in r["final_eval"]}
        row = [r["run"], r["model"], str(r["steps"]), _num(lt.get("loss"))] + [_num(lt.get(b)) for b in bands]
        row += [_num(fe.get(m)) for m in metrics] + [_num(r.get("img_per_s"), 0)]
        lines.append("| " + " | ".join(row) + " |")
    evs = [e for r in summary["runs"] for e in r["final_eval"]]
    ev = next((e for e in evs if e["metric"] in ("fd_effnet", "fid")), evs[0] if evs else None)
    if ev:
        lines += ["", f"Metrics: {ev['feature_net']}; {ev['n_samples']} samples vs {ev['n_reference']} "
                      f"{ev['reference']}; {ev['sampler']}; {ev['weights']} weights. "
                      f"EfficientNet-Lite0 distances are not comparable with published (Inception) FIDs."]
        if any(e["metric"] == "hf_energy_ratio" for e in evs):
            lines += ["hf_energy_ratio: the samples' share of spectral energy above half the Nyquist frequency "
                      "over the training data's (1 = the data's amount of fine detail)."]
    firsts = [f"{r['run']} {r['first_step_s']:.1f} s" for r in summary["runs"] if r.get("first_step_s") is not None]
    if firsts:
        lines += ["", "img/s: the training steps after the first log window, which holds compiling and CUDA "
                      f"graphs' recording where --compile is on (the first step: {', '.join(firsts)})."]
    stops = {r["stopped"] for r in summary["runs"]}
    if "time_budget" in stops:
        lines += ["", "Training ended at the time budget (every arm after the same number of steps)."]
    return "\n".join(lines) + "\n"


def _num(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}" if digits else f"{v:,.0f}"


def train(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False, recorder: Recorder | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Run ``cfg`` (on this process / its torchrun group); the summary dict (also ``RUN/summary.json``)."""
    d = D.setup(cfg.device)
    try:
        return Trainer(cfg, resume=resume, overwrite=overwrite, recorder=recorder, progress=progress, dist=d).run()
    finally:
        D.cleanup(d)
