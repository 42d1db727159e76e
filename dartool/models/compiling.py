"""torch.compile for SiT models: the one place that decides how a SiT is compiled (``dartool train --compile``,
``dartool bench``).

Four modes (``cudagraphs``: see below ``COMPILE_MODES``):

- ``full`` (default): the whole model is one graph. Inductor fuses the residual stream's adds and LayerNorms into
  their neighbours; DAR's routers run as custom ops inside the graph, and each returns one gradient per source,
  which the compiled backward sums. Inductor fuses each source's chain of adds into one kernel that runs after the
  last of them arrives, so at S = 1 most router gradients are alive at the backward's peak (1.35x the residual's
  memory at SiT-B/2, 1.93x at XL/2; ``benchmarks/compiled_grad_lifetimes.py``, ``benchmarks/KERNEL_NOTES.md``
  session 14).
- ``regions``: the whole model compiled with a graph break after each block (``SiT.compile_regions``): one graph
  per block, routers inside as in ``full``, and the autograd engine sums each source's gradients from different
  blocks as they come; only gradients within one block wait for Inductor's fused sums.
- ``blocks``: each block's attention and MLP (and the head's linear) compiled in place, the rest of the model
  eager: the routers keep their eager path, whose kernels add every source's gradients into one buffer per source
  as they come.
- ``cudagraphs``: ``full`` under CUDA graphs (``torch.compile(mode="reduce-overhead")``): the step's kernels replay
  without the host's Python, which DAR's routers need where the GPU's work per step is small (SiT-XL/2 at 32 images
  per GPU). CUDA only.

Measured against ``full`` (time / peak memory over the compiled residual; H100, 2026-11-27,
``benchmarks/results/s15_a_*`` and ``s15_c_*``; ``benchmarks/compile_options.py``):

=================  ==============  ===============  ===============
SiT, DAR static    full            regions          blocks
=================  ==============  ===============  ===============
B/2 b256, c1       1.39 / 1.35     1.58 / 1.21      1.49 / 1.17
B/2 b256, c4       1.06 / 1.10     1.18 / 1.10      1.15 / 1.10
XL/2 b64, c1       1.63 / 1.79     2.19 / 1.19      2.01 / 1.13
=================  ==============  ===============  ===============

So the one-graph mode stays the default over ``regions`` and ``blocks`` (as ``cudagraphs``, ``full`` replayed, in
``dartool train`` on CUDA since session 19). Eager c1, against the same compiled residual, is 1.60 / 1.17 (B/2) and
1.77 / 1.14 (XL/2 b64): at XL/2 it beats both other modes, at B/2 ``blocks`` is 7 % faster at the same memory.
They remain for experiments on compiled memory.

Since session 16 ``full`` sums c1's source gradients inside the graph as eager mode does
(:mod:`dartool.kernels.compiled_slots`): B/2 b256 c1 1.45 / 1.17 (same H100), XL/2 b64 c1 1.50 / 1.13 (H200),
which leaves the other modes no memory to win.
"""
from __future__ import annotations

from typing import Any

import torch

from .config import ModelConfig

COMPILE_MODES = ("full", "regions", "blocks", "cudagraphs")
# ``cudagraphs`` is ``full`` with torch.compile's ``mode="reduce-overhead"``: CUDA graphs replay the step's kernels
# without the host. The training loop must call ``torch.compiler.cudagraph_mark_step_begin()`` before each step and
# must not keep the graphs' outputs past it (``dartool.train.arms.optimizer_step`` and ``dartool.bench._train_step``
# do both). Why: a DAR step's host work (the routers' custom ops, their offset tables and Triton launches) is about
# 150-220 ms at SiT-XL/2 on an H100 host, so at the DiT recipe's 32 images per GPU the compiled DAR c4 step waits
# for the host: 181.6 ms against the residual's 81.3 under ``full`` on an H100 (session 17), 138.9 against 70.9 on
# an H200. Under ``cudagraphs`` (session 18, 2026-11-27; benchmarks/COSTS.md): residual 78.8 / static c4 85.3
# (1.08x) / dynamic c4 110.9 ms on the H100, 69.3 / 74.6 (1.076x) / 94.2 ms on the H200; B/2 b256 static c4 1.081,
# XL/2 b64 1.071 (H200) -- against a residual whose stream was transposed (session 21); with it contiguous:
# XL/2 b32 66.4-67.3 / 74.6-74.9 (1.114-1.123x) / 94.3-94.7 ms, B/2 b256 static c4 1.110-1.113 (H200s). The
# offset tables are not cached in this mode (``dartool.kernels.tables.GRAPH_SAFE``, set here, process-wide);
# ``benchmarks/cudagraph_check.py`` checks that a DAR model computes and trains the same as under ``full`` (PASS
# on H100 and H200, chunk sizes 1, 4 and 8). CUDA only. ``dartool train --compile`` uses it by default on CUDA (its
# ``--compile-mode auto``, ``TrainConfig.resolve_compile_mode``), on one GPU and under torchrun (session 19: two
# ranks stayed bit-identical through 100 DDP steps, as under ``full``).

