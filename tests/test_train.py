"""dartool train on the CPU: loss falls, pairing pairs, resume is bit-for-bit, failures leave good checkpoints."""
from __future__ import annotations

import dataclasses
import errno
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from dartool.train import ArmConfig, ConfigError, TrainConfig, pair_arms
from dartool.train import arms as arms_mod
from dartool.train.arms import paired_models
from dartool.train.logs import read_log
from dartool.train.loop import NonFiniteLoss, train
from dartool.train.state import CheckpointWriteError, step_files
from dartool.train.streams import PairedStreams

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> str:
    """A small synthetic image set: 96 grey 8 x 8 images in 4 classes (class = brightness)."""
    rng = np.random.default_rng(0)
    y = np.arange(96) % 4
    x = (rng.normal(size=(96, 8, 8)) * 20 + 40 + 50 * y[:, None, None]).clip(0, 255).astype(np.uint8)
    p = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(p, x=x, y=y)
    return str(p)


def tiny(out: Path, data: str, **kw) -> TrainConfig:
    base = dict(out=str(out), data=data, size="S", depth=2, hidden_size=32, num_heads=4, patch=2, input_size=8,
                steps=6, batch_size=8, lr=1e-3, log_every=1, ckpt_every=3, ema_decay=0.9, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def losses(folder: Path) -> list[float]:
    return [r["loss"] for r in read_log(folder / "log.jsonl", "train")]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)   # must work: plain data + tensors only


# ------------------------------------------------------------------------------------------------ learning


@pytest.mark.skipif(not FMNIST.exists(), reason="Fashion-MNIST not installed")
def test_tiny_pair_loss_falls_on_fashion_mnist(tmp_path):
    cfg = TrainConfig(out=str(tmp_path / "run"), data="fashion-mnist", data_limit=2000, size="S", depth=2,
                      hidden_size=64, num_heads=4, patch=4, input_size=16, arms=pair_arms(), steps=30, batch_size=32,
                      lr=2e-3, log_every=10, ckpt_every=30, ema_decay=0.9, device="cpu")
    summary = train(cfg, progress=False)
    run = tmp_path / "run"
    for name in ("residual", "dar-static-c4"):
        curve = losses(run / name)
        assert len(curve) == 3
        assert curve[-1] < 0.8 * curve[0], (name, curve)
        assert (run / name / "checkpoints" / "last.pt").exists()
        assert (run / name / "metrics.csv").read_text().startswith("step,epoch,loss,loss_s0.00_0.25")
    assert {r["run"] for r in summary["runs"]} == {"residual", "dar-static-c4"}
    assert json.loads((run / "config.json").read_text())["train"]["arms"][1]["routing"] == "dar"
    assert "| residual |" in (run / "summary.md").read_text()


# ------------------------------------------------------------------------------------------------ pairing


def test_pairing_identical_batches_noise_times_and_drops(tmp_path, npz):
    seen: dict[str, list] = defaultdict(list)

    def rec(name, b):
        seen[name].append([b.x.clone(), b.eps.clone(), b.s.clone(), b.y.clone(), b.drop.clone(),
                           torch.from_numpy(b.index.copy())])

    arms = [ArmConfig(), ArmConfig(routing="dar"), ArmConfig(routing="dar", query="dynamic", chunk_size=1)]
    train(tiny(tmp_path / "a", npz, arms=arms, steps=5, label_dropout=0.5, ckpt_every=5), recorder=rec, progress=False)
    # a separate run of one arm with the same seed draws the same streams (counter-based)
    alone: dict[str, list] = defaultdict(list)
    train(tiny(tmp_path / "b", npz, arms=[ArmConfig(routing="dar", query="static_t")], steps=5, label_dropout=0.5,
               ckpt_every=5), recorder=lambda n, b: alone[n].append([b.x, b.eps, b.s, b.y, b.drop,
                                                                     torch.from_numpy(b.index)]), progress=False)
    ref = seen["residual"]
    assert len(ref) == 5
    for other in (seen["dar-static-c4"], seen["dar-dynamic-c1"], alone["dar-statict-c4"]):
        for a, b in zip(ref, other):
            for u, v in zip(a, b):
                assert torch.equal(u, v)
    drops = torch.cat([r[4] for r in ref])
    assert 0 < int(drops.sum()) < len(drops)                  # label dropout really drops some
    assert not torch.equal(ref[0][1], ref[1][1])              # fresh noise every step
    s = torch.cat([r[2] for r in ref])
    assert float(s.min()) >= 0 and float(s.max()) <= 1


