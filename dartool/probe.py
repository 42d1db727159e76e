"""``dartool probe``: run a model over a grid of noise levels and write a labelled zarr store (docs/STORE.md).

What one probe step measures, for one batch at one noise level s (all on the device, no module backward hooks):

* forward, from the model's named tap points (:mod:`dartool.models.sit`): the router inputs h_0..h_L
  (h_r read by sublayer r; h_L fed to the head), the sources v_0..v_L (v_0 = embedding, v_i = output of
  sublayer i-1) and, for DAR, the router weights alpha. The block outputs are z_k = h_{2k+2}.
* backward: one ``torch.autograd.grad`` of L = sum over the batch of the per-sample training loss (so a
  sample's gradient does not depend on the batch size) with respect to h_0..h_L, with the parameters'
  ``requires_grad`` switched off for the run, so no weight gradients are built.
* reductions: RMS per sample, per-token cosines normalised once and contracted with one batched matmul,
  the residual model's source importance dL/dg_{i->r} = sum_tokens <dL/dh_r, v_i> as one batched matmul
  (DAR-METHOD.md section 6.4), alpha per router x source, and pooled router inputs for decodability.

Samples and noise: sample j is image ``data_index[j]`` (the first N of a seeded permutation, or all images in
order when N is the data size) with noise drawn from its own seed, so the same images and the same noise are
used at every s, and results do not depend on the batch size. The loop runs batch-outer, noise-level-inner (ascending), so the time-neighbour cosine needs
only the previous level's normalised block outputs. Everything a step measures stays on the device until the
micro-batch ends; then one device->host copy, and the batch's chunks are written by a background thread.
"""
from __future__ import annotations

import contextlib
import gc
import math
import os
import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from .data import Dataset, DataError, check_fits, load_dataset
from .diffusion import default_noise_grid, model_time, noised, time_axis_label
from .envflags import env_flag
from .models import SiT, tapped
from .store import MEAN_VARS, ProbeStore, StoreLayout, prepare_store

OOM_ERRORS: tuple[type[BaseException], ...] = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),)
PRECISIONS = {"float32": "float32", "fp32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16"}
# Attributes that must match to resume a store (the store itself checks the shape-defining ones).
RESUME_KEYS = (
    "checkpoint_sha256", "model", "config", "time_convention", "data", "data_kind", "data_split", "labels",
    "seed", "precision", "projection_seed",
)
FMNIST_SIZES = (28, 32)


class ProbeOutOfMemory(RuntimeError):
    """Out of memory even at one sample per step; the message says what to try."""

TINY = 1e-30


# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------


@dataclass
class ProbeConfig:
    """Settings of one probe run (the ``dartool probe`` flags map onto these one to one)."""

    num_noise_levels: int = 32                 # evenly covering [0, 1], both ends included
    noise_levels: Sequence[float] | None = None  # explicit noise levels s in [0, 1] (1 = noise); wins over the count
    num_samples: int = 256
    batch_size: int = 64                       # samples per written chunk
    max_batch: int | None = None               # at most this many samples per forward (default: batch_size)
    seed: int = 0                              # sample choice, noise, Gaussian inputs
    precision: str = "float32"                 # "float32" | "bf16" (autocast; statistics stay float32)
    device: str = "auto"                       # "auto" | "cpu" | "cuda" | "cuda:1" ...
    pooled_samples: int | None = None          # samples with pooled features (default min(256, num_samples))
    projection_dim: int = 64                   # P: random projection of pooled vectors
    projection_seed: int = 0
    split: str = "train"                       # dataset split for the built-in Fashion-MNIST
    gaussian: bool = False                     # probe on N(0, 1) inputs (explicit opt-in)
    null_class: bool = False                   # feed the null class (unconditional)
    overwrite: bool = False                    # replace an existing probe store
    resume: bool = False                       # continue an unfinished probe store
    progress: bool = True                      # progress bar over (noise level, batch)
    background_writes: bool = True             # write each batch's chunks while the next batch computes

    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(f"invalid probe setting: {msg}")

        if self.noise_levels is None and self.num_noise_levels < 1:
            bad(f"the number of noise levels must be >= 1, got {self.num_noise_levels}")
        if self.num_samples < 1:
            bad(f"samples must be >= 1, got {self.num_samples}")
        if self.batch_size < 1:
            bad(f"batch size must be >= 1, got {self.batch_size}")
        if self.max_batch is not None and self.max_batch < 1:
            bad(f"max batch must be >= 1, got {self.max_batch}")
        if self.precision not in PRECISIONS:
            bad(f"precision must be float32 or bf16, got {self.precision!r}")
        if self.pooled_samples is not None and self.pooled_samples < 0:
            bad(f"pooled samples must be >= 0, got {self.pooled_samples}")
        if self.projection_dim < 1:
            bad(f"projection dim must be >= 1, got {self.projection_dim}")
        if self.overwrite and self.resume:
            bad("pass either --overwrite (start over) or --resume (continue), not both")

    @property
    def pooled(self) -> int:
        n = 256 if self.pooled_samples is None else self.pooled_samples
        return min(n, self.num_samples)

    @property
    def micro_batch(self) -> int:
        return min(self.batch_size, self.max_batch or self.batch_size)


