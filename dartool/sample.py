"""Samplers for SiT / REPA velocity models and DiT epsilon models, image grids and ADM ``.npz`` export.

Time runs in SiT's data time tau = 1 - s from 0 (pure noise) to 1 (data), with x_tau = tau x + (1 - tau) eps and
velocity u = dx/dtau = x - eps (DAR-METHOD.md section 1). A model's own convention (``ModelConfig.time_convention``)
is converted at the call: SiT takes t = tau and predicts u; REPA takes t = s and predicts eps - x = -u.

Samplers (``--sampler``):

* ``euler`` / ``heun``: the probability-flow ODE on a uniform tau grid from 0 to 1 with ``steps`` intervals
  (Euler: ``steps`` model evaluations, Heun: 2 per interval). Adaptive dopri5 is not offered: SiT's comes from
  torchdiffeq, which is not a dartool dependency.
* ``sde``: Euler-Maruyama with SiT's defaults: 250 grid points on tau in [0, 1 - 0.04], diffusion
  w(tau) = norm * (1 - tau) ("sigma" form), dx = (u + w * score) dtau + sqrt(2 w) dW with the score
  (tau u - x) / (1 - tau) of the linear path, then a noise-free "Mean" last step of size 0.04.
* ``ddim``: the deterministic DDIM sampler for DiT epsilon models (linear betas, 1000 steps, ``steps`` evenly
  strided timesteps). DiT models sample only with ``ddim``; velocity models not with ``ddim``.

Classifier-free guidance guides every channel by default; ``guided_channels=3`` (``--legacy-cfg-channels 3``)
reproduces DiT/SiT, which guide only the first 3 channels. Guidance needs a null class (label dropout > 0).

Determinism: sample i belongs to chunk j = i // batch_size, and chunk j draws its labels and noise from a
generator seeded by (seed, j). Chunks are spread over ranks (chunk j on rank j % world_size), so a sample does
not depend on how many processes drew it.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
import typer

from .diffusion import dit_alpha_bar

METHODS = ("euler", "heun", "sde", "ddim")
DEFAULT_STEPS = {"euler": 50, "heun": 50, "sde": 250, "ddim": 50}


class SamplingError(ValueError):
    """A sampling request that cannot work; the message says what to change."""


@dataclass
class SamplerConfig:
    """How to sample. Plain data (stored next to every sample set and metric)."""

    method: str = "euler"
    steps: int | None = None                # None = the method's default (euler/heun/ddim 50, sde 250)
    cfg_scale: float = 1.0                  # 1 = no guidance
    guided_channels: int | None = None      # None = all channels; 3 = the DiT/SiT behaviour
    last_step: float = 0.04                 # SDE: size of the final "Mean" step (SiT default)
    diffusion_norm: float = 1.0             # SDE: w(tau) = norm * (1 - tau)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SamplingError(f"unknown sampler {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.steps is not None and self.steps < 1:
            raise SamplingError(f"--steps must be >= 1, got {self.steps}")
        if self.method == "sde" and self.steps is not None and self.steps < 2:
            raise SamplingError("the SDE sampler needs --steps >= 2 (grid points)")
        if self.cfg_scale < 1.0:
            raise SamplingError(f"--cfg-scale must be >= 1 (1 = no guidance), got {self.cfg_scale}")
        if not 0.0 < self.last_step < 1.0:
            raise SamplingError(f"the SDE last step must be in (0, 1), got {self.last_step}")

    @property
    def num_steps(self) -> int:
        return self.steps if self.steps is not None else DEFAULT_STEPS[self.method]

    @property
    def nfe(self) -> int:
        """Network evaluations per sample (x2 with guidance)."""
        n = {"euler": self.num_steps, "heun": 2 * self.num_steps, "sde": self.num_steps, "ddim": self.num_steps}[self.method]
        return n * (2 if self.cfg_scale != 1.0 else 1)

    @property
    def label(self) -> str:
        """E.g. ``ODE Euler, 50 steps, cfg 1.5 (all channels)``."""
        kind = {"euler": "ODE Euler", "heun": "ODE Heun", "sde": "SDE Euler-Maruyama", "ddim": "DDIM"}[self.method]
        g = "no guidance" if self.cfg_scale == 1.0 else (
            f"cfg {self.cfg_scale:g} (" + ("all channels" if self.guided_channels is None
                                           else f"first {self.guided_channels} channels") + ")")
        return f"{kind}, {self.num_steps} steps, {g}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["steps"] = self.num_steps
        d["label"] = self.label
        return d


# --------------------------------------------------------------------------------------------------
# the network as a velocity (or epsilon) field
# --------------------------------------------------------------------------------------------------


def has_null_class(model) -> bool:
    return model.y_embedder.embedding_table.num_embeddings > model.config.num_classes


def predict(model, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cfg: SamplerConfig) -> torch.Tensor:
    """The network output on the first C channels, guided when ``cfg.cfg_scale != 1``."""
    C = model.config.in_channels
    if cfg.cfg_scale == 1.0:
        return model(x, t, y)[:, :C]
    return model.forward_with_cfg(x, t, y, cfg.cfg_scale, guided_channels=cfg.guided_channels)[:, :C]


def velocity(model, x: torch.Tensor, tau: float, y: torch.Tensor, cfg: SamplerConfig) -> torch.Tensor:
    """u = dx/dtau at data time tau (0 = noise, 1 = data) in SiT's convention."""
    conv = model.config.time_convention
    t = torch.full((x.shape[0],), float(tau), device=x.device, dtype=torch.float32)
    if conv == "sit":
        return predict(model, x, t, y, cfg).float()
    if conv == "repa":
        return -predict(model, x, 1.0 - t, y, cfg).float()
    raise SamplingError("DiT epsilon models sample with --sampler ddim")


