"""How the diagnosis evolves over training: analyses.training on periodic stores, the report's "Over training"
section, `dartool report --training RUN`, and a tiny real `dartool train` run whose own report has the section."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from analyses import gradient_decay, training
from dartool.cli import app
from dartool.report import make_report
from dartool.train import TrainConfig
from dartool.train.probing import periodic_stores
from tests.synthetic import inflating, make_store, write_store

K, S = 6, 3
# growth per block g -> ratio last/first = g**(K - 1)
GROWTH = {100: 1.05, 200: 1.2, 300: 1.4}
FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def _store(step: int, g: float, **kw):
    ds = make_store(K=K, S=S, N=8, P=8, z_rms=inflating(S, K, g=g), loss=np.full(S, 1.0 / step), **kw)
    ds.attrs.update(train_step=step, run="toy", final=False)
    return ds


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A fake run folder: two arms, three periodic stores each, plus an unfinished store (must be skipped)."""
    run = tmp_path_factory.mktemp("run")
    for arm, scale in (("residual", 1.0), ("dar-static-c4", 0.5)):
        for step, g in GROWTH.items():
            write_store(_store(step, 1 + (g - 1) * scale), run / arm / "probes" / f"step_{step:07d}.zarr")
    write_store(_store(400, 2.0, status="in_progress"), run / "residual" / "probes" / "step_0000400.zarr")
    return run


def test_table_has_exactly_the_inflation_ratio_of_each_step():
    res = training.analyze({step: _store(step, g) for step, g in GROWTH.items()})
    t = res.tables["by_step"]
    assert list(t.columns) == ["train_step", "noise_level", "metric", "value"]
    assert set(t.metric) == {"inflation_ratio", "gradient_early_deep", "deep_adjacent_cos", "loss"}
    assert len(t) == len(GROWTH) * S * 4  # one row per (step, noise level, metric)
    infl = t[t.metric == "inflation_ratio"]
    for step, g in GROWTH.items():
        got = infl[infl.train_step == step].value.to_numpy()
        np.testing.assert_allclose(got, g ** (K - 1), rtol=1e-5)
    loss = t[t.metric == "loss"].groupby("train_step").value.first()
    np.testing.assert_allclose(loss.to_numpy(), [1 / 100, 1 / 200, 1 / 300], rtol=1e-6)
    # the other metrics equal the single-store analyses' numbers
    pn = gradient_decay.analyze(_store(100, 1.05)).tables["per_noise_level"]
    gd = t[(t.metric == "gradient_early_deep") & (t.train_step == 100)].value.to_numpy()
    np.testing.assert_allclose(gd, pn.ratio_early_deep.to_numpy(), rtol=1e-6)
    assert res.verdict["first_step"] == 100 and res.verdict["last_step"] == 300
    assert res.verdict["inflation_ratio_last"] == pytest.approx(1.4 ** (K - 1), rel=1e-5)
    first = res.findings[0]
    assert "step 100" in first and "step 300" in first and "noise level 0.0" in first
    assert f"{1.05 ** (K - 1):.2f}×" in first and f"{1.4 ** (K - 1):.2f}×" in first


def test_a_store_without_gradients_just_lacks_that_metric():
    res = training.analyze({10: _store(10, 1.1, drop=("z_grad_rms", "z_grad_rms_per_sample"))})
    assert "gradient_early_deep" not in set(res.tables["by_step"].metric)


def test_periodic_stores_skip_unfinished_ones(run_dir):
    msgs: list[str] = []
    found = periodic_stores(run_dir, warn=msgs.append)
    assert set(found) == {"residual", "dar-static-c4"}
    assert list(found["residual"]) == [100, 200, 300]
    assert len(msgs) == 1 and "step_0000400" in msgs[0] and "not complete" in msgs[0]


def _final(path: Path) -> Path:
    """A small final store for the report's per-store part (no pooled features: keeps the test fast)."""
    return write_store(make_store(K=K, S=3, N=8, P=8, model="toy", drop=("pooled_h", "pooled_x")), path)


def test_report_with_training_writes_the_section(run_dir, tmp_path):
    final = _final(tmp_path / "final.zarr")
    res = make_report([final], tmp_path / "rep", n_boot=50, training=periodic_stores(run_dir))
    out = res.html.parent
    png = out / "figures" / "training" / "over_training.png"
    assert png.stat().st_size > 10_000
    html = res.html.read_text(encoding="utf-8")
    assert '<h2 id="training">Over training</h2>' in html and 'href="#training"' in html
    assert 'data-file="figures/training/over_training.png"' in html
    assert len(re.findall(r'<img src="data:image/png;base64,', html)) == len(list(out.glob("figures/**/*.png")))
    assert "went from" in html and "step 100" in html and "step 300" in html
    csv = pd.read_csv(out / "tables" / "training" / "over_training.csv")
    assert list(csv.columns) == ["arm", "train_step", "noise_level", "metric", "value"]
    assert set(csv.arm) == {"residual", "dar-static-c4"} and set(csv.train_step) == set(GROWTH)
    # without training= the report has no such section and no such files
    plain = make_report([final], tmp_path / "plain", n_boot=50)
    assert "Over training" not in plain.html.read_text(encoding="utf-8")
    assert not (tmp_path / "plain" / "figures" / "training").exists()


def test_cli_report_training(run_dir, tmp_path):
    final = _final(tmp_path / "final.zarr")
    r = CliRunner().invoke(app, ["report", str(final), "--out", str(tmp_path / "rep"), "--n-boot", "50",
                                 "--training", str(run_dir)])
    assert r.exit_code == 0, r.output
    assert "step_0000400" in r.output and "not complete" in r.output
    assert "Over training" in (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    empty = tmp_path / "empty_run"
    empty.mkdir()
    r = CliRunner().invoke(app, ["report", str(final), "--out", str(tmp_path / "rep2"), "--training", str(empty)])
    assert r.exit_code == 2 and "no complete periodic probe stores" in r.output


@pytest.mark.skipif(not FMNIST.exists(), reason="Fashion-MNIST not installed")
def test_tiny_run_report_has_the_over_training_section(tmp_path):
    cfg = TrainConfig(out=str(tmp_path / "run"), data="fashion-mnist", data_limit=64, size="S", depth=2,
                      hidden_size=64, num_heads=4, patch=4, input_size=16, steps=4, batch_size=8, lr=1e-3,
                      log_every=2, ckpt_every=4, ema_decay=0.9, device="cpu", probe_every=2, probe_samples=8,
                      probe_noise_levels=[0.1, 0.9], probe_final_samples=16, probe_pooled_samples=16, report=True)
    from dartool.train.loop import train

    summary = train(cfg, progress=False)
    html = Path(summary["report"]).read_text(encoding="utf-8")
    assert '<h2 id="training">Over training</h2>' in html
    run = tmp_path / "run"
    assert (run / "report" / "figures" / "training" / "over_training.png").exists()
    csv = pd.read_csv(run / "report" / "tables" / "training" / "over_training.csv")
    assert set(csv.train_step) == {2}  # the last step is the final probe, not a periodic one
    assert set(csv.noise_level.round(3)) == {0.1, 0.9}
