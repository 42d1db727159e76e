"""Building the models of a paired experiment, and one training step of one arm.

Pairing: every arm of a seed starts from the same shared parameters. The residual backbone is built with
``torch.manual_seed(seed)``; each arm is built with the same seed and then receives the backbone's parameters
(``load_state_dict(strict=False)``), after checking that only router parameters were missing. So the arms differ
in their routers alone, and the paired streams (:mod:`dartool.train.streams`) make their batches identical.

``--init-from CHECKPOINT`` starts every arm from a checkpoint instead (its EMA weights when present): an arm with
the checkpoint's routing takes it as is; a DAR arm from a residual checkpoint is converted to a dense DAR model
that computes the same function (``dartool.models.convert``; the arm must be ``dar:...:c1``).
``--trainable PATTERN`` freezes every parameter whose name matches none of the glob patterns.
"""
from __future__ import annotations

import contextlib
import copy
import fnmatch
from typing import Any

import torch
from torch import nn

from ..diffusion import noised
from ..models import ModelConfig, SiT
from ..models.compiling import compile_model
from .config import ArmConfig, ConfigError, TrainConfig

ROUTER_PREFIXES = ("routers.", "router_t_embedder.")


# --------------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------------


def paired_models(cfg: TrainConfig, seed: int, *, input_size: int, in_channels: int, num_classes: int,
                  projector_dim: int | None = None) -> list[SiT]:
    """One freshly initialised model per arm with identical shared parameters (see the module docstring)."""
    def mcfg(arm: ArmConfig) -> ModelConfig:
        mc = cfg.model_config(arm, input_size=input_size, in_channels=in_channels, num_classes=num_classes)
        return mc.replace(projector_dims=(projector_dim,)) if projector_dim else mc

    torch.manual_seed(seed)
    backbone = SiT(mcfg(ArmConfig()))
    shared = backbone.state_dict()
    models = []
    for arm in cfg.arms:
        torch.manual_seed(seed)
        m = SiT(mcfg(arm))
        missing, unexpected = m.load_state_dict(shared, strict=False)
        if unexpected or any(not k.startswith(ROUTER_PREFIXES) for k in missing):  # pragma: no cover - invariant
            raise RuntimeError(f"arm {arm.name}: shared parameters do not match the backbone "
                               f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        models.append(m)
    return models


def models_from_checkpoint(cfg: TrainConfig, seed: int, path: str, projector_dim: int | None = None,
                           log=None) -> tuple[list[SiT], dict[str, Any]]:
    """One model per arm from ``--init-from`` (EMA weights preferred); see the module docstring."""
    from ..checkpoints import load_checkpoint
    from ..models.convert import residual_to_dar

    ck = load_checkpoint(path, prefer="ema")
    base = ck.model
    models = []
    for arm in cfg.arms:
        if arm.routing == base.config.routing:
            if arm.routing == "dar":
                mine = {k: getattr(base.config, k) for k in ("query", "chunk_size", "summary", "final_router")}
                if mine != {k: getattr(arm, k) for k in mine}:
                    raise ConfigError(
                        f"arm {arm.name} does not match {path} ({base.config.label}): name the arm after the "
                        f"checkpoint, e.g. dar:{base.config.query}:c{base.config.chunk_size}"
                    )
            m = copy.deepcopy(base)
        elif arm.routing == "dar":
            if arm.chunk_size != 1 or arm.summary != "last":
                raise ConfigError(
                    f"arm {arm.name}: a residual checkpoint converts to a dense DAR model only "
                    f"(chunk 1; DAR-METHOD.md section 5): use dar:{arm.query}:c1"
                )
            m = residual_to_dar(base, query=arm.query)
        else:
            raise ConfigError(f"arm {arm.name}: cannot start a residual arm from the DAR checkpoint {path}")
        if projector_dim:
            from ..repa import ensure_projector

            torch.manual_seed(seed)
            ensure_projector(m, projector_dim)
        models.append(m.train())
    meta = dict(init_from=str(path), init_from_sha256=ck.sha256, init_from_weights=ck.source)
    if log:
        log(f"initialised from {path} ({ck.config.label}, {ck.source} weights)")
    return models, meta


def apply_trainable(model: nn.Module, patterns: list[str]) -> list[str]:
    """Freeze every trainable parameter whose name matches none of ``patterns``; return the trainable names.

    Parameters frozen by construction (the sin-cos position table, a fixed final router) stay frozen.
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if not patterns:
        return names
    keep = set()
    for pat in patterns:
        hit = [n for n in names if fnmatch.fnmatchcase(n, pat)]
        if not hit:
            example = ", ".join(names[:2] + [n for n in names if n.startswith("routers.")][:1])
            raise ConfigError(f"--trainable {pat!r} matches no trainable parameter (names look like {example})")
        keep.update(hit)
    for n, p in model.named_parameters():
        if n not in keep:
            p.requires_grad_(False)
    return [n for n in names if n in keep]


# --------------------------------------------------------------------------------------------------
# the training forward
# --------------------------------------------------------------------------------------------------


class TrainModule(nn.Module):
    """model + auxiliary losses; ``forward`` gives the per-sample diffusion loss and the auxiliary losses.

    The module DDP wraps: every parameter that receives a gradient (model, REPA projector) lives inside it, so
    gradients of the auxiliary loss are averaged across ranks like the rest.
    """

    def __init__(self, model: SiT, aligner=None, compile: bool = False, compile_mode: str = "full") -> None:
        super().__init__()
        self.model = model
        self.aligner = aligner
        # the (optionally compiled) callable; not registered, so state_dict / parameters stay the model's
        object.__setattr__(self, "_net", compile_model(model, compile_mode) if compile else model)
        # CUDA graphs (compile mode cudagraphs): optimizer_step marks each step's start and drops the gradients,
        # which may live in the graphs' memory pool, before the next replay
        self.cudagraphs = bool(compile and compile_mode == "cudagraphs")

    def forward(self, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, s: torch.Tensor, drop: torch.Tensor):
        cfg = self.model.config
        xt, t, target = noised(x, eps, s, cfg.time_convention)
        aux: dict[str, torch.Tensor] = {}
        if self.aligner is None:
            out = self._net(xt, t, y, drop_labels=drop)                              # [b, C_out, H, W]
        else:   # z_k as an output (not a hook), so that torch.compile and CUDA graphs see it
            out, z = self._net(xt, t, y, drop_labels=drop, return_block=self.aligner.block)   # z: [b, T, D]
            aux["repa"] = self.aligner.loss_of(self.model, z, x)                     # weighted, scalar
        out = out[:, : x.shape[1]]
        per = (out.float() - target.float()).pow(2).flatten(1).mean(1)                # [b]
        return per, aux


def optimizer_step(module: nn.Module, model: SiT, params: list, opt: torch.optim.Optimizer, ema, x, y, eps, s, drop,
                   step: int, *, device: torch.device, precision: str, grad_clip: float | None = None):
    """One training step of one arm: loss, backward, gradient norm (clipped with ``grad_clip``), AdamW, EMA.

    Returns (per-sample diffusion loss [b], gradient norm, auxiliary losses); nothing is synchronised to the host.
    The training loop and ``benchmarks/train_speed.py`` both use this function. A module compiled with CUDA graphs
    (``TrainModule.cudagraphs``, also inside DDP) gets the step's start marked, and its gradients set to None after
    the optimizer's step: the returned values are computed outside the graphs, so nothing returned is overwritten
    by the next replay.
    """
    graphs = getattr(getattr(module, "module", module), "cudagraphs", False)
    if graphs:
        torch.compiler.cudagraph_mark_step_begin()     # the previous step's graph outputs may be overwritten now
    with autocast_for(device, precision):
        per, aux = module(x, y, eps, s, drop)
    loss = per.mean()
    for v in aux.values():
        loss = loss + v
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip else float("inf"))
    opt.step()
    if graphs:
        opt.zero_grad(set_to_none=True)               # no gradient kept in the graphs' pool past this step
    if ema is not None:
        ema.update(model, step)
    return per, gnorm, aux


def make_optimizer(params: list, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with the recipe's settings (fused on CUDA)."""
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                             **({"fused": True} if device.type == "cuda" else {}))


def autocast_for(device: torch.device, precision: str):
    """bf16 autocast for ``bf16`` (and ``auto`` on CUDA); nothing for fp32 / fp64."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def precision_label(device: torch.device, precision: str) -> str:
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return "bf16 autocast"
    return "fp64" if precision == "fp64" else "fp32"
