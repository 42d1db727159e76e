"""Time conventions, noising and the training losses of the SiT / DiT / REPA families.

Everything that stores a timestep axis uses the canonical **noise level** ``s`` in [0, 1], 1 = pure
noise, and records the model's own convention beside it:

=========  ============================  ========================  =====================================
family     model t                       x_t                       target
=========  ============================  ========================  =====================================
``sit``    t = 1 - s in [0, 1]           (1 - s) x + s eps         velocity x - eps (x1 - x0)
``repa``   t = s in [0, 1]               (1 - s) x + s eps         velocity eps - x
``dit``    t = round(999 s) in 0..999    sqrt(a) x + sqrt(1-a) eps epsilon; a = alpha_bar (linear betas)
=========  ============================  ========================  =====================================
"""
from __future__ import annotations

import torch

DIT_STEPS = 1000


def dit_alpha_bar(device=None) -> torch.Tensor:
    """alpha_bar_t of DiT's linear beta schedule (1e-4 .. 0.02 over 1000 steps), float64 [1000]."""
    betas = torch.linspace(1e-4, 0.02, DIT_STEPS, dtype=torch.float64, device=device)
    return torch.cumprod(1 - betas, 0)


def model_time(noise_level: torch.Tensor, convention: str) -> torch.Tensor:
    """Canonical noise level s (1 = noise) -> the t the network was trained on."""
    if convention == "sit":
        return 1.0 - noise_level
    if convention == "repa":
        return noise_level
    if convention == "dit":
        return torch.round(noise_level * (DIT_STEPS - 1))
    raise ValueError(f"unknown time convention {convention!r}")


def noise_level_of(t: torch.Tensor, convention: str) -> torch.Tensor:
    """Inverse of :func:`model_time`."""
    if convention == "sit":
        return 1.0 - t
    if convention == "repa":
        return t
    if convention == "dit":
        return t / (DIT_STEPS - 1)
    raise ValueError(f"unknown time convention {convention!r}")


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)


def noised(x: torch.Tensor, eps: torch.Tensor, noise_level: torch.Tensor, convention: str):
    """(x_t, model t, regression target) for data x, noise eps and noise level s [B]."""
    s = noise_level.to(x.device)
    t = model_time(s, convention)
    if convention in ("sit", "repa"):
        xt = (1 - _bcast(s, x)) * x + _bcast(s, x) * eps
        target = x - eps if convention == "sit" else eps - x
        return xt, t.to(x.dtype), target
    ab = dit_alpha_bar(x.device)[t.long()]
    xt = _bcast(ab.sqrt(), x) * x + _bcast((1 - ab).sqrt(), x) * eps
    return xt, t.to(x.dtype), eps


def diffusion_loss(
    model, x: torch.Tensor, y: torch.Tensor, noise_level: torch.Tensor, eps: torch.Tensor | None = None,
    convention: str | None = None, reduce: str = "mean", drop_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """The model's own training loss at noise levels s: MSE of the prediction on the first C channels
    (velocity for SiT/REPA, epsilon for DiT). ``reduce="none"`` gives one value per sample."""
    convention = convention or model.config.time_convention
    eps = torch.randn_like(x) if eps is None else eps
    xt, t, target = noised(x, eps, noise_level, convention)
    out = model(xt, t, y, drop_labels=drop_labels)[:, : x.shape[1]]
    per = (out.float() - target.float()).pow(2).flatten(1).mean(1)
    return per if reduce == "none" else per.mean()


def default_noise_grid(n: int = 32) -> torch.Tensor:
    """n noise levels covering [0, 1] evenly, both ends included (0 = clean data, 1 = pure noise)."""
    return torch.linspace(0.0, 1.0, n, dtype=torch.float64)


def time_axis_label(convention: str | None = None) -> str:
    base = "noise level s (0 = data, 1 = pure noise)"
    if convention == "sit":
        return base + "; SiT t = 1 - s"
    if convention == "dit":
        return base + "; DiT t = 999 s"
    if convention == "repa":
        return base + "; REPA t = s"
    return base


__all__ = [
    "DIT_STEPS", "dit_alpha_bar", "model_time", "noise_level_of", "noised", "diffusion_loss",
    "default_noise_grid", "time_axis_label",
]
