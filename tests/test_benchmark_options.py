"""The pure parts of the benchmark scripts' options: compile_options.py's variant specs, step_host.py's count of
the Triton kernels' compiled variants."""
import importlib.util

import pytest

from tests.benchmark_scripts import load_benchmark


def test_compile_options_parses_variants_and_rejects_bad_ones():
    co = load_benchmark("compile_options")
    assert co.parse_variant("dynamic:4") == ("dynamic", 4, {}, None, "full", True, None)
    assert co.parse_variant("static:8:accmin=10,group=2") == ("static", 8, {}, 2, "full", True, 10)
    assert co.parse_variant("static:1:accum=0,realize_acc_reads_threshold=2") == (
        "static", 1, {"realize_acc_reads_threshold": 2}, None, "full", False, None)
    assert co.parse_variant("static:4:blocks=1")[4] == "blocks"
    for bad, why in (("static", "QUERY:CHUNK"), ("static:x", "QUERY:CHUNK"), ("static:4:foo", "KEY=VALUE"),
                     ("static:4:accmin=0", "accmin"), ("static:4:regions=1,blocks=1", "not both")):
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