# Inductor options forced for every model compiled here, instead of :func:`inductor_options`'s choice (None: its
# choice). Experiments set it between models (``benchmarks/compile_options.py``).
OVERRIDE: "dict[str, Any] | None" = None


def inductor_options(config: ModelConfig) -> dict[str, Any]:
    """Inductor's options for a model of this configuration ({}: Inductor's defaults; session 14 tried realizing
    the gradient-accumulation chains early and it changed nothing, see the module docstring)."""
    if OVERRIDE is not None:
        return dict(OVERRIDE)
    return {}


_compiled_models = 0


def _raise_recompile_limit(at_least: int) -> None:
    """Let Dynamo keep at least this many compiled versions of one function (``recompile_limit``; past it, a
    function silently runs uncompiled)."""
    dyn = torch._dynamo.config
    limit = "recompile_limit" if hasattr(dyn, "recompile_limit") else "cache_size_limit"   # older torch
    setattr(dyn, limit, max(getattr(dyn, limit), at_least))


def _count_compiled_model() -> None:
    """Every SiT compiled as one graph is one more version of ``SiT.forward`` (Dynamo keys its cache on the code,
    and arms of other configurations fail each other's guards): ``dartool train --arms`` with more than 8 kinds of
    arm would otherwise run the rest uncompiled."""
    global _compiled_models
    _compiled_models += 1
    _raise_recompile_limit(8 + _compiled_models)


def compile_model(model: torch.nn.Module, mode: str = "full", **kw: Any):
    """The compiled callable of ``model`` (``torch.compile`` keywords in ``kw``) with :func:`inductor_options` of its
    configuration. ``mode="regions"`` sets ``model.compile_regions`` (and raises Dynamo's recompile limit to one
    compile per block); ``mode="blocks"`` compiles the blocks' attention and MLP modules (and the head's linear) in
    place and returns the model itself."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode {mode!r}: use one of {', '.join(COMPILE_MODES)}")
    cfg = getattr(model, "config", None)
    opts = inductor_options(cfg) if isinstance(cfg, ModelConfig) else {}
    from ..kernels import dispatch

    # resolve the cached "does Triton import" flag before Dynamo first traces a router: traced while still unset,
    # it became a guard that failed on the second call and recompiled every DAR model once (session 19: 6.9 s at
    # SiT-B/2 under CUDA graphs, in its second training step)
    dispatch.triton_available()
    if opts:
        kw = dict(kw, options=opts)
    if isinstance(cfg, ModelConfig) and mode in ("full", "cudagraphs"):
        _count_compiled_model()
    if mode == "full":
        return torch.compile(model, **kw)
    if mode == "cudagraphs":
        from ..kernels import tables

        tables.set_graph_safe(True)        # no cached offset tables alive in the graphs' memory pool
        return torch.compile(model, mode="reduce-overhead", **kw)
    if mode == "regions":
        if not hasattr(model, "compile_regions"):
            raise ValueError("compile mode 'regions' needs a SiT (a model with .compile_regions)")
        model.compile_regions = True
        # every block's graph is the same code re-entered with other sources: allow one compile per block and more
        depth = len(getattr(model, "blocks", ()))
        _raise_recompile_limit(2 * depth + 16)
        return torch.compile(model, **kw)
    if not hasattr(model, "blocks"):
        raise ValueError("compile mode 'blocks' needs a SiT (a model with .blocks and .final_layer)")
    for block in model.blocks:
        block.attn.compile(**kw)
        block.mlp.compile(**kw)
    model.final_layer.linear.compile(**kw)
    return model