def resolve_noise_levels(config: ProbeConfig, convention: str) -> tuple[np.ndarray, np.ndarray]:
    """(noise levels s ascending, the model's t at each). DiT's integer t snaps s to a multiple of 1/999."""
    if config.noise_levels is not None:
        s = np.asarray(list(config.noise_levels), dtype=np.float64).reshape(-1)
    else:
        s = default_noise_grid(config.num_noise_levels).numpy()
    if len(s) == 0 or not np.all(np.isfinite(s)) or s.min() < 0 or s.max() > 1:
        raise ValueError("noise levels must be numbers in [0, 1] (0 = data, 1 = pure noise)")
    if convention == "dit":
        s = np.round(s * 999) / 999
    s = np.unique(s)
    t = model_time(torch.from_numpy(s), convention).numpy().astype(np.float64)
    return s, t


def router_sources(num_sublayers: int, chunk: int) -> list[list[int]]:
    """The source index i (0..L) of every alpha column of every router r = 0..L, in ``DARStream`` order.

    Router r < L (sublayer r) in chunk n = r // S reads the summaries c_0..c_n (c_0 = v_0, c_m = the last
    output of chunk m-1 = source m*S) and then the raw outputs of its own chunk so far (sources nS+1..r). The
    head (r = L) never summarises the last chunk. With sum summaries source m*S stands for the chunk's sum.
    """
    L, S = num_sublayers, chunk
    out = []
    for r in range(L + 1):
        finished = r // S if r < L else (L - 1) // S
        out.append([m * S for m in range(finished + 1)] + list(range(finished * S + 1, r + 1)))
    return out


def resolve_device(spec: str, model: torch.nn.Module | None = None) -> torch.device:
    """``auto``: an in-memory model's own device, else CUDA when available, else the CPU."""
    if spec == "auto":
        if model is not None:
            return next(model.parameters()).device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec} asked for but no CUDA device is available; use --device cpu")
    return dev


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return dev.type


# --------------------------------------------------------------------------------------------------
# inputs: which samples, which labels, which noise
# --------------------------------------------------------------------------------------------------


def sample_seed(seed: int, stream: int, j: int) -> int:
    """A 63-bit seed for sample j of a named random stream (0 = noise, 1 = Gaussian inputs)."""
    a, b = np.random.SeedSequence([seed, stream, j]).generate_state(2, dtype=np.uint32)
    return (int(a) << 31) ^ int(b)


