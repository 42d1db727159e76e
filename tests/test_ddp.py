"""torchrun + DDP on two CPU processes (gloo) equals one process with the same global batch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from dartool.train import TrainConfig, pair_arms
from dartool.train.logs import read_log
from dartool.train.loop import train

WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    from dartool.models import ModelConfig, SiT
    from dartool.sample import SamplerConfig, sample_images
    from dartool.train import TrainConfig
    from dartool.train import ddp as D
    from dartool.train.loop import train

    cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
    d = D.setup("cpu")
    assert d.world_size == 2, d
    torch.manual_seed(0)
    model = SiT(ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=4,
                            num_classes=4, learn_sigma=False))
    res = sample_images(model, 10, SamplerConfig("sde", steps=3), seed=5, batch_size=4, dist=d, latent=False)
    if d.main:
        np.savez(sys.argv[2], x=res[0], y=res[1])
    train(cfg, progress=False)
""")


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> str:
    rng = np.random.default_rng(0)
    p = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(p, x=rng.integers(0, 255, (40, 8, 8), dtype=np.uint8), y=np.arange(40) % 4)
    return str(p)


def _cfg(out: Path, data: str) -> TrainConfig:
    return TrainConfig(out=str(out), data=data, size="S", depth=2, hidden_size=32, num_heads=4, patch=2, input_size=8,
                       arms=pair_arms(), steps=3, batch_size=8, lr=1e-3, log_every=1, ckpt_every=3, ema_decay=0.5,
                       label_dropout=0.25, precision="fp64", device="cpu")


def _torchrun(tmp_path: Path, worker: str, *args: str) -> subprocess.CompletedProcess:
    """``worker`` (Python source) under torchrun on two CPU processes, with ``args``; its result."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    script = tmp_path / "worker.py"
    script.write_text(worker)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_two_processes_match_one_process(tmp_path, npz):
    ddp_out = tmp_path / "ddp"
    proc = _torchrun(tmp_path, WORKER, json.dumps(_cfg(ddp_out, npz).to_dict()), str(tmp_path / "samples.npz"))
    assert proc.returncode == 0, proc.stderr[-3000:]

    single = tmp_path / "single"
    train(_cfg(single, npz), progress=False)
    for arm in ("residual", "dar-static-c4"):
        a = torch.load(ddp_out / arm / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
        b = torch.load(single / arm / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
        assert a["world_size"] == 2 and b["world_size"] == 1 and a["step"] == b["step"] == 3
        for key in ("model", "ema"):
            for k in b[key]:
                assert torch.allclose(a[key][k], b[key][k], rtol=0, atol=1e-9), (arm, key, k)
        la = [r["loss"] for r in read_log(ddp_out / arm / "log.jsonl", "train")]
        lb = [r["loss"] for r in read_log(single / arm / "log.jsonl", "train")]
        assert np.allclose(la, lb, rtol=1e-10, atol=0)

    # sampling sharded over the two ranks gives the samples of one process
    from dartool.models import ModelConfig, SiT
    from dartool.sample import SamplerConfig, sample_images

    torch.manual_seed(0)
    model = SiT(ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=4,
                            num_classes=4, learn_sigma=False))
    x, y = sample_images(model, 10, SamplerConfig("sde", steps=3), seed=5, batch_size=4, latent=False)
    with np.load(tmp_path / "samples.npz") as f:
        assert np.array_equal(f["y"], y)
        assert np.abs(f["x"].astype(int) - x.astype(int)).max() <= 1      # thread counts may flip a rounding


DRIFT_WORKER = textwrap.dedent("""
    import json, sys
    import torch
    import dartool.train.loop as L
    from dartool.train import TrainConfig
    from dartool.train import ddp as D

    cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
    d = D.setup("cpu")
    step = L.optimizer_step

    def drifting(module, model, *a, **k):      # rank 1 alone moves one weight after its step: ranks out of step
        out = step(module, model, *a, **k)
        if d.rank == 1:
            with torch.no_grad():
                next(model.parameters()).add_(1e-6)
        return out

    L.optimizer_step = drifting
    try:
        L.train(cfg, progress=False)
    except L.TrainError as e:
        print("TrainError:", e, flush=True)
        sys.exit(3)
""")


def test_torchrun_ranks_out_of_step_stop_before_the_checkpoint(tmp_path, npz):
    """Under torchrun every rank must hold the same weights at each checkpoint (DDP keeps them equal bit for bit);
    one rank's weights drifting stops training on every rank, with a one-line error naming the arm and the first
    parameter, before the checkpoint is written."""
    out = tmp_path / "ddp"
    proc = _torchrun(tmp_path, DRIFT_WORKER, json.dumps(_cfg(out, npz).to_dict()))
    assert proc.returncode != 0
    said = proc.stdout                       # (the two ranks' lines may interleave)
    assert said.count("arm residual: the 2 processes' weights differ at step 3 (first: pos_embed)") == 2, \
        said[-2000:] + proc.stderr[-2000:]                                   # both ranks stop, neither hangs
    assert said.count("no checkpoint was written yet") == 2
    assert not (out / "residual" / "checkpoints" / "last.pt").exists()
