"""torch.compile for SiT models: the one place that decides Inductor's options per model (``dartool train
--compile``, ``dartool bench``)."""
from __future__ import annotations

from typing import Any

import torch

from .config import ModelConfig

# Inductor options forced for every model compiled here, instead of :func:`inductor_options`'s choice (None: its
# choice). Experiments set it between models (``benchmarks/compile_options.py``).
OVERRIDE: "dict[str, Any] | None" = None


def inductor_options(config: ModelConfig) -> dict[str, Any]:
    """Inductor's options for a model of this configuration ({}: Inductor's defaults)."""
    if OVERRIDE is not None:
        return dict(OVERRIDE)
    return {}


def compile_model(model: torch.nn.Module, **kw: Any):
    """``torch.compile(model, **kw)`` with :func:`inductor_options` of the model's configuration."""
    cfg = getattr(model, "config", None)
    opts = inductor_options(cfg) if isinstance(cfg, ModelConfig) else {}
    return torch.compile(model, options=opts, **kw) if opts else torch.compile(model, **kw)
