"""Data sources: built-in Fashion-MNIST, npz of uint8 images, CIFAR-style JPEG-bytes npz, image folders,
and pre-encoded latents (npz). Everything takes a local path; nothing downloads.

Formats read by :func:`load_dataset`:

* ``fashion-mnist`` (or no path): Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``,
  idx.gz files), or an npz with ``x_train``/``y_train``/``x_test``/``y_test`` named by ``DARTOOL_FMNIST``.
* an ``.npz`` of uint8 images: images under ``x``, ``images``, ``arr_0`` or ``x_train`` (N,H,W), (N,H,W,C)
  or (N,C,H,W); labels (optional) under ``y``, ``labels`` or ``y_train``.
* an ``.npz`` of JPEG bytes (the CIFAR-10 copy in ``shared/data``): ``data`` (uint8, files concatenated),
  ``offsets`` (N+1), ``y``.
* an ``.npz`` of latents: float ``latents`` (N,C,H,W) and optional ``y``. Used as-is (already scaled).
* a folder of images: one sub-folder per class (sorted names = class ids), or images directly inside.
"""
from __future__ import annotations

import gzip
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif"}


class DataError(ValueError):
    """Data that cannot be used; one line that says what to do."""


@dataclass
class Dataset:
    """Images (uint8, N x H x W x C) or latents (float32, N x C x H x W), with integer labels."""

    x: np.ndarray
    y: np.ndarray
    name: str
    kind: str  # "pixels" | "latents"
    num_classes: int

    def __len__(self) -> int:
        return len(self.x)

    @property
    def channels(self) -> int:
        return self.x.shape[3] if self.kind == "pixels" else self.x.shape[1]

    @property
    def size(self) -> int:
        return self.x.shape[1] if self.kind == "pixels" else self.x.shape[2]

    def subset(self, n: int | None, seed: int = 0) -> "Dataset":
        """The first n images of a seeded permutation (all when n is None or >= len)."""
        if n is None or n >= len(self):
            return self
        idx = np.random.default_rng(seed).permutation(len(self))[:n]
        idx.sort()
        return Dataset(self.x[idx], self.y[idx], self.name, self.kind, self.num_classes)

    def batch(self, idx: np.ndarray | torch.Tensor, size: int | None = None, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Model inputs for the given indices: [-1, 1] floats (pixels) or latents, and labels."""
        idx = np.asarray(idx)
        y = _to_device(torch.from_numpy(self.y[idx].astype(np.int64)), device)
        if self.kind == "latents":
            x = _to_device(torch.from_numpy(self.x[idx]).float(), device)
            if size is not None and x.shape[-1] != size:
                raise DataError(f"latents are {x.shape[-1]} px but the model takes {size}; encode at the model's size")
            return x, y
        x = to_model_input(_to_device(torch.from_numpy(self.x[idx]), device), size)
        return x, y


def _to_device(t: torch.Tensor, device) -> torch.Tensor:
    """``t`` on ``device``; to a GPU through pinned memory without a host sync (a plain copy from pageable memory
    waits for the GPU's queue to drain: once per training step, the GPU then idled while the host prepared the next
    batch). The caching host allocator keeps the pinned buffer until the copy has run."""
    device = torch.device(device)
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def to_model_input(x: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1], resized to ``size`` when it differs (antialiased bilinear)."""
    x = x.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if size is not None and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float NCHW in [-1, 1] -> uint8 NHWC."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


# --------------------------------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------------------------------


def _idx(path: Path) -> np.ndarray:
    b = gzip.open(path, "rb").read()
    n = b[3]
    shape = tuple(int.from_bytes(b[4 + 4 * i: 8 + 4 * i], "big") for i in range(n))
    return np.frombuffer(b, np.uint8, offset=4 + 4 * n).reshape(shape)


def fashion_mnist(split: str = "train") -> Dataset:
    """Fashion-MNIST (MIT) from Debian's package, or the npz that ``DARTOOL_FMNIST`` names."""
    env = os.environ.get("DARTOOL_FMNIST")
    if env:
        with np.load(env) as f:
            x, y = f[f"x_{split}"], f[f"y_{split}"]
    else:
        img, lab = (FMNIST_DIR / n for n in FMNIST_FILES[split])
        if not img.exists():
            raise DataError(
                f"Fashion-MNIST is not installed ({img} missing): run `sudo apt-get install dataset-fashion-mnist` "
                f"or set DARTOOL_FMNIST to an npz with x_train/y_train"
            )
        x, y = _idx(img), _idx(lab)
    return Dataset(np.ascontiguousarray(x[..., None]), y.astype(np.int64), f"fashion-mnist:{split}", "pixels", 10)


def _decode_jpeg_bytes(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    from PIL import Image

    imgs = [np.asarray(Image.open(io.BytesIO(data[a:b].tobytes())).convert("RGB")) for a, b in zip(offsets[:-1], offsets[1:])]
    return np.stack(imgs)


def _npz(path: Path) -> Dataset:
    try:
        f = np.load(path)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"could not read {path} as npz ({e})") from None
    with f:
        keys = set(f.files)
        y = next((f[k] for k in ("y", "labels", "y_train") if k in keys), None)
        if "latents" in keys:
            x = f["latents"].astype(np.float32)
            if x.ndim != 4:
                raise DataError(f"{path}: latents must be N x C x H x W, got shape {x.shape}")
            kind = "latents"
        elif {"data", "offsets"} <= keys:
            x, kind = _decode_jpeg_bytes(f["data"], f["offsets"]), "pixels"
        else:
            k = next((k for k in ("x", "images", "arr_0", "x_train") if k in keys), None)
            if k is None:
                raise DataError(f"{path}: no images found (keys {sorted(keys)}); expected x, images, arr_0, x_train, latents or data+offsets")
            x, kind = f[k], "pixels"
            if x.dtype != np.uint8:
                raise DataError(f"{path}: images must be uint8, got {x.dtype}; for latents use the key 'latents'")
            if x.ndim == 3:
                x = x[..., None]
            elif x.ndim == 4 and x.shape[1] in (1, 3, 4) and x.shape[3] not in (1, 3, 4):
                x = x.transpose(0, 2, 3, 1)
            x = np.ascontiguousarray(x)
    y = np.zeros(len(x), np.int64) if y is None else np.asarray(y).astype(np.int64).reshape(-1)
    if len(y) != len(x):
        raise DataError(f"{path}: {len(x)} images but {len(y)} labels")
    return Dataset(x, y, path.name, kind, int(y.max()) + 1 if len(y) else 1)


def _folder(path: Path) -> Dataset:
    from PIL import Image

    classes = sorted(d for d in path.iterdir() if d.is_dir())
    groups = [(i, sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)) for i, d in enumerate(classes)]
    if not classes:
        groups = [(0, sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))]
    files = [(i, p) for i, ps in groups for p in ps]
    if not files:
        raise DataError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    first = Image.open(files[0][1])
    mode = "L" if first.mode in ("L", "1", "I;16") else "RGB"
    imgs = [np.asarray(Image.open(p).convert(mode)) for _, p in files]
    if len({im.shape for im in imgs}) > 1:
        raise DataError(f"{path}: images have different sizes; resize them to one square size first")
    x = np.stack(imgs)
    if x.ndim == 3:
        x = x[..., None]
    y = np.array([i for i, _ in files], np.int64)
    return Dataset(x, y, path.name, "pixels", max(1, len(classes)))


def load_dataset(spec: str | os.PathLike | None = None, split: str = "train") -> Dataset:
    """Load ``spec``: None or ``fashion-mnist`` (built in), an npz file, or an image folder."""
    if spec is None or str(spec) in ("fashion-mnist", "fmnist", "builtin"):
        return fashion_mnist(split)
    p = Path(spec)
    if not p.exists():
        raise DataError(f"no data at {p}: pass an npz file, an image folder, or 'fashion-mnist'")
    if p.is_dir():
        return _folder(p)
    if p.suffix == ".npz":
        return _npz(p)
    raise DataError(f"{p}: unsupported data file; pass an .npz (images, JPEG bytes or latents) or an image folder")


def check_fits(data: Dataset, in_channels: int, input_size: int) -> None:
    """Raise a one-line DataError if the data cannot feed a model with these channels/size."""
    if data.channels != in_channels:
        hint = " (a latent model needs pre-encoded latents: --data latents.npz)" if in_channels == 4 and data.kind == "pixels" else ""
        raise DataError(f"{data.name} has {data.channels} channels but the model takes {in_channels}{hint}")
    if data.kind == "latents" and data.size != input_size:
        raise DataError(f"{data.name} latents are {data.size} px but the model takes {input_size}")
