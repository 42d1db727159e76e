#!/usr/bin/env python3
"""The host's work of a DAR training step without a GPU: the fused routers' Python (preparation, offset tables,
autograd Functions, the dispatcher) timed on the CPU in forward + backward, with every Triton kernel launch made a
no-op (no optimizer step: its host work does not depend on the routing).

Session 17 found SiT-XL/2 DAR c4 bound by the host at 32 images per GPU on an H100 (the step's host work
150-220 ms against the residual's 60-80 ms; ``benchmarks/step_host.py``). That host work is mostly Python, so it
can be cut and measured here, at the real model's depth (the number of routers and blocks: what the host work
scales with) but at hidden size 128, 4 tokens and batch 1, so that the CPU's own arithmetic (and the optimizer's:
at full width AdamW alone takes seconds here) is small. Triton runs in its interpreter (``TRITON_INTERPRET=1``, set
here before Triton is imported) and its kernels' launch returns at once: outputs are uninitialised, which a timing
does not mind; Triton's real launcher (about a tenth of the host work on the GPU host) is not in these numbers.
The CPU allocator hands out new addresses from step to step where CUDA's caching allocator repeats them, so the
offset tables miss their cache more often here (about 120 of 231 a step at XL depth: a few ms).

    PYTHONPATH=$PWD python3 benchmarks/host_cost.py --size XL --query static --query dynamic
    PYTHONPATH=$PWD python3 benchmarks/host_cost.py --size XL --query static --cprofile /tmp/host.txt

Compare runs on one machine only (this host is not the GPU host: ratios carry over better than milliseconds).
"""
import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _no_launch() -> None:
    """Every interpreted Triton kernel returns at once (the fused path's Python still runs in full)."""
    from triton.runtime import interpreter

    interpreter.InterpretedFunction.run = lambda self, *args, grid=None, warmup=False, **kwargs: None


def step_ms(size: str, routing: str, query: str, chunk: int, steps: int, profile_to: "str | None" = None) -> float:
    import torch

    from dartool.kernels import dispatch
    from dartool.models import SiT, model_config

    cfg = dataclasses.replace(model_config(size, 2, routing=routing, query=query, chunk_size=chunk),
                              input_size=4, hidden_size=128, num_heads=2)    # the model's depth; 4 tokens, narrow
    torch.manual_seed(0)
    model = SiT(cfg)
    from dartool.diffusion import diffusion_loss

    x, y = torch.randn(1, cfg.in_channels, 4, 4), torch.zeros(1, dtype=torch.long)
    s, eps = torch.rand(1), torch.randn(1, cfg.in_channels, 4, 4)

    def step(i: int) -> None:      # forward + backward; no optimizer (its host work is the residual's, on the GPU)
        diffusion_loss(model, x, y, s, eps=eps).backward()
        model.zero_grad(set_to_none=True)

    times = []
    with dispatch.fused(True, allow_cpu=True):
        for i in range(3):
            step(i)
        for i in range(steps):
            t0 = time.perf_counter()
            step(i)
            times.append(1e3 * (time.perf_counter() - t0))
        if profile_to:
            import cProfile
            import io
            import pstats

            pr = cProfile.Profile()
            pr.enable()
            for i in range(3):
                step(i)
            pr.disable()
            buf = io.StringIO()
            st = pstats.Stats(pr, stream=buf)
            st.sort_stats("tottime").print_stats(40)
            st.sort_stats("cumtime").print_stats(40)
            Path(profile_to).write_text(buf.getvalue())
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="XL")
    ap.add_argument("--query", action="append", default=None, help="DAR query types (default: static)")
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--cprofile", default=None, help="write the DAR model's cProfile (3 steps) here")
    a = ap.parse_args(argv)
    import torch

    from dartool.kernels import dispatch

    if not dispatch.triton_available():
        print("host_cost.py needs Triton (pip install triton; it runs in its interpreter here)", file=sys.stderr)
        return 2
    _no_launch()
    torch.set_num_threads(1)
    base = step_ms(a.size, "residual", "static", a.chunk, a.steps)
    print(f"SiT-{a.size}/2 depth, width 128, 4 tokens, batch 1, CPU, kernels no-ops: residual {base:.1f} ms/step",
          flush=True)
    for q in a.query or ["static"]:
        ms = step_ms(a.size, "dar", q, a.chunk, a.steps, a.cprofile)
        print(f"  DAR {q} c{a.chunk}: {ms:.1f} ms/step, {ms - base:+.1f} ms over the residual ({ms / base:.2f}x)",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
