"""The pure parts of the benchmark scripts' options: compile_options.py's variant specs, step_host.py's count of
the Triton kernels' compiled variants."""
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from tests.benchmark_scripts import load_benchmark


def test_compile_options_parses_variants_and_rejects_bad_ones():
    co = load_benchmark("compile_options")
    assert co.parse_variant("dynamic:4") == ("dynamic", 4, {}, None, "full", True, None, None)
    assert co.parse_variant("static:8:accmin=10,group=2") == ("static", 8, {}, 2, "full", True, 10, None)
    assert co.parse_variant("dynamic:4:accpend=50") == ("dynamic", 4, {}, None, "full", True, None, 50)
    assert co.parse_variant("static:1:accum=0,realize_acc_reads_threshold=2") == (
        "static", 1, {"realize_acc_reads_threshold": 2}, None, "full", False, None, None)
    assert co.parse_variant("static:4:blocks=1")[4] == "blocks"
    for bad, why in (("static", "QUERY:CHUNK"), ("static:x", "QUERY:CHUNK"), ("static:4:foo", "KEY=VALUE"),
                     ("static:4:accmin=0", "accmin"), ("static:4:accpend=0", "accpend"),
                     ("static:4:regions=1,blocks=1", "not both")):
        with pytest.raises(ValueError, match=why):
            co.parse_variant(bad)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="the router kernels need Triton")
def test_step_host_counts_compiled_kernel_variants():
    sh = load_benchmark("step_host")
    n = sh.jit_variants()
    assert isinstance(n, int) and n >= 0


def test_step_parts_times_every_variant_and_part(tmp_path, capsys):
    """benchmarks/step_parts.py on the CPU (tiny model): every step variant and every part of the training step is
    timed for each arm, and the results name the card and the commit."""
    import json

    sp = load_benchmark("step_parts")
    assert sp.main(["--size", "S", "--depth", "1", "--batch", "2", "--rounds", "1", "--steps", "1",
                    "--device", "cpu", "--out", str(tmp_path)]) == 0
    (js,) = tmp_path.glob("step_parts-cpu-*-S2-c4.json")
    res = json.loads(js.read_text())
    assert res["meta"]["card"] == "cpu" and res["meta"]["commit"] and res["meta"]["compile_mode"] == "none"
    assert [r["arm"] for r in res["rows"]] == ["residual", "dar-static-c4"]
    for r in res["rows"]:
        for key in ("step_ms", "wall_ms"):
            assert set(r[key]) == set(sp.VARIANTS) and all(v > 0 for v in r[key].values())
        assert set(r["train_parts_ms"]) == set(sp.PARTS) and all(v >= 0 for v in r["train_parts_ms"].values())
    md = js.with_suffix(".md").read_text()
    assert "(cpu," in md and "| dar-static-c4 |" in md and "train+pinned" in md


def test_step_parts_times_noise_and_images_in_the_same_rounds():
    """With both kinds of x, every variant is timed on each (``VARIANT@KIND``), on one model."""
    import torch

    sp = load_benchmark("step_parts")
    imgs = torch.rand(2, 3, 32, 32) * 2 - 1
    r = sp.arm_case("S", "residual", 2, device=torch.device("cpu"), compile_mode=None, rounds=2, steps=1, channels=3,
                    classes=10, depth=1, images=imgs, x_kinds=("noise", "images"), variants=("bench", "train+copy"))
    assert list(r["step_ms"]) == ["bench@noise", "train+copy@noise", "bench@images", "train+copy@images"]
    assert [b[0] for b in r["blocks"]] == 2 * list(r["step_ms"]) and all(t > 0 for t in r["wall_ms"].values())


