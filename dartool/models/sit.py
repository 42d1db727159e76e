"""SiT / DiT with a switchable stream: the residual baseline or DAR (Diffusion-Adaptive Routing).

One model class. ``ModelConfig.routing`` picks how each sublayer (every attention and every MLP, so
``L = 2 * depth`` sublayers) reads its input:

* ``residual``: h_{l+1} = h_l + v_l  (h_l = v_0 + sum_{i<l} v_i)
* ``dar``:      h_l = sum_i alpha_{i->l} v_i,  alpha = softmax_i(q_l . RMSNorm_l(v_i) / sqrt(d))

over the sources v_0 (patch + position embedding) and earlier sublayer outputs, grouped into chunks of
S sublayers (DAR-METHOD.md sections 3-4). Everything else is the DiT block with adaLN-Zero, with the
public DiT/SiT/REPA state-dict key names and shapes, so released checkpoints load unchanged.

Tap points (see :mod:`dartool.models.hooks`), for a model of depth K, block k in 0..K-1:

* ``hook_embed``             v_0 = patch embedding + position embedding        [B, T, D]
* ``blocks.k.hook_attn_in``  h read by the attention sublayer                  [B, T, D]
* ``blocks.k.hook_attn_out`` v written by the attention sublayer (gated)       [B, T, D]
* ``blocks.k.hook_mlp_in``   h read by the MLP sublayer                        [B, T, D]
* ``blocks.k.hook_mlp_out``  v written by the MLP sublayer (gated)             [B, T, D]
* ``blocks.k.hook_out``      z_k, the state handed on from block k: the residual stream after the
                             block, or for DAR the aggregated state read by the next sublayer (for
                             the last block: the state fed to the head)         [B, T, D]
* ``routers.r.hook_alpha``   DAR only: router weights alpha, r = 2k (attention of block k),
                             2k+1 (MLP of block k), 2K (the head)               [B, T, N_r]
* ``hook_cond``              c = t_emb + y_emb                                  [B, D]

The routers of a DAR model are ``routers.0 .. routers.{2K}``; the last one feeds the head.

On CUDA the routers run as fused Triton kernels (:mod:`dartool.kernels`). When no tap point listens, each router
(every query kind, the head's too) also computes the LayerNorm + adaLN modulate of the sublayer or head it feeds
(the router's output h is then never materialised for anyone but the backward; :class:`PendingRoute`). Attach a
tap and the model takes the unfused path, where every tap above sees its tensor.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import kernels as _kernels
from .config import ModelConfig
from .hooks import HookPoint

# --------------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------------


def timestep_frequencies(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of (possibly fractional) timesteps: [B] -> [B, dim], cosines first."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]                                   # [B, half]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)              # [B, 2*half]
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """t -> frequency features (256) -> Linear -> SiLU -> Linear -> [B, D]."""

    def __init__(self, hidden_size: int, frequency_size: int = 256) -> None:
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t_freq: torch.Tensor) -> torch.Tensor:
        return self.mlp(t_freq.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class labels -> [B, D]; the last table row is the null class used for classifier-free guidance."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)

    def forward(self, y: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        if drop is not None:
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return self.embedding_table(y)


class PatchEmbed(nn.Module):
    """[B, C, H, W] -> [B, T, D] with a stride-p convolution (timm layout: ``proj``).

    The output is made contiguous. From a contiguous (NCHW) input the convolution's output is NCHW too, and its
    [B, T, D] view is transposed (D is the slow axis); element-wise ops keep that layout, so a residual stream
    built on it stayed transposed through every block, and torch.compile could not fuse the residual add with
    the next LayerNorm: SiT-XL/2 b32's compiled residual step took 68 ms from NCHW inputs and 65 from
    channels-last ones (what a dataset of HWC images yields), on one H200 (2026-11-27, session 21)."""

    def __init__(self, patch: int, in_channels: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden, kernel_size=patch, stride=patch, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2).contiguous()          # [B, T, D], D the fast axis


def sincos_pos_embed_2d(dim: int, grid: int) -> np.ndarray:
    """Fixed 2-D sin-cos position table [grid*grid, dim] (MAE layout: half for rows, half for columns)."""

    def one_d(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gw, gh = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64))
    return np.concatenate([one_d(dim // 2, gw), one_d(dim // 2, gh)], axis=1)


# --------------------------------------------------------------------------------------------------
# The block: two sublayers with adaLN-Zero
# --------------------------------------------------------------------------------------------------


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.heads, D // self.heads)      # [B, T, 3, H, hd]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)                       # 3 x [B, H, T, hd]
        x = F.scaled_dot_product_attention(q, k, v)                          # [B, H, T, hd]
        return self.proj(x.transpose(1, 2).reshape(B, T, D))                 # [B, T, D]


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    """A DiT block seen as two sublayers; the stream between them belongs to the model."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.dim = dim
        self.attn = Attention(dim, heads)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim, bias=True))
        for name in ("attn_in", "attn_out", "mlp_in", "mlp_out", "out"):
            setattr(self, f"hook_{name}", HookPoint())

    def modulation(self, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # shift/scale/gate for attention, then for the MLP: 6 x [B, D]
        return self.adaLN_modulation(c).chunk(6, dim=1)

    def sublayer(self, which: int, h: "torch.Tensor | PendingRoute", mod: Sequence[torch.Tensor],
                 eps: float) -> torch.Tensor:
        """v = gate * F(modulate(LN(h), shift, scale)) for sublayer 0 (attention) or 1 (MLP). A
        :class:`PendingRoute` h runs its router with the LayerNorm + modulate fused in."""
        shift, scale, gate = mod[3 * which: 3 * which + 3]
        if isinstance(h, PendingRoute):
            x = h.ln_modulate(shift, scale, eps)                             # [B, T, D]
        else:
            x = modulate(F.layer_norm(h, (self.dim,), eps=eps), shift, scale)   # [B, T, D]
        fn = self.attn if which == 0 else self.mlp
        return gate.unsqueeze(1) * fn(x)                                     # [B, T, D]


class FinalLayer(nn.Module):
    def __init__(self, dim: int, patch: int, out_channels: int) -> None:
        super().__init__()
        self.dim = dim
        self.linear = nn.Linear(dim, patch * patch * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim, bias=True))

    def forward(self, h: "torch.Tensor | PendingRoute", c: torch.Tensor, eps: float) -> torch.Tensor:
        """A :class:`PendingRoute` h runs the head's router with the LayerNorm + modulate fused in."""
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)              # 2 x [B, D]
        if isinstance(h, PendingRoute):
            x = h.ln_modulate(shift, scale, eps)                             # [B, T, D]
        else:
            x = modulate(F.layer_norm(h, (self.dim,), eps=eps), shift, scale)   # [B, T, D]
        return self.linear(x)                                                # [B, T, p*p*C_out]


