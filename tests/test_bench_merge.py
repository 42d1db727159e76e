"""``dartool bench --parts`` / ``--merge``: a bench split over several GPUs of one host and joined afterwards. CPU
only: the measurements are faked (small results dicts, or run_bench with CUDA and every timed function faked)."""
import json

import pytest

import dartool.bench as bench
from tests.test_bench_paired import _fake_rows, _paired, _row

CARD = "H100 test"


def _env(commit, date="2026-11-27 10:00 UTC", card=CARD):
    return dict(card=card, date=date, commit=commit, torch="x", python="3", triton="y")


def _router_row(N):
    return dict(N=N, B=32, T=256, D=1152, query="static", dtype="bf16", fused_fwd_ms=0.5, fused_fwd_kernel_ms=0.4,
                fused_bwd_kernel_ms=0.9, fused_fwdbwd_ms=1.6, fused_peak_mb=900.0, fwd_pct_floor=80.0,
                bwd_pct_floor=60.0, ref_fwd_ms=8.0, ref_fwdbwd_ms=25.0, ref_peak_mb=4000.0, speedup_fwd=16.0,
                speedup_fwdbwd=15.6, speedup_bwd=24.0, fused_bwd_ms=1.1)


def _check(ok=True):
    return dict(ok=ok, seconds=30.0, cases=[dict(ok=ok)] * 3, models=[dict(ok=True)])


ROUTER_CONFIG = dict(fwd=dict(block_r=1, num_warps=1), bwd=dict(rows=8, ln_slot=1), fuse_ln=True,
                     shared_prefix=dict(on=True, min_summaries=2, max_width=1 << 30, partial="float32"))


def _sampling():
    return [dict(model="SiT-B/2", batch=256, steps=50, variant="residual", fused=True, ms=9000.0, img_per_s=28.4,
                 time_ratio=1.0),
            dict(model="SiT-B/2", batch=256, steps=50, variant="DAR static c4", fused=True, ms=9500.0,
                 img_per_s=26.9, time_ratio=1.056)]


def _copy(tb):
    return dict(bytes_moved=2 << 30, ms=0.7, bytes_per_s=tb * 1e12, tb_per_s=tb)


def _gpu0():
    """What ``--parts check,paired --paired-rounds 3`` on GPU 0 writes."""
    return dict(env=_env("abc"), skipped=["router (not in --parts)", "eager (not in --parts)",
                                          "compiled (not in --parts)", "graphs (not in --parts)",
                                          "sampling (not in --parts)"],
                parts=["check", "paired"], check=_check(), copy=_copy(3.0), train=[],
                paired=[_paired("SiT-B/2", "DAR static c4", [1.08, 1.07, 1.09]),
                        _paired("SiT-B/2", "DAR dynamic c4", [1.28, 1.27, 1.29])], seconds=400.0)


def _gpu1():
    """What ``--parts router,eager,compiled,graphs,sampling`` on GPU 1 writes (XL/2 compiled dynamic ran out of
    time; the graphs part timed SiT-XL/2 at the recipe's 32 images)."""
    train = [_row(m, v, rt, q, False, r, batch=_b(m)) for m in ("SiT-B/2", "SiT-XL/2")
             for v, rt, q, r in (("residual", "residual", "static", 1.0), ("DAR static c4", "dar", "static", 0.9))]
    train += [_row(m, v, rt, q, True, r, batch=_b(m)) for m in ("SiT-B/2", "SiT-XL/2")
              for v, rt, q, r in (("residual", "residual", "static", 1.0), ("DAR static c4", "dar", "static", 1.09))]
    train += [_row("SiT-B/2", "DAR dynamic c4", "dar", "dynamic", True, 1.3),
              dict(model="SiT-XL/2", batch=64, variant="DAR dynamic c4", routing="dar", query="dynamic", chunk=4,
                   fused=True, compiled=True, skipped="time budget")]
    train += [_row("SiT-XL/2", v, rt, q, True, r, batch=32, mode="cudagraphs")
              for v, rt, q, r in (("residual", "residual", "static", 1.0), ("DAR static c4", "dar", "static", 1.08))]
    return dict(env=_env("abc", "2026-11-27 10:01 UTC"), parts=["router", "eager", "compiled", "graphs", "sampling"],
                skipped=["check (not in --parts)", "paired (not in --parts)",
                         "time budget: SiT-XL/2 b64 DAR dynamic c4 compiled"],
                copy=_copy(3.1), router=[_router_row(9), _router_row(57)], router_config=ROUTER_CONFIG,
                router_dynamic=[_router_row(57)], train=train, sampling=_sampling(), seconds=500.0)


def _b(model):
    return 64 if model == "SiT-XL/2" else 256