def test_paired_models_share_every_non_router_parameter():
    cfg = TrainConfig(size="S", depth=2, hidden_size=32, num_heads=4, patch=2,
                      arms=[ArmConfig(), ArmConfig(routing="dar"), ArmConfig(routing="dar", query="static_t")])
    res, dar, dart = paired_models(cfg, 3, input_size=8, in_channels=1, num_classes=4)
    shared = res.state_dict()
    for m in (dar, dart):
        for k, v in m.state_dict().items():
            if k.startswith(arms_mod.ROUTER_PREFIXES):
                continue
            assert torch.equal(v, shared[k]), k
    again = paired_models(cfg, 3, input_size=8, in_channels=1, num_classes=4)[1]
    assert all(torch.equal(a, b) for a, b in zip(dar.state_dict().values(), again.state_dict().values()))


def test_streams_split_across_ranks_equal_the_global_batch(npz):
    from dartool.data import load_dataset

    data = load_dataset(npz)
    kw = dict(seed=1, global_batch=8, input_size=8, device=torch.device("cpu"), label_dropout=0.3)
    whole = PairedStreams(data, **kw).batch(13)       # crosses an epoch boundary (96 / 8 = 12 steps per epoch)
    parts = [PairedStreams(data, rank=r, world_size=2, **kw).batch(13) for r in range(2)]
    for f in ("x", "eps", "s", "y", "drop"):
        assert torch.equal(torch.cat([getattr(p, f) for p in parts]), getattr(whole, f)), f
    assert whole.epoch == 1


# ------------------------------------------------------------------------------------------------ resume


def test_resume_continues_bit_for_bit(tmp_path, npz):
    arms = pair_arms()
    full = tmp_path / "full"
    train(tiny(full, npz, arms=arms, steps=6, ckpt_every=3), progress=False)
    part = tmp_path / "part"
    train(tiny(part, npz, arms=arms, steps=3, ckpt_every=3), progress=False)
    train(tiny(part, npz, arms=arms, steps=6, ckpt_every=3), resume=True, progress=False)
    for arm in ("residual", "dar-static-c4"):
        assert losses(full / arm) == losses(part / arm) and len(losses(full / arm)) == 6
        a, b = load(full / arm / "checkpoints" / "last.pt"), load(part / arm / "checkpoints" / "last.pt")
        assert a["step"] == b["step"] == 6
        for key in ("model", "ema"):
            for k in a[key]:
                assert torch.equal(a[key][k], b[key][k]), (arm, key, k)
        for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
            for k in pa:
                assert torch.equal(pa[k], pb[k])


def test_resume_falls_back_over_an_unreadable_checkpoint(tmp_path, npz):
    run = tmp_path / "run"
    train(tiny(run, npz, steps=4, ckpt_every=2), progress=False)
    newest = run / "residual" / "checkpoints" / "step_0000004.pt"
    (run / "residual" / "checkpoints" / "last.pt").unlink()
    newest.write_bytes(newest.read_bytes()[:100])               # truncated
    (run / "residual" / "checkpoints" / ".last.pt.junk.tmp").write_bytes(b"half")   # a killed writer's leftovers
    train(tiny(run, npz, steps=5, ckpt_every=2), resume=True, progress=False)
    recs = read_log(run / "residual" / "log.jsonl", "train")
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5]         # steps 3-4 redone from the step-2 checkpoint
    assert load(run / "residual" / "checkpoints" / "last.pt")["step"] == 5


def test_refuses_a_non_empty_run_folder(tmp_path, npz):
    run = tmp_path / "run"
    train(tiny(run, npz, steps=1), progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny(run, npz, steps=1), progress=False)
    train(tiny(run, npz, steps=2), overwrite=True, progress=False)
    assert len(losses(run / "residual")) == 2
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a dartool run"):
        train(tiny(other, npz, steps=1), overwrite=True, progress=False)


