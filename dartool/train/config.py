"""Training configuration as plain data: :class:`TrainConfig` and one :class:`ArmConfig` per arm.

Both are dataclasses of ints, floats, bools, strings, lists and ``None`` only, so a config is written into
``RUN/config.json`` and into every checkpoint as a plain dict and read back with
``torch.load(weights_only=True)``.

An *arm* is one stream variant trained under otherwise identical conditions (DAR-METHOD.md section 3): the
residual baseline or a DAR variant. ``ArmConfig.parse`` reads the compact spec used on the command line::

    residual                 the SiT baseline
    dar                      DAR, static query, chunk 4, last-output summaries (the paper's default)
    dar:dynamic              DAR with a dynamic query, chunk 4
    dar:static_t:c1          dense DAR with t-injection
    dar:static:c4:sum        AttnRes-style chunk sums
    dar:static:c4:nofinal    the head reads a fixed uniform mean instead of its own router
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models.config import QUERIES, SIZES, SUMMARIES, ModelConfig, model_config
from ..models.compiling import COMPILE_MODES

PRECISIONS = ("auto", "bf16", "fp32", "fp64")
STRATEGIES = ("ddp", "fsdp2")
EVAL_WEIGHTS = ("ema", "model")
# --compile-mode: compile_model's modes, and auto (cudagraphs on CUDA, full elsewhere; TrainConfig.resolve_compile_mode)
TRAIN_COMPILE_MODES = ("auto",) + COMPILE_MODES


class ConfigError(ValueError):
    """A training option that cannot be used; the message says which one and why."""


@dataclass
class ArmConfig:
    """One arm of a paired experiment: how the stream routes (everything else is shared)."""

    routing: str = "residual"
    query: str = "static"
    chunk_size: int = 4
    summary: str = "last"
    final_router: bool = True
    name: str = ""

    def __post_init__(self) -> None:
        if self.routing not in ("residual", "dar"):
            raise ConfigError(f"arm routing must be 'residual' or 'dar', got {self.routing!r}")
        if self.query not in QUERIES:
            raise ConfigError(f"arm query must be one of {QUERIES}, got {self.query!r}")
        if self.summary not in SUMMARIES:
            raise ConfigError(f"arm summary must be one of {SUMMARIES}, got {self.summary!r}")
        if self.chunk_size < 1:
            raise ConfigError(f"arm chunk size must be >= 1, got {self.chunk_size}")
        if not self.name:
            self.name = self.default_name()

    def default_name(self) -> str:
        if self.routing == "residual":
            return "residual"
        name = f"dar-{self.query.replace('_', '')}-c{self.chunk_size}"
        if self.summary != "last":
            name += f"-{self.summary}"
        if not self.final_router:
            name += "-nofinal"
        return name

    @classmethod
    def parse(cls, spec: str) -> "ArmConfig":
        """``residual`` | ``dar[:QUERY][:cS][:sum][:nofinal][:name=NAME]`` (see the module docstring)."""
        parts = [p.strip() for p in spec.strip().split(":") if p.strip()]
        if not parts or parts[0] not in ("residual", "dar"):
            raise ConfigError(f"arm {spec!r}: start with 'residual' or 'dar' (e.g. dar:dynamic:c4)")
        kw: dict[str, Any] = {"routing": parts[0]}
        for p in parts[1:]:
            if p in QUERIES:
                kw["query"] = p
            elif p[0] == "c" and p[1:].isdigit():
                kw["chunk_size"] = int(p[1:])
            elif p in SUMMARIES:
                kw["summary"] = p
            elif p == "nofinal":
                kw["final_router"] = False
            elif p.startswith("name="):
                kw["name"] = p[5:]
            else:
                raise ConfigError(
                    f"arm {spec!r}: unknown part {p!r}; use a query {QUERIES}, cN (chunk size), "
                    f"'sum', 'nofinal' or name=NAME"
                )
        if kw["routing"] == "residual" and len(kw) > 1 and set(kw) != {"routing", "name"}:
            raise ConfigError(f"arm {spec!r}: a residual arm takes no DAR options")
        return cls(**kw)

    def model_overrides(self) -> dict[str, Any]:
        return dict(routing=self.routing, query=self.query, chunk_size=self.chunk_size,
                    summary=self.summary, final_router=self.final_router)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_arms() -> list[ArmConfig]:
    return [ArmConfig()]


def pair_arms() -> list[ArmConfig]:
    """``--pair``: the residual baseline and the paper's default DAR (static query, chunk 4)."""
    return [ArmConfig(), ArmConfig(routing="dar")]


