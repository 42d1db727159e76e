"""SiT/DiT models with a switchable residual or DAR stream."""
from .config import HEADS_BY_WIDTH, PATCHES, QUERIES, ROUTINGS, SIZES, ModelConfig, model_config, size_name
from .hooks import HookPoint, tap_points, tapped
from .sit import SiT, dar_source_plan

__all__ = [
    "HEADS_BY_WIDTH", "PATCHES", "QUERIES", "ROUTINGS", "SIZES", "ModelConfig", "model_config", "size_name",
    "HookPoint", "tap_points", "tapped", "SiT", "dar_source_plan", "build_model",
]


def build_model(config: ModelConfig) -> SiT:
    return SiT(config)