# ------------------------------------------------------------------------------------------------ failures


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, npz, monkeypatch):
    calls = {"n": 0}
    orig = arms_mod.TrainModule.forward

    def poisoned(self, *a, **k):
        per, aux = orig(self, *a, **k)
        calls["n"] += 1
        return (per * float("nan") if calls["n"] >= 6 else per), aux

    monkeypatch.setattr(arms_mod.TrainModule, "forward", poisoned)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLoss, match="non-finite loss.*step 6.*last good checkpoint.*step 4"):
        train(tiny(run, npz, steps=20, ckpt_every=4, log_every=2), progress=False)
    ck = load(run / "residual" / "checkpoints" / "last.pt")
    assert ck["step"] == 4
    assert all(torch.isfinite(v).all() for v in ck["model"].values())
    assert sorted(step_files(run / "residual" / "checkpoints")) == [4]
    assert any(r.get("event") == "non_finite" for r in read_log(run / "residual" / "log.jsonl"))


def test_a_full_disk_never_leaves_a_half_written_latest_checkpoint(tmp_path, npz, monkeypatch):
    real_save = torch.save
    calls = {"n": 0}

    def full_disk(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] >= 2:
            f.write(b"\0" * 1000)                               # partly written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_disk)
    run = tmp_path / "run"
    with pytest.raises(CheckpointWriteError, match="No space left.*previous checkpoint is intact"):
        train(tiny(run, npz, steps=6, ckpt_every=2), progress=False)
    monkeypatch.setattr(torch, "save", real_save)
    folder = run / "residual" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt", "step_0000002.pt"]   # no temporary files
    assert load(folder / "last.pt")["step"] == 2


def test_time_budget_gives_every_seed_an_equal_training_share(tmp_path, npz, monkeypatch):
    """Seeds run one after the other; a slow final evaluation of seed 0 must not shrink seed 1's share."""
    import time as _time

    from dartool.train import loop as loop_mod

    budgets = []

    def fake_group(self, runs, seed, data, budget):
        budgets.append(budget)
        _time.sleep(0.3)              # the final evaluation / probe of this seed: outside the training share
        return 0.5 * budget           # it trained for half its share

    monkeypatch.setattr(loop_mod.Trainer, "train_group", fake_group)
    monkeypatch.setattr(loop_mod.Trainer, "summarise", lambda self, runs, secs: {"runs": []})
    train(tiny(tmp_path / "run", npz, arms=pair_arms(), seeds=[0, 1, 2], time_budget=3.0), progress=False)
    assert budgets[0] == pytest.approx(1.0)
    assert budgets[1] == pytest.approx((3.0 - 0.5) / 2)       # the unused training time passes on, the sleep does not
    assert budgets[2] == pytest.approx(3.0 - 0.5 - 0.625)


def test_time_budget_ends_every_arm_after_the_same_steps(tmp_path, npz):
    summary = train(tiny(tmp_path / "run", npz, arms=pair_arms(), steps=10**6, ckpt_every=10**6, log_every=50,
                         time_budget=1.5), progress=False)
    runs = summary["runs"]
    assert {r["stopped"] for r in runs} == {"time_budget"}
    steps = {r["steps"] for r in runs}
    assert len(steps) == 1 and 0 < steps.pop() < 10**6
    for r in runs:
        assert load(Path(r["checkpoint"]))["step"] == r["steps"]


# ------------------------------------------------------------------------------------------------ fine-tuning