# --------------------------------------------------------------------------------------------------
# DAR: routers and the source bookkeeping of chunked routing
# --------------------------------------------------------------------------------------------------


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulate in float32 at least (bf16/fp16 -> fp32; fp64 stays fp64)."""
    return torch.promote_types(dtype, torch.float32)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.to(acc_dtype(x.dtype))
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class Router(nn.Module):
    """alpha_i = softmax_i(q . RMSNorm(v_i) / sqrt(d)) per token; h = sum_i alpha_i v_i.

    The query is ``query`` (a vector, ``static``), ``query + e(t)`` (``static_t``; e(t) is passed in),
    or ``q_proj(v_prev)`` per token (``dynamic``). Zero-initialised queries route uniformly.
    """

    def __init__(self, dim: int, kind: str, learned: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.kind = kind
        self.norm = RMSNorm(dim)
        if kind == "dynamic":
            self.q_proj = nn.Linear(dim, dim, bias=False)
        else:
            self.query = nn.Parameter(torch.zeros(dim))
        if not learned:  # a fixed uniform mean (final_router=False)
            for p in self.parameters():
                p.requires_grad_(False)
        self.hook_alpha = HookPoint()

    def make_query(self, t_emb: torch.Tensor | None, v_prev: torch.Tensor) -> torch.Tensor:
        """The query: [D] (static), [B, 1, D] (static_t), or [B, T, D] (dynamic)."""
        if self.kind == "dynamic":
            return self.q_proj(v_prev)                                       # [B, T, D]
        if self.kind == "static_t":
            return (self.query + t_emb).unsqueeze(1)                         # [B, 1, D]
        return self.query                                                    # [D]

    def route(self, sources: Sequence[torch.Tensor], t_emb: torch.Tensor | None, v_prev: torch.Tensor,
              save_q: bool = False) -> torch.Tensor:
        """h for these sources: the query, then the router. A dynamic router on the fused path (no listeners on
        ``hook_alpha``) hands the projection to the kernel, which recomputes q in the backward instead of saving
        it (unless ``save_q``); everything else is ``self(sources, self.make_query(t_emb, v_prev))``."""
        if self.kind == "dynamic" and not self.hook_alpha.has_readers and _kernels.use_fused(self, sources, v_prev):
            return _kernels.fused_dynamic_router(sources, v_prev, self.q_proj.weight, self.norm.weight, self.norm.eps,
                                                 save_q=save_q)
        return self(sources, self.make_query(t_emb, v_prev))

    def route_ln(self, sources: Sequence[torch.Tensor], q: torch.Tensor | None, v_prev: torch.Tensor,
                 shift: torch.Tensor, scale: torch.Tensor, ln_eps: float, save_q: bool = False,
                 prefix: "tuple | None" = None) -> torch.Tensor:
        """modulate(LayerNorm(h), shift, scale) for these sources in one fused kernel per pass (routers on the fused
        path; :class:`PendingRoute`). A dynamic router (q None) hands its projection of v_prev to the kernels,
        which recompute q in the backward (unless ``save_q``). ``prefix`` = (partial, lse, P): the state of this
        router over the first P sources, computed for the whole chunk at once (:meth:`SiT.shared_prefix`); the
        kernel reads it instead of them. shift, scale [B, D] -> [B, T, D]."""
        if prefix is not None:
            part, lam, n = prefix
            return _kernels.fused_router_ln_prefix(part, lam, sources[n:], q, self.norm.weight, self.norm.eps,
                                                   shift, scale, ln_eps, _kernels.dispatch.y_dtype_of(sources))
        if self.kind == "dynamic":
            return _kernels.fused_dynamic_router_ln(sources, v_prev, self.q_proj.weight, self.norm.weight,
                                                    self.norm.eps, shift, scale, ln_eps, save_q=save_q)
        return _kernels.fused_router_ln(sources, q, self.norm.weight, self.norm.eps, shift, scale, ln_eps)

    def forward(self, sources: Sequence[torch.Tensor], q: torch.Tensor) -> torch.Tensor:
        """Reference implementation (also the CPU path). sources: N x [B, T, D].

        On CUDA the fused Triton kernel runs instead (``dartool.kernels``; ``DARTOOL_FUSED=0`` disables
        it); with a forward hook on ``hook_alpha`` this reference runs, so a hook sees and may replace alpha;
        read-only taps (``tapped(readers=...)``) keep the fused kernel and get its alpha."""
        if _kernels.use_fused(self, sources, q):
            if not self.hook_alpha.has_readers:
                return _kernels.fused_router(sources, q, self.norm.weight, self.norm.eps)
            h, alpha = _kernels.fused_router(sources, q, self.norm.weight, self.norm.eps, return_alpha=True)
            self.hook_alpha(alpha)                                           # [B, T, N] fp32, to readers
            return h
        V = torch.stack(list(sources), dim=0)                                # [N, B, T, D]
        K = self.norm(V)                                                     # [N, B, T, D]
        acc = acc_dtype(V.dtype)
        logits = (K.to(acc) * q.to(acc)).sum(-1) / math.sqrt(self.dim)      # [N, B, T]
        alpha = torch.softmax(logits, dim=0).permute(1, 2, 0)                # [B, T, N]
        alpha = self.hook_alpha(alpha)
        return torch.einsum("btn,nbtd->btd", alpha.to(V.dtype), V)           # [B, T, D]


class PendingRoute:
    """A router's input, recorded but not yet run: the sublayer (or head) that reads it runs the router with its
    LayerNorm + adaLN modulate fused in (:meth:`Router.route_ln`). Made only when nothing would see h
    (no tap listens) and the router takes the fused path. ``q`` is the query of a static / static_t router,
    None for a dynamic one (its kernels project ``v_prev``)."""

    __slots__ = ("router", "sources", "q", "v_prev", "save_q", "prefix")

    def __init__(self, router: Router, sources: list[torch.Tensor], q: torch.Tensor | None,
                 v_prev: torch.Tensor, save_q: bool = False, prefix: "tuple | None" = None) -> None:
        self.router, self.sources, self.q, self.v_prev, self.save_q = router, sources, q, v_prev, save_q
        self.prefix = prefix  # (partial, lse, P) of a shared prefix (SiT.shared_prefix), or None

    def ln_modulate(self, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
        prefix, self.prefix = self.prefix, None  # let the partial go once read
        return self.router.route_ln(self.sources, self.q, self.v_prev, shift, scale, eps,
                                    save_q=self.save_q, prefix=prefix)               # [B, T, D]


def dar_source_plan(num_sublayers: int, chunk: int) -> tuple[list[int], int]:
    """Number of sources each sublayer router reads, and the head router's count.

    Sources for sublayer l (1-based) in chunk n: summaries c_0..c_{n-1} of finished chunks (c_0 = v_0)
    and the raw outputs so far in chunk n. The head reads the summaries of all chunks but the last,
    plus the raw outputs of the last chunk (DAR-METHOD.md section 4).
    """
    n_summaries, current, counts = 1, 0, []
    for _ in range(num_sublayers):
        if current == chunk:  # the previous chunk is finished: summarise it
            n_summaries, current = n_summaries + 1, 0
        counts.append(n_summaries + current)
        current += 1
    return counts, n_summaries + current


class DARStream:
    """Per-forward bookkeeping of the sources (summaries + the current chunk's raw outputs)."""

    def __init__(self, v0: torch.Tensor, chunk: int, summary: str) -> None:
        v0 = _kernels.tap_source(v0)  # identity; lets fused routers accumulate its gradient in-kernel
        self.chunk, self.summary = chunk, summary
        self.summaries = [v0]
        self.current: list[torch.Tensor] = []
        self.last = v0
        self.prefix: dict[int, tuple] = {}  # router index -> its shared-prefix state (SiT.shared_prefix)

    def write(self, v: torch.Tensor) -> None:
        v = _kernels.tap_source(v)
        self.current.append(v)
        self.last = v

    def sources(self, final: bool = False) -> list[torch.Tensor]:
        if not final and len(self.current) == self.chunk:
            done = self.current
            self.summaries.append(done[-1] if self.summary == "last" else torch.stack(done).sum(0))
            self.current = []
        return self.summaries + self.current


def write(stream: "DARStream | torch.Tensor", h: torch.Tensor, v: torch.Tensor) -> "DARStream | torch.Tensor":
    """Hand sublayer output v to the stream: add it (residual) or record it as a source (DAR)."""
    if isinstance(stream, DARStream):
        stream.write(v)
        return stream
    return h + v


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


class SiT(nn.Module):
    """SiT/DiT backbone; ``config.routing`` switches the stream between residual and DAR."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = cfg = config
        D = cfg.hidden_size
        if cfg.routing == "dar":      # resolved now, not in a torch.compile trace (models.compiling.compile_model)
            _kernels.dispatch.triton_available()
        self.x_embedder = PatchEmbed(cfg.patch_size, cfg.in_channels, D)
        self.t_embedder = TimestepEmbedder(D)
        self.y_embedder = LabelEmbedder(cfg.num_classes, D, cfg.class_dropout_prob)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, D), requires_grad=False)
        self.blocks = nn.ModuleList([Block(D, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.final_layer = FinalLayer(D, cfg.patch_size, cfg.out_channels)
        self.hook_embed = HookPoint()
        self.hook_cond = HookPoint()

        L = cfg.num_sublayers
        self.source_counts, head_sources = dar_source_plan(L, cfg.chunk_size)
        self.source_counts.append(head_sources)
        if cfg.routing == "dar":
            self.routers = nn.ModuleList(
                [Router(D, cfg.query) for _ in range(L)] + [Router(D, cfg.query, learned=cfg.final_router)]
            )
            if cfg.query == "static_t":  # e(t): shared across routers; last Linear zero-init => starts as static
                self.router_t_embedder = TimestepEmbedder(D)
        # Post-router LayerNorm eps per router (see ModelConfig.router_eps).
        if cfg.routing == "dar" and cfg.router_eps == "per_source_count":
            self.ln_eps = [cfg.norm_eps / n**2 for n in self.source_counts]
        else:
            self.ln_eps = [cfg.norm_eps] * (L + 1)
        if cfg.projector_dims:
            self.projectors = nn.ModuleList([
                nn.Sequential(
                    nn.Linear(D, cfg.projector_hidden), nn.SiLU(),
                    nn.Linear(cfg.projector_hidden, cfg.projector_hidden), nn.SiLU(),
                    nn.Linear(cfg.projector_hidden, z),
                )
                for z in cfg.projector_dims
            ])
        self._tap_points = [m for m in self.modules() if isinstance(m, HookPoint)]   # not registered: a list
        # shared prefixes on the fused path (SiT.shared_prefix): None follows DARTOOL_SHARED_PREFIX and the width
        # (dispatch.shares_prefix); True / False decides for this model only (benchmarks compare both in one process)
        self.share_prefixes: "bool | None" = None
        # torch.compile: a graph break after each block, so the autograd engine sums the sources' gradients between
        # the graphs as they come (dartool.models.compiling, mode "regions"); no effect when not compiled
        self.compile_regions = False
        self.initialize_weights()

    # ------------------------------------------------------------------ initialisation
    def initialize_weights(self) -> None:
        """adaLN-Zero: every block and the head start as zero maps; DAR queries start at zero (uniform)."""

        def xavier(m: nn.Module) -> None:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

        self.apply(xavier)
        cfg = self.config
        self.pos_embed.data.copy_(torch.from_numpy(sincos_pos_embed_2d(cfg.hidden_size, cfg.grid_size)).float()[None])
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)
        if cfg.routing == "dar":
            for r in self.routers:
                nn.init.ones_(r.norm.weight)
                if cfg.query == "dynamic":
                    nn.init.zeros_(r.q_proj.weight)
                else:
                    nn.init.zeros_(r.query)
            if cfg.query == "static_t":
                nn.init.normal_(self.router_t_embedder.mlp[0].weight, std=0.02)
                nn.init.zeros_(self.router_t_embedder.mlp[2].weight)
                nn.init.zeros_(self.router_t_embedder.mlp[2].bias)

    # ------------------------------------------------------------------ forward
    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, p*p*C] -> [B, C, H, W]."""
        cfg = self.config
        p, c, g = cfg.patch_size, cfg.out_channels, cfg.grid_size
        x = x.reshape(x.shape[0], g, g, p, p, c)                             # [B, h, w, p, p, C]
        x = torch.einsum("nhwpqc->nchpwq", x)                                # [B, C, h, p, w, p]
        return x.reshape(x.shape[0], c, g * p, g * p)                        # [B, C, H, W]

    def condition(self, t: torch.Tensor, y: torch.Tensor, drop: torch.Tensor | None = None):
        """c = t_emb + y_emb, plus the router time embedding e(t) for static_t (else None)."""
        t_freq = timestep_frequencies(t, self.t_embedder.frequency_size)     # [B, 256]
        c = self.t_embedder(t_freq) + self.y_embedder(y, drop)               # [B, D]
        e_t = self.router_t_embedder(t_freq) if hasattr(self, "router_t_embedder") else None
        return self.hook_cond(c), e_t

    def route(self, r: int, stream: "DARStream | torch.Tensor", e_t, final: bool = False,
              fuse_ln: bool = False) -> "torch.Tensor | PendingRoute":
        """The input of sublayer r (or of the head): the residual sum, or router r over its sources; with
        ``fuse_ln`` a router on the fused path is left pending for its sublayer (or the head), which runs it
        with the LayerNorm + modulate fused in."""
        if not isinstance(stream, DARStream):
            return stream
        router, sources = self.routers[r], stream.sources(final)
        save_q = router.kind == "dynamic" and _kernels.dispatch.saves_query(r, len(self.routers), router.dim)
        if fuse_ln:
            if router.kind == "dynamic":
                if _kernels.use_fused(router, sources, stream.last):
                    return PendingRoute(router, sources, None, stream.last, save_q)
            else:
                q = router.make_query(e_t, stream.last)                      # [D] or [B, 1, D]
                if _kernels.use_fused(router, sources, q):
                    prefix = stream.prefix.pop(r, None) or self.shared_prefix(r, stream, e_t)
                    return PendingRoute(router, sources, q, stream.last, prefix=prefix)
                return router(sources, q)                                    # [B, T, D]
        return router.route(sources, e_t, stream.last, save_q=save_q)         # [B, T, D]

    def shared_prefix(self, r: int, stream: DARStream, e_t) -> "tuple | None":
        """At the start of a chunk (static / static_t queries, LayerNorm-fused routers): every sublayer router of
        the chunk reads the chunk's summaries first, so one pass over them gives all their states at once
        (``dartool.kernels.prefix_triton``). Returns router r's (partial, lse, P) and files the others' in the
        stream; None where it does not pay (``dispatch.shares_prefix``: fewer than ``SHARED_PREFIX_MIN`` summaries,
        a width where the prefix kernels are not faster, ``DARTOOL_SHARED_PREFIX=0``) or one router is left. A chunk
        longer than ``dispatch.SHARED_PREFIX_GROUP`` routers shares in groups of that many, one pass each. The
        head's router reads the same summaries but keeps its own pass."""
        P = len(stream.summaries)
        if stream.current or not _kernels.dispatch.shares_prefix(self.config.hidden_size, P, self.share_prefixes):
            return None
        chunk = range(r, min(r + self.config.chunk_size, len(self.routers) - 1))
        for group in _kernels.dispatch.prefix_groups(chunk):                # at most SHARED_PREFIX_GROUP routers
            routers = [self.routers[i] for i in group]
            qs = [ro.make_query(e_t, stream.last) for ro in routers]       # K x [D] or K x [B, 1, D]
            qs = torch.stack(qs) if qs[0].dim() == 1 else torch.cat(qs, dim=1)   # [K, D] or [B, K, D]
            gs = torch.stack([ro.norm.weight for ro in routers])            # [K, D]
            parts, lam = _kernels.shared_prefix(stream.summaries, qs, gs, routers[0].norm.eps)
            for k, i in enumerate(group):
                stream.prefix[i] = (parts[k], lam[k], P)
        return stream.prefix.pop(r, None)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, *, drop_labels: torch.Tensor | None = None,
        return_block: int | None = None,
    ) -> "torch.Tensor | tuple[torch.Tensor, torch.Tensor]":
        """x [B, C, H, W], t [B] in the model's time convention, y [B] int -> [B, C_out, H, W].

        ``return_block=k`` (1-based) also returns z_k, the state handed on from block k (what ``blocks.{k-1}.hook_out``
        sees), as ``(out, z_k)``: REPA's alignment input as an output torch.compile sees, unlike a hook."""
        cfg = self.config
        if return_block is not None and not 1 <= return_block <= cfg.depth:
            raise ValueError(f"return_block must be a block in 1..{cfg.depth}, got {return_block}")
        z = None
        v0 = self.hook_embed(self.x_embedder(x) + self.pos_embed)            # [B, T, D]
        c, e_t = self.condition(t, y, drop_labels)                           # [B, D]
        # residual: the stream is the running sum h; DAR: the sources seen so far
        stream = DARStream(v0, cfg.chunk_size, cfg.summary) if cfg.routing == "dar" else v0
        # DAR with nothing listening on the taps: routers run with the next LayerNorm + modulate fused in
        fuse = (cfg.routing == "dar" and _kernels.dispatch.FUSE_LN
                and _kernels.hooks_idle(self._tap_points))
        h = self.route(0, stream, e_t, fuse_ln=fuse)                         # [B, T, D]
        for k, block in enumerate(self.blocks):
            mod = block.modulation(c)                                        # 6 x [B, D]
            h = block.hook_attn_in(h)                                        # [B, T, D]
            v = block.hook_attn_out(block.sublayer(0, h, mod, self.ln_eps[2 * k]))   # [B, T, D]
            stream = write(stream, h, v)
            h = block.hook_mlp_in(self.route(2 * k + 1, stream, e_t, fuse_ln=fuse))   # [B, T, D]
            v = block.hook_mlp_out(block.sublayer(1, h, mod, self.ln_eps[2 * k + 1]))  # [B, T, D]
            stream = write(stream, h, v)
            head_next = k == cfg.depth - 1
            if self.compile_regions:      # torch.compile: one graph per block (models.compiling, mode "regions")
                torch._dynamo.graph_break()
            returned = return_block == k + 1                                 # z_k must exist as a tensor
            h = block.hook_out(self.route(2 * k + 2, stream, e_t, final=head_next, fuse_ln=fuse and not returned))
            if returned:
                z = h                                                        # [B, T, D] z_k
            if not isinstance(stream, DARStream):
                stream = h  # the tapped tensor carries on, so gradients taken at z_k are exact
        out = self.final_layer(h, c, self.ln_eps[-1])                        # [B, T, p*p*C_out]
        out = self.unpatchify(out)                                           # [B, C_out, H, W]
        return out if return_block is None else (out, z)

    def forward_with_cfg(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, scale: float, guided_channels: int | None = None
    ) -> torch.Tensor:
        """Classifier-free guidance: one batched pass over (cond, null). Guides all channels unless
        ``guided_channels`` is given (3 reproduces the DiT/SiT reference behaviour)."""
        null = torch.full_like(y, self.config.num_classes)
        out = self(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
        cond, uncond = out.chunk(2)
        n = self.config.in_channels if guided_channels is None else guided_channels
        guided = uncond[:, :n] + scale * (cond[:, :n] - uncond[:, :n])
        return torch.cat([guided, cond[:, n:]], dim=1)

    # ------------------------------------------------------------------ helpers
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def router_names(self) -> list[str]:
        """Human names of the routers: ``block3.attn``, ``block3.mlp``, ..., ``head``."""
        names = [f"block{k}.{s}" for k in range(self.config.depth) for s in ("attn", "mlp")]
        return names + ["head"]
