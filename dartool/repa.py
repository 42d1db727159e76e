"""REPA representation alignment as a pluggable auxiliary loss (Yu et al. 2024; issue #8 item 1).

A projector (REPA's 3-layer MLP with SiLU, key layout ``projectors.{j}.{0,2,4}``, D -> 2048 -> 2048 -> C_enc)
maps the hidden state z_k after block k (for DAR: the aggregated state handed on, the tap
``blocks.{k-1}.hook_out``) to the encoder's feature size; the loss is the negative cosine similarity to a frozen
encoder's patch features resized to the model's token grid, averaged over tokens and batch, times a weight
(0.5 by default):

    L = L_diffusion + weight * mean_{b, n} -cos( projector(z_k)[b, n], target[b, n] )

Use in a training step::

    aligner = RepaAligner(model, RepaConfig())            # checks the model has a matching projector
    with aligner.capture(model):                          # stores z_k during the forward, graph kept
        pred = model(x_t, t, y)
        loss = diffusion_loss(pred, target) + aligner.loss(x_clean)   # x_clean: pixels in [-1, 1]
    loss.backward()

Building the model: the projector is part of the model (``model.projectors[0]``, saved in checkpoints like
REPA's), so build it with ``SiT(config_with_projector(cfg, encoder))`` or add it to an existing model with
:func:`ensure_projector` **before** making the optimiser. REPA checkpoints from the public release load with
their projector (768-d, DINOv2-B) and can be fine-tuned with the matching timm encoder.

Encoders (nothing downloads):

* ``efficientnet-lite0`` (default): the bundled ImageNet EfficientNet-Lite0's last feature map,
  1280 x 7 x 7 at 224 px (:mod:`dartool.features`). Offline stand-in; REPA's paper uses DINOv2.
* ``timm:<model_name>``: any timm model from a local weights file (``encoder_weights``), through the optional
  extra ``pip install 'dartool[timm]'``; e.g. ``timm:vit_base_patch14_dinov2.lvd142m`` (DINOv2-B, 768-d) with
  the file it was released as. ViT outputs drop their prefix (class/register) tokens.

Time convention: REPA's own checkpoints use ``time_convention="repa"`` (float t in [0, 1], **1 = noise**,
velocity eps - x), unlike SiT (0 = noise). The aligner does not look at t; the trainer must noise and feed t in
the model's own convention (:mod:`dartool.diffusion`).

Two ways to get z_k. :meth:`RepaAligner.capture` puts a forward hook on a tap point of the unwrapped model (DDP
``.module`` and ``torch.compile``'s ``._orig_mod`` are unwrapped); a compiled model may not call a hook added after
it was compiled (Dynamo does not guard on module hooks by default), and :meth:`RepaAligner.loss` then raises
instead of training silently without alignment. :meth:`RepaAligner.loss_of` takes z_k as an output of the model,
``model(x, t, y, return_block=aligner.block)``, which torch.compile and CUDA graphs see like any output; ``dartool
train`` uses that path, compiled or not (and DAR's other routers keep their fused LayerNorm, which a hook would
switch off). The projector runs outside the model's ``forward``; put it inside the module DDP wraps (e.g. a
training module that calls the aligner in its ``forward``), so its gradients are averaged like the rest.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from .models import ModelConfig, tapped

DEFAULT_ENCODER = "efficientnet-lite0"
DEFAULT_WEIGHT = 0.5
# timm's default ImageNet normalisation, used when a timm model's pretrained_cfg carries none.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RepaError(ValueError):
    """A REPA setup that cannot work; the message is one line saying what to do."""


# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------


@dataclass
class RepaConfig:
    """What to align, where, and how strongly. Plain data (storable in a checkpoint via :meth:`to_dict`).

    ``encoder``: ``"efficientnet-lite0"`` or ``"timm:<model_name>"``.
    ``encoder_weights``: local weights file of a timm encoder (required for timm; unused otherwise).
    ``encoder_resolution``: the pixel size images are resized to for a timm encoder (224 as in REPA at 256 px;
    EfficientNet-Lite0 always runs at 224).
    ``block``: 1-based block whose output is aligned ("block 8" = the output of the 8th block =
    ``blocks.7.hook_out``); ``None`` = :func:`default_align_block`.
    ``weight``: the loss weight lambda (REPA: 0.5).
    """

    encoder: str = DEFAULT_ENCODER
    encoder_weights: str | None = None
    encoder_resolution: int = 224
    block: int | None = None
    weight: float = DEFAULT_WEIGHT

    def __post_init__(self) -> None:
        if self.encoder != DEFAULT_ENCODER and not self.encoder.startswith("timm:"):
            raise RepaError(f"unknown REPA encoder {self.encoder!r}: use '{DEFAULT_ENCODER}' or 'timm:<model_name>'")
        if self.encoder.startswith("timm:") and not self.encoder[5:]:
            raise RepaError("REPA encoder 'timm:' needs a model name, e.g. timm:vit_base_patch14_dinov2.lvd142m")
        if self.block is not None and int(self.block) < 1:
            raise RepaError(f"REPA block is 1-based (block 8 = output of the 8th block); got {self.block}")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise RepaError(f"REPA weight must be a finite number >= 0, got {self.weight}")
        if self.encoder_resolution < 1:
            raise RepaError(f"REPA encoder resolution must be >= 1, got {self.encoder_resolution}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_align_block(depth: int) -> int:
    """REPA's default block (1-based): 8 for depth >= 24 (SiT-L/XL), a third of the depth otherwise (>= 1)."""
    if depth < 1:
        raise RepaError(f"model depth must be >= 1, got {depth}")
    return 8 if depth >= 24 else max(1, depth // 3)


def resolve_block(block: int | None, depth: int) -> int:
    """The 1-based block to align for a model of ``depth`` blocks (checks the range)."""
    k = default_align_block(depth) if block is None else int(block)
    if not 1 <= k <= depth:
        raise RepaError(f"REPA block {k} is outside the model's blocks 1..{depth}")
    return k


def tap_name(block: int) -> str:
    """The tap point of 1-based ``block``: ``blocks.{block-1}.hook_out``."""
    return f"blocks.{block - 1}.hook_out"


# --------------------------------------------------------------------------------------------------
# projector
# --------------------------------------------------------------------------------------------------


def build_projector(hidden_size: int, projector_hidden: int, z_dim: int) -> nn.Sequential:
    """REPA's projector: Linear(D, H) SiLU Linear(H, H) SiLU Linear(H, z) -> keys ``{0,2,4}.{weight,bias}``.

    Initialised like the rest of the model (xavier-uniform weights, zero biases), as REPA does.
    """
    proj = nn.Sequential(
        nn.Linear(hidden_size, projector_hidden), nn.SiLU(),
        nn.Linear(projector_hidden, projector_hidden), nn.SiLU(),
        nn.Linear(projector_hidden, z_dim),
    )
    for m in proj:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return proj


def _dim(encoder: "Encoder | int") -> int:
    return int(encoder) if isinstance(encoder, int) else int(encoder.dim)


def config_with_projector(model_config: ModelConfig, encoder: "Encoder | int") -> ModelConfig:
    """``model_config`` with projector 0 sized for ``encoder`` (its feature size, or an int).

    Unchanged if it already fits; otherwise ``projector_dims[0]`` becomes the encoder's size (any further
    projectors are kept). Build the model from the result: ``SiT(config_with_projector(cfg, encoder))``.
    """
    dim = _dim(encoder)
    dims = tuple(model_config.projector_dims)
    if dims and dims[0] == dim:
        return model_config
    return model_config.replace(projector_dims=(dim,) + dims[1:])


def unwrap(model: nn.Module) -> nn.Module:
    """The module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    for _ in range(8):
        inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner
    return model


def ensure_projector(model: nn.Module, encoder: "Encoder | int") -> bool:
    """Give ``model`` a projector 0 sized for ``encoder``, in place; True if a new one was made.

    Keeps every other weight (e.g. a loaded residual or REPA checkpoint being fine-tuned with another encoder)
    and updates ``model.config.projector_dims`` so the checkpoint it saves rebuilds. Call it before building the
    optimiser: the new projector's parameters must be in it.
    """
    base = unwrap(model)
    cfg: ModelConfig = base.config
    new_cfg = config_with_projector(cfg, encoder)
    if new_cfg is cfg:
        return False
    ref = next(base.parameters())
    proj = build_projector(cfg.hidden_size, cfg.projector_hidden, new_cfg.projector_dims[0]).to(ref.device, ref.dtype)
    if getattr(base, "projectors", None) is None:
        base.projectors = nn.ModuleList([proj])
    else:
        base.projectors[0] = proj
    base.config = new_cfg
    return True


# --------------------------------------------------------------------------------------------------
# encoders
# --------------------------------------------------------------------------------------------------


@runtime_checkable
class Encoder(Protocol):
    """A frozen image encoder giving patch features.

    ``patch_features(x)``: x float ``[B, C, H, W]`` in [-1, 1] (C = 1 or 3) -> ``[B, dim, h, w]`` (a map) or
    ``[B, h*w, dim]`` (patch tokens, row-major, square grid), computed without grad.
    """

    name: str
    dim: int

    def patch_features(self, x: torch.Tensor) -> torch.Tensor: ...


class EfficientNetLite0Encoder:
    """The bundled ImageNet EfficientNet-Lite0's last feature map: ``[B, 1280, 7, 7]`` (224 px input)."""

    name = DEFAULT_ENCODER
    dim = 1280

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        from .features import feature_map

        return feature_map(x)                                                # [B, 1280, 7, 7]


class TimmEncoder:
    """Any timm model from a local weights file (``pip install 'dartool[timm]'``); nothing downloads.

    Weights load through timm's own pretrained path with ``pretrained_cfg_overlay=dict(file=...)``, so timm's
    checkpoint filters apply (e.g. DINOv2's position embedding resampled to ``resolution``). Images go from
    [-1, 1] to [0, 1], are resized to ``resolution`` (bilinear, antialiased) and normalised with the model's
    mean/std. ``forward_features`` gives a map (CNNs) or tokens (ViTs; prefix tokens are dropped).
    """

    def __init__(self, model_name: str, weights: str | None, resolution: int = 224) -> None:
        self.name = f"timm:{model_name}"
        if not weights:
            raise RepaError(
                f"REPA encoder {self.name} needs a local weights file (encoder_weights / --repa-encoder-weights); "
                f"nothing is downloaded"
            )
        if not Path(weights).is_file():
            raise RepaError(f"no encoder weights at {weights}: pass the local file of {model_name}'s weights")
        try:
            import timm
        except ImportError:
            raise RepaError(f"REPA encoder {self.name} needs timm: pip install 'dartool[timm]'") from None
        kw: dict[str, Any] = dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(weights)), num_classes=0)
        try:
            try:
                net = timm.create_model(model_name, img_size=resolution, **kw)
            except TypeError:  # models without an img_size argument (CNNs)
                net = timm.create_model(model_name, **kw)
        except Exception as e:  # noqa: BLE001 - one clear line
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise RepaError(f"could not build timm model {model_name!r} from {weights}: {first}") from None
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net
        self.resolution = int(resolution)
        self.dim = int(getattr(net, "num_features"))
        self.prefix_tokens = int(getattr(net, "num_prefix_tokens", 0) or 0)
        cfg = getattr(net, "pretrained_cfg", None) or {}
        self.mean = tuple(cfg.get("mean", IMAGENET_MEAN))
        self.std = tuple(cfg.get("std", IMAGENET_STD))

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise RepaError(f"encoder input must be [B, 1 or 3, H, W] in [-1, 1], got shape {tuple(x.shape)}")
        with torch.no_grad():
            if next(self.net.parameters()).device != x.device:
                self.net.to(x.device)
            x = (x.float().clamp(-1, 1) + 1) / 2                              # [B, C, H, W] in [0, 1]
            x = x.expand(-1, 3, -1, -1)                                       # grey -> RGB
            if x.shape[-2:] != (self.resolution, self.resolution):
                x = F.interpolate(x, size=(self.resolution,) * 2, mode="bilinear", antialias=True, align_corners=False)
            mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
            out = self.net.forward_features((x - mean) / std)
            if isinstance(out, dict):  # some models return a dict of outputs
                out = out.get("x_norm_patchtokens", out.get("x"))
            if out.ndim == 3:
                out = out[:, self.prefix_tokens:]                             # [B, h*w, dim]
            return out.float()


