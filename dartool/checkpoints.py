"""Checkpoint I/O: public DiT / SiT / REPA files and dartool's own, always with ``weights_only=True``.

* Raw state dicts (the released ``DiT-XL-2-256x256.pt``, ``SiT-XL-2-256x256.pt``, REPA ``last.pt``).
* Training checkpoints ``{model, ema, opt, args}`` of those repos; ``ema`` is preferred. Their ``args``
  is a pickled ``argparse.Namespace``: it is allowed through torch's safe-globals list (it only sets
  attributes), nothing else is unpickled.
* safetensors files.
* dartool checkpoints: ``{"model", "ema", "config": plain dict, "dartool_version", ...}``.

The architecture is read off the weights (REFERENCE.md); anything that does not fit raises
:class:`CheckpointError` with one line that says what is wrong and what to do.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .models import HEADS_BY_WIDTH, ModelConfig, SiT

PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line saying what to do."""


@dataclass
class LoadedCheckpoint:
    model: SiT
    config: ModelConfig
    path: str
    sha256: str
    source: str                   # which entry the weights came from: ema | model | state_dict | raw
    layout: str                   # dartool | dit-sit-repa
    meta: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def _torch_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - turned into one clear line
        text = str(e)
        unsupported = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", text)
        if unsupported:
            raise CheckpointError(
                f"{path}: refuses to unpickle {unsupported.group(1)} (only tensors, plain data and "
                f"argparse.Namespace are loaded); re-save the weights alone with torch.save(model.state_dict())"
            ) from None
        raise CheckpointError(
            f"could not read {path} as a torch or safetensors checkpoint ({type(e).__name__}); "
            f"the file is corrupt, truncated or not a checkpoint"
        ) from None


def read_raw(path: str | os.PathLike) -> Any:
    """The object stored in a checkpoint file (torch pickle or safetensors), without building a model."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"no checkpoint at {p}: check the path")
    if p.is_dir():
        raise CheckpointError(f"{p} is a folder; pass the checkpoint file inside it (e.g. {p}/checkpoints/last.pt)")
    if p.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:  # pragma: no cover
            raise CheckpointError("reading .safetensors needs the safetensors package: pip install safetensors") from None
        try:
            return load_file(str(p))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"could not read {p} as safetensors ({e}); is the file complete?") from None
    return _torch_load(p)


def _strip(sd: dict[str, Any]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        changed = True
        while changed:
            changed = False
            for pre in PREFIXES:
                if k.startswith(pre):
                    k, changed = k[len(pre):], True
        out[k] = v
    return out


def split_checkpoint(obj: Any, path: str = "checkpoint") -> tuple[dict[str, torch.Tensor], str, dict[str, Any]]:
    """(state dict, which entry it came from, other plain entries) for any supported layout."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict or training checkpoint")
    meta: dict[str, Any] = {}
    for key in ("ema", "model", "state_dict"):
        if key in obj and isinstance(obj[key], dict):
            sd, source = obj[key], key
            meta = {k: v for k, v in obj.items() if k not in ("ema", "model", "state_dict", "opt", "optimizer")}
            break
    else:
        sd, source = obj, "raw"
    if isinstance(meta.get("args"), argparse.Namespace):
        meta["args"] = vars(meta["args"])
    sd = _strip(sd)
    if not all(isinstance(v, torch.Tensor) for v in sd.values()):
        bad = next(k for k, v in sd.items() if not isinstance(v, torch.Tensor))
        raise CheckpointError(f"{path}: entry {bad!r} of the {source} state dict is not a tensor; not a model checkpoint")
    if "x_embedder.proj.weight" not in sd:
        raise CheckpointError(
            f"{path} is not a DiT/SiT/REPA checkpoint: it has no x_embedder.proj.weight "
            f"(keys start {sorted(sd)[:3]}); pass a DiT, SiT, REPA or dartool checkpoint"
        )
    return sd, source, meta


# --------------------------------------------------------------------------------------------------
# architecture inference
# --------------------------------------------------------------------------------------------------