def _gpu2():
    """A third run: the compiled XL/2 dynamic row the second lacked, a repeat of a row and of a paired model, and
    paired rounds of XL/2 that the first run did not time."""
    return dict(env=_env("def", "2026-11-27 11:00 UTC"), skipped=["sampling (time budget)"],
                copy=_copy(2.9),
                train=[_row("SiT-B/2", "residual", "residual", "static", False, 1.0),
                       _row("SiT-XL/2", "DAR dynamic c4", "dar", "dynamic", True, 1.4, batch=64)],
                paired=[_paired("SiT-B/2", "DAR static c4", [1.5] * 3),
                        _paired("SiT-XL/2", "DAR static c4", [1.09] * 3)], seconds=300.0)


def _write(tmp_path, name, res):
    p = tmp_path / name
    p.write_text(json.dumps(res))
    return p


def _key(r):
    return r["model"], r["batch"], r["variant"], bench.row_mode(r)


def test_merge_combines_parts_rows_and_paired(tmp_path):
    a, b, c = (_write(tmp_path, f"{n}.json", f()) for n, f in (("a", _gpu0), ("b", _gpu1), ("c", _gpu2)))
    res = bench.merge_bench([a, b, c], tmp_path / "out")
    assert res["check"]["ok"] and res["router"] == _gpu1()["router"] and res["sampling"] == _sampling()
    assert res["router_config"] == ROUTER_CONFIG and len(res["router_dynamic"]) == 1
    assert res["copy"]["tb_per_s"] == 3.0                                   # the base's copy rate stays
    keys = [_key(r) for r in res["train"]]
    assert len(keys) == len(set(keys)) == 12                                # unioned, no repeats
    assert [bench.row_mode(r) for r in res["train"]] == ["eager"] * 4 + ["compiled"] * 6 + ["cudagraphs"] * 2
    xl_dyn = next(r for r in res["train"] if _key(r) == ("SiT-XL/2", 64, "DAR dynamic c4", "compiled"))
    assert xl_dyn["step_ms"] == 140.0 and xl_dyn["merged_from"] == "c.json"   # a measured row replaces a skipped one
    assert not any(r.get("skipped") for r in res["train"])
    b_res = next(r for r in res["train"] if _key(r) == ("SiT-B/2", 256, "residual", "eager"))
    assert b_res["merged_from"] == "b.json"                                 # the first run that had it
    paired = {(p["model"], p["variant"]): p["ratio_median"] for p in res["paired"]}
    assert paired == {("SiT-B/2", "DAR static c4"): 1.08, ("SiT-B/2", "DAR dynamic c4"): 1.28,
                      ("SiT-XL/2", "DAR static c4"): 1.09}                   # B/2 from the base only; XL/2 added
    assert res["parts"] == list(bench.BENCH_PARTS)
    assert res["skipped"] == []                                             # everything was measured somewhere
    assert [(m["file"], m["parts"]) for m in res["merged"]] == [
        ("a.json", ["check", "paired"]), ("b.json", ["router", "eager", "compiled", "graphs", "sampling"]),
        ("c.json", ["eager", "compiled", "paired"])]
    assert [m["env"]["commit"] for m in res["merged"]] == ["abc", "abc", "def"]
    assert [m["seconds"] for m in res["merged"]] == [400.0, 500.0, 300.0]
    t = {x["target"]: x for x in res["targets"]}
    assert t["SiT-B/2 b256 DAR static c4 compiled: step / residual <= 1.10 (paired, median of 3 rounds)"]["value"] == 1.08
    assert t["SiT-XL/2 b32 DAR static c4 cudagraphs: step / residual <= 1.10"]["value"] == 1.08
    assert "fused router matches float64 reference (every shape class)" in t
    assert "router fwd >= 70% of byte floor (N=57)" in t
    # written once, under --out, as bench-<card>-<date>-merged; the inputs are left as they were
    out = list((tmp_path / "out").iterdir())
    assert sorted(p.suffix for p in out) == [".json", ".md"] and all(p.stem.endswith("-merged") for p in out)
    assert json.loads(a.read_text()) == _gpu0()
    written = json.loads(next(p for p in out if p.suffix == ".json").read_text())
    assert written["merged"][2]["file"] == "c.json" and "_stem" not in written and "seconds" not in written
    md = next(p for p in out if p.suffix == ".md").read_text()
    assert "Combined (`--merge`) from 3 runs on this card" in md
    assert "- `a.json`: H100 test, commit `abc`, 2026-11-27 10:00 UTC; parts: check, paired" in md
    assert "- `c.json`: H100 test, commit `def`, 2026-11-27 11:00 UTC; parts: eager, compiled, paired" in md
    assert "## Router" in md and "## Compiled steps, paired" in md and "## Sampling" in md and "Skipped" not in md