def check_model(model, cfg: SamplerConfig) -> None:
    conv = model.config.time_convention
    if conv == "dit" and cfg.method != "ddim":
        raise SamplingError(f"{model.config.label} is a DiT epsilon model: use --sampler ddim (not {cfg.method})")
    if conv != "dit" and cfg.method == "ddim":
        raise SamplingError(f"--sampler ddim is for DiT epsilon models; {model.config.label} predicts velocity: "
                            f"use euler, heun or sde")
    if cfg.cfg_scale != 1.0 and not has_null_class(model):
        raise SamplingError(f"{model.config.label} has no null class (trained without label dropout): "
                            f"guidance is impossible, use --cfg-scale 1")
    if cfg.guided_channels is not None and not 1 <= cfg.guided_channels <= model.config.in_channels:
        raise SamplingError(f"--legacy-cfg-channels must be in 1..{model.config.in_channels}")


# --------------------------------------------------------------------------------------------------
# samplers: noise x [B, C, H, W] -> samples
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def ode_euler(model, x: torch.Tensor, y: torch.Tensor, cfg: SamplerConfig) -> torch.Tensor:
    taus = torch.linspace(0.0, 1.0, cfg.num_steps + 1, dtype=torch.float64).tolist()
    x = x.float()
    for a, b in zip(taus[:-1], taus[1:]):
        x = x + (b - a) * velocity(model, x, a, y, cfg)
    return x


@torch.no_grad()
def ode_heun(model, x: torch.Tensor, y: torch.Tensor, cfg: SamplerConfig) -> torch.Tensor:
    taus = torch.linspace(0.0, 1.0, cfg.num_steps + 1, dtype=torch.float64).tolist()
    x = x.float()
    for a, b in zip(taus[:-1], taus[1:]):
        u = velocity(model, x, a, y, cfg)
        x_pred = x + (b - a) * u
        x = x + 0.5 * (b - a) * (u + velocity(model, x_pred, b, y, cfg))
    return x


