"""Checkpoint loading: the public DiT/SiT/REPA layouts, dartool's own, and one clear error for each
documented way a checkpoint can be wrong."""
from __future__ import annotations

import argparse
import collections
import os

import pytest
import torch
from typer.testing import CliRunner

from dartool.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from dartool.cli import app
from dartool.models import ModelConfig, SiT

from .test_models import batch, randomize


def small(**kw) -> ModelConfig:
    # hidden 384 is the S width, so the head count is read from the size table
    base = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=384, depth=2, num_heads=6, num_classes=7,
                learn_sigma=True)
    return ModelConfig(**{**base, **kw})


def raw_dit_state(cfg: ModelConfig, seed=0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return randomize(SiT(cfg), std=0.05, seed=seed).state_dict()


@pytest.fixture
def res_cfg():
    return small()


def test_raw_dit_state_dict_round_trips_with_inferred_config(tmp_path, res_cfg):
    sd = raw_dit_state(res_cfg)
    path = tmp_path / "DiT-S-2-tiny.pt"
    torch.save(sd, path)
    ck = load_checkpoint(path)
    c = ck.config
    assert (c.depth, c.hidden_size, c.num_heads, c.patch_size, c.in_channels, c.input_size, c.num_classes,
            c.learn_sigma, c.routing) == (2, 384, 6, 2, 4, 8, 7, True, "residual")
    assert c.time_convention == "dit" and ck.source == "raw" and ck.layout == "dit-sit-repa"
    for k, v in ck.model.state_dict().items():
        torch.testing.assert_close(v, sd[k])
    assert len(ck.sha256) == 64


def test_training_checkpoint_with_pickled_argparse_prefers_ema_and_strips_prefixes(tmp_path, res_cfg):
    model_sd, ema_sd = raw_dit_state(res_cfg, 0), raw_dit_state(res_cfg, 1)
    obj = {
        "model": {f"module.{k}": v for k, v in model_sd.items()},
        "ema": {f"_orig_mod.{k}": v for k, v in ema_sd.items()},
        "opt": {"state": {}, "param_groups": []},
        "args": argparse.Namespace(model="SiT-S/2", image_size=64, global_batch_size=256),
    }
    path = tmp_path / "0100000.pt"
    torch.save(obj, path)
    ck = load_checkpoint(path)
    assert ck.source == "ema" and ck.meta["args"]["model"] == "SiT-S/2"
    torch.testing.assert_close(ck.model.state_dict()["blocks.1.mlp.fc2.weight"], ema_sd["blocks.1.mlp.fc2.weight"])
    assert load_checkpoint(path, prefer="model").source == "model"


def test_repa_layout_with_projectors(tmp_path):
    cfg = small(learn_sigma=False, projector_dims=(24,), projector_hidden=32)
    sd = raw_dit_state(cfg)
    assert sd["projectors.0.0.weight"].shape == (32, 384) and sd["projectors.0.4.weight"].shape == (24, 32)
    torch.save(sd, tmp_path / "last.pt")
    ck = load_checkpoint(tmp_path / "last.pt")
    assert ck.config.projector_dims == (24,) and ck.config.time_convention == "repa" and not ck.config.learn_sigma


def test_safetensors(tmp_path, res_cfg):
    from safetensors.torch import save_file

    sd = raw_dit_state(res_cfg)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "model.safetensors"))
    ck = load_checkpoint(tmp_path / "model.safetensors")
    torch.testing.assert_close(ck.model.state_dict()["pos_embed"], sd["pos_embed"])


@pytest.mark.parametrize("routing,query", [("residual", "static"), ("dar", "static"), ("dar", "static_t"), ("dar", "dynamic")])
def test_own_checkpoints_carry_their_config(tmp_path, routing, query):
    cfg = small(routing=routing, query=query, chunk_size=3, summary="sum" if query == "static" else "last")
    model = randomize(SiT(cfg), std=0.05)
    save_checkpoint(tmp_path / "ck.pt", model, ema=model, step=12)
    raw = torch.load(tmp_path / "ck.pt", weights_only=True)  # plain data only
    assert raw["config"]["routing"] == routing and raw["step"] == 12
    ck = load_checkpoint(tmp_path / "ck.pt")
    assert ck.config == cfg and ck.layout == "dartool"
    x, t, y = batch(cfg)
    with torch.no_grad():
        torch.testing.assert_close(ck.model(x, t, y), model.eval()(x, t, y))
    with pytest.raises(FileExistsError, match="--overwrite"):
        save_checkpoint(tmp_path / "ck.pt", model)


