"""``dartool train``: the typer command. Every option maps onto a :class:`TrainConfig` field.

Options left out keep the value of ``--config FILE`` (a TrainConfig as JSON, or a run folder's config.json),
else the TrainConfig default. ``--resume`` reads ``RUN/config.json`` and accepts only options that do not change
what is trained (steps, time budget, logging, evaluation, probing, report).

One process, one GPU or N GPUs::

    dartool train --pair --out runs/pair --steps 20000
    torchrun --nproc_per_node 4 -m dartool train --pair --out runs/pair --steps 20000
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer

from .config import ArmConfig, ConfigError, TrainConfig, pair_arms

# Options --resume may change; everything else must match the stored run.
RESUMABLE = {
    "steps", "time_budget", "log_every", "ckpt_every", "keep_checkpoints", "tensorboard", "eval_every",
    "eval_samples", "final_eval_samples", "eval_sampler", "eval_steps", "eval_cfg", "eval_batch", "eval_weights",
    "ref_samples", "pr_k", "pr_samples", "inception_weights", "grid_images", "save_final_npz", "probe_every",
    "probe_noise_levels", "probe_samples", "probe_final_samples", "probe_pooled_samples", "probe_projection_dim", "probe", "report", "device", "compile", "compile_mode", "out",
}


def _floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated numbers, got {text!r}") from None


def _ints(text: str | None, what: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from None


def build_config(given: dict[str, Any], *, config_file: Path | None, resume: bool, out: Path | None) -> TrainConfig:
    """Merge the options given on the command line over the base config (file, stored run, or defaults)."""
    if resume:
        if out is None:
            raise ConfigError("--resume needs --out RUN (the run folder to continue)")
        base = TrainConfig.load(out)
        stored = base.to_dict()
        changed = [k for k, v in given.items() if k not in RESUMABLE and _plain(v) != stored.get(k)]
        if changed:
            k = changed[0]
            raise ConfigError(f"--resume continues the stored run: --{k.replace('_', '-')} cannot change "
                              f"(stored {stored.get(k)!r}, given {_plain(given[k])!r})")
        d = {**stored, **{k: _plain(v) for k, v in given.items()}, "out": str(out)}
        return TrainConfig.from_dict(d)
    base = TrainConfig.load(config_file) if config_file else TrainConfig()
    d = {**base.to_dict(), **{k: _plain(v) for k, v in given.items()}}
    if out is not None:
        d["out"] = str(out)
    elif not config_file:
        raise ConfigError("--out RUN is required (the run folder)")
    return TrainConfig.from_dict(d)


def _plain(v: Any) -> Any:
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, ArmConfig):
        return v.to_dict()
    return v


def train(
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (refused if not empty, unless --resume / --overwrite)."),
    data: Optional[str] = typer.Option(None, help="fashion-mnist (default) | an npz (uint8 images, or float 'latents') | an image folder."),
    config: Optional[Path] = typer.Option(None, "--config", help="Base TrainConfig as JSON (or a run folder's config.json)."),
    pair: bool = typer.Option(False, "--pair", help="Train residual + DAR (static, chunk 4) under identical conditions."),
    arms: Optional[str] = typer.Option(None, help="Arms, comma-separated: residual, dar, dar:dynamic, dar:static_t:c1, dar:static:c4:sum ..."),
    seeds: Optional[str] = typer.Option(None, help="Seeds, comma-separated (one run per arm and seed). Default 0."),
    size: Optional[str] = typer.Option(None, help="Backbone size S | B | L | XL (default S)."),
    patch: Optional[int] = typer.Option(None, help="Patch size 2 | 4 | 8 (default 2)."),
    depth: Optional[int] = typer.Option(None, help="Override the size's depth (blocks)."),
    hidden: Optional[int] = typer.Option(None, help="Override the size's width."),
    heads: Optional[int] = typer.Option(None, help="Override the size's head count (default width / 64 with --hidden)."),
    input_size: Optional[int] = typer.Option(None, help="Model input size (default: the data's; images are resized)."),
    learn_sigma: Optional[bool] = typer.Option(None, "--learn-sigma/--no-learn-sigma", help="Keep DiT's variance channels (default off, as SiT)."),
    steps: Optional[int] = typer.Option(None, help="Training steps (default 400000)."),
    batch_size: Optional[int] = typer.Option(None, help="Global batch, split across ranks (default 256)."),
    lr: Optional[float] = typer.Option(None, help="AdamW learning rate (default 1e-4, constant)."),
    weight_decay: Optional[float] = typer.Option(None, help="AdamW weight decay (default 0)."),
    grad_clip: Optional[float] = typer.Option(None, help="Clip the gradient norm (default: no clipping)."),
    ema_decay: Optional[float] = typer.Option(None, help="EMA decay (default 0.9999)."),
    ema_warmup: Optional[bool] = typer.Option(None, "--ema-warmup/--no-ema-warmup", help="EMA decay min(d, (1+k)/(10+k)) for short runs."),
    label_dropout: Optional[float] = typer.Option(None, help="Label dropout for classifier-free guidance (default 0.1)."),
    hflip: Optional[bool] = typer.Option(None, "--hflip/--no-hflip", help="Random horizontal flips (paired across arms)."),
    data_limit: Optional[int] = typer.Option(None, help="Train on the first N images of a seeded permutation."),
    precision: Optional[str] = typer.Option(None, help="auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32 | fp64 (CPU tests)."),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model."),
    compile_mode: Optional[str] = typer.Option(None, help="With --compile: auto (default: cudagraphs on CUDA, full elsewhere) | cudagraphs (one graph, replayed as CUDA graphs: no per-step host work, which DAR's routers need where the GPU's work per step is small, e.g. SiT-XL/2 at 32 images per GPU; CUDA only) | full (one graph) | regions (a graph per block) | blocks (attention and MLP only). regions and blocks are slower (benchmarks/COSTS.md)."),
    tf32: Optional[bool] = typer.Option(None, "--tf32/--no-tf32", help="TF32 matmuls on CUDA (default on)."),
    strategy: Optional[str] = typer.Option(None, help="ddp (default) | fsdp2 (documented, not implemented yet)."),
    time_budget: Optional[float] = typer.Option(None, help="Seconds of training; then the final checkpoint, eval, probe and report still run. With several seeds each gets an equal share of training time, and each seed's final eval and probe come on top."),
    log_every: Optional[int] = typer.Option(None, help="Log every N steps (default 100)."),
    ckpt_every: Optional[int] = typer.Option(None, help="Checkpoint every N steps (default 10000; always at the end)."),
    keep_checkpoints: Optional[int] = typer.Option(None, help="Keep the newest N step files per arm (default 0 = all)."),
    loss_bands: Optional[int] = typer.Option(None, help="Bands of noise level for the loss per band (default 4)."),
    tensorboard: Optional[bool] = typer.Option(None, "--tensorboard/--no-tensorboard", help="Also write TensorBoard scalars."),
    eval_every: Optional[int] = typer.Option(None, help="Sample and evaluate every N steps (0 = never)."),
    eval_samples: Optional[int] = typer.Option(None, help="Samples per periodic evaluation (default 1000)."),
    final_eval_samples: Optional[int] = typer.Option(None, help="Samples of the final evaluation (0 = none)."),
    eval_sampler: Optional[str] = typer.Option(None, help="euler | heun | sde for evaluations (default euler)."),
    eval_steps: Optional[int] = typer.Option(None, help="Sampler steps for evaluations (default 50)."),
    eval_cfg: Optional[float] = typer.Option(None, help="Guidance scale for evaluations (default 1 = none)."),
    eval_batch: Optional[int] = typer.Option(None, help="Sampling batch per rank (default 250)."),
    eval_weights: Optional[str] = typer.Option(None, help="ema (default) | model."),
    ref_samples: Optional[int] = typer.Option(None, help="Training images in the cached reference statistics (default 50000)."),
    pr_k: Optional[int] = typer.Option(None, help="k of the k-NN precision/recall (default 3)."),
    pr_samples: Optional[int] = typer.Option(None, help="Points per side for precision/recall (default 10000)."),
    inception_weights: Optional[str] = typer.Option(None, help="Local pytorch-fid Inception weights: adds FID (nothing downloads)."),
    grid_images: Optional[int] = typer.Option(None, help="Images per sample grid (default 64)."),
    probe_every: Optional[int] = typer.Option(None, help="Probe a few noise levels every N steps (0 = never)."),
    probe_levels: Optional[str] = typer.Option(None, help="Noise levels of the periodic probe (default 0.1,0.5,0.9; 1 = noise)."),
    probe_samples: Optional[int] = typer.Option(None, help="Samples of the periodic probe (default 64)."),
    probe_final_samples: Optional[int] = typer.Option(None, help="Final probe: samples at each of the 32 noise levels (default 256)."),
    probe_pooled_samples: Optional[int] = typer.Option(None, help="Final probe: samples whose pooled router inputs are stored for decodability (default 128)."),
    probe_projection_dim: Optional[int] = typer.Option(None, help="Final probe: random-projection size of the pooled vectors (default 64)."),
    probe: Optional[bool] = typer.Option(None, "--probe/--no-probe", help="Run the full probe grid at the end."),
    report: Optional[bool] = typer.Option(None, "--report/--no-report", help="Write `dartool report` of the final probes (implies --probe)."),
    init_from: Optional[str] = typer.Option(None, help="Fine-tune from this checkpoint (EMA weights when present)."),
    trainable: Optional[str] = typer.Option(None, help="Train only parameters matching these globs, e.g. 'routers.*'; the rest is frozen."),
    repa: Optional[str] = typer.Option(None, help="REPA alignment with this encoder: efficientnet-lite0 | timm:<name>."),
    repa_encoder_weights: Optional[str] = typer.Option(None, help="Local weights of a timm REPA encoder."),
    repa_weight: Optional[float] = typer.Option(None, help="REPA loss weight (default 0.5)."),
    repa_block: Optional[int] = typer.Option(None, help="1-based block aligned by REPA (default 8 for depth >= 24, else depth/3)."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda (torchrun: cuda:LOCAL_RANK)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its newest checkpoint (bit for bit)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete the run in --out and start over."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar or log lines."),
) -> None:
    """Train SiT/DiT models, residual and DAR arms paired, with evaluation and probing (torchrun-ready)."""
    from ..checkpoints import CheckpointError
    from ..cli import _errors, fail
    from .loop import TrainError, train as run_train
    from .state import CheckpointWriteError

    if resume and overwrite:
        fail("pass either --resume or --overwrite, not both")
    with _errors():
        given: dict[str, Any] = dict(
            data=data, size=size, patch=patch, depth=depth, hidden_size=hidden, num_heads=heads,
            input_size=input_size, learn_sigma=learn_sigma, steps=steps, batch_size=batch_size, lr=lr,
            weight_decay=weight_decay, grad_clip=grad_clip, ema_decay=ema_decay, ema_warmup=ema_warmup,
            label_dropout=label_dropout, hflip=hflip, data_limit=data_limit, precision=precision, compile=compile,
            compile_mode=compile_mode,
            tf32=tf32, strategy=strategy, time_budget=time_budget, log_every=log_every, ckpt_every=ckpt_every,
            keep_checkpoints=keep_checkpoints, loss_bands=loss_bands, tensorboard=tensorboard, eval_every=eval_every,
            eval_samples=eval_samples, final_eval_samples=final_eval_samples, eval_sampler=eval_sampler,
            eval_steps=eval_steps, eval_cfg=eval_cfg, eval_batch=eval_batch, eval_weights=eval_weights,
            ref_samples=ref_samples, pr_k=pr_k, pr_samples=pr_samples, inception_weights=inception_weights,
            grid_images=grid_images, probe_every=probe_every, probe_samples=probe_samples, probe=probe,
            probe_final_samples=probe_final_samples, probe_pooled_samples=probe_pooled_samples, probe_projection_dim=probe_projection_dim,
            report=report, init_from=init_from, repa=repa, repa_encoder_weights=repa_encoder_weights,
            repa_weight=repa_weight, repa_block=repa_block, device=device,
        )
        given["seeds"] = _ints(seeds, "--seeds")
        given["probe_noise_levels"] = _floats(probe_levels, "--probe-levels")
        given["trainable"] = [p.strip() for p in trainable.split(",") if p.strip()] if trainable else None
        if pair and arms:
            fail("pass either --pair or --arms, not both")
        if pair:
            given["arms"] = [a.to_dict() for a in pair_arms()]
            if init_from:   # a residual checkpoint converts to dense DAR only
                given["arms"][1] = ArmConfig(routing="dar", chunk_size=1).to_dict()
        elif arms:
            given["arms"] = [ArmConfig.parse(a).to_dict() for a in arms.split(",") if a.strip()]
        if report:
            given["probe"] = True
        given = {k: v for k, v in given.items() if v is not None}
        cfg = build_config(given, config_file=config, resume=resume, out=out)
        try:
            summary = run_train(cfg, resume=resume, overwrite=overwrite, progress=not quiet)
        except (TrainError, CheckpointWriteError, CheckpointError) as e:
            fail(str(e).splitlines()[0])
    if not quiet and summary.get("runs") is not None and int(os.environ.get("RANK", "0")) == 0:
        md = Path(cfg.out) / "summary.md"
        if md.exists():
            print(md.read_text(), end="")
        print(f"run folder: {cfg.out}")
