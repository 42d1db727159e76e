"""benchmarks/compiled_grad_lifetimes.py: following the routers' source gradients through an Inductor wrapper's
generated ``call`` (the compile itself runs in the tool; the reading is checked here on hand-made code)."""
from tests.benchmark_scripts import load_benchmark


def _tool():
    return load_benchmark("compiled_grad_lifetimes")


CODE = """def call(args):
        buf4 = torch.ops.dartool.router_ln_bwd.default(dy, [a, b, c], q, g, h, lse, 1e-06, s, 1e-06)
        buf5 = buf4[0][0]
        buf6 = buf4[0][1]
        buf7 = buf4[0][2]
        buf8 = buf4[1]
        del buf4
        buf9 = other[0][0]
        buf25 = buf7; del buf7  # reuse
        kernel_a(buf25, buf8)
        del buf8
        buf34 = torch.ops.dartool.router_ln_bwd.default(dy2, [a, b], q2, g2, h2, lse2, 1e-06, s2, 1e-06)
        buf35 = buf34[0][0]
        buf36 = buf34[0][1]
        del buf34
        kernel_b(buf5, buf35, buf6, buf36, buf25)
        del buf35
        del buf36
        del buf25
        del buf5
        del buf6
"""


def test_live_gradients_follow_reuse_and_del():
    """Three gradients of the first router, one renamed by Inductor's reuse (still alive), two more of the second:
    five alive at once before the fused sum frees them; an unrelated [0][0] (buf9) is not a router's."""
    r = _tool().live_gradients(CODE)
    assert r == dict(gradients=5, most_alive=5, unsafe_reads=[])


def test_live_gradients_count_in_order_sums():
    code = CODE.replace("        kernel_b(buf5, buf35, buf6, buf36, buf25)\n", "").replace(
        "        buf34 =", "        del buf5\n        del buf6\n        del buf25\n        buf34 =")
    assert _tool().live_gradients(code) == dict(gradients=5, most_alive=3, unsafe_reads=[])


INTO = """def call(args):
        buf4 = empty_strided_cuda((2, 4, 32), (128, 32, 1), torch.bfloat16)
        buf5 = empty_strided_cuda((2, 4, 32), (128, 32, 1), torch.bfloat16)
        buf6 = empty_strided_cuda((2, 4, 32), (128, 32, 1), torch.bfloat16)
        buf11 = torch.ops.dartool.router_ln_bwd.default(dy, [a, b, c], q, g, h, lse, 1e-06, s, 1e-06, [buf4, buf5, buf6], [0, 0, 0])
        del buf11
        buf12 = torch.ops.dartool.router_ln_bwd.default(dy2, [a, b], q2, g2, h2, lse2, 1e-06, s2, 1e-06, [buf4, buf5], [1, 1])
        del buf12
        del buf6
        buf13 = torch.ops.dartool.router_ln_bwd.default(dy3, [a], q3, g3, h3, lse3, 1e-06, s3, 1e-06, [buf4], [1])
        del buf5
        del buf4
"""


def test_live_gradients_of_in_graph_accumulation():
    """Session 16's ops write each source's gradient into a buffer they take (flag 0) or add to it (flag 1): three
    gradients started, never more than three alive (one per source)."""
    assert _tool().live_gradients(INTO) == dict(gradients=3, most_alive=3, unsafe_reads=[])


def test_reads_of_written_buffers_by_other_kernels_are_flagged():
    """A fused kernel that reads a buffer the *_into ops wrote (before grad_out copies it out) is what Inductor
    misordered in session 16: the tool lists such reads."""
    code = INTO.replace("        del buf12\n", "        del buf12\n        cpp_fused_add_3(buf5, buf99)\n")
    r = _tool().live_gradients(code)
    assert r["unsafe_reads"] == ["cpp_fused_add_3(buf5, buf99)"]
