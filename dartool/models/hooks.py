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
    """Identity; a named place to read (or replace) a tensor during forward.

    Two kinds of listener: ordinary module forward hooks (may replace the value; used for gradient taps), and
    *readers* (``fn(name, x)``, read-only, attached by :func:`tapped` ``readers=``). Code with a fast path that
    skips materialising the tapped tensor may keep that path for readers (the fused DAR router hands its
    in-kernel alpha to them) but must take its reference path when forward hooks are present.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tap_name = ""
        self._readers: list[TapFn] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for fn in self._readers:
            fn(self.tap_name, x)
        return x

    @property
    def has_readers(self) -> bool:
        return bool(self._readers)


def tap_points(model: nn.Module) -> dict[str, HookPoint]:
    """All tap points of ``model`` by name."""
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, HookPoint):
            mod.tap_name = name
            out[name] = mod
    return out


@contextlib.contextmanager
def tapped(model: nn.Module, hooks: dict[str, TapFn] | None = None,
           readers: dict[str, TapFn] | None = None) -> Iterator[None]:
    """Attach ``fn(name, tensor)`` to every tap whose name matches a key (glob patterns allowed).

    ``hooks``: module forward hooks; a function may return a tensor to replace the value flowing on (used
    for gradient taps that keep the tensor in the graph); returning ``None`` leaves it unchanged.
    ``readers``: read-only listeners (their return value is ignored); fused kernels stay on for them (the
    fused DAR router passes its own alpha to readers of ``hook_alpha``, while a forward hook there forces
    the reference router). Everything is removed on exit, also when the body raises.
    """
    points = tap_points(model)

    def matching(pattern: str) -> list[str]:
        names = [n for n in points if fnmatch.fnmatchcase(n, pattern)]
        if not names:
            raise KeyError(f"no tap point matches {pattern!r}; see dartool.models.tap_points(model)")
        return names

    handles, attached = [], []
    try:
        for pattern, fn in (hooks or {}).items():
            for n in matching(pattern):
                def hook(mod: nn.Module, args: tuple, out: torch.Tensor, _n: str = n, _fn: TapFn = fn):
                    return _fn(_n, out)

                handles.append(points[n].register_forward_hook(hook))
        for pattern, fn in (readers or {}).items():
            for n in matching(pattern):
                points[n]._readers.append(fn)
                attached.append((points[n], fn))
        yield
    finally:
        for h in handles:
            h.remove()
        for point, fn in attached:
            point._readers.remove(fn)
        left = [p.tap_name for p in points.values() if any(h.id in p._forward_hooks for h in handles)]
        assert not left, f"hooks were left on {left}"
