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


def _paired_script():
    spec = importlib.util.spec_from_file_location("paired_step", ROOT / "benchmarks" / "paired_step.py")
    ps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ps)
    return ps


def test_paired_step_script_writes_json_and_markdown(tmp_path, monkeypatch):
    ps = _paired_script()
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
    ps = _paired_script()
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


def test_one_model_timed_under_several_environments(monkeypatch):
    """envs: one DAR model timed once per label with that label's variables set around its steps (and only
    there: the residual sees none, the caller's environment comes back); the round's residual is shared."""
    import os

    import dartool.bench as bench

    seen = []
    monkeypatch.setenv("DARTOOL_TEST_KNOB", "caller")

    def fake_train_step(model, cfg, batch, compiled, device="cuda", **k):
        kind = cfg.routing
        return (lambda i: seen.append((kind, os.environ.get("DARTOOL_TEST_KNOB")))), None

    monkeypatch.setattr(bench, "_train_step", fake_train_step)
    res = bench.paired_steps_bench("S", 2, [("dar", "static", 2, True)], compiled=False, rounds=2, steps=1,
                                   warmup=1, device="cpu", overrides=TINY,
                                   envs={"a": {"DARTOOL_TEST_KNOB": "1"}, "b": {"DARTOOL_TEST_KNOB": "2"}})
    assert [r["variant"] for r in res] == ["DAR static c2 [a]", "DAR static c2 [b]"]
    assert [r["env"] for r in res] == [{"DARTOOL_TEST_KNOB": "1"}, {"DARTOOL_TEST_KNOB": "2"}]
    assert [x["residual_ms"] for x in res[0]["rounds"]] == [x["residual_ms"] for x in res[1]["rounds"]]
    assert {v for k, v in seen if k == "residual"} == {"caller"}
    assert {v for k, v in seen if k == "dar"} == {"1", "2"}
    assert os.environ["DARTOOL_TEST_KNOB"] == "caller"


def test_paired_step_script_env_labels(tmp_path, monkeypatch):
    ps = _paired_script()
    import json

    import pytest

    import dartool.bench as bench

    real = bench.paired_steps_bench
    monkeypatch.setattr(bench, "paired_steps_bench", lambda *a, **k: real(*a, **dict(k, overrides=TINY, warmup=1)))
    assert ps.main(["--size", "S", "--batch", "2", "--rounds", "1", "--steps", "1", "--chunk", "2",
                    "--env", "old=DARTOOL_PREFIX_GRAD:16,4,128,2,3,0|DARTOOL_PREFIX_CONFIG:8,1,3,1,0;8,2,3,1,0,1",
                    "--env", "new=", "--out", str(tmp_path)]) == 0
    data = json.loads(next(tmp_path.glob("paired_step-*.json")).read_text())
    assert [r["variant"] for r in data["results"]] == ["DAR static c2 [old]", "DAR static c2 [new]"]
    assert data["results"][0]["env"] == {"DARTOOL_PREFIX_GRAD": "16,4,128,2,3,0",
                                         "DARTOOL_PREFIX_CONFIG": "8,1,3,1,0;8,2,3,1,0,1"}
    assert data["results"][1]["env"] == {}
    for bad in ("old", "=X:1", "old=X"):
        with pytest.raises(SystemExit):
            ps.main(["--env", bad, "--out", str(tmp_path)])


def _row(model, variant, routing, query, compiled, ratio, mem=1.05, batch=256, mode=None):
    """A measured training-step row; ``mode`` None: as results written before rows named their mode (the mode is
    then read from ``compiled``)."""
    row = dict(model=model, batch=batch, variant=variant, routing=routing, query=query, chunk=4, fused=True,
               compiled=compiled, step_ms=100.0 * ratio, img_per_s=2560.0 / ratio, time_ratio=ratio, mem_ratio=mem,
               peak_gb=30.0)
    if mode is not None:
        row["mode"] = mode
    return row


