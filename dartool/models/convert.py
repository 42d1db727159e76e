"""Residual -> DAR conversion that preserves the function (DAR-METHOD.md section 5).

A dense (S = 1) DAR model with zero queries reads h_l = (1/n_l) * sum_{i<l} v_i, the residual stream
scaled by 1/n_l. The LayerNorm that follows removes the scale; with ``router_eps="per_source_count"``
its eps is divided by n_l**2 as well, so the converted model computes *exactly* the residual model's
function (in exact arithmetic), not just up to eps. A chunked router with last-output summaries does
not preserve the function, so conversion is always dense.
"""
from __future__ import annotations

import torch

from .config import ModelConfig
from .sit import SiT


def residual_to_dar(model: SiT, query: str = "static", exact_eps: bool = True) -> SiT:
    """A dense DAR model that computes the same function as the residual ``model``."""
    cfg = model.config
    if cfg.routing != "residual":
        raise ValueError(f"conversion needs a residual model; this one is {cfg.label}")
    new_cfg = cfg.replace(
        routing="dar", query=query, chunk_size=1, summary="last", final_router=True,
        router_eps="per_source_count" if exact_eps else "fixed",
    )
    dar = SiT(new_cfg).to(device=next(model.parameters()).device, dtype=next(model.parameters()).dtype)
    missing, unexpected = dar.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected, unexpected
    assert all(k.startswith(("routers.", "router_t_embedder.")) for k in missing), missing
    return dar


@torch.no_grad()
def max_conversion_error(model: SiT, converted: SiT, x, t, y) -> float:
    """Relative error ||f_dar - f_res|| / ||f_res|| on one batch."""
    a, b = model(x, t, y), converted(x, t, y)
    return float((a - b).norm() / a.norm().clamp_min(1e-30))


def config_for_conversion(cfg: ModelConfig, query: str = "static") -> ModelConfig:
    return cfg.replace(routing="dar", query=query, chunk_size=1, summary="last", router_eps="per_source_count")
