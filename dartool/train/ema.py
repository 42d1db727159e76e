"""Exponential moving average of model weights (DiT / SiT: decay 0.9999, updated after every step)."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A frozen copy of a model whose parameters follow ``ema = decay * ema + (1 - decay) * param``.

    Kept in float32 (or the model's dtype), in eval mode, with ``requires_grad`` off. Only parameters are
    averaged; buffers are copied. ``warmup`` uses decay_k = min(decay, (1 + k) / (10 + k)) so short runs
    get a useful average (off in the DiT/SiT recipe).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = False) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self._ema = [p for p in self.model.parameters()]
        self._names = [n for n, _ in self.model.named_parameters()]

    def decay_at(self, step: int) -> float:
        """The decay used for the update after optimiser step ``step`` (0-based)."""
        if self.warmup:
            return min(self.decay, (1.0 + step) / (10.0 + step))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        params = list(model.parameters())
        if len(params) != len(self._ema):  # pragma: no cover - programming error
            raise RuntimeError("EMA and model have different parameter lists")
        w = 1.0 - self.decay_at(step)
        if w == 0.0:
            return
        src = [p.detach() for p in params]
        if w == 1.0:
            for e, p in zip(self._ema, src):
                e.copy_(p)
        else:
            torch._foreach_lerp_(self._ema, src, w)
        for (_, b_ema), (_, b) in zip(self.model.named_buffers(), model.named_buffers()):
            b_ema.copy_(b)

    @torch.no_grad()
    def copy_from(self, model: nn.Module) -> None:
        """Make the average equal to ``model`` (used at start: the EMA begins at the initial weights)."""
        self.model.load_state_dict(model.state_dict())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(sd)