def test_step_parts_warms_every_kind_of_x_before_the_first_timed_block(monkeypatch):
    """Each kind of x is its own graph when its memory layout differs (images): all are compiled and recorded in
    the warm-up, not inside the first timed block of each (session 21's clock join read ~30 s of idle card there)."""
    import torch

    import dartool.train.arms as arms

    sp = load_benchmark("step_parts")
    seen = []
    real = arms.optimizer_step
    monkeypatch.setattr(arms, "optimizer_step", lambda module, model, params, opt, ema, x, *a, **k: (
        seen.append(x.clone()), real(module, model, params, opt, ema, x, *a, **k))[1])
    imgs = torch.rand(2, 3, 32, 32) * 2 - 1
    sp.arm_case("S", "residual", 2, device=torch.device("cpu"), compile_mode=None, rounds=1, steps=1, channels=3,
                classes=10, depth=1, images=imgs, x_kinds=("noise", "images"), variants=("train",))
    is_img = [torch.equal(x, imgs) for x in seen]
    # warm-up: 3 calls of each of the 3 train_step variants per kind; then the noise block (2 calls), images (2)
    assert len(seen) == 2 * 9 + 2 + 2
    assert is_img[:18] == [False] * 9 + [True] * 9 and is_img[18:] == [False, False, True, True]


def test_step_parts_controls_keep_what_they_claim_to_keep():
    """``shuffled`` holds each image's own values per channel (only their positions move); ``matched`` has each
    image's per-channel mean and deviation but Gaussian values."""
    import torch

    sp = load_benchmark("step_parts")
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)) ** 3 * 2 - 1
    xs = sp.x_controls(imgs, g)
    assert set(xs) == {"images", "shuffled", "matched"} and xs["images"] is imgs
    flat = lambda t: t.reshape(3, 3, -1)  # noqa: E731
    assert torch.equal(flat(xs["shuffled"]).sort(-1).values, flat(imgs).sort(-1).values)
    assert not torch.equal(xs["shuffled"], imgs)
    # one permutation per image, shared by its channels: a pixel's colour stays together
    s0, i0 = flat(xs["shuffled"])[0], flat(imgs)[0]
    j = int((i0[0] == s0[0, 5]).nonzero()[0])
    assert torch.equal(i0[:, j], s0[:, 5])
    m = flat(xs["matched"])
    torch.testing.assert_close(m.mean(-1), flat(imgs).mean(-1), atol=0.1, rtol=0)   # 1,024 draws: ~6 sigma
    torch.testing.assert_close(m.std(-1), flat(imgs).std(-1), atol=0, rtol=0.1)
    assert not torch.equal(m.sort(-1).values, flat(imgs).sort(-1).values)


def test_step_parts_every_kind_of_x_gets_parts_kernels_and_clock(tmp_path):
    """Four kinds of x in one run: each variant and each part timed per kind, the profiler's kernels listed per kind,
    and an nvidia-smi log joined to the blocks (clock, power, cycles per step)."""
    import datetime as dt
    import json

    import numpy as np

    sp = load_benchmark("step_parts")
    data = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8), y=np.arange(4) % 2)
    smi = tmp_path / "smi.csv"
    t0 = dt.datetime.now()
    smi.write_text("".join(f"{(t0 + dt.timedelta(seconds=i / 10)):%Y/%m/%d %H:%M:%S.%f}"[:-3]
                           + f", {1700 + i % 3}, 3201, 690.5, 60\n" for i in range(-50, 3000)) + "garbage line\n")
    kinds = "noise,images,shuffled,matched"
    assert sp.main(["--size", "S", "--depth", "1", "--batch", "2", "--rounds", "2", "--steps", "2", "--device", "cpu",
                    "--data", str(data), "--x", kinds, "--variants", "train", "--profile", "1",
                    "--smi-log", str(smi), "--out", str(tmp_path)]) == 0
    (js,) = tmp_path.glob("step_parts-cpu-*-images-shuffled-matched.json")
    res = json.loads(js.read_text())
    for r in res["rows"]:
        names = [f"train@{k}" for k in kinds.split(",")]
        assert list(r["step_ms"]) == names
        assert list(r["train_parts_ms_by_x"]) == kinds.split(",")
        assert r["train_parts_ms"] == r["train_parts_ms_by_x"]["noise"]
        assert set(r["kernels_by_x"]) == set(kinds.split(",")) and all(r["kernels_by_x"].values())
        assert set(r["clock_mhz"]) == set(names) and all(1700 <= c <= 1702 for c in r["clock_mhz"].values())
        assert all(p == 690 or p == 691 for p in r["power_w"].values())
        for n in names:
            assert abs(r["mcycles"][n] - r["step_ms"][n] * r["clock_mhz"][n] / 1e3) < 0.01
    md = js.with_suffix(".md").read_text()
    assert "(shuffled)" in md and "| residual | matched |" in md and "cycles per step" in md
    assert "differ most across x" in md