def test_merge_keeps_skipped_entries_nobody_measured(tmp_path):
    """Skipped entries join without repeats; an entry goes only where another merged run measured it, and a
    'time budget' list keeps its rows still unmeasured."""
    g1 = _gpu1()
    g1["skipped"][2] = "time budget: SiT-XL/2 b64 DAR dynamic c4 compiled, SiT-B/2 b256 DAR static c8 eager"
    g0 = dict(_gpu0(), skipped=_gpu0()["skipped"] + ["paired compiled SiT-XL/2 (time budget)", "router (not in --parts)"])
    res = bench.merge_bench([_write(tmp_path, "a.json", g0), _write(tmp_path, "b.json", g1)], tmp_path)
    assert res["skipped"] == ["paired compiled SiT-XL/2 (time budget)",
                              "time budget: SiT-XL/2 b64 DAR dynamic c4 compiled, SiT-B/2 b256 DAR static c8 eager"]
    assert res["parts"] == list(bench.BENCH_PARTS)
    # the other way round: the base skipped sampling, the second run sampled
    g1 = dict(_gpu1(), skipped=["sampling (time budget)", "torch.compile (--no-compile)"])
    del g1["sampling"]
    g1["train"] = [r for r in g1["train"] if not r["compiled"]]
    g0 = dict(_gpu0(), paired=[], skipped=[], sampling=_sampling())
    res = bench.merge_bench([_write(tmp_path, "c.json", g1), _write(tmp_path, "d.json", g0)], tmp_path)
    assert res["skipped"] == ["torch.compile (--no-compile)"] and res["sampling"] == _sampling()


def test_merge_refuses_other_cards_and_bad_files(tmp_path):
    a = _write(tmp_path, "a.json", _gpu0())
    b = _write(tmp_path, "b.json", dict(_gpu1(), env=_env("abc", card="H200 test")))
    with pytest.raises(bench.MergeError, match=r"--merge .*b.json: measured on H200 test, .*a.json on H100 test; "
                                               r"ratios compare only within one card"):
        bench.merge_bench([a, b], tmp_path / "out")
    with pytest.raises(bench.MergeError, match="--merge .*nope.json: no such file"):
        bench.merge_bench([a, tmp_path / "nope.json"], tmp_path / "out")
    bad = tmp_path / "bad.json"
    bad.write_text('{"env": {"card": "H1')
    with pytest.raises(bench.MergeError, match="not readable as JSON"):
        bench.merge_bench([a, bad], tmp_path / "out")
    other = _write(tmp_path, "other.json", {"rows": []})
    with pytest.raises(bench.MergeError, match="not a `dartool bench` results file"):
        bench.merge_bench([other, a], tmp_path / "out")
    assert not (tmp_path / "out").exists()                                  # nothing written


def test_merge_of_a_merge_names_the_original_inputs(tmp_path):
    first = bench.merge_bench([_write(tmp_path, "a.json", _gpu0()), _write(tmp_path, "b.json", _gpu1())],
                              tmp_path / "m")
    mp = _write(tmp_path, "m.json", json.loads(json.dumps(first, default=str)))
    res = bench.merge_bench([mp, _write(tmp_path, "c.json", _gpu2())], tmp_path / "m2")
    assert [m["file"] for m in res["merged"]] == ["a.json", "b.json", "c.json"]


def test_parse_parts():
    assert bench.parse_parts(None) == bench.BENCH_PARTS
    assert bench.parse_parts("paired, check") == ("check", "paired")          # run order, spaces allowed
    assert bench.parse_parts(["sampling", "eager"]) == ("eager", "sampling")
    assert bench.parse_parts("router,router") == ("router",)
    with pytest.raises(bench.BenchError, match="--parts check,train: unknown part train; give a comma-separated "
                                               "subset of check,router,eager,compiled,graphs,paired,sampling"):
        bench.parse_parts("check,train")
    with pytest.raises(bench.BenchError, match="no part named"):
        bench.parse_parts(" , ")


def test_merge_conflicts_name_the_measuring_flags():
    assert bench.merge_conflicts(quick=False, compile=True, paired_rounds=0, resume=None, parts=None) == []
    assert bench.merge_conflicts(resume="x.json", compile=False, parts="check", time_budget_s=2400.0) == [
        "--resume", "--no-compile", "--parts"]
    with pytest.raises(bench.MergeError, match="--merge measures nothing, so --resume would be ignored"):
        bench.bench_or_merge("out", ["a.json"], resume="x.json")