def infer_config(sd: dict[str, torch.Tensor], path: str = "checkpoint", **overrides: Any) -> ModelConfig:
    """Read the architecture off the weights (REFERENCE.md). ``overrides`` win (e.g. num_heads)."""
    w = sd["x_embedder.proj.weight"]
    if w.ndim != 4:
        raise CheckpointError(f"{path}: x_embedder.proj.weight has shape {tuple(w.shape)}, expected (D, C, p, p)")
    D, C, p, _ = w.shape
    blocks = [int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))]
    if not blocks:
        raise CheckpointError(f"{path}: no blocks.N.* weights; not a DiT/SiT checkpoint")
    depth = max(blocks) + 1
    if "pos_embed" not in sd:
        raise CheckpointError(f"{path}: no pos_embed; cannot tell the input size (pass a full DiT/SiT state dict)")
    T = sd["pos_embed"].shape[1]
    g = int(round(T**0.5))
    if g * g != T:
        raise CheckpointError(f"{path}: pos_embed has {T} tokens, not a square grid; only square inputs are supported")
    table = sd.get("y_embedder.embedding_table.weight")
    if table is None:
        raise CheckpointError(f"{path}: no y_embedder.embedding_table.weight; class-unconditional models are not supported")
    out = sd.get("final_layer.linear.weight")
    if out is None:
        raise CheckpointError(f"{path}: no final_layer.linear.weight; the checkpoint is truncated")
    c_out = out.shape[0] // (p * p)
    if c_out not in (C, 2 * C):
        raise CheckpointError(f"{path}: head outputs {c_out} channels for {C} input channels; expected {C} or {2 * C}")
    fc1 = sd.get("blocks.0.mlp.fc1.weight")
    mlp_ratio = fc1.shape[0] / D if fc1 is not None else 4.0

    cfg: dict[str, Any] = dict(
        input_size=g * p, patch_size=p, in_channels=C, hidden_size=D, depth=depth,
        mlp_ratio=mlp_ratio, num_classes=table.shape[0] - 1, class_dropout_prob=0.1,
        learn_sigma=c_out == 2 * C,
    )
    if "num_heads" not in overrides:
        if D not in HEADS_BY_WIDTH:
            raise CheckpointError(
                f"{path}: hidden size {D} is not in the size table {sorted(HEADS_BY_WIDTH)}; "
                f"the head count cannot be read off the weights: pass --num-heads"
            )
        cfg["num_heads"] = HEADS_BY_WIDTH[D]
    if any(k.startswith("routers.") for k in sd):
        cfg["routing"] = "dar"
        cfg["query"] = (
            "dynamic" if "routers.0.q_proj.weight" in sd
            else "static_t" if any(k.startswith("router_t_embedder.") for k in sd) else "static"
        )
        if "chunk_size" not in overrides:
            raise CheckpointError(
                f"{path}: a DAR state dict without its config; the chunk size cannot be read off the weights: "
                f"pass --chunk-size (dartool's own checkpoints carry it)"
            )
    proj = sorted({int(m.group(1)) for k in sd if (m := re.match(r"projectors\.(\d+)\.", k))})
    if proj:
        cfg["projector_dims"] = tuple(sd[f"projectors.{j}.4.weight"].shape[0] for j in proj)
        cfg["projector_hidden"] = sd["projectors.0.0.weight"].shape[0]
        cfg["time_convention"] = "repa"
    elif re.search(r"(^|[^a-z])dit", Path(path).name.lower()):
        cfg["time_convention"] = "dit"
    cfg.update(overrides)
    try:
        return ModelConfig(**cfg)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from None


def _group(keys: list[str]) -> str:
    """Compress key lists for messages: blocks.12.attn.qkv.weight ... -> blocks.{12..27}.*"""
    by_block: dict[str, list[int]] = {}
    rest = []
    for k in keys:
        m = re.match(r"(blocks|routers)\.(\d+)\.", k)
        if m:
            by_block.setdefault(m.group(1), []).append(int(m.group(2)))
        else:
            rest.append(k)
    parts = [f"{name}.{{{min(ix)}..{max(ix)}}}.*" for name, ix in by_block.items()]
    parts += rest[:4] + ([f"... {len(rest) - 4} more"] if len(rest) > 4 else [])
    return ", ".join(parts)


def check_fit(model: SiT, sd: dict[str, torch.Tensor], path: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [k for k in own if k in sd and tuple(own[k].shape) != tuple(sd[k].shape)]
    label = model.config.label
    if shapes:
        k = shapes[0]
        raise CheckpointError(
            f"{path} does not fit {label}: {len(shapes)} weights have other shapes, first {k} "
            f"{tuple(sd[k].shape)} vs {tuple(own[k].shape)}; the architecture options do not match this checkpoint"
        )
    if missing:
        raise CheckpointError(f"{path} does not fit {label}: missing {_group(missing)}; the file is truncated or of another model")
    if unexpected:
        raise CheckpointError(f"{path} does not fit {label}: unexpected {_group(unexpected)}; the architecture options do not match")


def load_checkpoint(
    path: str | os.PathLike, *, device: str | torch.device = "cpu", prefer: str = "ema", **overrides: Any
) -> LoadedCheckpoint:
    """Build the model a checkpoint describes and load its weights (``ema`` preferred over ``model``)."""
    path = str(path)
    obj = read_raw(path)
    if isinstance(obj, dict) and prefer == "model" and "model" in obj:
        obj = {"model": obj["model"], **{k: v for k, v in obj.items() if k not in ("ema", "model")}}
    sd, source, meta = split_checkpoint(obj, path)
    own_cfg = meta.get("config")
    if isinstance(own_cfg, dict):
        try:
            config = ModelConfig.from_dict({**own_cfg, **overrides})
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: its stored config is invalid ({e})") from None
        layout = "dartool"
    else:
        config = infer_config(sd, path, **overrides)
        layout = "dit-sit-repa"
    model = SiT(config)
    sd = {k: v for k, v in sd.items() if not k.startswith("projectors.")} if not config.projector_dims else sd
    check_fit(model, sd, path)
    model.load_state_dict(sd, strict=True)
    model.to(device).eval()
    return LoadedCheckpoint(model, config, path, sha256_file(path), source, layout, meta)


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(
    path: str | os.PathLike, model: SiT, *, ema: SiT | None = None, overwrite: bool = False, **extra: Any
) -> None:
    """A dartool checkpoint: weights + config as plain data (+ anything plain in ``extra``)."""
    if Path(path).exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    obj = {
        "model": model.state_dict(),
        "config": model.config.to_dict(),
        "dartool_version": __version__,
        **extra,
    }
    if ema is not None:
        obj["ema"] = ema.state_dict()
    atomic_save(obj, path)
