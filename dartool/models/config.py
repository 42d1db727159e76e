"""Model configuration as plain data, and the size registry of the SiT/DiT family.

A :class:`ModelConfig` is a dataclass of ints, floats, bools and strings only, so it can be stored
in a checkpoint as a dict and loaded back with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# name -> (depth, hidden size, heads). mlp ratio 4 for all (DiT / SiT Table 1).
SIZES: dict[str, tuple[int, int, int]] = {
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}
PATCHES = (2, 4, 8)
HEADS_BY_WIDTH = {d: h for (_, d, h) in SIZES.values()}

ROUTINGS = ("residual", "dar")
QUERIES = ("static", "static_t", "dynamic")
SUMMARIES = ("last", "sum")
# How each family feeds t to the network and which end of t is noise.
#   sit:  float t in [0, 1], 0 = noise, 1 = data, velocity target x1 - x0
#   dit:  int t in [0, 999], 999 = noise, epsilon target
#   repa: float t in [0, 1], 1 = noise, velocity target eps - x
TIME_CONVENTIONS = ("sit", "dit", "repa")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model. Plain data only (checkpoint-safe)."""

    input_size: int = 32
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    class_dropout_prob: float = 0.1
    learn_sigma: bool = True
    norm_eps: float = 1e-6
    # The stream: "residual" (h_{l+1} = h_l + v_l) or "dar" (Diffusion-Adaptive Routing).
    routing: str = "residual"
    # DAR options (ignored for residual).
    query: str = "static"            # static | static_t | dynamic
    chunk_size: int = 4              # S sublayers per chunk; 1 = dense
    summary: str = "last"            # last-output chunk summaries (paper) or sums (AttnRes Block)
    final_router: bool = True        # the head reads its own learned router (else a fixed uniform mean)
    # "fixed": every post-router LayerNorm uses norm_eps. "per_source_count": router l's LayerNorm uses
    # norm_eps / n_l**2, which makes a converted residual model exact (see dartool.models.convert).
    router_eps: str = "fixed"
    time_convention: str = "sit"
    # REPA projector heads (0 = none). Kept so REPA checkpoints load and can be fine-tuned.
    projector_dims: tuple[int, ...] = field(default_factory=tuple)
    projector_hidden: int = 2048
    name: str = ""

    def __post_init__(self) -> None:
        self.projector_dims = tuple(int(d) for d in self.projector_dims)
        self.validate()

    # ------------------------------------------------------------------ derived
    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.learn_sigma else self.in_channels

    @property
    def grid_size(self) -> int:
        return self.input_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid_size**2

    @property
    def num_sublayers(self) -> int:
        return 2 * self.depth

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def label(self) -> str:
        """Human label, e.g. ``SiT-XL/2`` or ``SiT-XL/2 DAR static c4``."""
        base = self.name or size_name(self.depth, self.hidden_size, self.patch_size)
        if self.routing == "residual":
            return base
        return f"{base} DAR {self.query} c{self.chunk_size}" + ("" if self.summary == "last" else " sum")

    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(f"invalid model config: {msg}")

        if self.routing not in ROUTINGS:
            bad(f"routing must be one of {ROUTINGS}, got {self.routing!r}")
        if self.query not in QUERIES:
            bad(f"query must be one of {QUERIES}, got {self.query!r}")
        if self.summary not in SUMMARIES:
            bad(f"summary must be one of {SUMMARIES}, got {self.summary!r}")
        if self.router_eps not in ("fixed", "per_source_count"):
            bad(f"router_eps must be 'fixed' or 'per_source_count', got {self.router_eps!r}")
        if self.time_convention not in TIME_CONVENTIONS:
            bad(f"time_convention must be one of {TIME_CONVENTIONS}, got {self.time_convention!r}")
        if self.chunk_size < 1:
            bad(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.input_size % self.patch_size:
            bad(f"input size {self.input_size} is not divisible by patch size {self.patch_size}")
        if self.hidden_size % self.num_heads:
            bad(f"hidden size {self.hidden_size} is not divisible by {self.num_heads} heads")
        if self.hidden_size % 4:
            bad(f"hidden size {self.hidden_size} must be divisible by 4 (2-D sin-cos position embedding)")
        if self.depth < 1:
            bad(f"depth must be >= 1, got {self.depth}")

    # ------------------------------------------------------------------ plain data
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["projector_dims"] = list(self.projector_dims)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config fields {unknown}: was this checkpoint written by a newer dartool?")
        return cls(**d)

    def replace(self, **kw: Any) -> "ModelConfig":
        return dataclasses.replace(self, **kw)


def size_name(depth: int, hidden: int, patch: int, family: str = "SiT") -> str:
    for name, (d, h, _) in SIZES.items():
        if d == depth and h == hidden:
            return f"{family}-{name}/{patch}"
    return f"{family}-d{depth}w{hidden}/{patch}"


def model_config(
    size: str = "XL",
    patch: int = 2,
    *,
    input_size: int = 32,
    in_channels: int = 4,
    num_classes: int = 1000,
    learn_sigma: bool = True,
    routing: str = "residual",
    **kw: Any,
) -> ModelConfig:
    """Build a config from the registry: ``model_config("XL", 2)`` is SiT-XL/2 on 32x32x4 latents."""
    key = size.upper()
    if "/" in key:  # "SiT-XL/2" or "XL/2"
        key, p = key.split("/")
        key = key.split("-")[-1]
        patch = int(p)
    if key not in SIZES:
        raise ValueError(f"unknown model size {size!r}: choose one of {', '.join(SIZES)}")
    depth, hidden, heads = SIZES[key]
    return ModelConfig(
        input_size=input_size,
        patch_size=patch,
        in_channels=in_channels,
        hidden_size=hidden,
        depth=depth,
        num_heads=heads,
        num_classes=num_classes,
        learn_sigma=learn_sigma,
        routing=routing,
        **kw,
    )
