#!/usr/bin/env python3
"""What the probe costs: one probe step against a plain forward + backward on the same batches, and (``--full``)
the wall time of a complete probe run, store writes included.

    PYTHONPATH=$PWD python3 benchmarks/probe_overhead.py --device cuda --size XL --batch 64 --samples 1024 \\
        --timesteps 32 --full --out benchmarks/results

Measured per step (one batch at one noise level, averaged over a sweep of noise levels, median of --repeats):

* ``plain``: forward + loss + ``autograd.grad`` to the input embedding with the weights frozen: the cheapest
  pass that has every hidden-state gradient the probe reads. The capture overhead is measured against this.
* ``train``: forward + ``loss.backward()`` with weight gradients (a training step without the optimizer), for
  scale.
* ``probe``: the probe's step (taps, one autograd.grad to all router inputs, every reduction on the device, the
  one device->host copy per micro-batch), exactly as ``dartool probe`` runs it.

The model has randomly initialised weights (its zero-initialised adaLN / head weights woken with N(0, 0.02)), so
the numbers measure cost, not a trained model. Writes ``probe_overhead-<device>-<date>.json`` and ``.md`` under
--out and prints a short table last.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dartool.diffusion import noised  # noqa: E402
from dartool.models import SiT, model_config, tapped  # noqa: E402
from dartool.probe import (  # noqa: E402
    PRECISIONS, ProbeConfig, StepContext, _to_host, capturing, device_name, frozen, probe_step, resolve_device,
    run_probe, sample_noise,
)


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--size", default="S", help="model size S, B, L or XL (SiT table)")
    p.add_argument("--patch", type=int, default=2)
    p.add_argument("--depth", type=int, default=None, help="override the size's depth (smaller CPU runs)")
    p.add_argument("--input-size", type=int, default=32, help="input size (32 = 256 px latents)")
    p.add_argument("--in-channels", type=int, default=4)
    p.add_argument("--routing", default="residual", choices=["residual", "dar"])
    p.add_argument("--chunk-size", type=int, default=4, help="DAR chunk size")
    p.add_argument("--batch", type=int, default=64, help="samples per step")
    p.add_argument("--samples", type=int, default=1024, help="samples of the --full probe")
    p.add_argument("--timesteps", type=int, default=32, help="noise levels of the --full probe")
    p.add_argument("--sweep-levels", type=int, default=8, help="noise levels per timed sweep (overhead)")
    p.add_argument("--precision", default="auto", help="auto (bf16 on CUDA, float32 on CPU), float32 or bf16")
    p.add_argument("--repeats", type=int, default=3, help="timed sweeps per measurement (median)")
    p.add_argument("--warmup", type=int, default=1, help="untimed sweeps first")
    p.add_argument("--full", action="store_true", help="also time a complete probe run (run_probe, writes included)")
    p.add_argument("--full-repeats", type=int, default=1, help="complete runs to time (the fastest is reported)")
    p.add_argument("--note", default=None, help="a remark stored with the result (e.g. the machine's load)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for the JSON and Markdown")
    return p.parse_args(argv)


# --------------------------------------------------------------------------------------------------
# setup
# --------------------------------------------------------------------------------------------------


def build_model(a: argparse.Namespace, device: torch.device) -> SiT:
    cfg = model_config(a.size, a.patch, input_size=a.input_size, in_channels=a.in_channels, num_classes=1000,
                       routing=a.routing, chunk_size=a.chunk_size)
    if a.depth:
        cfg = cfg.replace(depth=a.depth)
    torch.manual_seed(0)
    model = SiT(cfg)
    with torch.no_grad():  # wake the adaLN-zero layers so no sublayer output is identically zero
        for p in model.parameters():
            if p.dim() and not p.abs().sum():
                p.normal_(0.0, 0.02)
    return model.to(device).eval()


def make_batch(model: SiT, n: int, device: torch.device):
    cfg = model.config
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g).to(device)
    y = torch.randint(0, cfg.num_classes, (n,), generator=g).to(device)
    eps = sample_noise(0, range(n), x.shape[1:]).to(device)
    return x, y, eps


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str):
    if PRECISIONS[precision] == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


# --------------------------------------------------------------------------------------------------
# the three steps
# --------------------------------------------------------------------------------------------------


def plain_sweep(model, x, y, eps, levels, precision) -> None:
    """forward + loss + autograd.grad to the embedding, weights frozen, no taps but the leaf."""
    leaf = {}

    def make_leaf(name, t):
        leaf["v0"] = t.detach().requires_grad_(True)
        return leaf["v0"]

    losses = []
    with frozen(model), tapped(model, {"hook_embed": make_leaf}):
        for s in levels:
            level = torch.full((x.shape[0],), float(s), dtype=torch.float64, device=x.device)
            xt, t, target = noised(x, eps, level, model.config.time_convention)
            with torch.enable_grad():
                with autocast(x.device, precision):
                    out = model(xt, t, y)
                loss = (out[:, : x.shape[1]].float() - target.float()).pow(2).flatten(1).mean(1).sum()
                (g,) = torch.autograd.grad(loss, leaf["v0"])
            losses.append(loss.detach() + 0 * g.flatten()[0])
    torch.stack(losses).cpu()  # one copy at the end, as the probe does per micro-batch


def train_sweep(model, x, y, eps, levels, precision) -> None:
    """forward + loss.backward() with weight gradients (no optimizer)."""
    losses = []
    for s in levels:
        level = torch.full((x.shape[0],), float(s), dtype=torch.float64, device=x.device)
        xt, t, target = noised(x, eps, level, model.config.time_convention)
        with autocast(x.device, precision):
            out = model(xt, t, y)
        loss = (out[:, : x.shape[1]].float() - target.float()).pow(2).mean()
        loss.backward()
        losses.append(loss.detach())
    model.zero_grad(set_to_none=True)
    torch.stack(losses).cpu()


def probe_sweep(ctx, cap, x, y, eps, levels) -> None:
    """The probe's micro-batch loop: every level, statistics kept on the device, one copy at the end."""
    out, prev = {}, None
    for i, s in enumerate(levels):
        stats, state = probe_step(ctx, cap, x, y, eps, float(s), n_pooled=min(x.shape[0], 256), prev=prev)
        out.update({(i, k): v for k, v in stats.items()})
        prev = state
    del prev
    ctx.join()
    _to_host(out)


