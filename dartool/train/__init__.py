"""Training: the SiT recipe, paired residual / DAR arms, periodic evaluation and probing, torchrun + DDP.

``from dartool.train import TrainConfig, ArmConfig, train``; the command is ``dartool train`` (:mod:`.cli`).
"""
from .config import ArmConfig, ConfigError, TrainConfig, pair_arms

__all__ = ["ArmConfig", "ConfigError", "TrainConfig", "pair_arms", "train", "TrainError", "NonFiniteLoss"]


def __getattr__(name: str):
    if name in ("train", "TrainError", "NonFiniteLoss", "Trainer"):
        from . import loop

        return getattr(loop, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