def _fake_rows(size, batch, variants, compiled, compile_mode="full"):
    """What a faked ``bench.train_step_bench`` returns: one row per variant, DAR at 1.1x the residual."""
    import dartool.bench as bench

    mode = bench.MODE_OF.get(compile_mode, compile_mode) if compiled else "eager"
    return [_row(f"SiT-{size}/2", bench._variant_name(v), v[0], v[1], compiled, 1.0 if v[0] == "residual" else 1.1,
                 batch=batch, mode=mode) for v in variants]


def _paired(model, variant, ratios, mode=None):
    """A paired entry; ``mode`` None: as results written before paired entries named their mode (compiled)."""
    rounds = [dict(residual_ms=100.0, dar_ms=100.0 * r, ratio=r) for r in ratios]
    s = sorted(ratios)
    p = dict(model=model, batch=256, variant=variant, compiled=True, rounds=rounds, ratio_median=s[len(s) // 2],
             ratio_min=s[0], ratio_max=s[-1], residual_ms=100.0, dar_ms=100.0 * s[len(s) // 2])
    if mode is not None:
        p["mode"] = mode
    return p


def test_compiled_time_targets_use_paired_medians(tmp_path):
    """With ``dartool bench --paired-rounds`` the compiled time targets are judged on the paired medians (a single
    compiled run said 1.09 here, the rounds 1.12), the eager ones and every memory target on the separate rows; the
    Markdown gets a paired table and the JSON keeps every round."""
    import json

    from dartool.bench import evaluate_targets, markdown, summary_lines, write_results

    res = dict(env=dict(card="test card", date="2026-11-26 12:00 UTC", commit="abc", torch="x", python="3"),
               skipped=[],
               train=[_row("SiT-B/2", "residual", "residual", "static", True, 1.0),
                      _row("SiT-B/2", "DAR static c4", "dar", "static", True, 1.09),
                      _row("SiT-B/2", "DAR static c4", "dar", "static", False, 0.80),
                      _row("SiT-B/2", "DAR dynamic c4", "dar", "dynamic", True, 1.30, mem=1.10)],
               paired=[_paired("SiT-B/2", "DAR static c4", [1.12, 1.11, 1.13]),
                       _paired("SiT-B/2", "DAR dynamic c4", [1.25, 1.24, 1.26])])
    t = {x["target"]: x for x in evaluate_targets(res)}
    st = t["SiT-B/2 b256 DAR static c4 compiled: step / residual <= 1.10 (paired, median of 3 rounds)"]
    assert st["value"] == 1.12 and not st["ok"]
    dyn = next(v for k, v in t.items() if k.startswith("SiT-B/2 b256 DAR dynamic c4 compiled: step") and "paired" in k)
    assert dyn["value"] == 1.25 and dyn["ok"]
    assert t["SiT-B/2 b256 DAR static c4 eager: step / residual <= 1.10"]["value"] == 0.80
    assert t["SiT-B/2 b256 DAR dynamic c4 compiled: peak memory / residual <= 1.15"]["value"] == 1.10
    res["targets"] = evaluate_targets(res)
    md = markdown(res)
    assert "## Compiled steps, paired" in md and "**1.120**" in md
    assert any("compiled paired x1.120" in line for line in summary_lines(res))
    jp, _ = write_results(res, tmp_path)
    assert len(json.loads(jp.read_text())["paired"][0]["rounds"]) == 3


def test_graphs_time_targets_use_paired_rounds_of_their_mode():
    """Paired rounds under CUDA graphs (``--paired-mode cudagraphs``) judge the cudagraphs rows' time targets and
    leave the compiled rows' to theirs; compiled rounds the other way round; each mode's table row says which."""
    from dartool.bench import evaluate_targets, markdown, summary_lines

    res = dict(env=dict(card="test card", date="2026-11-27 12:00 UTC", commit="abc", torch="x", python="3"),
               skipped=[],
               train=[_row("SiT-XL/2", "residual", "residual", "static", True, 1.0, batch=32),
                      _row("SiT-XL/2", "DAR static c4", "dar", "static", True, 1.08, batch=32),
                      _row("SiT-XL/2", "residual", "residual", "static", True, 1.0, batch=32, mode="cudagraphs"),
                      _row("SiT-XL/2", "DAR static c4", "dar", "static", True, 1.11, batch=32, mode="cudagraphs")],
               paired=[dict(_paired("SiT-XL/2", "DAR static c4", [1.09, 1.095, 1.10], mode="cudagraphs"),
                            batch=32)])
    t = {x["target"]: x for x in evaluate_targets(res)}
    g = t["SiT-XL/2 b32 DAR static c4 cudagraphs: step / residual <= 1.10 (paired, median of 3 rounds)"]
    assert g["value"] == 1.095 and g["ok"]
    assert t["SiT-XL/2 b32 DAR static c4 compiled: step / residual <= 1.10"]["value"] == 1.08   # its own row
    res["targets"] = evaluate_targets(res)
    assert "| SiT-XL/2 | 32 | DAR static c4 | cudagraphs | 3 | **1.095** |" in markdown(res)
    assert any("cudagraphs paired x1.095" in line for line in summary_lines(res))
    # without rows of their mode the rounds still judge time, and say that memory has no row
    res["train"] = res["train"][:2]
    t = {x["target"]: x for x in evaluate_targets(res)}
    assert t["SiT-XL/2 b32 DAR static c4 cudagraphs: step / residual <= 1.10 (paired, median of 3 rounds; no "
             "cudagraphs row for memory)"]["ok"]


def test_paired_entries_name_their_mode_on_cpu():
    from dartool.bench import paired_mode

    r = paired_step_bench("S", 2, ("dar", "static", 2, True), compiled=False, rounds=1, steps=1, warmup=1,
                          device="cpu", overrides=TINY)
    assert r["mode"] == "eager" and paired_mode(r) == "eager"
    assert paired_mode(_paired("SiT-B/2", "DAR static c4", [1.0])) == "compiled"     # results before the key


def test_paired_envs_are_refused_under_cuda_graphs():
    import pytest

    from dartool.bench import paired_steps_bench

    with pytest.raises(ValueError, match="envs under CUDA graphs"):
        paired_steps_bench("S", 2, [("dar", "static", 2, True)], compiled=True, rounds=1, steps=1, device="cpu",
                           overrides=TINY, envs={"a": {}, "b": {}}, compile_mode="cudagraphs")


def test_bench_cli_has_paired_rounds():
    from typer.testing import CliRunner

    from dartool.cli import app

    out = CliRunner().invoke(app, ["bench", "--help"], terminal_width=200)
    assert out.exit_code == 0 and "--paired-rounds" in out.output and "--paired-mode" in out.output


def _saved_run(tmp_path, card="H200 test"):
    import json

    res = dict(env=dict(card=card, date="2026-11-26 14:00 UTC", commit="old", torch="x", python="3"), skipped=[],
               stream="contiguous",
               copy=dict(bytes_per_s=4.2e12, tb_per_s=4.2, bytes_moved=1e9, ms=0.2),
               router=[],
               train=[_row("SiT-B/2", "residual", "residual", "static", False, 1.0),
                      _row("SiT-B/2", "DAR static c4", "dar", "static", False, 0.8),
                      _row("SiT-B/2", "DAR dynamic c4", "dar", "dynamic", False, 0.9),
                      _row("SiT-XL/2", "residual", "residual", "static", False, 1.0, batch=128),
                      _row("SiT-XL/2", "DAR static c4", "dar", "static", False, 0.9, batch=128),
                      dict(_row("SiT-XL/2", "DAR dynamic c4", "dar", "dynamic", False, 1.0, batch=128),
                           skipped="time budget")],
               sampling=[], seconds=500.0)
    p = tmp_path / "bench-H200-test-20261126-1400.json"
    p.write_text(json.dumps(res))
    return p


def test_resume_refuses_a_missing_corrupt_or_foreign_file(tmp_path):
    import pytest

    from dartool.bench import ResumeError, load_resume

    with pytest.raises(ResumeError, match="no such file"):
        load_resume(tmp_path / "nope.json", "H200 test")
    bad = tmp_path / "bad.json"
    bad.write_text('{"env": {"card": "H200 te')            # cut short
    with pytest.raises(ResumeError, match="not readable as JSON"):
        load_resume(bad, "H200 test")
    other = tmp_path / "other.json"
    other.write_text('{"rows": []}')
    with pytest.raises(ResumeError, match="not a `dartool bench` results file"):
        load_resume(other, "H200 test")
    with pytest.raises(ResumeError, match="measured on H200 test, this is H100; .*without --resume"):
        load_resume(_saved_run(tmp_path), "H100")
    prev = load_resume(_saved_run(tmp_path), "H200 test")
    assert prev["resumed"][0]["parts"] == ["copy", "router", "sampling", "train"]
    assert prev["_stem"] == "bench-H200-test-20261126-1400"


def test_resume_keeps_measured_parts_and_retimes_incomplete_groups(tmp_path, monkeypatch):
    """A resumed run keeps what the earlier one measured (router, copy rate, sampling, complete training-step
    groups), times a group again whole when one of its rows is missing (XL/2 eager: its dynamic row was skipped),
    runs what is new (compiled rows, paired rounds) and rewrites the same results file with both runs named."""
    import json

    import dartool.bench as bench
    import dartool.kernels as kernels

    calls = []
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(bench, "env_info", lambda: dict(card="H200 test", date="2026-11-26 15:00 UTC", commit="new",
                                                        torch="x", python="3"))
    monkeypatch.setattr(kernels, "why_not_fused", lambda: None)
    monkeypatch.setattr(bench, "copy_bandwidth", lambda: calls.append("copy") or {})
    monkeypatch.setattr(bench, "router_microbench", lambda **k: calls.append("router") or [])
    monkeypatch.setattr(bench, "sampling_bench", lambda **k: calls.append("sampling") or [])

    def fake_train(size, batch, variants, compiled, compile_mode="full", **k):
        calls.append(("train", size, compiled, tuple(bench._variant_name(v) for v in variants)))
        return _fake_rows(size, batch, variants, compiled, compile_mode)

    monkeypatch.setattr(bench, "train_step_bench", fake_train)
    monkeypatch.setattr(bench, "paired_steps_bench_many",
                        lambda size, batch, rounds, **k: calls.append(("paired", size)) or
                        [_paired(f"SiT-{size}/2", "DAR static c4", [1.05] * rounds)])
    monkeypatch.setattr(bench.torch.cuda, "get_device_properties", lambda i: type("P", (), {"total_memory": 141e9}))
    saved = _saved_run(tmp_path)
    res = bench.run_bench(tmp_path, quick=True, check=False, paired_rounds=3, resume=saved)
    assert "router" not in calls and "copy" not in calls and "sampling" not in calls
    trains = [c for c in calls if c[0] == "train"]
    assert ("train", "B", False, ("residual", "DAR static c4", "DAR dynamic c4")) not in trains   # kept
    assert ("train", "XL", False, ("residual", "DAR static c4", "DAR dynamic c4")) in trains       # re-timed whole
    assert ("train", "B", True, ("residual", "DAR static c4")) in trains
    assert ("train", "XL", True, ("DAR dynamic c4",)) in trains
    assert [c for c in calls if c[0] == "paired"] == [("paired", "B"), ("paired", "XL")]
    xl_eager = [r for r in res["train"] if r["model"] == "SiT-XL/2" and not r["compiled"]]
    assert [r["batch"] for r in xl_eager] == [128] * 3 + [32] * 3      # the card's large batch and the recipe's
    assert not any(r.get("skipped") for r in xl_eager)
    assert len([r for r in res["train"] if r["model"] == "SiT-B/2" and not r["compiled"]]) == 3
    written = json.loads(saved.read_text())                  # the same file, rewritten
    assert written["env"]["commit"] == "new" and written["resumed"][0]["env"]["commit"] == "old"
    assert "Continued (`--resume`)" in saved.with_suffix(".md").read_text()
    assert not list(tmp_path.glob("*.tmp"))


def test_bench_cli_resume_error_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from dartool.cli import app

    out = CliRunner().invoke(app, ["bench", "--resume", str(tmp_path / "missing.json"), "--out", str(tmp_path)])
    assert out.exit_code == 2
    assert "no such file" in out.output and "Traceback" not in out.output


def test_resume_runs_a_failed_check_again(tmp_path):
    import json

    from dartool.bench import load_resume

    p = _saved_run(tmp_path)
    d = json.loads(p.read_text())
    p.write_text(json.dumps(dict(d, check=dict(ok=False, cases=[], models=[]))))
    again = load_resume(p, "H200 test")
    assert "check" not in again and again["resumed"][-1]["run_again"] == ["check (it had failed)"]
    p.write_text(json.dumps(dict(d, check=dict(ok=True, cases=[], models=[]))))
    assert load_resume(p, "H200 test")["check"]["ok"]


def test_check_runs_without_tf32_and_restores_the_callers_setting(monkeypatch):
    """The float64 check pins TF32 off (a TF32 projection would be charged to the kernels) and gives the caller's
    setting back."""
    import torch

    from dartool.kernels import check

    seen = []
    monkeypatch.setattr(check, "_run_all", lambda *a: seen.append(torch.backends.cuda.matmul.allow_tf32) or {})
    old = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        check.run_all(device="cpu")
        assert seen == [False] and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def test_paired_rounds_alone_are_judged_on_time():
    """Results with paired rounds but no compiled rows (``--parts router,paired``): the compiled time targets are
    judged on the paired medians, marked as having no memory row; nothing is judged twice when rows exist."""
    from dartool.bench import evaluate_targets

    res = dict(env=dict(card="test card", date="2026-11-26 12:00 UTC", commit="abc", torch="x", python="3"),
               skipped=[], train=[],
               paired=[_paired("SiT-XL/2", "DAR static c4", [1.08, 1.09, 1.10]),
                       _paired("SiT-XL/2", "DAR dynamic c4", [1.40, 1.41, 1.39])])
    t = [x for x in evaluate_targets(res) if "compiled" in x["target"]]
    assert len(t) == 2 and all("no compiled row for memory" in x["target"] for x in t)
    st = next(x for x in t if "static" in x["target"])
    dyn = next(x for x in t if "dynamic" in x["target"])
    assert st["value"] == 1.09 and st["ok"] and dyn["value"] == 1.40 and not dyn["ok"]
    res["train"] = [_row("SiT-XL/2", "residual", "residual", "static", True, 1.0),
                    _row("SiT-XL/2", "DAR static c4", "dar", "static", True, 1.12)]
    t = [x for x in evaluate_targets(res) if "compiled: step" in x["target"]]
    assert len(t) == 2                       # static once (paired, with its row), dynamic from the rounds alone
    assert sum("no compiled row" in x["target"] for x in t) == 1


def test_paired_rounds_skipped_by_the_budget_say_what_they_needed(tmp_path, monkeypatch):
    """Paired rounds that do not fit the time left are skipped with the estimate, the time left and the flag to
    raise (two session 24 jobs lost their rounds to a --time-budget set below it), and nothing is timed; the
    skip still merges away where another run measured that model's rounds."""
    import time

    from dartool import bench

    monkeypatch.setattr(bench, "paired_steps_bench_many",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("must not run")))
    res = dict(skipped=[], paired=[])
    bench._paired_rounds(res, tmp_path / "r", [("XL", 32)], 6, time.time() + 100.0, [], mode="cudagraphs")
    (entry,) = res["skipped"]
    assert entry.startswith("paired cudagraphs SiT-XL/2 (time budget: ~292 s needed, ")
    assert entry.endswith("s left; raise --time-budget)") and res["paired"] == []
    merged = dict(train=[], paired=[dict(model="SiT-XL/2", mode="cudagraphs", ratio_median=1.1)])
    assert bench._prune_skipped([entry], merged) == []