def sample_normals(seed: int, stream: int, indices: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
    """[len(indices), *shape] float32 N(0, 1) on the CPU; row j depends only on (seed, stream, index j)."""
    out = torch.empty(len(indices), *shape)
    g = torch.Generator()
    for row, j in enumerate(indices):
        g.manual_seed(sample_seed(seed, stream, int(j)))
        out[row] = torch.randn(*shape, generator=g)
    return out


def sample_noise(seed: int, indices: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
    """The noise eps of probe samples ``indices`` (the same at every noise level)."""
    return sample_normals(seed, 0, indices, shape)


@dataclass
class ProbeInputs:
    """The N probe samples: data (or Gaussian draws), labels and noise, each fixed per sample index."""

    dataset: Dataset | None            # None: Gaussian inputs
    index: np.ndarray                  # [N] dataset index of sample j (-1 for Gaussian inputs)
    labels: np.ndarray                 # [N] class fed to the model
    shape: tuple[int, int, int]        # (C, H, W) of the model input
    seed: int
    attrs: dict[str, Any] = field(default_factory=dict)

    def batch(self, start: int, stop: int, device: torch.device, dtype: torch.dtype):
        """x [n, C, H, W], y [n], eps [n, C, H, W] for samples start..stop-1."""
        ids = range(start, stop)
        if self.dataset is None:
            x = sample_normals(self.seed, 1, ids, self.shape).to(device)
        else:
            x, _ = self.dataset.batch(self.index[start:stop], size=self.shape[-1], device=device)
        y = torch.from_numpy(self.labels[start:stop].astype(np.int64)).to(device)
        eps = sample_noise(self.seed, ids, self.shape).to(device)
        return x.to(dtype), y, eps.to(dtype)


def resolve_inputs(data: Any, model: SiT, config: ProbeConfig, log: Callable[[str], None]) -> ProbeInputs:
    """Pick the data for ``model``: the given spec / Dataset / (x, y) tensors, the built-in Fashion-MNIST for a
    1-channel 28/32 px model, or Gaussian inputs when asked; a one-line DataError otherwise."""
    cfg = model.config
    shape = (cfg.in_channels, cfg.input_size, cfg.input_size)
    N = config.num_samples
    if config.gaussian and data is not None:
        raise ValueError("pass either data or --gaussian, not both")
    if config.gaussian:
        ds, attrs = None, {"data": "gaussian", "data_kind": "gaussian", "data_split": None}
    else:
        ds = _dataset(data, cfg, config)
        check_fits(ds, cfg.in_channels, cfg.input_size)
        attrs = {"data": _data_label(data, ds), "data_kind": ds.kind, "data_split": config.split if data is None or
                 str(data) in ("fashion-mnist", "fmnist", "builtin") else None}
        if len(ds) < N:
            raise DataError(f"{ds.name} has {len(ds)} samples; pass --samples {len(ds)} or fewer")
    if ds is None:
        index = np.full(N, -1, dtype=np.int64)
        labels = np.random.default_rng([config.seed, 2]).integers(0, cfg.num_classes, size=N)
        attrs["labels"] = "uniform random classes (seeded)"
    else:
        index = np.arange(N) if N == len(ds) else np.random.default_rng(config.seed).permutation(len(ds))[:N]
        index = index.astype(np.int64)
        labels = ds.y[index].astype(np.int64)
        attrs["labels"] = "dataset labels"
        if labels.size and (labels.max() >= cfg.num_classes or labels.min() < 0):
            log(f"warning: {ds.name} has labels up to {labels.max()} but the model has {cfg.num_classes} classes; "
                f"clipping them to 0..{cfg.num_classes - 1}")
            labels = np.clip(labels, 0, cfg.num_classes - 1)
            attrs["labels"] = f"dataset labels clipped to 0..{cfg.num_classes - 1}"
    if config.null_class:
        if model.y_embedder.embedding_table.num_embeddings <= cfg.num_classes:
            raise ValueError(f"{cfg.label} has no null class (class_dropout_prob = 0); drop --null-class")
        labels = np.full(N, cfg.num_classes, dtype=np.int64)
        attrs["labels"] = f"null class {cfg.num_classes} (unconditional)"
    return ProbeInputs(ds, index, labels, shape, config.seed, attrs)


def _dataset(data: Any, cfg, config: ProbeConfig) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
        if x.ndim != 4:
            raise DataError(f"tensor data must be N x C x H x W model inputs, got shape {tuple(x.shape)}")
        y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y, dtype=np.int64).reshape(-1)
        return Dataset(x.detach().float().cpu().numpy(), y, "tensors", "latents", int(y.max()) + 1 if len(y) else 1)
    if data is None:
        if cfg.in_channels == 1 and cfg.input_size in FMNIST_SIZES:
            return load_dataset("fashion-mnist", split=config.split)
        raise DataError(
            f"no built-in data fits {cfg.label} ({cfg.in_channels} channels, {cfg.input_size} px): pass --data "
            f"(latents.npz with key 'latents' for a latent model, or images as npz / folder), or --gaussian to "
            f"probe on N(0, 1) inputs"
        )
    return load_dataset(data, split=config.split)


def _data_label(data: Any, ds: Dataset) -> str:
    if isinstance(data, (str, os.PathLike)) and Path(data).exists():
        return str(Path(data).resolve())
    return ds.name


# --------------------------------------------------------------------------------------------------
# capture: tap functions and the per-step reductions
# --------------------------------------------------------------------------------------------------


@dataclass
class StepContext:
    """Everything a probe step needs that does not change between steps."""

    model: SiT
    device: torch.device
    convention: str
    dar: bool
    K: int
    L: int
    T: int
    D: int
    slots: dict[str, tuple[str, int]]        # tap name -> ("embed" | "h" | "v" | "alpha", index)
    sources: list[list[int]]                 # alpha column -> source index, per router (DAR)
    alpha_index: torch.Tensor | None         # flat index into [R * I] of the concatenated alpha columns
    undefined: torch.Tensor                  # [R, I] bool: source i is not part of h_r (i > r)
    proj_h: torch.Tensor                     # [D, P]
    proj_x: torch.Tensor                     # [p * p * C, P]
    acc: torch.dtype                         # statistics dtype (float32; float64 for a float64 model)
    stack: torch.dtype                       # dtype of the stacked sources / gradients
    autocast: torch.dtype | None             # bfloat16 under --precision bf16
    side: Any = None                         # CUDA stream the reductions run on (None: inline)

    @property
    def R(self) -> int:
        return self.L + 1

    @classmethod
    def build(cls, model: SiT, device: torch.device, precision: str = "float32", projection_dim: int = 64,
              projection_seed: int = 0, overlap: bool | None = None) -> "StepContext":
        """``overlap`` (default: on for CUDA unless ``DARTOOL_PROBE_OVERLAP=0``): run each step's reductions on a
        side stream, so that these memory-bound kernels overlap the next noise level's forward and backward."""
        cfg = model.config
        K, L = cfg.depth, cfg.num_sublayers
        slots: dict[str, tuple[str, int]] = {"hook_embed": ("embed", 0), f"blocks.{K - 1}.hook_out": ("h", L)}
        for k in range(K):
            slots[f"blocks.{k}.hook_attn_in"] = ("h", 2 * k)
            slots[f"blocks.{k}.hook_mlp_in"] = ("h", 2 * k + 1)
            slots[f"blocks.{k}.hook_attn_out"] = ("v", 2 * k + 1)
            slots[f"blocks.{k}.hook_mlp_out"] = ("v", 2 * k + 2)
        dar = cfg.routing == "dar"
        sources = router_sources(L, cfg.chunk_size) if dar else []
        alpha_index = None
        if dar:
            for r in range(L + 1):
                slots[f"routers.{r}.hook_alpha"] = ("alpha", r)
            flat = [r * (L + 1) + i for r, src in enumerate(sources) for i in src]
            alpha_index = torch.tensor(flat, dtype=torch.long, device=device)
        undefined = torch.arange(L + 1)[None, :] > torch.arange(L + 1)[:, None]     # [R, I]
        param_dtype = next(model.parameters()).dtype
        acc = torch.float64 if param_dtype == torch.float64 else torch.float32
        bf16 = PRECISIONS[precision] == "bfloat16"
        P, D, pc = projection_dim, cfg.hidden_size, cfg.patch_size**2 * cfg.in_channels
        g = torch.Generator().manual_seed(projection_seed)
        if overlap is None:
            overlap = env_flag("DARTOOL_PROBE_OVERLAP", True)
        proj_h = torch.randn(D, P, generator=g, dtype=torch.float64) / math.sqrt(D)
        proj_x = torch.randn(pc, P, generator=g, dtype=torch.float64) / math.sqrt(pc)
        return cls(
            model=model, device=device, convention=cfg.time_convention, dar=dar, K=K, L=L, T=cfg.num_tokens,
            D=D, slots=slots, sources=sources, alpha_index=alpha_index, undefined=undefined.to(device),
            proj_h=proj_h.to(device, acc), proj_x=proj_x.to(device, acc), acc=acc,
            stack=torch.bfloat16 if bf16 else param_dtype, autocast=torch.bfloat16 if bf16 else None,
            side=torch.cuda.Stream(device) if device.type == "cuda" and overlap else None,
        )

    def join(self) -> None:
        """Make the current stream wait for the reductions enqueued so far (before reading their results)."""
        if self.side is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.side)

    def autocast_ctx(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast)