def test_dar_state_dict_infers_variant_and_needs_chunk_size(tmp_path):
    cfg = small(routing="dar", query="dynamic", chunk_size=2)
    torch.save(raw_dit_state(cfg), tmp_path / "dar.pt")
    with pytest.raises(CheckpointError, match="--chunk-size"):
        load_checkpoint(tmp_path / "dar.pt")
    ck = load_checkpoint(tmp_path / "dar.pt", chunk_size=2)
    assert ck.config.query == "dynamic" and ck.config.routing == "dar"


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


@pytest.mark.parametrize(
    "case,match",
    [
        ("missing_file", "no checkpoint at"),
        ("folder", "is a folder"),
        ("garbage", "could not read"),
        ("truncated_file", "could not read"),
        ("not_a_dict", "holds a"),
        ("not_a_dit", "not a DiT/SiT/REPA checkpoint"),
        ("missing_blocks_keys", r"missing blocks\.\{1\.\.1\}"),
        ("missing_head", "no final_layer.linear.weight"),
        ("wrong_shape", "other shapes"),
        ("unknown_width", "--num-heads"),
        ("pickled_code", "refuses to unpickle"),
        ("bad_config", "stored config is invalid"),
    ],
)
def test_wrong_checkpoints_give_one_clear_line(tmp_path, res_cfg, case, match):
    path = tmp_path / "ck.pt"
    sd = raw_dit_state(res_cfg)
    if case == "missing_file":
        path = tmp_path / "nope.pt"
    elif case == "folder":
        path = tmp_path
    elif case == "garbage":
        path.write_text("this is not a checkpoint")
    elif case == "truncated_file":
        torch.save(sd, path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "not_a_dict":
        torch.save([1, 2, 3], path)
    elif case == "not_a_dit":
        torch.save({"encoder.weight": torch.zeros(3)}, path)
    elif case == "missing_blocks_keys":
        # block 1 has only its attention weights left: the loader must name what is missing
        torch.save({k: v for k, v in sd.items() if not (k.startswith("blocks.1.") and "attn" not in k)}, path)
    elif case == "missing_head":
        torch.save({k: v for k, v in sd.items() if not k.startswith("final_layer.linear")}, path)
    elif case == "wrong_shape":
        sd["blocks.1.mlp.fc1.weight"] = torch.zeros(10, 384)
        torch.save(sd, path)
    elif case == "unknown_width":
        torch.save(raw_dit_state(small(hidden_size=40, num_heads=4)), path)
    elif case == "pickled_code":
        torch.save({"model": sd, "args": Evil()}, path)
    elif case == "bad_config":
        torch.save({"model": sd, "config": {"routing": "teleport"}}, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert __import__("re").search(match, one_line(e)), str(e.value)


def test_unknown_width_loads_with_head_override(tmp_path):
    torch.save(raw_dit_state(small(hidden_size=40, num_heads=4)), tmp_path / "w.pt")
    assert load_checkpoint(tmp_path / "w.pt", num_heads=4).config.num_heads == 4


def test_cli_reports_bad_checkpoints_in_one_line(tmp_path):
    (tmp_path / "bad.pt").write_text("garbage")
    res = CliRunner().invoke(app, ["info", str(tmp_path / "bad.pt")])
    assert res.exit_code == 2
    assert "error:" in res.output and "Traceback" not in res.output


def test_cli_init_info_convert(tmp_path):
    runner = CliRunner()
    ck = tmp_path / "res.pt"
    r = runner.invoke(app, ["init", "--out", str(ck), "--size", "S", "--depth", "2", "--input-size", "16"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["info", str(ck)])
    assert r.exit_code == 0 and "SiT-d2w384/2" in r.output  # S width at depth 2: not a registry size
    r = runner.invoke(app, ["convert", str(ck), "--out", str(tmp_path / "dar.pt")])
    assert r.exit_code == 0, r.output
    assert load_checkpoint(tmp_path / "dar.pt").config.routing == "dar"
    r = runner.invoke(app, ["init", "--out", str(ck)])
    assert r.exit_code == 2 and "--overwrite" in r.output


def test_models_command_lists_every_variant_with_paper_counts():
    r = CliRunner().invoke(app, ["models"], terminal_width=200)
    assert r.exit_code == 0, r.output
    rows = collections.defaultdict(dict)
    for line in r.output.splitlines():
        cells = [c.strip() for c in line.replace("│", "|").split("|") if c.strip()]
        if len(cells) >= 3 and cells[0].startswith("SiT-"):
            rows[cells[0]][cells[1]] = cells[2]
    assert len(rows) == 12 and all(len(v) == 4 for v in rows.values())
    assert rows["SiT-XL/2"]["residual"] == "675.13 M"
    assert rows["SiT-XL/2"]["DAR dynamic c4"].startswith("750.8")  # the paper's 751 M