def test_step_parts_clock_join_flags_idle_samples(tmp_path):
    """Samples under half the arm's busy power (its 90th percentile) inside a block are an idle card: their share
    is recorded per variant and the Markdown names the variants where it passes 10 %, also where idle samples are
    most of the log (session 21's images blocks: ~90 %)."""
    import datetime as dt

    sp = load_benchmark("step_parts")
    t0 = dt.datetime(2026, 11, 27, 12, 0, 0)
    lines = []
    for i in range(40):                    # 4 s at 10 Hz: noise block busy, images block half idle
        w = 120.0 if 25 <= i < 35 else 690.0
        if i >= 20 and not 25 <= i < 35:   # ... and the rest of the images block at busy power
            w = 690.0
        lines.append(f"{(t0 + dt.timedelta(seconds=i / 10)):%Y/%m/%d %H:%M:%S.%f}"[:-3] + f", 1700, 3201, {w}, 60")
    smi = tmp_path / "smi.csv"
    smi.write_text("\n".join(lines) + "\n")
    ts = t0.timestamp()
    row = dict(arm="residual", step_ms={"train@noise": 90.0, "train@images": 89.0},
               blocks=[("train@noise", ts, ts + 1.95), ("train@images", ts + 2.0, ts + 3.95)])
    sp.join_clock([row], smi)
    assert row["idle_share"]["train@noise"] == 0 and row["idle_share"]["train@images"] == 0.5
    assert row["power_w"]["train@noise"] == 690
    meta = dict(card="H100", date="2026-11-27", commit="x", torch="2", size="B", batch=256, compile_mode="cudagraphs",
                channels=3, classes=10, learn_sigma=False, x=["noise", "images"], data="cifar.npz", rounds=1,
                steps=10)
    row.update(wall_ms=row["step_ms"], train_parts_ms={p: 1.0 for p in sp.PARTS})
    md = sp.markdown(meta, [row])
    assert "Idle card inside timed blocks" in md and "residual train@images (50%)" in md
    assert "train@noise (" not in md.split("Idle card")[1].split("\n")[0]
    # mostly idle: one busy block of 10 samples against 30 idle ones still flags the idle block
    smi.write_text("\n".join(f"{(t0 + dt.timedelta(seconds=i / 10)):%Y/%m/%d %H:%M:%S.%f}"[:-3]
                             + f", 1700, 3201, {690.0 if i < 10 else 126.0}, 60" for i in range(40)) + "\n")
    row["blocks"] = [("train@noise", ts, ts + 0.95), ("train@images", ts + 1.0, ts + 3.95)]
    sp.join_clock([row], smi)
    assert row["idle_share"] == {"train@noise": 0, "train@images": 1.0}


def test_step_parts_refuses_controls_without_data_and_a_missing_log(capsys):
    import pytest

    sp = load_benchmark("step_parts")
    with pytest.raises(SystemExit):
        sp.main(["--size", "S", "--depth", "1", "--x", "noise,shuffled", "--device", "cpu"])
    assert "need --data" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sp.main(["--size", "S", "--depth", "1", "--smi-log", "/nonexistent/smi.csv", "--device", "cpu"])
    assert "no such file" in capsys.readouterr().err


def test_step_profile_sorts_kernels_into_kinds():
    """benchmarks/step_profile.py: the router kernels, the shared-prefix passes (forward; backward with its
    coefficient and gradient kernels), attention, GEMMs and Inductor's kernels each land in their own kind."""
    sp = load_benchmark("step_profile")
    ev = [type("E", (), dict(key=k, self_device_time_total=us))() for k, us in (
        ("_router_fwd_kernel", 1000), ("_router_bwd_kernel", 2000), ("_qg_finish_kernel", 100),
        ("_prefix_fwd_kernel", 300), ("_prefix_bwd_kernel", 400), ("_prefix_coef_kernel", 50),
        ("_prefix_grad_kernel", 50), ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop", 700),
        ("nvjet_sm90_tst_256x128", 5000), ("triton_red_fused_native_layer_norm_3", 800), ("memcpy", 10))]
    assert sp.kernel_groups(ev) == {"attention": 0.7, "gemm": 5.0, "inductor": 0.8, "other": 0.01,
                                    "prefix bwd": 0.5, "prefix fwd": 0.3, "router bwd": 2.1, "router fwd": 1.0}
    assert set(sp.ROUTER_KINDS) == {"router fwd", "router bwd", "prefix fwd", "prefix bwd"}


