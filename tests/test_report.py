"""``dartool report``: files, self-containedness, overwrite rules, the CLI, a real probe store end to end, and
(where Debian's chromium is installed) rendering in a headless browser."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dartool.cli import app
from dartool.report import make_report
from tests.synthetic import inflating, make_store, write_store

ROOT = Path(__file__).resolve().parents[1]
IMG = re.compile(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+"')
HAVE_CHROMIUM = bool(shutil.which("chromium") or shutil.which("chromium-browser"))


def _check_report(report_dir: Path, shot: Path, timeout: float = 300) -> tuple[int, str, str]:
    """Run scripts/check_report.sh; return (exit status, stdout, stderr). The script bounds each chromium run
    itself (30 s, at most 3 tries for each of its 2 runs: 210 s at worst); should it still overrun `timeout`,
    it is stopped with SIGTERM (its trap then ends chromium too) and whatever it printed is kept for the
    failure message."""
    p = subprocess.Popen(["bash", str(ROOT / "scripts/check_report.sh"), str(report_dir), str(shot)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.terminate()
        try:
            out, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        err += f"\n(test: check_report.sh still running after {timeout:.0f} s; stopped)"
        return -1, out, err
    return p.returncode, out, err


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Two seeds of a residual arm and one DAR arm (synthetic, written as zarr v3 like the probe)."""
    d = tmp_path_factory.mktemp("stores")
    K, S = 6, 5
    a0 = write_store(make_store(K=K, S=S, N=12, P=8, seed=0, model="toy residual"), d / "res0.zarr")
    a1 = write_store(make_store(K=K, S=S, N=12, P=8, seed=1, model="toy residual"), d / "res1.zarr")
    b = write_store(make_store(K=K, S=S, N=12, P=8, seed=0, routing="dar", z_rms=inflating(S, K, g=1.02),
                               model="toy DAR"), d / "dar.zarr")
    return [a0, a1, b]


@pytest.fixture(scope="module")
def report(stores, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "rep"
    return make_report(stores, out, n_boot=200)


def test_report_writes_html_pngs_and_csvs(report):
    out = report.html.parent
    html = report.html.read_text(encoding="utf-8")
    pngs = sorted(out.glob("figures/**/*.png"))
    assert len(pngs) >= 20
    assert len(IMG.findall(html)) == len(pngs)  # every figure is embedded exactly once
    for name in ("summary.csv", "findings.csv"):
        assert (out / name).stat().st_size > 0
    assert list(out.glob("tables/1-toy-residual/inflation_by_block.csv"))
    assert list(out.glob("tables/comparison/toy-dar-vs-toy-residual_differences.csv"))
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_report_is_self_contained_and_states_conventions(report):
    html = report.html.read_text(encoding="utf-8")
    assert "<script" not in html and "http://" not in html and "https://" not in html and "@import" not in html
    assert "0 = clean data → 1 = pure noise" in html
    assert "hidden-state RMS grows" in html  # a finding in words, with its number
    assert "≈100× (15.5 at block 1 → 1576" in html  # the paper's number beside it
    assert "Welch t over seeds (2 vs 1 stores)" in html  # two seeds of the residual arm
    assert "checkpoint_sha256" in html  # provenance from the store attributes
    assert "toy residual · res0 (#1)" in html and "toy residual · res1 (#2)" in html


def test_report_refuses_to_overwrite_without_flag(stores, tmp_path):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_report(stores[:1], out)
    assert (out / "keep.txt").read_text() == "x"
    with pytest.raises(FileExistsError, match="not a directory"):
        make_report(stores[:1], out / "keep.txt")


def test_cli_report_and_one_line_errors(stores, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    out.mkdir()
    (out / "old.txt").write_text("x")
    again = runner.invoke(app, ["report", str(stores[2]), "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert len(again.output.strip().splitlines()) == 1
    r = runner.invoke(app, ["report", str(stores[2]), "--out", str(out), "--label", "mine", "--blocks", "2,4",
                            "--overwrite", "--title", "Again"])
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "mine" in html and "Again" in html and "block 4 reads mostly" in html
    missing = runner.invoke(app, ["report", str(tmp_path / "nope.zarr"), "--out", str(tmp_path / "x")])
    assert missing.exit_code == 2 and "nope.zarr" in missing.output and not (tmp_path / "x").exists()
    labels = runner.invoke(app, ["report", str(stores[2]), "--out", str(tmp_path / "y"), "--label", "a",
                                 "--label", "b"])
    assert labels.exit_code == 2 and "one per store" in labels.output
    bad = runner.invoke(app, ["report", str(stores[2]), "--out", str(tmp_path / "z"), "--blocks", "three"])
    assert bad.exit_code == 2 and "--blocks" in bad.output


def _probe_pair(tmp_path: Path) -> list[Path]:
    """Probe a tiny residual and a tiny DAR SiT on random data (CPU, a few seconds)."""
    torch = pytest.importorskip("torch")
    probe = pytest.importorskip("dartool.probe")
    from dartool.models import ModelConfig, SiT

    paths = []
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (12,), generator=g)
    for routing in ("residual", "dar"):
        torch.manual_seed(0)
        cfg = ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=4, num_heads=2,
                          num_classes=3, learn_sigma=False, routing=routing, chunk_size=2)
        model = SiT(cfg)
        with torch.no_grad():  # wake the adaLN-zero gates so the stack is not the identity
            for p in model.parameters():
                if p.dim() >= 1 and not p.abs().sum():
                    p.normal_(0.0, 0.02, generator=g)
        conf = probe.ProbeConfig(num_noise_levels=5, num_samples=12, batch_size=12, device="cpu", progress=False,
                                 projection_dim=8)
        paths.append(probe.run_probe(model, (x, y), conf, out=tmp_path / f"{routing}.zarr", log=lambda m: None))
    return paths


def test_report_from_real_probe_stores(tmp_path):
    paths = _probe_pair(tmp_path)
    res = make_report(paths, tmp_path / "rep", n_boot=100)
    html = res.html.read_text(encoding="utf-8")
    assert "SiT-d4w32/2 DAR static c2" in html and "vs" in html
    assert "Routing entropy of α" in html or "routing" in html.lower()
    assert len(IMG.findall(html)) == len(list((tmp_path / "rep").glob("figures/**/*.png")))
    assert "not measured" not in html  # every analysis ran on the real stores
    if HAVE_CHROMIUM:
        shot = tmp_path / "shot.png"
        rc, out, err = _check_report(res.html.parent, shot)
        why = f"check_report.sh exit {rc}\n--- stdout:\n{out}\n--- stderr:\n{err}"
        assert rc == 0, why
        assert "all loaded" in out, why
        assert shot.stat().st_size > 10_000, why


@pytest.mark.skipif(not HAVE_CHROMIUM, reason="needs Debian's chromium")
def test_check_report_fails_on_a_broken_image(report, tmp_path):
    """The chromium check still fails, on the content, when an image cannot be decoded (retries are only for
    a chromium that hangs or crashes, and they never turn a broken page into a pass)."""
    html = report.html.read_text(encoding="utf-8")
    m = re.search(r'data:image/png;base64,([A-Za-z0-9+/=]{64})', html)
    assert m
    (tmp_path / "report.html").write_text(html[:m.start(1)] + "A" * 64 + html[m.end(1):], encoding="utf-8")
    rc, out, err = _check_report(tmp_path, tmp_path / "shot.png")
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert rc == 1 and last.startswith("check_report: 1 of ") and "images did not load" in last, (rc, out, err)
    assert not (tmp_path / "shot.png").exists()
