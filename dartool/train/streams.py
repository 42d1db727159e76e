"""Paired random streams: the batch of step k is a pure function of (seed, k).

Every arm (and every rank, and a resumed run) computes the same global batch for step k:

* data order: a fresh seeded permutation per epoch, ``numpy.random.default_rng([seed, epoch])``; the batch of
  step k is positions ``k*G .. (k+1)*G - 1`` of the concatenated epochs (G = global batch);
* noise eps, SiT time t ~ U[0, 1] (noise level s = 1 - t), the label-drop mask (p = label dropout) and the
  optional flip mask come from a ``torch.Generator`` seeded by (seed, k) alone, drawn for the whole global
  batch in a fixed order (t, drop, flip, eps);
* each rank keeps its slice ``[rank*G/W, (rank+1)*G/W)``.

So two arms see identical (x, eps, s, y, drop), N ranks see exactly the global batch of one process, and a
resumed run needs no generator state at all.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data import Dataset


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A well-mixed 63-bit seed for (seed, step, stream)."""
    return int(np.random.SeedSequence([int(seed), int(step), int(stream), 0xDA7]).generate_state(1, np.uint64)[0] >> 1)


@dataclass
class StepBatch:
    """This rank's slice of the global batch of one step (model inputs on the training device)."""

    step: int
    x: torch.Tensor          # [b, C, H, W] data in [-1, 1] (pixels) or latents
    y: torch.Tensor          # [b] int labels
    eps: torch.Tensor        # [b, C, H, W] noise
    s: torch.Tensor          # [b] noise level, 1 = pure noise (SiT t = 1 - s)
    drop: torch.Tensor       # [b] bool: label replaced by the null class
    index: np.ndarray        # [b] dataset indices
    epoch: int


class PairedStreams:
    """The data, noise and label-drop streams shared by every arm of one seed."""

    def __init__(
        self, data: Dataset, *, seed: int, global_batch: int, input_size: int, device: torch.device,
        dtype: torch.dtype = torch.float32, label_dropout: float = 0.1, hflip: bool = False,
        rank: int = 0, world_size: int = 1,
    ) -> None:
        if global_batch % world_size:
            raise ValueError(f"the global batch {global_batch} does not split across {world_size} ranks")
        self.data, self.seed, self.G = data, int(seed), int(global_batch)
        self.size, self.device, self.dtype = input_size, device, dtype
        self.p_drop, self.hflip = float(label_dropout), bool(hflip)
        b = global_batch // world_size
        self.lo, self.hi = rank * b, (rank + 1) * b
        self._perm_epoch, self._perm = -1, np.empty(0, np.int64)

    # ------------------------------------------------------------------ data order
    def permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, int(epoch), 0xDA7A]).permutation(len(self.data))
            self._perm_epoch = epoch
        return self._perm

    def indices(self, step: int) -> tuple[np.ndarray, int]:
        """Dataset indices of the global batch of ``step`` and the epoch it starts in."""
        N = len(self.data)
        start = step * self.G
        out, pos = [], start
        while pos < start + self.G:
            epoch, off = divmod(pos, N)
            take = min(N - off, start + self.G - pos)
            out.append(self.permutation(epoch)[off: off + take])
            pos += take
        return np.concatenate(out), start // N

    # ------------------------------------------------------------------ noise
    def draws(self, step: int) -> dict[str, torch.Tensor]:
        """The global batch's random draws for ``step`` (t, s, drop, flip, eps), on the device."""
        g = torch.Generator(device=self.device).manual_seed(step_seed(self.seed, step))
        C = self.data.channels
        kw = dict(generator=g, device=self.device)
        t = torch.rand(self.G, **kw)
        drop = torch.rand(self.G, **kw) < self.p_drop
        flip = torch.rand(self.G, **kw) < 0.5
        eps = torch.randn(self.G, C, self.size, self.size, **kw)
        return dict(t=t, s=1.0 - t, drop=drop, flip=flip, eps=eps)

    def batch(self, step: int) -> StepBatch:
        idx, epoch = self.indices(step)
        mine = idx[self.lo: self.hi]
        x, y = self.data.batch(mine, self.size, device=self.device)
        r = self.draws(step)
        sl = slice(self.lo, self.hi)
        if self.hflip:
            x = torch.where(r["flip"][sl, None, None, None], x.flip(-1), x)
        return StepBatch(
            step=step, x=x.to(self.dtype), y=y, eps=r["eps"][sl].to(self.dtype), s=r["s"][sl].to(self.dtype),
            drop=r["drop"][sl], index=mine, epoch=epoch,
        )