def test_step_kernel_sweep_parses_variants_and_sorts_kernels_into_kinds():
    """step_kernel_sweep.py: every built-in grid entry parses, typos are refused with what to write, and kernel
    times land in their kind (prefix passes apart from the routers; everything else only in the total)."""
    from types import SimpleNamespace

    sw = load_benchmark("step_kernel_sweep")
    assert sw.parse_variant("bwd.rows=4 pfwd.group=2 rt.few=0") == {"bwd": {"rows": 4}, "pfwd": {"group": 2},
                                                                   "rt": {"few": 0}}
    assert sw.parse_variant("") == {}
    for text in sw.GRID_WIDE + sw.GRID_NARROW:
        sw.parse_variant(text)
    assert sw.parse_variant("rt.rpipe=2") == {"rt": {"rpipe": 2}}
    assert sw.parse_variant("rt.lean=3 rt.maxnreg=168") == {"rt": {"lean": 3, "maxnreg": 168}}
    assert sw.RT_KEYS["lean"] == "LEAN" and sw.RT_KEYS["maxnreg"] == "MAXNREG"
    assert sw.parse_variant("rt.dynrpipe=8 rt.rslot=1") == {"rt": {"dynrpipe": 8, "rslot": 1}}
    if importlib.util.find_spec("triton") is not None:   # every rt. key names a setting the kernels' module has
        from dartool.kernels import router_triton as rt
        assert all(hasattr(rt, name) for name in sw.RT_KEYS.values()), sw.RT_KEYS
    for bad in ("bwd.rows", "rows=4", "ln.rows=4", "rt.pipe=1"):
        with pytest.raises(SystemExit, match="KERNEL.KEY=INT|rt.few, rt.rpipe"):
            sw.parse_variant(bad)
    ev = [SimpleNamespace(key=k, self_device_time_total=us) for k, us in (
        ("_router_bwd_kernel", 3000.0), ("_router_bwd_kernel", 1000.0), ("_router_fwd_kernel", 2000.0),
        ("_prefix_coef_kernel", 500.0), ("_qg_finish_kernel", 100.0), ("nvjet_sm90_gemm", 7000.0))]
    k = sw.kernel_kinds(ev)
    assert (k["router bwd"], k["router fwd"], k["prefix coef"], k["qg finish"]) == (4.0, 2.0, 0.5, 0.1)
    assert k["routers + prefix"] == pytest.approx(6.6) and k["all kernels"] == pytest.approx(13.6)