def test_trainable_patterns_freeze_everything_else(tmp_path, npz):
    # routers get no gradient at the adaLN-zero init (every v_i = 0), so fine-tune a briefly trained DAR model
    train(tiny(tmp_path / "base", npz, arms=[ArmConfig(routing="dar", chunk_size=1)], steps=3), progress=False)
    base = tmp_path / "base" / "dar-static-c1" / "checkpoints" / "last.pt"
    init = load(base)["ema"]
    cfg = tiny(tmp_path / "run", npz, arms=[ArmConfig(routing="dar", chunk_size=1)], trainable=["routers.*"],
               steps=3, lr=1e-2, init_from=str(base))
    train(cfg, progress=False)
    ck = load(tmp_path / "run" / "dar-static-c1" / "checkpoints" / "last.pt")
    changed = {k for k, v in ck["model"].items() if not torch.equal(v, init[k])}
    assert changed and all(k.startswith("routers.") for k in changed)
    assert any(k.endswith(".query") for k in changed)
    n_opt = len(ck["optimizer"]["param_groups"][0]["params"])
    assert n_opt == sum(1 for k in init if k.startswith("routers."))
    with pytest.raises(ConfigError, match="matches no trainable parameter"):
        train(tiny(tmp_path / "bad", npz, trainable=["nothing.*"]), progress=False)


def test_init_from_a_residual_checkpoint_starts_dar_at_the_same_function(tmp_path, npz):
    train(tiny(tmp_path / "base", npz, steps=3), progress=False)
    ck = tmp_path / "base" / "residual" / "checkpoints" / "last.pt"
    cfg = tiny(tmp_path / "ft", npz, arms=[ArmConfig(), ArmConfig(routing="dar", chunk_size=1)], steps=1,
               init_from=str(ck))
    summary = train(cfg, progress=False)
    a, b = (r["last_train"]["loss"] for r in summary["runs"])
    assert abs(a - b) < 1e-5 * abs(a)
    assert load(tmp_path / "ft" / "dar-static-c1" / "checkpoints" / "last.pt")["init_from"] == str(ck)
    with pytest.raises(ConfigError, match="dense DAR"):
        train(tiny(tmp_path / "ft2", npz, arms=[ArmConfig(routing="dar")], init_from=str(ck)), progress=False)


def test_repa_auxiliary_loss_plugs_in(tmp_path, npz):
    pytest.importorskip("efficientnet_lite_pytorch")
    cfg = tiny(tmp_path / "run", npz, steps=2, batch_size=4, repa="efficientnet-lite0", repa_block=1, ckpt_every=2)
    train(cfg, progress=False)
    recs = read_log(tmp_path / "run" / "residual" / "log.jsonl", "train")
    assert all(np.isfinite(r["loss_repa"]) and r["loss_repa"] < 0 for r in recs)    # weighted negative cosine
    ck = load(tmp_path / "run" / "residual" / "checkpoints" / "last.pt")
    assert ck["config"]["projector_dims"] == [1280]
    assert "projectors.0.0.weight" in ck["model"]


def test_repa_trains_compiled_as_it_does_eagerly(tmp_path, npz, monkeypatch):
    """--repa with --compile (once refused: a hook is invisible to torch.compile): z_k is an output of the compiled
    model, so the REPA loss and the training match eager mode's (Dynamo + AOTAutograd with the eager backend, to
    stay fast on the CPU; Inductor only changes the kernels)."""
    pytest.importorskip("efficientnet_lite_pytorch")
    seen = []

    def dynamo(m, mode="full", **kw):
        seen.append(mode)
        torch._dynamo.reset()
        return torch.compile(m, backend="aot_eager", dynamic=False)

    monkeypatch.setattr(arms_mod, "compile_model", dynamo)
    logs = {}
    for compiled in (False, True):
        out = tmp_path / f"run{int(compiled)}"
        cfg = tiny(out, npz, steps=3, batch_size=4, repa="efficientnet-lite0", repa_block=1, ckpt_every=3,
                   compile=compiled, arms=pair_arms())
        train(cfg, progress=False)
        logs[compiled] = {a: read_log(out / a / "log.jsonl", "train") for a in ("residual", "dar-static-c4")}
    assert seen == ["full", "full"]                                  # auto on the CPU; one compile per arm
    for arm, eager in logs[False].items():
        comp = logs[True][arm]
        assert len(comp) == len(eager) == 3
        for a, b in zip(eager, comp):
            assert np.isfinite(b["loss_repa"]) and b["loss_repa"] < 0
            assert b["loss_repa"] == pytest.approx(a["loss_repa"], rel=1e-5, abs=1e-6)
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)


# ------------------------------------------------------------------------------------------------ config + CLI