@torch.no_grad()
def sde_euler_maruyama(
    model, x: torch.Tensor, y: torch.Tensor, cfg: SamplerConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """SiT's SDE sampler (see the module docstring); ``generator`` drives the Brownian increments."""
    t1 = 1.0 - cfg.last_step
    taus = torch.linspace(0.0, t1, cfg.num_steps, dtype=torch.float64).tolist()
    norm = cfg.diffusion_norm

    def drift(x: torch.Tensor, tau: float) -> torch.Tensor:
        u = velocity(model, x, tau, y, cfg)
        return u + norm * (tau * u - x)              # u + w(tau) * score, w = norm (1 - tau)

    x = x.float()
    for a, b in zip(taus[:-1], taus[1:]):
        dt = b - a
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x + drift(x, a) * dt + math.sqrt(2.0 * norm * (1.0 - a) * dt) * z
    return x + drift(x, t1) * cfg.last_step          # last step "Mean"


@torch.no_grad()
def ddim(model, x: torch.Tensor, y: torch.Tensor, cfg: SamplerConfig) -> torch.Tensor:
    """Deterministic DDIM (eta 0) for DiT epsilon models on ``steps`` evenly strided timesteps."""
    ab = dit_alpha_bar(x.device)
    stride = max(1, 1000 // cfg.num_steps)
    ts = list(range(0, 1000, stride))[: cfg.num_steps][::-1]
    x = x.float()
    for i, t in enumerate(ts):
        a = ab[t].float()
        a_prev = ab[ts[i + 1]].float() if i + 1 < len(ts) else torch.ones((), device=x.device)
        tt = torch.full((x.shape[0],), float(t), device=x.device)
        eps = predict(model, x, tt, y, cfg).float()
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x


def run_sampler(
    model, noise: torch.Tensor, y: torch.Tensor, cfg: SamplerConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Samples from initial noise (float32 result, [-1, 1]-ish for pixel models)."""
    check_model(model, cfg)
    if cfg.method == "euler":
        return ode_euler(model, noise, y, cfg)
    if cfg.method == "heun":
        return ode_heun(model, noise, y, cfg)
    if cfg.method == "sde":
        return sde_euler_maruyama(model, noise, y, cfg, generator)
    return ddim(model, noise, y, cfg)


# --------------------------------------------------------------------------------------------------
# deterministic, sharded generation
# --------------------------------------------------------------------------------------------------


def chunk_seed(seed: int, chunk: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(chunk), 0x5A4D]).generate_state(1, np.uint64)[0] >> 1)


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CUDA for ``bf16`` (and ``auto``); nothing otherwise."""
    if device.type == "cuda" and precision in ("bf16", "auto"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    import contextlib

    return contextlib.nullcontext()


def generate(
    model, n: int, cfg: SamplerConfig, *, seed: int = 0, batch_size: int = 64, labels: np.ndarray | None = None,
    rank: int = 0, world_size: int = 1, precision: str = "fp32",
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yield ``(chunk index, samples [b, C, H, W] float32 on the model's device, labels [b])`` for the chunks
    of ``n`` samples that belong to ``rank``. ``labels`` (length n) fixes the classes; else uniform."""
    check_model(model, cfg)
    mc = model.config
    device = next(model.parameters()).device
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(labels) != n:
            raise SamplingError(f"{len(labels)} labels for {n} samples")
        if labels.min() < 0 or labels.max() >= mc.num_classes:
            raise SamplingError(f"class labels must be in 0..{mc.num_classes - 1}")
    n_chunks = math.ceil(n / batch_size)
    was_training = model.training
    model.eval()
    try:
        for j in range(rank, n_chunks, world_size):
            b = min(batch_size, n - j * batch_size)
            g = torch.Generator(device=device).manual_seed(chunk_seed(seed, j))
            y = torch.randint(0, mc.num_classes, (b,), generator=g, device=device)
            if labels is not None:
                y = torch.from_numpy(labels[j * batch_size: j * batch_size + b]).to(device)
            noise = torch.randn(b, mc.in_channels, mc.input_size, mc.input_size, generator=g, device=device)
            with autocast(device, precision):
                x = run_sampler(model, noise, y, cfg, generator=g)
            yield j, x.float(), y
    finally:
        model.train(was_training)


def is_latent_model(model, meta: dict | None = None) -> bool:
    """Whether samples are latents (no images): the checkpoint's recorded data kind, else 4 channels."""
    kind = (meta or {}).get("data_kind")
    if kind in ("pixels", "latents"):
        return kind == "latents"
    return model.config.in_channels == 4


def to_uint8_nhwc(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] float NCHW -> uint8 NHWC."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


# --------------------------------------------------------------------------------------------------
# files: PNG grids and ADM npz
# --------------------------------------------------------------------------------------------------


def make_grid(images: np.ndarray, ncol: int | None = None, pad: int = 2, value: int = 255) -> np.ndarray:
    """uint8 NHWC -> one uint8 HWC grid image (``ncol`` columns, default ~sqrt(N))."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"make_grid wants uint8 N x H x W x C, got {images.dtype} {images.shape}")
    n, h, w, c = images.shape
    ncol = ncol or max(1, math.ceil(math.sqrt(n)))
    nrow = math.ceil(n / ncol)
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), value, np.uint8)
    for i in range(n):
        r, q = divmod(i, ncol)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = images[i]
    return grid


def save_grid(images: np.ndarray, path: str | Path, ncol: int | None = None, scale: int = 1) -> Path:
    """Write a PNG grid of uint8 NHWC images (PIL; no torchvision). ``scale`` enlarges small images."""
    from PIL import Image

    grid = make_grid(images, ncol)
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def adm_images(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC with 3 channels as the ADM evaluator expects (grey is repeated; a 4th channel refused)."""
    if images.shape[-1] == 1:
        return np.repeat(images, 3, axis=-1)
    if images.shape[-1] != 3:
        raise SamplingError(f"ADM npz export needs 1 or 3 channel images, got {images.shape[-1]}")
    return images


def save_npz(path: str | Path, images: np.ndarray, labels: np.ndarray | None = None, meta: dict | None = None) -> Path:
    """ADM-format npz: ``arr_0`` uint8 NHWC RGB (+ ``arr_1`` labels, ``meta`` JSON); written atomically."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"arr_0": adm_images(images)}
    if labels is not None:
        arrays["arr_1"] = np.asarray(labels, np.int64)
    if meta is not None:
        arrays["meta"] = np.array(json.dumps(meta))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _umask() -> int:
    import os

    m = os.umask(0)
    os.umask(m)
    return m


def read_npz_meta(path: str | Path) -> dict:
    with np.load(path) as f:
        return json.loads(str(f["meta"])) if "meta" in f.files else {}


# --------------------------------------------------------------------------------------------------
# the whole thing, sharded across ranks
# --------------------------------------------------------------------------------------------------


def sample_images(
    model, n: int, cfg: SamplerConfig, *, seed: int = 0, batch_size: int = 64, labels: np.ndarray | None = None,
    dist=None, precision: str = "fp32", progress: bool = False, latent: bool | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """All ``n`` samples on rank 0 as (uint8 NHWC images, or float NCHW latents for latent models; labels).
    Other ranks draw their chunks and return ``None``. ``latent`` defaults to "4 channels"."""
    from .train import ddp as D

    d = dist or D.Dist()
    latent = is_latent_model(model) if latent is None else latent
    mine: list[tuple[int, np.ndarray, np.ndarray]] = []
    it = generate(model, n, cfg, seed=seed, batch_size=batch_size, labels=labels, rank=d.rank,
                  world_size=d.world_size, precision=precision)
    with _progress(progress and d.main, math.ceil(n / batch_size / d.world_size), f"sampling {n}") as tick:
        for j, x, y in it:
            arr = x.cpu().numpy() if latent else to_uint8_nhwc(x)
            mine.append((j, arr, y.cpu().numpy()))
            tick()
    parts = D.gather_objects(d, mine)
    if parts is None:
        return None
    chunks = sorted((c for p in parts for c in p), key=lambda c: c[0])
    return np.concatenate([c[1] for c in chunks]), np.concatenate([c[2] for c in chunks])


class _progress:
    """A rich progress bar (or nothing) with a ``tick()`` callable."""

    def __init__(self, on: bool, total: int, what: str) -> None:
        self.on, self.total, self.what = on, total, what

    def __enter__(self):
        if not self.on:
            return lambda: None
        from rich.progress import Progress

        self.p = Progress(transient=True)
        self.p.start()
        task = self.p.add_task(self.what, total=self.total)
        return lambda: self.p.advance(task)

    def __exit__(self, *a):
        if self.on:
            self.p.stop()
        return False


def parse_labels(spec: str | None, n: int, num_classes: int) -> np.ndarray | None:
    """``--classes 3`` (all class 3), ``--classes 0,1,2`` (cycled to n), or None (uniform random)."""
    if not spec:
        return None
    try:
        vals = [int(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise SamplingError(f"--classes must be comma-separated integers, got {spec!r}") from None
    if not vals:
        return None
    if any(not 0 <= v < num_classes for v in vals):
        raise SamplingError(f"--classes must be in 0..{num_classes - 1}, got {spec!r}")
    return np.resize(np.array(vals, np.int64), n)


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def sample_command(
    checkpoint: Path = typer.Argument(..., help="A dartool / SiT / REPA / DiT checkpoint."),
    out: Path = typer.Option(..., "--out", help="Output folder: grid.png, samples.npz (ADM format), samples.json."),
    n: int = typer.Option(64, "--n", help="Number of samples."),
    sampler: str = typer.Option("euler", help="euler | heun (ODE), sde (Euler-Maruyama, SiT defaults), ddim (DiT)."),
    steps: Optional[int] = typer.Option(None, help="Steps (default: euler/heun/ddim 50, sde 250)."),
    cfg_scale: float = typer.Option(1.0, help="Classifier-free guidance scale (1 = none)."),
    legacy_cfg_channels: Optional[int] = typer.Option(
        None, help="Guide only the first N channels (3 = DiT/SiT behaviour); default: all channels."),
    classes: Optional[str] = typer.Option(None, help="Class labels: '3' or '0,1,2' (cycled); default uniform random."),
    seed: int = typer.Option(0, help="Seed (sample i depends only on seed, i and the batch size)."),
    batch_size: int = typer.Option(64, help="Samples per forward batch (per rank)."),
    weights: str = typer.Option("ema", help="ema | model (for training checkpoints)."),
    precision: str = typer.Option("fp32", help="fp32 | bf16 (CUDA autocast)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    grid: int = typer.Option(64, help="Images in the PNG grid (0 = no grid)."),
    grid_scale: int = typer.Option(0, help="Enlarge the grid by this factor (0 = auto: small images x4)."),
    npz: bool = typer.Option(True, help="Write the ADM-format samples.npz (uint8 NHWC RGB under arr_0)."),
    overwrite: bool = typer.Option(False, help="Replace existing output files."),
) -> None:
    """Sample from a checkpoint: PNG grid + ADM .npz. Runs under torchrun too (samples sharded across ranks)."""
    from rich.console import Console

    from .checkpoints import load_checkpoint
    from .cli import _errors, fail
    from .train import ddp as D

    console = Console()
    if n < 1:
        fail(f"--n must be >= 1, got {n}")
    if weights not in ("ema", "model"):
        fail(f"--weights must be ema or model, got {weights!r}")
    if precision not in ("fp32", "bf16"):
        fail(f"--precision must be fp32 or bf16, got {precision!r}")
    with _errors():
        if out.exists() and any((out / f).exists() for f in ("samples.npz", "grid.png", "samples.json")) and not overwrite:
            raise FileExistsError(f"{out} already holds samples; pass --overwrite or another --out")
        scfg = SamplerConfig(method=sampler, steps=steps, cfg_scale=cfg_scale, guided_channels=legacy_cfg_channels)
        d = D.setup(device)
        try:
            ck = load_checkpoint(checkpoint, device=d.device, prefer=weights)
            model = ck.model
            labels = parse_labels(classes, n, model.config.num_classes)
            check_model(model, scfg)
            t0 = time.time()
            latent = is_latent_model(model, ck.meta)
            res = sample_images(model, n, scfg, seed=seed, batch_size=batch_size, labels=labels, dist=d,
                                precision=precision, progress=True, latent=latent)
            if res is not None:
                x, y = res
                meta = dict(checkpoint=str(checkpoint), checkpoint_sha256=ck.sha256, model=ck.config.label,
                            weights=ck.source, n=n, seed=seed, batch_size=batch_size, sampler=scfg.to_dict(),
                            precision=precision, device=str(d.device), world_size=d.world_size,
                            seconds=round(time.time() - t0, 2))
                out.mkdir(parents=True, exist_ok=True)
                written = []
                if latent:
                    np.savez(out / "latents.npz", latents=x, y=y)
                    written.append("latents.npz (a latent model: decode with your VAE; no PNG / ADM export)")
                else:
                    if grid:
                        k = min(grid, len(x))
                        sc = grid_scale or (4 if x.shape[1] <= 64 else 1)
                        save_grid(x[:k], out / "grid.png", scale=sc)
                        written.append("grid.png")
                    if npz:
                        save_npz(out / "samples.npz", x, y, meta)
                        written.append("samples.npz")
                (out / "samples.json").write_text(json.dumps(meta, indent=2))
                written.append("samples.json")
                console.print(f"{n} samples from {ck.config.label} ({scfg.label}) -> {out}: {', '.join(written)}")
        finally:
            D.cleanup(d)
