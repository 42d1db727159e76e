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