def test_arm_specs_and_config_round_trip():
    a = ArmConfig.parse("dar:dynamic:c8:sum")
    assert (a.routing, a.query, a.chunk_size, a.summary, a.name) == ("dar", "dynamic", 8, "sum", "dar-dynamic-c8-sum")
    assert ArmConfig.parse("residual").name == "residual"
    with pytest.raises(ConfigError, match="unknown part"):
        ArmConfig.parse("dar:fast")
    cfg = TrainConfig(arms=pair_arms(), seeds=[0, 1], trainable=["routers.*"])
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert [n for _, _, n in cfg.run_names()] == ["residual-seed0", "dar-static-c4-seed0", "residual-seed1",
                                                  "dar-static-c4-seed1"]
    with pytest.raises(ConfigError, match="arm names must differ"):
        TrainConfig(arms=[ArmConfig(), ArmConfig()])


def test_cli_train_pair_and_resume_rules(tmp_path, npz):
    from typer.testing import CliRunner

    from dartool.cli import app

    run = tmp_path / "run"
    args = ["train", "--pair", "--out", str(run), "--data", npz, "--depth", "2", "--hidden", "32", "--heads", "4",
            "--input-size", "8", "--steps", "2", "--batch-size", "8", "--log-every", "1", "--device", "cpu", "--quiet"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert (run / "dar-static-c4" / "checkpoints" / "step_0000002.pt").exists()
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "not empty" in r.output and "--resume" in r.output
    r = CliRunner().invoke(app, ["train", "--out", str(run), "--resume", "--lr", "0.5", "--quiet"])
    assert r.exit_code == 2 and "--lr cannot change" in r.output
    r = CliRunner().invoke(app, ["train", "--out", str(run), "--resume", "--steps", "3", "--quiet"])
    assert r.exit_code == 0, r.output
    assert len(losses(run / "residual")) == 3


def test_latent_training_and_a_config_file(tmp_path):
    from typer.testing import CliRunner

    from dartool.cli import app

    rng = np.random.default_rng(1)
    lat = tmp_path / "latents.npz"
    np.savez(lat, latents=rng.normal(size=(32, 4, 8, 8)).astype(np.float32), y=np.arange(32) % 3)
    cfg = tiny(tmp_path / "run", str(lat), arms=[ArmConfig(routing="dar", query="static_t", chunk_size=2)], steps=2,
               final_eval_samples=4, eval_steps=2)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    r = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "cfg.json"), "--steps", "3", "--quiet"])
    assert r.exit_code == 0, r.output
    ck = load(tmp_path / "run" / "dar-statict-c2" / "checkpoints" / "last.pt")
    assert ck["step"] == 3 and ck["data_kind"] == "latents" and ck["config"]["in_channels"] == 4
    assert ck["train_config"]["steps"] == 3 and ck["config"]["query"] == "static_t"
    assert not (tmp_path / "run" / "dar-statict-c2" / "samples").exists()     # no image metrics for latents


def test_compile_mode_is_checked_and_reaches_the_train_module(tmp_path, monkeypatch):
    """--compile-mode: one of models.compiling's modes (a bad one is a one-line error before anything runs), stored
    in the config, and handed with --compile to compile_model for every arm."""
    from typer.testing import CliRunner

    from dartool.cli import app

    with pytest.raises(ConfigError, match="--compile-mode must be one of auto, full, regions, blocks, cudagraphs"):
        TrainConfig(arms=pair_arms(), compile_mode="graph")
    r = CliRunner().invoke(app, ["train", "--pair", "--compile", "--compile-mode", "graph", "--out",
                                 str(tmp_path / "r"), "--device", "cpu", "--quiet"])
    assert r.exit_code == 2 and "--compile-mode must be one of" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "r").exists()
    seen = []
    monkeypatch.setattr(arms_mod, "compile_model", lambda m, mode="full", **kw: seen.append(mode) or m)
    cfg = TrainConfig(arms=pair_arms(), depth=1, hidden_size=32, num_heads=4)
    model = paired_models(cfg, 0, input_size=8, in_channels=1, num_classes=10)[1]
    arms_mod.TrainModule(model, compile=True, compile_mode="regions")
    arms_mod.TrainModule(model, compile=False, compile_mode="regions")
    assert seen == ["regions"]