class Capture:
    """Collects the tapped tensors of one forward (kept in the graph until the gradients are taken)."""

    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx
        self.active = False
        self.reset()

    def reset(self) -> None:
        R = self.ctx.R
        self.h: list[torch.Tensor | None] = [None] * R        # router inputs h_0..h_L
        self.v: list[torch.Tensor | None] = [None] * R        # sources v_0..v_L
        self.alpha: list[torch.Tensor | None] = [None] * R    # DAR router weights [B, T, N_r]

    def tap(self, name: str, x: torch.Tensor) -> torch.Tensor | None:
        if not self.active:
            return None
        kind, i = self.ctx.slots[name]
        if kind == "embed":  # a fresh leaf: the graph starts here, no path to the (frozen) weights
            x = x.detach().requires_grad_(True)
            self.v[0] = x
            return x
        getattr(self, kind)[i] = x
        return None

    def hooks(self) -> dict[str, Callable]:
        pats = ["hook_embed", f"blocks.{self.ctx.K - 1}.hook_out", "blocks.*.hook_attn_in", "blocks.*.hook_mlp_in",
                "blocks.*.hook_attn_out", "blocks.*.hook_mlp_out"]
        return {p: self.tap for p in pats}

    def readers(self) -> dict[str, Callable]:
        """Read-only taps: alpha (the fused DAR router stays on and hands over its in-kernel alpha)."""
        return {"routers.*.hook_alpha": self.tap} if self.ctx.dar else {}


@contextlib.contextmanager
def capturing(ctx: StepContext) -> Iterator[Capture]:
    """Attach the probe's taps (once per run) and freeze the parameters; both undone on exit."""
    cap = Capture(ctx)
    with frozen(ctx.model), tapped(ctx.model, cap.hooks(), readers=cap.readers()):
        yield cap


