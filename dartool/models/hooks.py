"""Named tap points (the TransformerLens ``HookPoint`` idea) and a scoped hook context.

Every interesting tensor in :class:`dartool.models.SiT` passes through a :class:`HookPoint`, an
identity module whose name in ``model.named_modules()`` is its tap name, e.g. ``blocks.3.hook_out``
or ``routers.7.hook_alpha``. Probes attach functions to taps inside :func:`tapped`, which removes
every handle in ``finally``.
"""
from __future__ import annotations

import contextlib
import fnmatch
from typing import Callable, Iterator

import torch
from torch import nn

TapFn = Callable[[str, torch.Tensor], "torch.Tensor | None"]


class HookPoint(nn.Module):
    """Identity; a named place to read (or replace) a tensor during forward."""

    def __init__(self) -> None:
        super().__init__()
        self.tap_name = ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def tap_points(model: nn.Module) -> dict[str, HookPoint]:
    """All tap points of ``model`` by name."""
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, HookPoint):
            mod.tap_name = name
            out[name] = mod
    return out


@contextlib.contextmanager
def tapped(model: nn.Module, hooks: dict[str, TapFn]) -> Iterator[None]:
    """Attach ``fn(name, tensor)`` to every tap whose name matches a key (glob patterns allowed).

    A function may return a tensor to replace the value flowing on (used for gradient taps that keep
    the tensor in the graph); returning ``None`` leaves it unchanged. All handles are removed on exit,
    also when the body raises.
    """
    points = tap_points(model)
    handles = []
    try:
        for pattern, fn in hooks.items():
            names = [n for n in points if fnmatch.fnmatchcase(n, pattern)]
            if not names:
                raise KeyError(f"no tap point matches {pattern!r}; see dartool.models.tap_points(model)")
            for n in names:
                def hook(mod: nn.Module, args: tuple, out: torch.Tensor, _n: str = n, _fn: TapFn = fn):
                    return _fn(_n, out)

                handles.append(points[n].register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()
        left = [p.tap_name for p in points.values() if any(h.id in p._forward_hooks for h in handles)]
        assert not left, f"hooks were left on {left}"
