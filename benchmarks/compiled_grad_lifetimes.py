#!/usr/bin/env python3
"""How many source gradients of the DAR routers the compiled backward keeps alive at once (no GPU needed).

Under torch.compile each fused router's backward (a custom op) returns one gradient per source, and Inductor sums
a source's gradients from all its routers. Eager routers add them in-kernel into one buffer per source. This
compiles a small DAR SiT with Inductor on the CPU (the Triton kernels in the interpreter), reads the generated
backward and follows every router-gradient buffer from the op that returns it to its ``del`` (through Inductor's
buffer reuse), and prints the most alive at once against the number of sources (what in-order sums would keep).

    TRITON_INTERPRET=1 PYTHONPATH=$PWD python3 benchmarks/compiled_grad_lifetimes.py --chunk 1 --depth 4
    # with Inductor options, e.g. --option realize_acc_reads_threshold=1

Session 14 (CPU, torch 2.13): c1 depth 4 (9 sources) kept 32 alive; one fused kernel summed source 1's eight
gradients after the last router's backward. See benchmarks/KERNEL_NOTES.md, session 14.

Session 16: the routers sum shared sources' gradients in the graph (``dartool.kernels.compiled_slots``, in graphs
with a source read by >= 20 router ops and >= 200 gradients waiting; ``--min-readers 1 --min-pending 1`` for these
small models): c1 depth 4 keeps 9 alive
(24 with ``DARTOOL_COMPILED_ACCUM=0``). The tool also lists any read of a buffer the ``*_into`` ops wrote by a
kernel other than the dartool ops, and exits 1 if there is one (Inductor can schedule such reads before the writes).
"""
import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_OP = re.compile(r"\s*(buf\d+) = torch\.ops\.dartool\.\w*bwd\w*\.default\(")
_GRAD = re.compile(r"\s*(buf\d+) = (buf\d+)\[0\]\[\d+\]")           # the op's first output: the source gradients
_INTO = re.compile(r"\[([^\]]*)\], \[([\d, ]*)\]\)\s*$")                 # the ops' gradient buffers and flags (session 16)
_RENAME = re.compile(r"\s*(buf\d+) = (?:reinterpret_tensor\()?(buf\d+)\b.*del (buf\d+)")