@pytest.fixture
def fake_cuda(monkeypatch):
    """run_bench as on a CUDA card, every measurement faked; returns the list of what was called."""
    import dartool.kernels as kernels
    import dartool.kernels.check as check

    calls = []
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(bench, "env_info", lambda: _env("abc"))
    monkeypatch.setattr(kernels, "why_not_fused", lambda: None)
    monkeypatch.setattr(check, "run_all", lambda **k: calls.append("check") or _check())
    monkeypatch.setattr(bench, "copy_bandwidth", lambda: calls.append("copy") or _copy(3.0))
    monkeypatch.setattr(bench, "router_microbench", lambda **k: calls.append("router") or [_router_row(57)])
    monkeypatch.setattr(bench, "sampling_bench", lambda **k: calls.append("sampling") or _sampling())

    def fake_train(size, batch, variants, compiled, compile_mode="full", **k):
        calls.append((bench.MODE_OF.get(compile_mode, compile_mode) if compiled else "eager", size))
        return _fake_rows(size, batch, variants, compiled, compile_mode)

    monkeypatch.setattr(bench, "train_step_bench", fake_train)
    def fake_paired(size, batch, rounds, compile_mode="full", **k):
        mode = bench.MODE_OF.get(compile_mode, compile_mode)
        calls.append(("paired", size) if mode == "compiled" else ("paired", size, mode))
        return [_paired(f"SiT-{size}/2", "DAR static c4", [1.05] * rounds, mode=mode)]

    monkeypatch.setattr(bench, "paired_steps_bench_many", fake_paired)
    monkeypatch.setattr(bench.torch.cuda, "get_device_properties", lambda i: type("P", (), {"total_memory": 80e9}))
    return calls


def test_parts_run_only_what_they_name(tmp_path, fake_cuda):
    """--parts check,paired: the float64 check, the copy rate and the paired rounds, no eager or compiled rows
    (paired runs without them); the rest is named skipped, and the file is named after its parts."""
    res = bench.run_bench(tmp_path, quick=True, paired_rounds=3, parts="paired,check")
    assert fake_cuda == ["check", "copy", ("paired", "B"), ("paired", "XL")]
    assert res["parts"] == ["check", "paired"] and res["train"] == []
    assert res["skipped"] == [f"{p} (not in --parts)" for p in ("router", "eager", "compiled", "graphs", "sampling")]
    (jp,) = tmp_path.glob("*.json")
    assert jp.stem.endswith("-check_paired") and json.loads(jp.read_text())["parts"] == ["check", "paired"]


def test_paired_rounds_under_cuda_graphs(tmp_path, fake_cuda):
    """--paired-mode cudagraphs: the rounds compile for CUDA graphs, their entries say so, the file is named
    -paired-graphs, and a bad mode is refused before anything runs."""
    res = bench.run_bench(tmp_path, quick=True, paired_rounds=3, parts="paired", paired_mode="cudagraphs")
    assert fake_cuda == ["copy", ("paired", "B", "cudagraphs"), ("paired", "XL", "cudagraphs")]
    assert {bench.paired_mode(p) for p in res["paired"]} == {"cudagraphs"}
    (jp,) = tmp_path.glob("*.json")
    assert jp.stem.endswith("-paired-graphs")
    t = [x["target"] for x in res["targets"]]
    assert "SiT-B/2 b256 DAR static c4 cudagraphs: step / residual <= 1.10 (paired, median of 3 rounds; no " \
           "cudagraphs row for memory)" in t
    with pytest.raises(bench.BenchError, match="--paired-mode 'graphs': use one of compiled, cudagraphs"):
        bench.run_bench(tmp_path, quick=True, paired_rounds=3, parts="paired", paired_mode="graphs")


def test_parts_and_switches_both_decide(tmp_path, fake_cuda):
    res = bench.run_bench(tmp_path, quick=True, sampling=False, parts="eager,compiled,sampling")
    assert [c for c in fake_cuda if c[0] != "compiled"] == ["copy", ("eager", "B"), ("eager", "XL"), ("eager", "XL")]
    assert ("compiled", "B") in fake_cuda and res["parts"] == ["eager", "compiled"]
    assert "check (not in --parts)" in res["skipped"] and "sampling (not in --parts)" not in res["skipped"]


def test_default_parts_run_everything(tmp_path, fake_cuda):
    pytest.importorskip("triton", reason="a full run records the router kernels' configuration (CI has no triton)")
    res = bench.run_bench(tmp_path, quick=True, paired_rounds=2)
    assert res["parts"] == list(bench.BENCH_PARTS) and res["skipped"] == []
    assert fake_cuda[:4] == ["check", "copy", "router", ("eager", "B")] and fake_cuda[-1] == "sampling"
    (jp,) = tmp_path.glob("*.json")
    assert jp.stem.count("-") == 4                    # bench-H100-test-<date>-<time>: no parts suffix


def test_parts_split_then_merged_equals_the_whole(tmp_path, fake_cuda):
    pytest.importorskip("triton", reason="a full run records the router kernels' configuration (CI has no triton)")
    a = bench.run_bench(tmp_path / "gpu0", quick=True, paired_rounds=2, parts="check,paired")
    b = bench.run_bench(tmp_path / "gpu1", quick=True, paired_rounds=2, parts="router,eager,compiled,graphs,sampling")
    assert a["parts"] == ["check", "paired"] and b["parts"] == ["router", "eager", "compiled", "graphs", "sampling"]
    res = bench.merge_bench([next((tmp_path / d).glob("*.json")) for d in ("gpu0", "gpu1")], tmp_path / "out")
    assert res["parts"] == list(bench.BENCH_PARTS) and res["skipped"] == []
    whole = bench.run_bench(tmp_path / "whole", quick=True, paired_rounds=2)
    assert sorted(map(_key, res["train"])) == sorted(map(_key, whole["train"]))
    assert [t["target"] for t in res["targets"]] == [t["target"] for t in whole["targets"]]