def test_step_kernel_sweep_by_launch_labels_and_restores_the_launchers():
    """--by-launch: each router launch runs in a range named for its source count and layout, counted per label;
    the launchers are put back afterwards; range times sum per label."""
    from types import ModuleType, SimpleNamespace

    sw = load_benchmark("step_kernel_sweep")
    fwd = dict(args=(0, 0, 0, 1), meta=dict(PREFIX=True))
    bwd = dict(args=(0,) * 6 + (3,), meta=dict(PREFIX=False, RECOMPUTE_H=True))
    assert sw.launch_label("fwd", fwd, 3) == "fwd N1 prefix"
    assert sw.launch_label("bwd", bwd, 6) == "bwd N3 noh"
    rt = ModuleType("rt")
    calls = []
    rt._fwd_launch, rt._bwd_launch = (lambda P: calls.append(("f", P))), (lambda P: calls.append(("b", P)))
    originals = (rt._fwd_launch, rt._bwd_launch)
    with sw.launch_ranges(rt) as counts:
        rt._fwd_launch(fwd), rt._fwd_launch(fwd), rt._bwd_launch(bwd)
    assert counts == {"fwd N1 prefix": 2, "bwd N3 noh": 1} and [c for c, _ in calls] == ["f", "f", "b"]
    assert (rt._fwd_launch, rt._bwd_launch) == originals
    with pytest.raises(RuntimeError):      # put back also when the block fails
        with sw.launch_ranges(rt):
            raise RuntimeError("a launch failed")
    assert (rt._fwd_launch, rt._bwd_launch) == originals
    import torch

    cpu, cuda = torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.CUDA
    ev = [SimpleNamespace(key=k, device_time_total=us, device_type=d) for k, us, d in (
        ("dar fwd N1 prefix", 300.0, cpu), ("dar fwd N1 prefix", 200.0, cpu), ("aten::mm", 900.0, cpu),
        ("dar bwd N3 noh", 50.0, cpu), ("dar fwd N1 prefix", 520.0, cuda),      # a device annotation: not added
        ("dar bwd N2", 0.0, cpu), ("dar bwd N2", 70.0, cuda))]                 # host range without device time
    assert sw.launch_times(ev) == {"fwd N1 prefix": 0.5, "bwd N3 noh": 0.05, "bwd N2": 0.07}


def test_launch_inputs_describes_tensors():
    """launch_inputs.py's per-tensor note: dtype, contiguous or not, 16-byte aligned or not, '-' for an empty h."""
    li = load_benchmark("launch_inputs")
    x = torch.zeros(4, 8, dtype=torch.bfloat16)
    assert li.describe(x) == "bf16 c a" and li.describe(x.t()) == "bf16 nc a"
    assert li.describe(x.view(-1)[1:]) == "bf16 c u" and li.describe(torch.zeros(0)) == "-"


def test_launch_inputs_swaps_dq_both_ways():
    """dq_swapped: a dynamic launch that wrote dq over q gets a fresh dq buffer, one with a fresh buffer gets q
    itself; a static launch (mode 0 / 1) is left alone."""
    li = load_benchmark("launch_inputs")
    q = torch.zeros(2, 3, 8)
    args = [None] * 7 + [q] + [None] * 6 + [q] + [None] * 5
    fresh = li.dq_swapped(dict(mode=2, args=tuple(args)))["args"][14]
    assert fresh.data_ptr() != q.data_ptr() and fresh.shape == q.shape and fresh.dtype == q.dtype
    args[14] = torch.zeros_like(q)
    assert li.dq_swapped(dict(mode=2, args=tuple(args)))["args"][14] is q
    assert li.dq_swapped(dict(mode=0, args=tuple(args))) is None


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton (its CPU interpreter)")
def test_launch_inputs_runs_in_the_interpreter():
    """The smoke run of launch_inputs.py (a tiny dynamic c4 SiT, eager, Triton's interpreter): one record per router
    backward launch, no host-side copies of its inputs, h recomputed only where the router has few sources, and
    dq written over q only by the routers that recompute q, and only with DARTOOL_DQ_OVER_Q=1."""
    from dartool.kernels import dispatch

    root = Path(__file__).resolve().parents[1]
    over = {}
    for flag in ("0", "1"):
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "inputs.json"
            env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(root), DARTOOL_DQ_OVER_Q=flag)
            p = subprocess.run([sys.executable, "benchmarks/launch_inputs.py", "--size", "S", "--batch", "2",
                                "--depth", "2", "--hidden", "64", "--input-size", "8", "--device", "cpu",
                                "--modes", "eager", "--json", str(out)],
                               cwd=root, env=env, capture_output=True, text=True, timeout=900)
            assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
            recs = json.loads(out.read_text())["eager"]
        assert len(recs) == 5 and all(r["copies"] == 0 for r in recs)      # 4 sublayer routers + the head's
        assert all(r["recompute_h"] == (r["h"] == "-") for r in recs)
        over[flag] = sum(r["dq_over_q"] for r in recs)
    # the routers that recompute q are the first ones below D = 1024 (the others keep q: dq into a fresh buffer)
    assert over == {"0": 0, "1": 5 - dispatch.save_query_count(5, 64)}, over