@contextlib.contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
    """Switch ``requires_grad`` off on every parameter (no weight gradients), restoring it on exit."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


@contextlib.contextmanager
def exact_fp32_matmul() -> Iterator[None]:
    """float32 matmuls in full precision for the statistics (a trainer may have switched TF32 on: its 10-bit
    mantissa is too coarse for cosines near 1); the previous setting is restored on exit."""
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


@dataclass
class LevelState:
    """What the next noise level's step needs from this one: the block outputs stacked block-major
    zs [K+1, B, T, D] (z_{-1} = h_0, then z_0..z_{K-1}; statistics dtype) and their per-token norms [B, T, K+1]."""

    zs: torch.Tensor
    norms: torch.Tensor


def _rms(x: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """Per-sample RMS over tokens and channels: [B, T, D] -> [B]."""
    return torch.linalg.vector_norm(x, dim=(-2, -1), dtype=acc) / math.sqrt(x.shape[-2] * x.shape[-1])


def token_groups(T: int, most: int = 16) -> int:
    """Number of token groups the source-importance contraction is split into (a divisor of T, at most
    ``most``): one long [R x T*D] @ [T*D x I] product per sample runs far below the memory bandwidth on a GPU,
    B x groups products of length T*D/groups do not."""
    return max(d for d in range(1, min(T, most) + 1) if T % d == 0)


def _bmm_acc(a: torch.Tensor, b: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """a @ b (batched) with the result in ``acc``: 16-bit operands accumulate into float32 output on CUDA."""
    if a.dtype != acc and a.is_cuda:
        return torch.bmm(a, b, out_dtype=acc)
    return torch.bmm(a, b).to(acc)


def probe_step(
    ctx: StepContext, cap: Capture, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, s: float,
    n_pooled: int = 0, prev: LevelState | None = None,
) -> tuple[dict[str, torch.Tensor], LevelState]:
    """Forward + one autograd.grad + reductions for one batch at noise level s.

    Returns per-sample statistics (device tensors, first dim = batch; names as in ``store.MEAN_VARS`` plus
    ``pooled_h`` / ``pooled_x`` for the first ``n_pooled`` samples and ``time_cos_prev`` when ``prev`` holds
    the previous noise level's state), and this level's state for the next step. With ``ctx.side`` set the
    statistics are still being computed on that stream when this returns: ``ctx.join()`` before reading them.
    """
    model, acc = ctx.model, ctx.acc
    B, C = x.shape[0], x.shape[1]
    level = torch.full((B,), float(s), dtype=torch.float64, device=x.device)
    xt, t, target = noised(x, eps, level, ctx.convention)
    cap.reset()
    cap.active = True
    try:
        with torch.enable_grad(), ctx.autocast_ctx():
            out = model(xt, t, y)                                                   # [B, C_out, H, W]
    finally:
        cap.active = False
    if any(a is None for a in cap.h):
        raise RuntimeError("the probe's tap points did not fire: probe the model in eager mode (not compiled)")
    with torch.enable_grad():
        per_sample = (out[:, :C].to(acc) - target.to(acc)).pow(2).flatten(1).mean(1)   # [B]
        grads = torch.autograd.grad(per_sample.sum(), cap.h, allow_unused=True)   # R x [B, T, D]
    grads = [torch.zeros_like(h) if g is None else g for g, h in zip(grads, cap.h)]  # an h nothing reads
    del out, target
    stream = contextlib.nullcontext()
    if ctx.side is not None:  # enqueue the reductions on the side stream and return: the next step overlaps them
        ctx.side.wait_stream(torch.cuda.current_stream(ctx.device))
        for a in (*cap.h, *cap.v, *grads, *(a for a in cap.alpha if a is not None), xt):
            a.record_stream(ctx.side)          # their memory is not reused before the side stream is done
        stream = torch.cuda.stream(ctx.side)
    with stream, torch.no_grad(), exact_fp32_matmul():
        stats, state = _reduce(ctx, cap, grads, xt, n_pooled, prev)
    stats["loss"] = per_sample.detach()
    cap.reset()
    return stats, state


def _reduce(ctx: StepContext, cap: Capture, grads: list[torch.Tensor], xt: torch.Tensor, n_pooled: int,
            prev: LevelState | None) -> tuple[dict[str, torch.Tensor], LevelState]:
    """Per-sample statistics of one step. Releases the captured tensors and ``grads`` as it goes, so the peak
    is the captured states plus the stacked copies.

    Layout for speed on a GPU (each captured tensor is read as few times as possible, and every contraction is a
    batched matmul of a shape the GEMM libraries handle at full bandwidth):
    * the block outputs are copied once into a stack zs [K+1, B, T, D]; one batched Gram matrix per token (the
      stack read as [B*T, K+1, D] through its strides) gives their norms (diagonal) and every per-token cosine,
      block x block, at once; against the previous noise level's stack, one more per-token product gives the
      neighbouring-level cosines;
    * the residual source importance contracts stacked gradients and sources split into token groups
      ([R x T*D/g] @ [T*D/g x I] per sample and group, then summed over groups).
    Every copy writes a contiguous block (the vectorised copy kernels); no matmul operand needs a second copy.
    """
    acc, T, D, L, R, K = ctx.acc, ctx.T, ctx.D, ctx.L, ctx.R, ctx.K
    h, v = cap.h, cap.v
    B, dev = h[0].shape[0], h[0].device
    nan = float("nan")
    st: dict[str, torch.Tensor] = {}

    # block outputs: z_{-1} = h_0, z_k = h_{2k+2}; stacked block-major (contiguous, vectorised copies), read as
    # [B*T, K+1, D] token matrices through strides (batch stride D, row stride B*T*D: no second copy)
    zi = range(0, R, 2)
    zs = torch.empty(K + 1, B, T, D, dtype=acc, device=dev)                                 # [K+1, B, T, D]
    for j, r in enumerate(zi):
        zs[j].copy_(h[r])
    zf = zs.view(K + 1, B * T, D).transpose(0, 1)                                          # [B*T, K+1, D]
    gram = torch.bmm(zf, zf.transpose(1, 2))                                               # [B*T, K+1, K+1]
    n2 = torch.diagonal(gram, dim1=1, dim2=2).clamp_min(0)                                 # [B*T, K+1]
    norms = n2.sqrt()
    inv = 1.0 / norms.clamp_min(TINY)
    cos = (gram * inv[:, :, None] * inv[:, None, :]).view(B, T, K + 1, K + 1).mean(1)      # [B, K+1, K+1]
    st["block_cos"] = cos[:, 1:, 1:]
    st["adjacent_cos"] = torch.diagonal(cos, offset=1, dim1=1, dim2=2)                      # [B, K]
    if prev is not None:
        pf = prev.zs.view(K + 1, B * T, D).transpose(0, 1)                                 # [B*T, K+1, D]
        cross = torch.diagonal(torch.bmm(pf, zf.transpose(1, 2)), dim1=1, dim2=2)          # [B*T, K+1]
        tcos = cross * inv * (1.0 / prev.norms.view(B * T, K + 1).clamp_min(TINY))
        st["time_cos_prev"] = tcos.view(B, T, K + 1)[:, :, 1:].mean(1)                     # [B, K]
    norms = norms.view(B, T, K + 1)

    # magnitudes: router inputs (the block outputs' from their Gram diagonal), sources, gradients
    h_rms = torch.empty(B, R, dtype=acc, device=dev)
    h_rms[:, 0::2] = (n2.view(B, T, K + 1).mean(1) / D).sqrt()
    for r in range(1, R, 2):
        h_rms[:, r] = _rms(h[r], acc)
    v_rms = torch.stack([_rms(a, acc) for a in v], 1)                                       # [B, R] (sources)
    g_rms = torch.stack([_rms(g, acc) for g in grads], 1)                                   # [B, R]
    st["h_rms"], st["v_rms"], st["h_grad_rms"] = h_rms[:, :L], v_rms[:, 1:], g_rms[:, :L]
    st["update_ratio"] = v_rms[:, 1:] / h_rms[:, :L]
    st["z_rms"], st["z_grad_rms"] = h_rms[:, 2::2], g_rms[:, 2::2]                          # z_k = h_{2k+2}

    # pooled router inputs for timestep decodability
    if n_pooled:
        pooled = torch.stack([a[:n_pooled].mean(1, dtype=acc) for a in h], 1)             # [n, R, D]
        st["pooled_h"] = pooled @ ctx.proj_h                                               # [n, R, P]
        st["pooled_x"] = patch_mean(xt[:n_pooled], ctx.model.config.patch_size).to(acc) @ ctx.proj_x  # [n, P]
    h[:] = [None] * R                                                                      # release h

    # routing: alpha (DAR) or the residual source importance dL/dg_{i->r} = sum_t <dL/dh_r, v_i>
    if ctx.dar:
        alphas = [a.to(acc) for a in cap.alpha]                                            # R x [B, T, N_r]
        alpha = torch.full((B, R * R), nan, dtype=acc, device=dev)
        alpha[:, ctx.alpha_index] = torch.cat([a.mean(1) for a in alphas], -1)
        st["alpha"] = alpha.view(B, R, R)
        st["alpha_entropy"] = torch.stack([-(a * a.clamp_min(TINY).log()).sum(-1).mean(-1) for a in alphas], 1)
        st["importance"] = torch.full((B, R, R), nan, dtype=acc, device=dev)
    else:
        # stacked router-major / source-major (contiguous copies), read as [B*n, R, T*D/n] through strides
        n = token_groups(T)
        w = (T // n) * D
        Gs = torch.empty(R, B, T, D, dtype=ctx.stack, device=dev)                          # [R, B, T, D]
        for r, g in enumerate(grads):
            Gs[r].copy_(g)
        grads.clear()
        Vs = torch.empty(R, B, T, D, dtype=ctx.stack, device=dev)                          # [I, B, T, D]
        for i, a in enumerate(v):
            Vs[i].copy_(a)
        v[:] = [None] * R
        gm = Gs.view(R, B * n, w).transpose(0, 1)                                          # [B*n, R, w]
        vm = Vs.view(R, B * n, w).permute(1, 2, 0)                                         # [B*n, w, I]
        imp = _bmm_acc(gm, vm, acc)                                                        # [B*n, R, I]
        del Gs, Vs
        st["importance"] = imp.view(B, n, R, R).sum(1).masked_fill(ctx.undefined, nan)
        st["alpha"] = torch.full((B, R, R), nan, dtype=acc, device=dev)
        st["alpha_entropy"] = torch.full((B, R), nan, dtype=acc, device=dev)
    return st, LevelState(zs, norms)


def patch_mean(x: torch.Tensor, p: int) -> torch.Tensor:
    """Token-mean of the patchified input: [B, C, H, W] -> [B, p*p*C] in the head's (p, q, c) order."""
    B, C, H, W = x.shape
    m = x.reshape(B, C, H // p, p, W // p, p).mean((2, 4))                                 # [B, C, p, p]
    return m.permute(0, 2, 3, 1).reshape(B, p * p * C)


# --------------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------------


def run_probe(
    model_or_checkpoint: Any, data: Any = None, config: ProbeConfig | None = None, out: str | os.PathLike = "probe.zarr",
    *, log: Callable[[str], None] | None = None, attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Probe a model over a grid of noise levels and write the store ``out`` (docs/STORE.md); returns its path.

    ``model_or_checkpoint``: a checkpoint path (DiT / SiT / REPA / dartool layouts), a
    :class:`dartool.checkpoints.LoadedCheckpoint`, or an in-memory :class:`dartool.models.SiT` (also wrapped in
    DDP or ``torch.compile``; it is probed in eager mode on its own device and left as it was).
    ``data``: None (the built-in Fashion-MNIST where it fits), a spec for :func:`dartool.data.load_dataset`, a
    :class:`dartool.data.Dataset`, or an ``(x, y)`` pair of tensors already in model-input space.
    ``attrs``: extra root attributes (e.g. the training step).
    """
    config = config or ProbeConfig()
    config.validate()
    log = log or _stderr
    model, model_attrs = _resolve_model(model_or_checkpoint, config.device)
    device = next(model.parameters()).device
    cfg = model.config
    inputs = resolve_inputs(data, model, config, log)
    levels, model_t = resolve_noise_levels(config, cfg.time_convention)
    layout = StoreLayout(tuple(levels), cfg.depth, config.num_samples, config.batch_size, config.pooled,
                         config.projection_dim)
    root_attrs = {
        **model_attrs,
        "model": cfg.label, "config": cfg.to_dict(), "routing": cfg.routing,
        "chunk_size": cfg.chunk_size if cfg.routing == "dar" else None,
        "query": cfg.query if cfg.routing == "dar" else None,
        "summary": cfg.summary if cfg.routing == "dar" else None,
        "time_convention": cfg.time_convention, "noise_level_definition": "1 = pure noise, 0 = data",
        "model_time_definition": time_axis_label(cfg.time_convention),
        **inputs.attrs,
        "samples": "sample j = data item data_index[j] (all items in order when N equals the data size, else the "
                   "first N of a permutation seeded by `seed`) with noise from its own seed; the same images, labels "
                   "and noise at every noise level",
        "seed": config.seed, "precision": PRECISIONS[config.precision], "device": device_name(device),
        "max_batch": config.micro_batch, "projection_seed": config.projection_seed, "loss": loss_definition(cfg),
        "torch_version": torch.__version__, "zarr_version": _zarr_version(),
        **dict(attrs or {}),
    }
    arrays = {"model_t": ("noise_level", model_t), "label": ("sample", inputs.labels),
              "data_index": ("sample", inputs.index)}
    store = prepare_store(out, layout, root_attrs, arrays, overwrite=config.overwrite, resume=config.resume,
                          match_keys=RESUME_KEYS)
    if store.complete:
        log(f"{out} is already complete; nothing to do")
        return Path(out)
    if config.resume:
        store.note_resume({"device": device_name(device), "max_batch": config.micro_batch})
    _Prober(model, inputs, store, config, device, log).run()
    store.finalize()
    return Path(out)


def loss_definition(cfg) -> str:
    what = {
        "sit": "velocity MSE, target x - eps (SiT: t = 1 - s)",
        "repa": "velocity MSE, target eps - x (REPA: t = s; the REPA alignment term is not included)",
        "dit": "epsilon MSE (DiT: t = round(999 s), linear betas)",
    }[cfg.time_convention]
    return (f"L = sum over the samples of a batch of the per-sample {what}, the mean over C x H x W of the squared "
            f"error of the first C output channels; gradients are dL/d(hidden state), so a sample's gradient does "
            f"not depend on the batch size")


def _resolve_model(obj: Any, device_spec: str) -> tuple[SiT, dict[str, Any]]:
    from .checkpoints import LoadedCheckpoint, load_checkpoint

    if isinstance(obj, (str, os.PathLike)):
        obj = load_checkpoint(obj, device=resolve_device(device_spec))
    if isinstance(obj, LoadedCheckpoint):
        model = obj.model.to(resolve_device(device_spec, None if device_spec != "auto" else obj.model))
        return model, {"checkpoint": str(Path(obj.path).resolve()), "checkpoint_sha256": obj.sha256,
                       "checkpoint_layout": obj.layout, "weights": obj.source}
    model = obj
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):   # DDP / torch.compile wrappers
        model = getattr(model, "module", None) or getattr(model, "_orig_mod")
    if not isinstance(model, SiT):
        raise ValueError(f"run_probe needs a checkpoint path or a dartool SiT model, got {type(obj).__name__}")
    want = resolve_device(device_spec, model)
    have = next(model.parameters()).device
    if want != have and not (want.type == have.type and want.index is None):
        raise ValueError(f"the model is on {have} but the probe was asked to run on {want}; move the model first")
    return model, {"checkpoint": None, "checkpoint_sha256": None, "checkpoint_layout": "in-memory",
                   "weights": "in-memory"}


def _zarr_version() -> str:
    import zarr

    return zarr.__version__


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


class _Prober:
    """Runs the (batch, noise level) loop with micro-batching, OOM halving, progress and background writes."""

    def __init__(self, model: SiT, inputs: ProbeInputs, store: ProbeStore, config: ProbeConfig,
                 device: torch.device, log: Callable[[str], None]) -> None:
        self.model, self.inputs, self.store, self.config, self.log = model, inputs, store, config, log
        self.layout = store.layout
        self.levels = np.asarray(self.layout.noise_levels)
        self.ctx = StepContext.build(model, device, config.precision, config.projection_dim, config.projection_seed)
        self.dtype = next(model.parameters()).dtype
        self.micro = config.micro_batch
        self.progress = None
        self.task = None

    # ------------------------------------------------------------------ plan
    def plan(self) -> list[tuple[int, list[int], list[int]]]:
        """(batch, levels to write, levels to compute) for every batch with unwritten units. Writing level i
        needs level i+1 as well (the time-neighbour cosine), so that one is computed too."""
        done = self.store.done()                                                  # [S, nb]
        S = self.layout.num_levels
        work = []
        for b in range(self.layout.num_batches):
            pending = [i for i in range(S) if not done[i, b]]
            if pending:
                compute = sorted(set(pending) | {i + 1 for i in pending if i + 1 < S})
                work.append((b, pending, compute))
        return work

    # ------------------------------------------------------------------ loop
    def run(self) -> None:
        work = self.plan()
        total = sum(len(c) * (self.layout.batch_range(b)[1] - self.layout.batch_range(b)[0]) for b, _, c in work)
        pool = ThreadPoolExecutor(1, thread_name_prefix="probe-writer") if self.config.background_writes else None
        pending_write: Future | None = None
        try:
            with self._progress(total), capturing(self.ctx) as cap:
                self.cap = cap
                for b, write_levels, compute in work:
                    results = self.run_batch(b, compute)
                    per_sample, pooled = _assemble(results, write_levels)
                    if pending_write is not None:
                        pending_write.result()
                    if pool is None:
                        self.store.write_batch(b, write_levels, per_sample, pooled)
                    else:
                        pending_write = pool.submit(self.store.write_batch, b, write_levels, per_sample, pooled)
                if pending_write is not None:
                    pending_write.result()
        finally:
            if pool is not None:
                pool.shutdown(wait=True)  # an interrupted run still finishes (never half-writes) its last batch

    @contextlib.contextmanager
    def _progress(self, total: int):
        if not self.config.progress:
            yield
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        with Progress(TextColumn("[bold]probe[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("sample-steps"), TimeElapsedColumn(), TimeRemainingColumn()) as prog:
            self.progress, self.task = prog, prog.add_task("", total=total)
            try:
                yield
            finally:
                self.progress = None

    def _advance(self, n: int, desc: str | None = None) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=n, **({"description": desc} if desc else {}))

    # ------------------------------------------------------------------ one batch
    def run_batch(self, b: int, levels: list[int]) -> dict[int, dict[str, np.ndarray]]:
        """Per-sample host arrays for batch b at every level in ``levels``, merged over micro-batches."""
        start, stop = self.layout.batch_range(b)
        queue = deque((a, min(a + self.micro, stop)) for a in range(start, stop, self.micro))
        parts: list[dict[int, dict[str, np.ndarray]]] = []
        while queue:
            a, z = queue.popleft()
            oom = False
            try:
                parts.append(self.run_micro(b, a, z, levels))
            except OOM_ERRORS:
                oom = True
            if oom:  # outside the except block, so the failed step's frames are already released
                self.cap.reset()
                n = z - a
                if n == 1:
                    raise ProbeOutOfMemory("out of memory with one sample per step: use --precision bf16, another "
                                           "device, or a smaller model")
                self.micro = max(1, min(self.micro, n // 2))
                self.log(f"out of memory at {n} samples per step; continuing with {self.micro} "
                         f"(pass --max-batch {self.micro} to start there)")
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                queue.extendleft(reversed([(c, min(c + self.micro, z)) for c in range(a, z, self.micro)]))
        return _merge(parts)

    def run_micro(self, b: int, a: int, z: int, levels: list[int]) -> dict[int, dict[str, np.ndarray]]:
        """All ``levels`` for samples a..z-1: device statistics, one device->host copy at the end."""
        x, y, eps = self.inputs.batch(a, z, self.ctx.device, self.dtype)
        n_pooled = max(0, min(z, self.layout.pooled_samples) - a)
        out: dict[tuple[int, str], torch.Tensor] = {}
        prev, prev_level, advanced = None, None, 0
        try:
            for i in levels:
                stats, state = probe_step(self.ctx, self.cap, x, y, eps, float(self.levels[i]), n_pooled,
                                          prev if prev_level == i - 1 else None)
                if "time_cos_prev" in stats:
                    out[(i - 1, "time_cos")] = stats.pop("time_cos_prev")
                out.update({(i, k): t for k, t in stats.items()})
                prev, prev_level = state, i
                self._advance(z - a, f"s={self.levels[i]:.3f}  batch {b + 1}/{self.layout.num_batches}")
                advanced += z - a
        except BaseException:
            self._advance(-advanced)
            raise
        del prev
        nan_cos = torch.full((z - a, self.ctx.K), float("nan"), dtype=self.ctx.acc, device=self.ctx.device)
        for i in levels:
            out.setdefault((i, "time_cos"), nan_cos)
        self.ctx.join()
        return _to_host(out)


def _to_host(out: Mapping[tuple[int, str], torch.Tensor]) -> dict[int, dict[str, np.ndarray]]:
    """One packed device->host copy of many small tensors; unpacked into level -> name -> array."""
    keys = list(out)
    acc = torch.float64 if any(out[k].dtype == torch.float64 for k in keys) else torch.float32
    flat = torch.cat([out[k].reshape(-1).to(acc) for k in keys]).cpu().numpy()
    res: dict[int, dict[str, np.ndarray]] = {}
    pos = 0
    for k in keys:
        n = out[k].numel()
        res.setdefault(k[0], {})[k[1]] = flat[pos:pos + n].reshape(tuple(out[k].shape))
        pos += n
    return res


def _merge(parts: Sequence[dict[int, dict[str, np.ndarray]]]) -> dict[int, dict[str, np.ndarray]]:
    """Concatenate micro-batch results along the sample axis."""
    merged: dict[int, dict[str, np.ndarray]] = {}
    for level in parts[0]:
        names = {n for p in parts for n in p.get(level, {})}
        merged[level] = {n: np.concatenate([p[level][n] for p in parts if n in p[level]], 0) for n in names}
    return merged


def _assemble(results: Mapping[int, Mapping[str, np.ndarray]], levels: Sequence[int]):
    """[n_levels, n_samples, ...] per variable for the levels to write."""
    per_sample = {name: np.stack([results[i][name] for i in levels]) for name in MEAN_VARS}
    pooled = {}
    if "pooled_h" in results[levels[0]]:
        pooled = {name: np.stack([results[i][name] for i in levels]) for name in ("pooled_h", "pooled_x")}
    return per_sample, pooled


__all__ = [
    "ProbeConfig", "ProbeOutOfMemory", "run_probe", "probe_step", "StepContext", "Capture", "capturing", "frozen",
    "router_sources",
    "resolve_noise_levels", "resolve_inputs", "ProbeInputs", "sample_noise", "sample_normals", "patch_mean",
    "loss_definition", "resolve_device",
]