def test_cudagraphs_mode_needs_cuda_and_is_refused_before_anything_is_written(tmp_path):
    """--compile-mode cudagraphs is accepted by the config but needs a CUDA device: on the CPU a one-line error
    that names the way out, before the run folder exists."""
    from typer.testing import CliRunner

    from dartool.cli import app

    assert TrainConfig(arms=pair_arms(), compile=True, compile_mode="cudagraphs").compile_mode == "cudagraphs"
    r = CliRunner().invoke(app, ["train", "--pair", "--compile", "--compile-mode", "cudagraphs", "--out",
                                 str(tmp_path / "r"), "--device", "cpu", "--quiet"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "--compile-mode cudagraphs needs a CUDA device" in r.output and "--compile-mode full" in r.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("wrapped", [False, True])
def test_optimizer_step_under_cuda_graphs_marks_steps_and_drops_gradients(monkeypatch, wrapped):
    """A TrainModule compiled with CUDA graphs (also inside a DDP-like wrapper, ``.module``): optimizer_step marks
    each step's start before the forward and leaves no gradient alive after the optimizer's step (it could live in
    the graphs' memory pool, which the next replay overwrites); the step computes what the plain one does."""
    from torch import nn

    from dartool.train.arms import TrainModule, optimizer_step

    monkeypatch.setattr(arms_mod, "compile_model", lambda m, mode="full", **kw: m)   # CPU: the model itself
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    cfg = TrainConfig(arms=pair_arms(), depth=1, hidden_size=32, num_heads=4)
    results = {}
    for graphs in (False, True):
        model = paired_models(cfg, 0, input_size=8, in_channels=1, num_classes=10)[1]
        module = TrainModule(model, compile=graphs, compile_mode="cudagraphs")
        assert module.cudagraphs is graphs
        if wrapped:
            module = type("DDPLike", (nn.Module,), {"forward": lambda self, *a: self.module(*a)})()
            module.module = TrainModule(model, compile=graphs, compile_mode="cudagraphs")
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-3)
        g = torch.Generator().manual_seed(0)
        x, eps = torch.randn(4, 1, 8, 8, generator=g), torch.randn(4, 1, 8, 8, generator=g)
        y, s, drop = torch.randint(0, 10, (4,), generator=g), torch.rand(4, generator=g), torch.zeros(4, dtype=torch.bool)
        n0 = len(marks)
        for k in range(2):
            per, gnorm, _ = optimizer_step(module, model, params, opt, None, x, y, eps, s, drop, k,
                                           device=torch.device("cpu"), precision="fp32")
        assert len(marks) - n0 == (2 if graphs else 0)
        assert all(p.grad is None for p in params) is graphs
        results[graphs] = (per, gnorm, [p.detach().clone() for p in params])
    (pa, ga, wa), (pb, gb, wb) = results[False], results[True]
    assert torch.equal(pa, pb) and torch.equal(ga, gb) and all(torch.equal(a, b) for a, b in zip(wa, wb))


@pytest.mark.parametrize("processes", [1, 2])
def test_compile_mode_auto_is_cudagraphs_on_cuda_and_full_elsewhere(tmp_path, processes):
    """The default --compile-mode auto becomes cudagraphs on CUDA (one process or several: DDP under CUDA graphs
    kept the ranks in step, session 19) and full on the CPU; the trainer's config (what config.json records) holds
    the concrete mode, and a mode given explicitly is kept."""
    from dartool.train import ddp as D
    from dartool.train.loop import Trainer

    cfg = TrainConfig(arms=pair_arms(), compile=True, out=str(tmp_path / "r"))
    assert cfg.compile_mode == "auto" and not cfg.cudagraphs
    cuda = D.Dist(rank=0, world_size=processes, device=torch.device("cuda", 0))
    t = Trainer(cfg, dist=cuda, progress=False)                    # nothing runs until .run()
    assert t.cfg.compile_mode == "cudagraphs" and t.cfg.cudagraphs and t.cfg.to_dict()["compile_mode"] == "cudagraphs"
    cpu = Trainer(cfg, dist=D.Dist(device=torch.device("cpu")), progress=False)
    assert cpu.cfg.compile_mode == "full" and not cpu.cfg.cudagraphs
    for mode in ("full", "regions", "blocks"):
        given = dataclasses.replace(cfg, compile_mode=mode)
        assert Trainer(given, dist=cuda, progress=False).cfg.compile_mode == mode
    assert cfg.compile_mode == "auto"                              # the caller's config is left as it was
    assert not (tmp_path / "r").exists()


def test_throughput_leaves_out_the_first_log_window_of_the_process(tmp_path, monkeypatch, npz):
    """The summary's img/s leaves out each process's first log window (compiling, CUDA graphs' warm-up and
    recording, which made a 300-step B/2 run report half its speed, session 19) and names the first step's
    seconds; the log records count every step; a run of one window uses it without its first step."""
    import time

    from dartool.train import logs as logs_mod
    from dartool.train.loop import ArmRun, throughput

    clock = iter(x for i in range(1000) for x in (100.0 * i, 100.0 * i + (20.0 if i == 0 else 0.5)))
    monkeypatch.setattr(logs_mod.time, "perf_counter", lambda: next(clock))
    timer = logs_mod.StepTimer(torch.device("cpu"))
    for _ in range(3):
        timer.start(); timer.stop()
    assert timer.take() == pytest.approx(21.0) and timer.first_seconds == pytest.approx(20.0)
    timer.start(); timer.stop()
    assert timer.take() == pytest.approx(0.5) and timer.first_seconds == pytest.approx(20.0)
    monkeypatch.setattr(logs_mod.time, "perf_counter", time.perf_counter)
    run = ArmRun.__new__(ArmRun)
    run.seconds, run.images, run.timer, run.first_window = 0.0, 0, timer, (21.0, 24, 3)   # first step: 20 s
    assert throughput(run) == pytest.approx(16.0 / 1.0)              # one window: its steps after the first
    run.first_window = (20.0, 8, 1)
    assert throughput(run) == pytest.approx(0.4)                      # one step only: its own figure
    run.seconds, run.images = 2.0, 16
    assert throughput(run) == pytest.approx(8.0)

    cfg = tiny(tmp_path / "run", npz, steps=9, log_every=3, ckpt_every=9)
    summary = train(cfg, progress=False)
    for r in summary["runs"]:
        recs = read_log(Path(r["folder"]) / "log.jsonl", "train")
        assert r["first_step_s"] > 0 and len(recs) == 3
        later_s = sum(3 * cfg.batch_size / rec["img_per_s"] for rec in recs[1:])
        assert r["img_per_s"] == pytest.approx(6 * cfg.batch_size / later_s, rel=1e-9)
    assert "after the first log window" in (tmp_path / "run" / "summary.md").read_text()
    assert summary["step_peak_gb"] is None and "peak GPU memory" not in (tmp_path / "run" / "summary.md").read_text()
    from dartool.train.loop import comparison_markdown

    assert "peak GPU memory in training steps 12.3 GB per process" in comparison_markdown(
        dict(summary, step_peak_gb=12.345), cfg)                     # what a CUDA run's summary says


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_dataset_batch_on_the_gpu_equals_the_cpu_batch():
    """Batches reach the GPU through pinned memory without a host sync; the values are the CPU path's."""
    from dartool.data import Dataset

    rng = np.random.default_rng(0)
    pix = Dataset(rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8), rng.integers(0, 10, 16), "t", "pixels", 10)
    lat = Dataset(rng.standard_normal((16, 4, 8, 8)).astype(np.float32), rng.integers(0, 10, 16), "t", "latents", 10)
    idx = np.array([3, 1, 4, 1, 5, 9])
    for ds, size in ((pix, 8), (pix, 16), (lat, 8)):
        xc, yc = ds.batch(idx, size)
        xg, yg = ds.batch(idx, size, device="cuda")
        assert xg.device.type == "cuda" and yg.device.type == "cuda"
        torch.testing.assert_close(xg.cpu(), xc, rtol=1e-6, atol=1e-6)
        assert torch.equal(yg.cpu(), yc)