def test_parts_errors_before_measuring(tmp_path, fake_cuda):
    with pytest.raises(bench.BenchError, match="unknown part sample"):
        bench.run_bench(tmp_path, parts="check,sample")
    with pytest.raises(bench.BenchError, match="--parts paired needs --paired-rounds"):
        bench.run_bench(tmp_path, parts="paired")
    assert fake_cuda == [] and not list(tmp_path.iterdir())


def test_cli_parts_and_merge_errors_are_one_line(tmp_path):
    from typer.testing import CliRunner

    from dartool.cli import app

    r = CliRunner()
    out = r.invoke(app, ["bench", "--parts", "check,bogus", "--out", str(tmp_path)])
    assert out.exit_code == 2 and "unknown part bogus" in out.output and "Traceback" not in out.output
    a, b = _write(tmp_path, "a.json", _gpu0()), _write(tmp_path, "b.json", dict(_gpu1(), env=_env("x", card="H200")))
    out = r.invoke(app, ["bench", "--merge", str(a), "--merge", str(b), "--out", str(tmp_path)])
    assert out.exit_code == 2 and "ratios compare only within one card" in out.output
    out = r.invoke(app, ["bench", "--merge", str(a), "--resume", str(a), "--out", str(tmp_path)])
    assert out.exit_code == 2 and "--merge measures nothing, so --resume" in out.output
    b = _write(tmp_path, "b.json", _gpu1())
    out = r.invoke(app, ["bench", "--merge", str(a), "--merge", str(b), "--out", str(tmp_path / "m")])
    assert out.exit_code == 0, out.output
    assert len(list((tmp_path / "m").glob("*-merged.json"))) == 1
    help_ = r.invoke(app, ["bench", "--help"], terminal_width=200).output
    assert "--parts" in help_ and "--merge" in help_


