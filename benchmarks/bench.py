#!/usr/bin/env python3
"""What DAR costs: the fused router against the unfused reference and the byte floor, and the training step /
sampling of residual vs DAR models. One command on a CUDA machine (about 8 minutes on one H100):

    PYTHONPATH=$PWD python3 benchmarks/bench.py --out benchmarks/results

It first checks the fused router against a float64 reference on every shape class
(``python -m dartool.kernels.check``, also runnable alone), then times everything and writes
``bench-<card>-<date>.json`` + ``.md`` under --out, printing a short table last. Same as ``dartool bench``.
Without CUDA it runs a small CPU bench of the reference path. See ``--help`` for the switches.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dartool.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