def live_gradients(code: str) -> dict:
    """From an Inductor wrapper's ``call`` source: router-gradient buffers in all, the most alive at once, and
    ``unsafe_reads``: lines other than dartool ops that read a buffer the ``*_into`` ops wrote (Inductor can
    schedule such a read before the writes, session 16: only ``dartool::grad_out`` and the ops may read them)."""
    ops, alive, peak, n = set(), set(), 0, 0
    written, unsafe = set(), []
    for line in code.splitlines():
        if "torch.ops.dartool." in line:
            pass                                         # grad_out's copy or the next op: ordered reads
        elif written and not re.match(r"\s*del buf\d+\s*$", line) and not _RENAME.match(line):
            hit = written & set(re.findall(r"\bbuf\d+\b", line))
            if hit:
                unsafe.append(line.strip()[:160])
        m = _OP.match(line)
        if m:
            ops.add(m.group(1))
            into = _INTO.search(line)
            if into:                 # in-graph accumulation: the buffers the op writes (flag 0) or adds to (flag 1)
                for buf, flag in zip(re.findall(r"buf\d+", into.group(1)), into.group(2).split(",")):
                    if flag.strip() == "0":
                        n += 1
                    alive.add(buf)
                    written.add(buf)
                peak = max(peak, len(alive))
            continue
        m = _GRAD.match(line)
        if m and m.group(2) in ops:
            alive.add(m.group(1))
            n += 1
        m = _RENAME.match(line)
        if m and m.group(3) in written:                  # its memory reused after its last read
            written.discard(m.group(3))
        if m and m.group(2) == m.group(3) and m.group(3) in alive:     # bufA = bufB; del bufB  # reuse
            alive.discard(m.group(3))
            alive.add(m.group(1))
            continue
        for d in re.findall(r"del (buf\d+)", line):
            alive.discard(d)
            written.discard(d)
        peak = max(peak, len(alive))
    return dict(gradients=n, most_alive=peak, unsafe_reads=unsafe)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunk", type=int, default=1)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--query", default="static")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="an Inductor option (int)")
    ap.add_argument("--min-readers", type=int, default=None,
                    help="compiled_slots.MIN_READERS for this run (default: the module's; 1: every shared source)")
    ap.add_argument("--min-pending", type=int, default=None,
                    help="compiled_slots.MIN_PENDING for this run (default: the module's; 1: any)")
    ap.add_argument("--dump", default=None, metavar="PATH", help="write the compiled backward(s) here")
    ap.add_argument("--mode", default="full", help="dartool.models.compiling mode: full or regions (the most alive "
                                                  "in any one compiled backward)")
    a = ap.parse_args(argv)
    import os

    import torch

    if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
        print("set TRITON_INTERPRET=1 (the fused kernels run in Triton's interpreter on the CPU)", file=sys.stderr)
        return 2
    from torch._inductor import graph as _graph

    from dartool.diffusion import diffusion_loss
    from dartool.kernels import dispatch
    from dartool.kernels.check import _small_model
    from dartool.models import compiling

    opts = {k: int(v) for k, _, v in (o.partition("=") for o in a.option)}
    codes: list[str] = []
    orig = _graph.GraphLowering.compile_to_module

    def capture(self, *args, **kw):
        mod = orig(self, *args, **kw)
        codes.append(Path(mod.__file__).read_text())
        return mod

    _graph.GraphLowering.compile_to_module = capture
    torch._inductor.config.fx_graph_cache = False          # a cached graph is loaded, not generated: nothing to read
    torch._functorch.config.enable_autograd_cache = False
    try:
        device = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"
        model, (x, y, s, _) = _small_model(a.query, a.chunk, a.depth, 32, 4, 4, 2, device,
                                           torch.Generator().manual_seed(0))
        torch._dynamo.reset()
        from dartool.kernels import compiled_slots

        if a.min_readers is not None:
            compiled_slots.set_min_readers(a.min_readers)
        if a.min_pending is not None:
            compiled_slots.set_min_pending(a.min_pending)
        compiling.OVERRIDE = opts
        f = compiling.compile_model(model, a.mode)
        with dispatch.fused(True, allow_cpu=device == "cpu"):
            loss = diffusion_loss(f, x, y, s)
        loss.backward()
    finally:
        _graph.GraphLowering.compile_to_module = orig
        compiling.OVERRIDE = None
    backward = [c for c in codes if "bwd" in c and "torch.ops.dartool" in c]
    if not backward:
        print("no compiled backward with router ops found (fused path not taken?)", file=sys.stderr)
        return 1
    if a.dump:
        Path(a.dump).write_text("\n\n# ----\n\n".join(backward))
    per = [live_gradients(c[c.index("def call("):]) for c in backward]
    r = dict(gradients=sum(p["gradients"] for p in per), most_alive=max(p["most_alive"] for p in per),
             unsafe_reads=[u for p in per for u in p["unsafe_reads"]])
    sources = 2 * a.depth + 1
    print(f"DAR {a.query} c{a.chunk}, depth {a.depth} ({sources} sources), mode {a.mode}, options "
          f"{opts or 'default'}: {r['gradients']} router source-gradients in {len(per)} compiled backward(s), at "
          f"most {r['most_alive']} alive at once in one (in-order sums: about {sources})")
    if r["unsafe_reads"]:
        print(f"{len(r['unsafe_reads'])} read(s) of buffers the *_into ops wrote by other code (Inductor may run "
              "them before the writes):", *r["unsafe_reads"][:5], sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