def test_argparse_main_parts_and_merge(tmp_path, capsys):
    assert bench.main(["--parts", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown part nope" in capsys.readouterr().err
    a, b = _write(tmp_path, "a.json", _gpu0()), _write(tmp_path, "b.json", _gpu1())
    assert bench.main(["--merge", str(a), "--merge", str(b), "--out", str(tmp_path / "m")]) == 0
    assert bench.main(["--merge", str(a), "--quick", "--out", str(tmp_path / "m")]) == 2
    assert "--quick would be ignored" in capsys.readouterr().err
    failed = _write(tmp_path, "f.json", dict(_gpu0(), check=_check(ok=False)))
    assert bench.main(["--merge", str(failed), "--merge", str(b), "--out", str(tmp_path / "m")]) == 1


FULL_COMPILED = ["residual", "DAR static c4", "DAR dynamic c4", "DAR static_t c4", "DAR static c1", "DAR static c8"]


def test_full_run_times_every_variant_compiled(tmp_path, fake_cuda):
    """Not --quick: the compiled rows cover the eager rows' variants, residual + static c4 of every size first,
    then dynamic c4, then the rest (what a short compile budget should keep)."""
    res = bench.run_bench(tmp_path, parts="eager,compiled")
    for compiled in (False, True):
        for model, batch in (("SiT-B/2", 256), ("SiT-XL/2", 64), ("SiT-XL/2", 32)):
            got = [r["variant"] for r in res["train"]
                   if r["model"] == model and r["batch"] == batch and r["compiled"] == compiled]
            assert sorted(got) == sorted(FULL_COMPILED), (model, batch, compiled, got)
    assert [c for c in fake_cuda if c[0] == "compiled"] == [("compiled", "B"), ("compiled", "XL"), ("compiled", "XL")] * 3
    order = [r["variant"] for r in res["train"] if r["compiled"] and r["model"] == "SiT-XL/2" and r["batch"] == 64]
    assert order == FULL_COMPILED
    quick = bench.run_bench(tmp_path / "q", quick=True, parts="compiled")
    assert {r["variant"] for r in quick["train"]} == {"residual", "DAR static c4", "DAR dynamic c4"}


def test_sizes_split_then_merged_equals_the_whole(tmp_path, fake_cuda):
    """--sizes: one size's training steps per run (one GPU each); the file names the size, the other is named
    skipped, and the merge of both drops that entry and holds the whole run's rows and targets."""
    a = bench.run_bench(tmp_path / "gpu0", parts="compiled", sizes="B")
    b = bench.run_bench(tmp_path / "gpu1", parts="compiled", sizes="sit-xl/2")
    assert {r["model"] for r in a["train"]} == {"SiT-B/2"} and {r["model"] for r in b["train"]} == {"SiT-XL/2"}
    assert "SiT-XL/2 training steps (not in --sizes)" in a["skipped"]
    assert next((tmp_path / "gpu1").glob("*.json")).stem.endswith("-compiled_XL")
    res = bench.merge_bench([next((tmp_path / d).glob("*.json")) for d in ("gpu0", "gpu1")], tmp_path / "out")
    assert not [e for e in res["skipped"] if "--sizes" in e]
    whole = bench.run_bench(tmp_path / "whole", parts="compiled")
    assert sorted(map(_key, res["train"])) == sorted(map(_key, whole["train"]))
    assert sorted(t["target"] for t in res["targets"]) == sorted(t["target"] for t in whole["targets"])


def test_bad_sizes_error_before_measuring(tmp_path, fake_cuda):
    with pytest.raises(bench.BenchError, match=r"unknown size L; give a comma-separated subset of B,XL"):
        bench.run_bench(tmp_path, sizes="B,L")
    with pytest.raises(bench.BenchError, match="no size named"):
        bench.run_bench(tmp_path, sizes=",")
    assert fake_cuda == [] and not list(tmp_path.iterdir())
    assert bench.main(["--sizes", "XXL", "--out", str(tmp_path)]) == 2


def test_graphs_part_times_every_group_under_cuda_graphs(tmp_path, fake_cuda, monkeypatch):
    """--parts graphs: the compiled rows' plan (residual + static c4 of every size and batch first, then dynamic
    c4, then the rest) compiled with CUDA graphs; each ratio against the residual of the same mode and batch, the
    targets named by mode, and the offset tables' caching back on afterwards (it is off under CUDA graphs)."""
    from dartool.kernels import tables

    seen = []
    fake = bench.train_step_bench

    def spy(size, batch, variants, compiled, compile_mode="full", **k):
        seen.append((size, batch, compile_mode))
        tables.GRAPH_SAFE = True                 # what compile_model("cudagraphs") does, process-wide
        return fake(size, batch, variants, compiled, compile_mode=compile_mode, **k)

    monkeypatch.setattr(bench, "train_step_bench", spy)
    try:
        res = bench.run_bench(tmp_path, parts="graphs")
    finally:
        graph_safe, tables.GRAPH_SAFE = tables.GRAPH_SAFE, False
    assert not graph_safe
    assert res["parts"] == ["graphs"] and {m for _, _, m in seen} == {"cudagraphs"}
    assert seen[:3] == [("B", 256, "cudagraphs"), ("XL", 64, "cudagraphs"), ("XL", 32, "cudagraphs")]
    assert {bench.row_mode(r) for r in res["train"]} == {"cudagraphs"}
    assert len(res["train"]) == 3 * len(FULL_COMPILED)
    t = {x["target"]: x for x in res["targets"]}
    assert t["SiT-XL/2 b32 DAR static c4 cudagraphs: step / residual <= 1.10"]["value"] == pytest.approx(1.1)
    md = next(tmp_path.glob("*.md")).read_text()
    assert "| SiT-XL/2 | 32 | DAR static c4 | cudagraphs |" in md and "Modes: eager; compiled" in md
    assert "compiled (not in --parts)" in res["skipped"]


def test_ratios_pair_rows_of_one_mode_and_batch():
    """A DAR row's ratio is against the residual of its own model, batch and mode: a compiled and a CUDA-graphs
    residual of the same batch, or two batches of one mode, never mix; rows written before modes were recorded
    read their mode from ``compiled``."""
    rows = [_row("SiT-XL/2", "residual", "residual", "static", True, 1.0, batch=32),
            _row("SiT-XL/2", "residual", "residual", "static", True, 0.5, batch=32, mode="cudagraphs"),
            _row("SiT-XL/2", "residual", "residual", "static", True, 2.0, batch=64),
            _row("SiT-XL/2", "DAR static c4", "dar", "static", True, 2.2, batch=32),
            _row("SiT-XL/2", "DAR static c4", "dar", "static", True, 0.55, batch=32, mode="cudagraphs")]
    bench._ratios(rows)
    assert rows[3]["time_ratio"] == pytest.approx(2.2) and rows[4]["time_ratio"] == pytest.approx(1.1)
    assert [bench.row_mode(r) for r in rows] == ["compiled", "cudagraphs", "compiled", "compiled", "cudagraphs"]
    assert bench.row_mode(dict(compiled=False)) == "eager"
    assert bench._row_tag(rows[4]) == "SiT-XL/2 b32 DAR static c4 cudagraphs"


def test_xl_batches(tmp_path, fake_cuda):
    """--xl-batch: one or more comma-separated batches; by default the card's large batch and the recipe's 32.
    A bad one is a one-line error before anything is measured."""
    assert bench.parse_xl_batches(None) == (64, 32) and bench.parse_xl_batches(0, big=True) == (128, 32)
    assert bench.parse_xl_batches("64") == (64,) and bench.parse_xl_batches(48) == (48,)
    assert bench.parse_xl_batches(" 64, 32,64") == (64, 32)
    for bad in ("0", "x", "64,-2", "64,,32"):
        with pytest.raises(bench.BenchError, match=r"--xl-batch .* is not a positive batch; give one or more"):
            bench.parse_xl_batches(bad)
    with pytest.raises(bench.BenchError, match="--xl-batch"):
        bench.run_bench(tmp_path, parts="eager", xl_batch="big")
    assert fake_cuda == [] and not list(tmp_path.iterdir())
    res = bench.run_bench(tmp_path, quick=True, parts="eager", sizes="XL", xl_batch="32")
    assert {r["batch"] for r in res["train"]} == {32}
    # two runs of one part and size started in the same minute on two GPUs keep their own files
    bench.run_bench(tmp_path / "two", quick=True, parts="graphs", sizes="XL", xl_batch="64")
    bench.run_bench(tmp_path / "two", quick=True, parts="graphs", sizes="XL", xl_batch=32)
    bench.run_bench(tmp_path / "two", quick=True, xl_batch="64,32", router=False)   # (CI has no triton)
    stems = sorted(p.stem.split("-", 5)[-1] for p in (tmp_path / "two").glob("*.json"))
    assert stems == ["B_XL64-32", "graphs_XL32", "graphs_XL64"], stems
    assert bench.main(["--xl-batch", "none", "--out", str(tmp_path / "cli")]) == 2


def test_variants_time_only_the_named_dar_variants(tmp_path, fake_cuda, monkeypatch):
    """--variants: the eager, compiled and graphs rows time the residual and the named DAR variants only (e.g. the
    XL/2 c8 row under CUDA graphs, which a whole graphs part's compile budget did not reach); names read in the
    bench's, the table's or --arms' spelling; the file names them; a bad one is a one-line error before measuring."""
    assert bench.parse_variants(None) is None and bench.parse_variants("") is None
    assert bench.parse_variants("DAR static c8, dar:dynamic:c4") == ("dynamic-c4", "static-c8")
    for bad in ("static-c2", ",", "residual"):
        with pytest.raises(bench.BenchError, match="--variants .*give a comma-separated subset of static-c4,"):
            bench.parse_variants(bad)
    with pytest.raises(bench.BenchError, match="--variants"):
        bench.run_bench(tmp_path, parts="graphs", variants="static-c3")
    assert fake_cuda == [] and not list(tmp_path.iterdir())
    seen = []
    fake = bench.train_step_bench

    def spy(size, batch, variants, compiled, compile_mode="full", **k):
        seen.append((size, batch, compile_mode if compiled else "eager", [bench._variant_name(v) for v in variants]))
        return fake(size, batch, variants, compiled, compile_mode=compile_mode, **k)

    monkeypatch.setattr(bench, "train_step_bench", spy)
    res = bench.run_bench(tmp_path, parts="eager,graphs", sizes="XL", xl_batch="32", variants="static-c8")
    from dartool.kernels import tables

    tables.GRAPH_SAFE = False
    assert seen == [("XL", 32, "eager", ["residual", "DAR static c8"]),
                    ("XL", 32, "cudagraphs", ["residual"]),
                    ("XL", 32, "cudagraphs", ["DAR static c8"])], seen
    assert {r["variant"] for r in res["train"]} == {"residual", "DAR static c8"}
    assert all(r["time_ratio"] > 0 for r in res["train"])
    assert next(tmp_path.glob("*.json")).stem.endswith("eager_graphs_XL32_static-c8")
    assert bench.main(["--variants", "c8", "--out", str(tmp_path / "cli")]) == 2


def _images_npz(path, n=6, classes=3):
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), y=np.arange(n) % classes)
    return path