def build_encoder(config: RepaConfig) -> Encoder:
    """The encoder ``config.encoder`` names."""
    if config.encoder == DEFAULT_ENCODER:
        return EfficientNetLite0Encoder()
    return TimmEncoder(config.encoder[len("timm:"):], config.encoder_weights, config.encoder_resolution)


# --------------------------------------------------------------------------------------------------
# targets and loss
# --------------------------------------------------------------------------------------------------


def tokens_to_map(tokens: torch.Tensor) -> torch.Tensor:
    """Row-major square patch tokens ``[B, s*s, C]`` -> map ``[B, C, s, s]``."""
    B, N, C = tokens.shape
    s = math.isqrt(N)
    if s * s != N:
        raise RepaError(f"encoder gave {N} patch tokens, not a square grid; drop its prefix tokens first")
    return tokens.transpose(1, 2).reshape(B, C, s, s)


def resize_to_grid(features: torch.Tensor, grid: int) -> torch.Tensor:
    """Encoder features -> one target per model token: ``[B, C, h, w]`` -> ``[B, grid*grid, C]``.

    Definition (**area**, i.e. adaptive average pooling): output cell (i, j) of the grid x grid map is the mean
    of the input cells in rows floor(i*h/grid) .. ceil((i+1)*h/grid)-1 and the same for columns. So:
    same size -> unchanged; integer downsampling -> block means; integer upsampling -> every input cell
    copied into its (grid/h) x (grid/w) block (nearest); other ratios -> means of the 1-2 overlapping cells.
    Constant maps stay constant. Tokens come out row-major (row i, then column j), the order of the model's
    patch embedding. Patch tokens ``[B, s*s, C]`` are accepted too (see :func:`tokens_to_map`).
    """
    if features.ndim == 3:
        features = tokens_to_map(features)
    if features.ndim != 4:
        raise RepaError(f"encoder features must be [B, C, h, w] or [B, N, C], got shape {tuple(features.shape)}")
    if grid < 1:
        raise RepaError(f"token grid must be >= 1, got {grid}")
    if features.shape[-2:] != (grid, grid):
        features = F.adaptive_avg_pool2d(features, (grid, grid))            # [B, C, grid, grid]
    return features.flatten(2).transpose(1, 2)                              # [B, grid*grid, C]


