"""Analyses of a probe store, one module per question (docs/STORE.md is the store's schema).

Each ``analyze(store, ...)`` takes a store path or an ``xr.Dataset`` and returns a :class:`Result` with tidy
tables, a short numeric verdict and findings in words; ``comparison.compare(a, b)`` compares two arms.
Block numbers in every output are 1-based.

======================  ===================================================================================
module                  question
======================  ===================================================================================
``inflation``           does RMS(z_k) grow across depth? (ratio last/first, monotone fraction, log slope)
``gradient_decay``      does RMS(dL/dz_k) collapse after the early blocks? (early/deep ratio, where it drops)
``redundancy``          are consecutive blocks nearly identical? (adjacent cos, block x block, distinct blocks)
``routing``             which sources does each block read, per noise level? (importance or α, entropy)
``decodability``        can the noise level be read linearly from each router input? (ridge R², held out)
``comparison``          how do two arms differ? (B − A per metric with bootstrap / over-seed intervals)
``training``            how do inflation / decay / redundancy / loss evolve? (periodic stores {step: store})
======================  ===================================================================================
"""
from . import comparison, decodability, gradient_decay, inflation, redundancy, routing, training
from .common import Result, StoreContentError, load

ANALYSES = {
    "inflation": inflation.analyze,
    "gradient_decay": gradient_decay.analyze,
    "redundancy": redundancy.analyze,
    "routing": routing.analyze,
    "decodability": decodability.analyze,
}

__all__ = ["ANALYSES", "Result", "StoreContentError", "load", "comparison", "decodability", "gradient_decay",
           "inflation", "redundancy", "routing", "training"]