def test_data_trains_every_training_part_on_the_images(tmp_path, fake_cuda, monkeypatch):
    """--data: the eager, compiled, graphs and paired parts all get the dataset's images; the results record the
    inputs, name them in the file name and the Markdown, and a resumed or merged run must have the same."""
    got = []
    train, paired = bench.train_step_bench, bench.paired_steps_bench_many
    monkeypatch.setattr(bench, "train_step_bench", lambda *a, **k: got.append(k.get("inputs")) or train(*a, **k))
    monkeypatch.setattr(bench, "paired_steps_bench_many", lambda *a, **k: got.append(k.get("inputs")) or paired(*a, **k))
    data = _images_npz(tmp_path / "d.npz")
    res = bench.run_bench(tmp_path / "a", quick=True, paired_rounds=2, parts="eager,compiled,graphs,paired",
                          data=data)
    assert got and all(isinstance(i, bench.BenchInputs) for i in got)
    assert got[0].channels == 1 and got[0].classes == 3 and got[0].x.shape == (6, 1, 32, 32)
    assert res["inputs"] == "images of d.npz (1 x 32 x 32, 3 classes)"
    (jp,) = (tmp_path / "a").glob("*.json")
    assert jp.stem.endswith("-eager_compiled_graphs_paired_data")
    assert "Inputs: two fixed batches of images of d.npz" in jp.with_suffix(".md").read_text()
    noise = bench.run_bench(tmp_path / "b", quick=True, parts="eager")
    assert noise["inputs"] == bench.NOISE_INPUTS
    (nj,) = (tmp_path / "b").glob("*.json")
    assert "Inputs: two fixed batches of Gaussian-noise latents" in nj.with_suffix(".md").read_text()
    with pytest.raises(bench.ResumeError, match=r"--resume .*: its training steps ran on Gaussian-noise latents .*, "
                                                r"this run's on images of d.npz"):
        bench.run_bench(tmp_path / "b", quick=True, parts="eager,compiled", resume=nj, data=data)
    with pytest.raises(bench.MergeError, match="merge runs of the same inputs"):
        bench.merge_bench([jp, nj], tmp_path / "m")
    with pytest.raises(bench.BenchError, match=r"^--data .*nope.npz: no data at"):
        bench.run_bench(tmp_path / "c", quick=True, parts="eager", data=tmp_path / "nope.npz")
    assert not (tmp_path / "c").exists()