@dataclass
class TrainConfig:
    """Everything a training run needs. Plain data only (see the module docstring)."""

    out: str = "runs/train"
    # ---------------------------------------------------------------- data
    data: str = "fashion-mnist"        # 'fashion-mnist', an npz (uint8 images or float 'latents'), an image folder
    data_limit: int | None = None      # train on the first n images of a seeded permutation (None = all)
    hflip: bool = False                # random horizontal flips (drawn from the paired streams)
    # ---------------------------------------------------------------- model (shared by every arm)
    size: str = "S"                    # S | B | L | XL (DiT/SiT sizes)
    patch: int = 2
    depth: int | None = None           # overrides of the size
    hidden_size: int | None = None
    num_heads: int | None = None
    input_size: int | None = None      # None = the data's size
    learn_sigma: bool = False          # SiT trains without the variance half
    arms: list[ArmConfig] = field(default_factory=default_arms)
    seeds: list[int] = field(default_factory=lambda: [0])
    # ---------------------------------------------------------------- optimisation (SiT recipe)
    steps: int = 400_000
    batch_size: int = 256              # global batch, split across ranks
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float | None = None
    ema_decay: float = 0.9999
    ema_warmup: bool = False           # decay_k = min(decay, (1 + k) / (10 + k)) for short runs
    label_dropout: float = 0.1
    precision: str = "auto"            # auto = bf16 autocast on CUDA, fp32 on CPU | bf16 | fp32 | fp64 (CPU tests)
    compile: bool = False
    compile_mode: str = "auto"         # auto = cudagraphs on CUDA, full elsewhere | full | regions | blocks | cudagraphs
    #                                    (dartool.models.compiling; with compile; see TrainConfig.resolve_compile_mode)
    tf32: bool = True
    strategy: str = "ddp"              # ddp | fsdp2 (documented, see dartool.train.ddp)
    time_budget: float | None = None   # seconds of training (the final eval / probe / report come after)
    # ---------------------------------------------------------------- logging and checkpoints
    log_every: int = 100
    ckpt_every: int = 10_000
    keep_checkpoints: int = 0          # step files kept per arm (0 = all); last.pt always points at the newest
    loss_bands: int = 4                # loss per band of noise level s
    tensorboard: bool = False
    # ---------------------------------------------------------------- evaluation
    eval_every: int = 0                # 0 = no periodic sample-quality evaluation
    eval_samples: int = 1000
    final_eval_samples: int = 0        # 0 = no final evaluation
    eval_sampler: str = "euler"
    eval_steps: int = 50
    eval_cfg: float = 1.0
    eval_batch: int = 250
    eval_weights: str = "ema"          # ema | model
    ref_samples: int = 50_000          # training images for the cached reference statistics
    pr_k: int = 3
    pr_samples: int = 10_000
    inception_weights: str | None = None   # a local pytorch-fid weights file (nothing downloads)
    grid_images: int = 64
    save_final_npz: bool = True
    # ---------------------------------------------------------------- probing and report
    probe_every: int = 0               # 0 = no periodic probe
    probe_noise_levels: list[float] = field(default_factory=lambda: [0.1, 0.5, 0.9])
    probe_samples: int = 64
    probe_final_samples: int = 256     # final probe: samples (32 noise levels each)
    probe_pooled_samples: int = 128    # final probe: samples whose pooled router inputs are kept (decodability)
    probe_projection_dim: int = 64     # final probe: random-projection size of the pooled vectors
    probe: bool = False                # the full probe grid at the end
    report: bool = False               # `dartool report` on the run at the end
    # ---------------------------------------------------------------- fine-tuning and auxiliary losses
    init_from: str | None = None
    trainable: list[str] = field(default_factory=list)   # glob patterns over parameter names
    repa: str | None = None            # REPA encoder (dartool.repa): 'efficientnet-lite0' or 'timm:<name>'
    repa_encoder_weights: str | None = None   # local weights file of a timm encoder
    repa_weight: float = 0.5
    repa_block: int | None = None      # 1-based block whose output is aligned (None: 8 for depth >= 24, else depth/3)
    device: str = "auto"

    def __post_init__(self) -> None:
        self.arms = [a if isinstance(a, ArmConfig) else ArmConfig(**a) for a in self.arms]
        self.seeds = [int(s) for s in self.seeds]
        self.betas = [float(b) for b in self.betas]
        self.probe_noise_levels = [float(s) for s in self.probe_noise_levels]
        self.trainable = [str(p) for p in self.trainable]
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise ConfigError(msg)

        if not self.arms:
            bad("no arms: pass --pair or --arms residual,dar")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            bad(f"arm names must differ, got {names}; name them with :name=NAME")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            bad(f"--seeds must list distinct integers, got {self.seeds}")
        if self.size.upper() not in SIZES:
            bad(f"--size must be one of {', '.join(SIZES)}, got {self.size!r} (override with --depth/--hidden/--heads)")
        if self.precision not in PRECISIONS:
            bad(f"--precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.strategy not in STRATEGIES:
            bad(f"--strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.compile_mode not in TRAIN_COMPILE_MODES:
            bad(f"--compile-mode must be one of {', '.join(TRAIN_COMPILE_MODES)}, got {self.compile_mode!r}")
        if self.eval_weights not in EVAL_WEIGHTS:
            bad(f"--eval-weights must be one of {EVAL_WEIGHTS}, got {self.eval_weights!r}")
        for name in ("steps", "batch_size", "log_every", "ckpt_every", "loss_bands", "eval_batch", "eval_steps"):
            if getattr(self, name) < 1:
                bad(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "eval_samples", "final_eval_samples", "probe_every", "keep_checkpoints"):
            if getattr(self, name) < 0:
                bad(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.label_dropout < 1.0:
            bad(f"--label-dropout must be in [0, 1), got {self.label_dropout}")
        if not 0.0 <= self.ema_decay <= 1.0:
            bad(f"--ema-decay must be in [0, 1], got {self.ema_decay}")
        if self.lr <= 0:
            bad(f"--lr must be > 0, got {self.lr}")
        if len(self.betas) != 2:
            bad(f"betas must be two numbers, got {self.betas}")
        if self.time_budget is not None and self.time_budget <= 0:
            bad(f"--time-budget must be > 0 seconds, got {self.time_budget}")
        if any(not 0.0 <= s <= 1.0 for s in self.probe_noise_levels):
            bad(f"--probe-levels must lie in [0, 1] (1 = pure noise), got {self.probe_noise_levels}")
        if self.eval_cfg < 1.0:
            bad(f"--eval-cfg must be >= 1 (1 = no guidance), got {self.eval_cfg}")
        if self.eval_sampler not in ("euler", "heun", "sde", "ddim"):
            bad(f"--eval-sampler must be euler, heun, sde or ddim, got {self.eval_sampler!r}")
        if self.inception_weights is not None and not Path(self.inception_weights).is_file():
            bad(f"--inception-weights {self.inception_weights}: no such file (nothing is downloaded)")
        if self.repa_weight < 0:
            bad(f"--repa-weight must be >= 0, got {self.repa_weight}")

    # ------------------------------------------------------------------ model configs
    def model_config(self, arm: ArmConfig, *, input_size: int, in_channels: int, num_classes: int) -> ModelConfig:
        """The ModelConfig of ``arm``: the shared backbone plus the arm's routing options."""
        cfg = model_config(
            self.size, self.patch, input_size=input_size, in_channels=in_channels, num_classes=num_classes,
            learn_sigma=self.learn_sigma, class_dropout_prob=self.label_dropout, **arm.model_overrides(),
        )
        over = {k: v for k, v in dict(depth=self.depth, hidden_size=self.hidden_size, num_heads=self.num_heads).items()
                if v is not None}
        if over:
            if "hidden_size" in over and "num_heads" not in over:
                over["num_heads"] = max(1, over["hidden_size"] // 64)
            try:
                cfg = cfg.replace(**over)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        return cfg

    def run_names(self) -> list[tuple[ArmConfig, int, str]]:
        """(arm, seed, folder name) of every run: ``<arm>`` for one seed, ``<arm>-seed<k>`` for several."""
        out = []
        for seed in self.seeds:
            for arm in self.arms:
                out.append((arm, seed, arm.name if len(self.seeds) == 1 else f"{arm.name}-seed{seed}"))
        return out

    # ------------------------------------------------------------------ plain data
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["arms"] = [a.to_dict() for a in self.arms]
        return d

    @property
    def cudagraphs(self) -> bool:
        """Whether the arms are compiled under CUDA graphs (``--compile --compile-mode cudagraphs``; ``auto`` counts
        once :meth:`resolve_compile_mode` has turned it into the device's mode)."""
        return self.compile and self.compile_mode == "cudagraphs"

    def resolve_compile_mode(self, device_type: str) -> "TrainConfig":
        """This config with ``compile_mode="auto"`` made concrete for the device: ``cudagraphs`` on CUDA (never
        slower than ``full`` in the project's measurements, and DAR's routers need it where the GPU has little work
        per step: benchmarks/COSTS.md), ``full`` elsewhere. Any other mode is kept as given."""
        if self.compile_mode != "auto":
            return self
        return dataclasses.replace(self, compile_mode="cudagraphs" if device_type == "cuda" else "full")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown training config fields {unknown}: was it written by a newer dartool?")
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        """A config from JSON: a TrainConfig dict, or a run folder's ``config.json`` (``{"train": {...}}``)."""
        p = Path(path)
        if p.is_dir():
            p = p / "config.json"
        if not p.exists():
            raise ConfigError(f"no training config at {p}")
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p} is not valid JSON ({e})") from None
        return cls.from_dict(d.get("train", d))

    def replace(self, **kw: Any) -> "TrainConfig":
        return dataclasses.replace(self, **kw)
