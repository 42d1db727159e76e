"""Process groups for torchrun: one command runs on one CPU, one GPU, or N GPUs.

``dartool train ...`` and ``torchrun --nproc_per_node N -m dartool.cli train ...`` (or
``torchrun --nproc_per_node N $(which dartool) train ...``) run the same code:

* :func:`setup` reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (set by torchrun), starts the process group
  (NCCL on CUDA, gloo on CPU) and picks ``cuda:LOCAL_RANK``. Without torchrun it is a single process.
* The global batch is split evenly across ranks; every rank draws the *global* batch's noise, noise levels
  and label-drop mask from the same counter-based streams and keeps its slice, so N ranks compute exactly
  the gradient of one process with the same global batch (DDP averages the ranks' gradients).
* EMA, logging and checkpoints live on rank 0, which saves and then meets the others at a barrier.
* Evaluation sampling is sharded: chunk j of the samples is drawn by rank ``j % world_size``.

Multi-GPU hosts: leave ``NCCL_NVLS_ENABLE=0`` set (NVLink multicast off), as the machines' docs require.

FSDP2 (models that do not fit DDP)
----------------------------------
PyTorch's path is ``torch.distributed.fsdp.fully_shard``: shard every block, then the root module, build the
optimiser over the sharded (DTensor) parameters, and gather full state dicts for checkpoints with
``torch.distributed.checkpoint.state_dict.get_model_state_dict(..., StateDictOptions(full_state_dict=True,
cpu_offload=True))``. dartool's ``--strategy fsdp2`` is accepted by the config but not implemented in the
training loop yet (the EMA would also have to be sharded); every SiT size up to XL/2 fits DDP on one 80 GB card.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Dist:
    """Where this process runs and who it is."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def local_batch(self, global_batch: int) -> int:
        if global_batch % self.world_size:
            raise ValueError(
                f"the global batch {global_batch} does not split evenly across {self.world_size} ranks; "
                f"pass a multiple of {self.world_size}"
            )
        return global_batch // self.world_size

    def slice(self, global_batch: int) -> slice:
        b = self.local_batch(global_batch)
        return slice(self.rank * b, (self.rank + 1) * b)


def pick_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU."""
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    d = torch.device(device)
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine")
        if d.index is None:
            d = torch.device(f"cuda:{local_rank}")
    return d


def setup(device: str = "auto") -> Dist:
    """Start the process group when launched by torchrun (WORLD_SIZE > 1); a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world <= 1:
        return Dist(0, 1, 0, dev, None)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        kw: dict[str, Any] = {"backend": backend}
        if dev.type == "cuda":
            kw["device_id"] = dev
        dist.init_process_group(**kw)
    return Dist(rank, world, local, dev, backend)


def cleanup(d: Dist) -> None:
    """Leave the process group (no barrier: rank 0 may still be probing / reporting alone)."""
    if d.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.distributed:
        if d.backend == "nccl":
            dist.barrier(device_ids=[d.device.index])
        else:
            dist.barrier()


def all_reduce(d: Dist, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (sum | max) of a small tensor; identity on one process."""
    if d.distributed:
        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return t


def broadcast_tensor(d: Dist, t: torch.Tensor) -> torch.Tensor:
    """In-place: rank 0's values of ``t`` on every rank."""
    if d.distributed:
        dist.broadcast(t, src=0)
    return t


def broadcast_object(d: Dist, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not d.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(d: Dist, obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` on rank 0 (in rank order); ``None`` elsewhere."""
    if not d.distributed:
        return [obj]
    out: list[Any] = [None] * d.world_size if d.main else None  # type: ignore[assignment]
    dist.gather_object(obj, out, dst=0)
    return out


@torch.no_grad()
def broadcast_parameters(d: Dist, module: nn.Module) -> None:
    """Overwrite ``module``'s parameters and buffers with rank 0's."""
    if not d.distributed:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def wrap(module: nn.Module, d: Dist, strategy: str = "ddp") -> nn.Module:
    """DDP-wrap ``module`` when running on several ranks (identity otherwise)."""
    if strategy == "fsdp2":
        raise ValueError(
            "--strategy fsdp2 is documented (see dartool.train.ddp) but not implemented in the training loop yet; "
            "use ddp"
        )
    if not d.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [d.device.index] if d.device.type == "cuda" else None
    return DDP(module, device_ids=ids, broadcast_buffers=False)