def test_bench_inputs_are_the_steps_images_and_labels(tmp_path):
    """The training step takes the dataset's fixed batches in turn (wrapping around), with a model of its channels
    and classes."""
    import torch

    inp = bench.load_inputs(_images_npz(tmp_path / "d.npz", n=5, classes=5), n=5)
    assert inp.x.shape == (5, 1, 32, 32) and float(inp.x.min()) >= -1 and float(inp.x.max()) <= 1
    model, cfg = bench._build("S", "dar", "static", 4, "cpu", inp)
    assert (cfg.in_channels, cfg.num_classes) == (1, 5)
    seen = []
    model.y_embedder.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    step, _ = bench._train_step(model, cfg, 3, False, device="cpu", inputs=inp)
    step(0)
    step(1)
    assert torch.equal(seen[0], inp.y[[0, 1, 2]]) and torch.equal(seen[1], inp.y[[3, 4, 0]])


def test_runs_before_the_contiguous_stream_are_named_and_never_mixed_with_newer_ones(tmp_path, fake_cuda):
    """Training steps timed before commit 54ac41b (no ``stream`` in the results) had a slow residual on noise: their
    Markdown says so, --merge will not mix them with newer steps, and --resume times them again."""
    new = bench.run_bench(tmp_path / "new", quick=True, parts="eager")
    assert new["stream"] == bench.STREAM_LAYOUT
    (nj,) = (tmp_path / "new").glob("*.json")
    md = nj.with_suffix(".md").read_text()
    assert "hidden state is contiguous whatever the inputs' memory layout" in md and bench.OLD_STREAM_NOTE not in md
    assert "router byte floor ms, own reads / as built" in md
    dar = next(r for r in new["train"] if r.get("routing") == "dar" and "router_floor_built_ms" in r)
    assert f"{dar['router_floor_ms']:.1f} / **{dar['router_floor_built_ms']:.1f}**" in md
    old = _write(tmp_path, "old.json", _gpu1())                             # timed before 54ac41b
    with pytest.raises(bench.MergeError, match="before commit 54ac41b"):
        bench.merge_bench([nj, old], tmp_path / "m1")
    both_old = bench.merge_bench([old, _write(tmp_path, "old2.json", _gpu2())], tmp_path / "m2")
    assert "stream" not in both_old
    assert bench.OLD_STREAM_NOTE in next((tmp_path / "m2").glob("*.md")).read_text()
    check_only = _write(tmp_path, "check.json", dict(env=_env("abc"), parts=["check"], check=_check(),
                                                     copy=_copy(3.0), train=[], skipped=[]))
    merged = bench.merge_bench([check_only, nj], tmp_path / "m3")          # no steps of its own: either side
    assert merged["stream"] == bench.STREAM_LAYOUT and merged["train"]
    resumed = bench.run_bench(tmp_path / "r", quick=True, parts="eager", resume=old)
    assert resumed["stream"] == bench.STREAM_LAYOUT
    assert {bench.row_mode(r) for r in resumed["train"]} == {"eager"}    # the old compiled rows are gone
    assert resumed["router"] == _gpu1()["router"]                          # its other parts are kept
    (rec,) = resumed["resumed"]
    assert "train" not in rec["parts"] and "router" in rec["parts"]
    assert rec["run_again"] == ["training steps (timed before commit 54ac41b made the stream contiguous)"]
