"""Boolean switches read from the environment (``DARTOOL_*``), parsed one way everywhere."""
from __future__ import annotations

import os

_OFF = ("0", "false", "no", "off")
_ON = ("1", "true", "yes", "on")


def env_flag(name: str, default: bool) -> bool:
    """``name`` as a boolean: 0/false/no/off and 1/true/yes/on (any case); unset, empty or anything else: default."""
    raw = os.environ.get(name, "").strip().lower()
    if raw in _OFF:
        return False
    if raw in _ON:
        return True
    return default