def repa_loss(projected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over batch and tokens of -cos(projected[b, n], target[b, n]); both ``[B, T, z]``. In float32+."""
    if projected.shape != target.shape:
        raise RepaError(
            f"projected hidden state {tuple(projected.shape)} and encoder target {tuple(target.shape)} differ; "
            f"expected both [batch, tokens, encoder dim]"
        )
    dtype = torch.promote_types(projected.dtype, torch.float32)
    p = F.normalize(projected.to(dtype), dim=-1)                             # [B, T, z]
    q = F.normalize(target.to(dtype), dim=-1)                                # [B, T, z]
    return -(p * q).sum(-1).mean()


# --------------------------------------------------------------------------------------------------
# the aligner
# --------------------------------------------------------------------------------------------------


class RepaAligner:
    """Captures z_k during the training forward and turns it into the weighted REPA loss.

    ``model``: a :class:`dartool.models.SiT` (or one wrapped by DDP / ``torch.compile``) that already has a
    projector 0 of the encoder's size (:func:`config_with_projector` / :func:`ensure_projector`).
    ``encoder``: defaults to :func:`build_encoder` of ``config``.
    After :meth:`loss`, ``last_loss`` holds the unweighted alignment loss (a detached tensor; no host sync).
    """

    def __init__(self, model: nn.Module, config: RepaConfig | None = None, encoder: Encoder | None = None) -> None:
        self.config = config or RepaConfig()
        base = unwrap(model)
        cfg = getattr(base, "config", None)
        if not isinstance(cfg, ModelConfig):
            raise RepaError(f"REPA needs a dartool SiT model, got {type(base).__name__}")
        self.encoder = encoder if encoder is not None else build_encoder(self.config)
        self.block = resolve_block(self.config.block, cfg.depth)
        self.tap = tap_name(self.block)
        self.grid = cfg.grid_size
        self._check_projector(base)
        self._z: torch.Tensor | None = None
        self._projector: nn.Module | None = None
        self.last_loss: torch.Tensor | None = None

    def describe(self) -> str:
        return (f"REPA: {self.encoder.name} ({self.encoder.dim}-d) aligned at block {self.block} "
                f"({self.tap}), weight {self.config.weight}")

    def _check_projector(self, base: nn.Module) -> None:
        dims = tuple(base.config.projector_dims)
        dim = self.encoder.dim
        if not dims or getattr(base, "projectors", None) is None:
            raise RepaError(
                f"the model has no REPA projector: build it from dartool.repa.config_with_projector(cfg, {dim}) "
                f"or call dartool.repa.ensure_projector(model, {dim}) before making the optimiser"
            )
        if dims[0] != dim:
            raise RepaError(
                f"the model's projector 0 outputs {dims[0]} features but encoder {self.encoder.name} gives {dim}: "
                f"use the encoder it was trained with, or replace it with dartool.repa.ensure_projector(model, {dim})"
            )

    def _store(self, name: str, z: torch.Tensor) -> None:
        self._z = z                       # the tensor itself: the graph back to the model stays intact
        return None

    @contextlib.contextmanager
    def capture(self, model: nn.Module) -> Iterator["RepaAligner"]:
        """Store z_k (``self.tap``) of every forward inside the block; call :meth:`loss` inside it too.

        The stored tensor is dropped on exit, so activations never outlive the step.
        """
        base = unwrap(model)
        self._check_projector(base)
        self._projector = base.projectors[0]
        self._z = None
        try:
            with tapped(base, {self.tap: self._store}):
                yield self
        finally:
            self._z = None
            self._projector = None

    @torch.no_grad()
    def target(self, images: torch.Tensor) -> torch.Tensor:
        """Encoder features of ``images`` (float ``[B, C, H, W]`` in [-1, 1]) on the token grid: ``[B, T, dim]``."""
        feats = self.encoder.patch_features(images)                          # [B, dim, h, w] or [B, N, dim]
        out = resize_to_grid(feats, self.grid)                               # [B, T, dim]
        if out.shape[-1] != self.encoder.dim:
            raise RepaError(f"encoder {self.encoder.name} gave {out.shape[-1]} features, declared {self.encoder.dim}")
        return out

    def loss(self, images: torch.Tensor | None = None, *, target: torch.Tensor | None = None) -> torch.Tensor:
        """``weight * repa_loss(projector(z_k), target)`` for the last forward under :meth:`capture`.

        ``images``: the clean training images (pixels, float ``[B, C, H, W]`` in [-1, 1]) of that forward; for a
        latent model pass the decoded / original pixel images. Or pass a precomputed ``target`` ``[B, T, dim]``.
        """
        z = self._z
        if z is None or self._projector is None:
            raise RepaError(
                f"no hidden state captured at {self.tap}: call aligner.loss inside `with aligner.capture(model):` "
                f"after the model's forward (a compiled model that skips forward hooks cannot be aligned: "
                f"use aligner.loss_of(model, z, images) with z from model(..., return_block=aligner.block))"
            )
        self._z = None                                                       # consumed: one loss per forward
        return self._weighted(self._projector, z, images, target)

    def loss_of(self, model: nn.Module, z: torch.Tensor, images: torch.Tensor | None = None, *,
                target: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`loss` of an explicit ``z`` = z_k, from ``model(x, t, y, return_block=self.block)`` (no hook: the
        path for torch.compile and CUDA graphs, which see z_k as one of the graph's outputs). ``model``: the
        model (or its DDP / torch.compile wrapper) whose projector 0 aligns z_k."""
        base = unwrap(model)
        self._check_projector(base)
        return self._weighted(base.projectors[0], z, images, target)

    def _weighted(self, projector: nn.Module, z: torch.Tensor, images: torch.Tensor | None,
                  target: torch.Tensor | None) -> torch.Tensor:
        if target is None:
            if images is None:
                raise RepaError("aligner.loss needs the clean images (or a precomputed target)")
            target = self.target(images)                                     # [B, T, dim]
        if target.shape[0] != z.shape[0]:
            raise RepaError(f"{target.shape[0]} target images for a forward of batch {z.shape[0]}")
        projected = projector(z)                                             # [B, T, dim]
        loss = repa_loss(projected, target.to(projected.device))
        self.last_loss = loss.detach()
        return self.config.weight * loss
