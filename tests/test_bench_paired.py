"""The paired, interleaved step-ratio benchmark on a tiny CPU model: rounds alternate, ratios are per round."""
import importlib.util
from pathlib import Path

from dartool.bench import paired_step_bench

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(depth=2, hidden_size=32, num_heads=4, input_size=8)


def test_paired_ratio_per_round_on_cpu():
    r = paired_step_bench("S", 2, ("dar", "static", 2, True), compiled=False, rounds=3, steps=2, warmup=1,
                          device="cpu", overrides=TINY)
    assert len(r["rounds"]) == 3
    for x in r["rounds"]:
        assert x["residual_ms"] > 0 and x["dar_ms"] > 0
        assert abs(x["ratio"] - x["dar_ms"] / x["residual_ms"]) < 1e-12
    assert r["ratio_min"] <= r["ratio_median"] <= r["ratio_max"]
    assert r["variant"] == "DAR static c2" and r["model"] == "SiT-S/2"


def test_paired_step_script_writes_json_and_markdown(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("paired_step", ROOT / "benchmarks" / "paired_step.py")
    ps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ps)
    import dartool.bench as bench

    real = bench.paired_step_bench
    monkeypatch.setattr(bench, "paired_step_bench", lambda *a, **k: real(*a, **dict(k, overrides=TINY, warmup=1)))
    assert ps.main(["--size", "S", "--batch", "2", "--rounds", "2", "--steps", "1", "--chunk", "2",
                    "--out", str(tmp_path)]) == 0
    assert len(list(tmp_path.glob("paired_step-*.json"))) == 1
    md = next(tmp_path.glob("paired_step-*.md")).read_text()
    assert "median ratio" in md and md.count("\n| ") == 3     # header row + two rounds


def test_several_variants_share_each_rounds_residual():
    from dartool.bench import paired_steps_bench

    res = paired_steps_bench("S", 2, [("dar", "static", 2, True), ("dar", "dynamic", 2, True)], compiled=False,
                             rounds=3, steps=1, warmup=1, device="cpu", overrides=TINY)
    assert [r["variant"] for r in res] == ["DAR static c2", "DAR dynamic c2"]
    for a, b in zip(res[0]["rounds"], res[1]["rounds"]):
        assert a["residual_ms"] == b["residual_ms"]          # one residual block per round, both ratios use it
    assert all(r["models_in_process"] == 3 for r in res)


def test_paired_steps_rejects_a_repeated_variant():
    import pytest

    from dartool.bench import paired_steps_bench

    with pytest.raises(ValueError, match="repeat"):
        paired_steps_bench("S", 2, [("dar", "static", 2, True)] * 2, compiled=False, rounds=1, steps=1,
                           device="cpu", overrides=TINY)


def test_paired_step_script_several_queries(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("paired_step", ROOT / "benchmarks" / "paired_step.py")
    ps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ps)
    import json

    import dartool.bench as bench

    real = bench.paired_steps_bench
    monkeypatch.setattr(bench, "paired_steps_bench", lambda *a, **k: real(*a, **dict(k, overrides=TINY, warmup=1)))
    assert ps.main(["--size", "S", "--batch", "2", "--rounds", "2", "--steps", "1", "--chunk", "2",
                    "--query", "static", "--query", "dynamic", "--out", str(tmp_path)]) == 0
    data = json.loads(next(tmp_path.glob("paired_step-*.json")).read_text())
    assert [r["variant"] for r in data["results"]] == ["DAR static c2", "DAR dynamic c2"]
    md = next(tmp_path.glob("paired_step-*.md")).read_text()
    assert "DAR dynamic c2: median ratio" in md and md.count("\n| ") == 3
