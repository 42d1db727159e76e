"""dartool: diagnose cross-layer information flow in diffusion transformers, and train DAR models."""
__version__ = "0.1.0"