def timed(fns: dict, device: torch.device, repeats: int, warmup: int) -> dict[str, tuple[float, float]]:
    """name -> (median seconds per call, peak memory in GiB on CUDA else None). The calls are interleaved
    (A B C A B C ...) so that drift in the machine's speed hits every variant alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    peaks: dict[str, float | None] = dict.fromkeys(fns)
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
            if device.type == "cuda":
                peaks[name] = max(torch.cuda.max_memory_allocated(device) / 2**30, peaks[name] or 0.0)
    return {k: (statistics.median(times[k]), peaks[k]) for k in fns}


def probe_sweep_attached(ctx, x, y, eps, levels) -> None:
    with capturing(ctx) as cap:
        probe_sweep(ctx, cap, x, y, eps, levels)


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    a = parse(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    precision = a.precision if a.precision != "auto" else ("bf16" if device.type == "cuda" else "float32")
    model = build_model(a, device)
    cfg = model.config
    x, y, eps = make_batch(model, a.batch, device)
    levels = np.linspace(0.0, 1.0, a.sweep_levels)
    n = len(levels)
    print(f"probe overhead: {cfg.label} on {device_name(device)}, batch {a.batch}, {precision}, {n} levels per sweep",
          flush=True)

    ctx = StepContext.build(model, device, precision)
    fns = {"plain": lambda: plain_sweep(model, x, y, eps, levels, precision),
           "train": lambda: train_sweep(model, x, y, eps, levels, precision),
           "probe": lambda: probe_sweep_attached(ctx, x, y, eps, levels)}
    results = {k: {"ms_per_step": 1e3 * sec / n, "samples_per_s": a.batch * n / sec, "peak_gib": peak}
               for k, (sec, peak) in timed(fns, device, a.repeats, a.warmup).items()}
    overhead = results["probe"]["ms_per_step"] / results["plain"]["ms_per_step"] - 1
    vs_train = results["probe"]["ms_per_step"] / results["train"]["ms_per_step"] - 1

    full = None
    if a.full:
        del x, y, eps
        if device.type == "cuda":
            torch.cuda.empty_cache()
        walls = []
        for _ in range(a.full_repeats):
            with tempfile.TemporaryDirectory() as tmp:
                conf = ProbeConfig(num_noise_levels=a.timesteps, num_samples=a.samples, batch_size=a.batch,
                                   precision=precision, device=str(device), gaussian=True,
                                   progress=sys.stderr.isatty())
                t0 = time.perf_counter()
                run_probe(model, None, conf, Path(tmp) / "probe.zarr", log=lambda m: print(m, file=sys.stderr))
                walls.append(time.perf_counter() - t0)
                size_mb = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file()) / 2**20
        wall = min(walls)
        steps = a.timesteps * -(-a.samples // a.batch)
        full = {"samples": a.samples, "timesteps": a.timesteps, "batch": a.batch, "wall_s": wall, "walls_s": walls,
                "sample_steps_per_s": a.samples * a.timesteps / wall, "store_mib": size_mb,
                "overhead_vs_plain": wall / (steps * results["plain"]["ms_per_step"] / 1e3) - 1,
                "overhead_vs_probe_steps": wall / (steps * results["probe"]["ms_per_step"] / 1e3) - 1}

    now = datetime.now(timezone.utc)
    record = {
        "benchmark": "probe_overhead", "date": now.isoformat(timespec="seconds"), "device": device_name(device),
        "device_type": device.type, "cpu": cpu_name(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
        "model": cfg.label, "params_m": round(model.num_params() / 1e6, 1), "tokens": cfg.num_tokens,
        "weights": "random init (adaLN / head woken with N(0, 0.02))", "batch": a.batch, "precision": precision,
        "levels_per_sweep": n, "repeats": a.repeats, "results": results,
        "capture_overhead_vs_plain": overhead, "probe_vs_train_fwd_bwd": vs_train, "full_probe": full,
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "note": a.note,
    }
    a.out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")
    stem = a.out / f"probe_overhead-{slug}-{now.strftime('%Y-%m-%d')}"
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    md = markdown(record)
    stem.with_suffix(".md").write_text(md)
    print(f"wrote {stem}.json and .md\n")
    print(md)
    return 0


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def markdown(r: dict) -> str:
    res = r["results"]
    lines = [
        f"# Probe overhead: {r['model']} on {r['device']} ({r['date'][:10]})",
        "",
        f"{r['params_m']} M parameters, {r['tokens']} tokens, batch {r['batch']}, {r['precision']}, "
        f"{r['levels_per_sweep']} noise levels per sweep, median of {r['repeats']}; {r['weights']}; "
        f"torch {r['torch']}, {r['torch_threads']} CPU threads ({r['cpu']}). Command: `{r['command']}`",
        "",
        "| step | ms / step | samples / s | peak GiB |",
        "|---|---:|---:|---:|",
    ]
    names = {"plain": "plain forward + backward (to the input, weights frozen)",
             "train": "forward + backward with weight gradients", "probe": "probe step (capture + reductions)"}
    for k in ("plain", "train", "probe"):
        v = res[k]
        peak = "-" if v["peak_gib"] is None else f"{v['peak_gib']:.1f}"
        lines.append(f"| {names[k]} | {v['ms_per_step']:.1f} | {v['samples_per_s']:.1f} | {peak} |")
    lines += ["", f"**Capture overhead vs the plain forward + backward: {100 * r['capture_overhead_vs_plain']:+.1f} %** "
                  f"(vs forward + backward with weight gradients: {100 * r['probe_vs_train_fwd_bwd']:+.1f} %)."]
    if r.get("note"):
        lines += ["", f"Note: {r['note']}."]
    f = r.get("full_probe")
    if f:
        lines += ["", f"Full probe ({f['timesteps']} noise levels x {f['samples']} samples, batch {f['batch']}, store "
                      f"writes included; fastest of {len(f['walls_s'])}): **{f['wall_s']:.1f} s**, {f['sample_steps_per_s']:.0f} sample-steps / s, "
                      f"store {f['store_mib']:.1f} MiB; {100 * f['overhead_vs_plain']:+.1f} % over the plain passes "
                      f"alone, {100 * f['overhead_vs_probe_steps']:+.1f} % over the timed probe steps (store, data, "
                      f"orchestration)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
