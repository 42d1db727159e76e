"""Tiny models and by-hand reference computations for the probe tests (numpy, float64)."""
from __future__ import annotations

import types

import numpy as np
import torch

from dartool.models import ModelConfig, SiT
from dartool.probe import router_sources


def tiny_config(**kw) -> ModelConfig:
    base = dict(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=4, num_classes=10,
                learn_sigma=False, chunk_size=2)
    base.update(kw)
    return ModelConfig(**base)


def randomize(model: SiT, seed: int = 0, std: float = 0.3) -> SiT:
    """Give every zero-initialised weight (adaLN, head, router queries) random values: nothing degenerate."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "pos_embed":
                continue
            if "adaLN_modulation" in name or name.startswith(("final_layer", "routers", "router_t_embedder")):
                noise = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
                p.copy_(noise * std + (1.0 if name.endswith("norm.weight") else 0.0))
    return model


def tiny_model(routing: str = "residual", dtype=torch.float64, seed: int = 0, **kw) -> SiT:
    torch.manual_seed(seed)
    return randomize(SiT(tiny_config(routing=routing, **kw)), seed).to(dtype)


def fix_sublayers(model: SiT, outputs: torch.Tensor) -> SiT:
    """Make sublayer l output the fixed tensor ``outputs[l]`` [T, D] for every sample, whatever its input."""
    for k, block in enumerate(model.blocks):
        def sublayer(self, which, h, mod, eps, _k=k):
            return outputs[2 * _k + which].to(h.dtype).expand_as(h)

        block.sublayer = types.MethodType(sublayer, block)
    return model


def tiny_data(n: int, cfg: ModelConfig, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    y = torch.randint(0, cfg.num_classes, (n,), generator=g)
    return x, y


# --------------------------------------------------------------------------------------------------
# by-hand references (numpy float64)
# --------------------------------------------------------------------------------------------------


def np64(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def patchify(img: np.ndarray, p: int, order: str) -> np.ndarray:
    """[B, C, H, W] -> [B, T, p*p*C]: ``order="conv"`` (C, p, q) like the patch embedding, ``"head"`` (p, q, C)."""
    B, C, H, W = img.shape
    g = H // p
    a = img.reshape(B, C, g, p, g, p)                                   # n c h pp w q
    a = a.transpose(0, 2, 4, 1, 3, 5) if order == "conv" else a.transpose(0, 2, 4, 3, 5, 1)
    return a.reshape(B, g * g, -1)


def embed(model: SiT, xt: np.ndarray) -> np.ndarray:
    """v_0 = patch embedding + position embedding, by hand: [B, T, D]."""
    W = np64(model.x_embedder.proj.weight)
    b = np64(model.x_embedder.proj.bias)
    return patchify(xt, model.config.patch_size, "conv") @ W.reshape(W.shape[0], -1).T + b + np64(model.pos_embed)[0]


def sit_noised(x: np.ndarray, eps: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    """SiT: x_t = (1 - s) x + s eps, target x - eps."""
    return (1 - s) * x + s * eps, x - eps


def rms(a: np.ndarray) -> np.ndarray:
    """Per-sample RMS over tokens and channels: [B, T, D] -> [B]."""
    return np.sqrt((a**2).mean((-2, -1)))


def token_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean over tokens of the per-token cosine: -> [B]."""
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    return ((a * b).sum(-1) / (na * nb)).mean(-1)


