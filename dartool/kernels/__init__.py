"""Fused GPU kernels (Triton). Importing this package never imports Triton; the kernels load on first use.

* :func:`fused_router` - the DAR router, forward + backward (``router_triton``).
* :func:`fused_router_ln` - the router with the following LayerNorm + adaLN modulate fused in.
* :func:`fused_dynamic_router` / :func:`fused_dynamic_router_ln` - the same with a dynamic query (recomputed in
  the backward).
* :func:`shared_prefix` / :func:`fused_router_ln_prefix` - the routers of a chunk reading its summaries once
  between them (static / static_t queries; ``prefix_triton``).
* :func:`use_fused` - whether ``Router.forward`` takes the fused path for a call (``dispatch``).
* :func:`tap_source` - marks a DAR source so fused routers accumulate its gradient in-kernel.
"""
from .dispatch import (
    fused, fused_available, fused_dynamic_router, fused_dynamic_router_ln, fused_enabled, fused_router,
    fused_router_ln, fused_router_ln_prefix, hooks_idle, set_fused, shared_prefix, tap_source, triton_available,
    use_fused, why_not_fused,
)

__all__ = [
    "fused", "fused_available", "fused_dynamic_router", "fused_dynamic_router_ln", "fused_enabled", "fused_router",
    "fused_router_ln", "fused_router_ln_prefix", "hooks_idle", "set_fused", "shared_prefix", "tap_source",
    "triton_available", "use_fused", "why_not_fused",
]