def head_loss_and_grad(model: SiT, hL: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample loss and dL/dh_L (L = summed per-sample loss) through a head whose adaLN is zero:
    out = W LN(h_L) + b, by hand (LayerNorm backward written out)."""
    cfg = model.config
    assert float(model.final_layer.adaLN_modulation[-1].weight.detach().abs().sum()) == 0.0
    eps = cfg.norm_eps
    mu = hL.mean(-1, keepdims=True)
    sig = np.sqrt(((hL - mu) ** 2).mean(-1, keepdims=True) + eps)
    xhat = (hL - mu) / sig                                                  # [B, T, D]
    Wl, bl = np64(model.final_layer.linear.weight), np64(model.final_layer.linear.bias)
    out = xhat @ Wl.T + bl                                                   # [B, T, p*p*C]
    tgt = patchify(target, cfg.patch_size, "head")
    n = target[0].size
    loss = ((out - tgt) ** 2).sum((-2, -1)) / n                              # [B]
    g_out = 2 * (out - tgt) / n
    g_x = g_out @ Wl                                                         # [B, T, D]
    g_h = (g_x - g_x.mean(-1, keepdims=True) - xhat * (g_x * xhat).mean(-1, keepdims=True)) / sig
    return loss, g_h


def hand_residual(model: SiT, fixed: np.ndarray, x: np.ndarray, eps: np.ndarray, s: float) -> dict:
    """Every per-sample statistic of a residual model whose sublayer l outputs ``fixed[l]``."""
    L, K = model.config.num_sublayers, model.config.depth
    xt, target = sit_noised(x, eps, s)
    v0 = embed(model, xt)                                                    # [B, T, D]
    v = [v0] + [np.broadcast_to(fixed[l], v0.shape) for l in range(L)]      # sources v_0..v_L
    h = [v0 + sum(fixed[:r], np.zeros_like(fixed[0])) for r in range(L + 1)]  # h_r = v_0 + sum_{j<r} v_{j+1}
    z = [h[2 * k + 2] for k in range(K)]
    loss, G = head_loss_and_grad(model, h[L], target)                       # dL/dh_r = dL/dh_L for every r
    imp = np.full((x.shape[0], L + 1, L + 1), np.nan)
    for r in range(L + 1):
        for i in range(r + 1):
            imp[:, r, i] = (G * v[i]).sum((-2, -1))
    zs = [h[0]] + z
    return {
        "loss": loss, "h_rms": np.stack([rms(a) for a in h[:L]], 1), "v_rms": np.stack([rms(a) for a in v[1:]], 1),
        "update_ratio": np.stack([rms(v[l + 1]) / rms(h[l]) for l in range(L)], 1),
        "z_rms": np.stack([rms(a) for a in z], 1), "z_grad_rms": np.stack([rms(G)] * K, 1),
        "h_grad_rms": np.stack([rms(G)] * L, 1),
        "adjacent_cos": np.stack([token_cos(zs[k], zs[k + 1]) for k in range(K)], 1),
        "block_cos": np.stack([np.stack([token_cos(z[j], z[k]) for k in range(K)], 1) for j in range(K)], 1),
        "importance": imp, "z": z, "h": h,
    }


def hand_dar_forward(model: SiT, fixed: np.ndarray, x: np.ndarray, eps: np.ndarray, s: float) -> dict:
    """Forward statistics of a static-query DAR model whose sublayer l outputs ``fixed[l]``: alpha by hand."""
    cfg = model.config
    L, K, D = cfg.num_sublayers, cfg.depth, cfg.hidden_size
    assert cfg.query == "static"
    xt, _ = sit_noised(x, eps, s)
    v0 = embed(model, xt)
    v = [v0] + [np.broadcast_to(fixed[l], v0.shape) for l in range(L)]
    h, alpha_mean, entropy = [], np.full((x.shape[0], L + 1, L + 1), np.nan), np.zeros((x.shape[0], L + 1))
    for r, src in enumerate(router_sources(L, cfg.chunk_size)):
        router = model.routers[r]
        q, w = np64(router.query), np64(router.norm.weight)
        V = np.stack([v[i] for i in src], 0)                                # [N, B, T, D]
        Kn = V / np.sqrt((V**2).mean(-1, keepdims=True) + router.norm.eps) * w
        logits = (Kn * q).sum(-1) / np.sqrt(D)                              # [N, B, T]
        a = np.exp(logits - logits.max(0))
        a = a / a.sum(0)
        h.append((a[..., None] * V).sum(0))
        alpha_mean[:, r, src] = a.mean(-1).T
        entropy[:, r] = -(a * np.log(a)).sum(0).mean(-1)
    z = [h[2 * k + 2] for k in range(K)]
    return {"alpha": alpha_mean, "alpha_entropy": entropy, "h_rms": np.stack([rms(a) for a in h[:L]], 1),
            "z_rms": np.stack([rms(a) for a in z], 1), "z": z, "h": h}
