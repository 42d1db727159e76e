"""Training steps per second of residual and DAR arms, with dartool's own training step.

Each case builds the model, the AdamW optimiser (fused on CUDA), the EMA, and times
:func:`dartool.train.arms.optimizer_step` -- the exact step ``dartool train`` runs: velocity loss under bf16
autocast, backward, gradient norm, AdamW, EMA update -- on random latents (32 x 32 x 4 by default, 256 tokens
at patch 2) with random labels, noise levels and label drops.

    python benchmarks/train_speed.py --sizes B,XL --routings residual,dar --out benchmarks/results
    python benchmarks/train_speed.py --sizes XL --batch XL=128 --compile --out benchmarks/results
    python benchmarks/train_speed.py --sizes XL --batch XL=32 --compile --compile-mode cudagraphs

Prints a table and writes ``train_speed-<card>-<date>.json`` and ``.md`` under ``--out`` with the card, date,
torch / CUDA versions and every setting. On a CPU it runs too (use tiny settings: ``--sizes S --depth 2``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import platform
import re
import sys
import time
from pathlib import Path

import torch

DEFAULT_BATCH = {"S": 256, "B": 256, "L": 128, "XL": 64}


def parse_batches(text: str | None) -> dict[str, int]:
    """``256`` (every size) or ``B=256,XL=64``."""
    out = dict(DEFAULT_BATCH)
    if not text:
        return out
    if "=" not in text:
        return {k: int(text) for k in out}
    for part in text.split(","):
        k, v = part.split("=")
        out[k.strip().upper()] = int(v)
    return out


def arm_of(spec: str):
    from dartool.train.config import ArmConfig

    return ArmConfig.parse(spec)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_case(size: str, patch: int, arm_spec: str, batch: int, *, device: torch.device, precision: str,
               compile: "bool | str", steps: int, warmup: int, input_size: int, channels: int, depth: int | None,
               fused: bool) -> dict:
    from dartool.train.arms import TrainModule, make_optimizer, optimizer_step, precision_label
    from dartool.train.config import TrainConfig
    from dartool.train.ema import EMA
    from dartool.train.streams import step_seed

    arm = arm_of(arm_spec)
    mode = compile if isinstance(compile, str) else "full"       # compile: False, True (full) or a compile mode
    compile = mode if compile else False
    cfg = TrainConfig(size=size, patch=patch, depth=depth, arms=[arm], batch_size=batch, precision=precision,
                      compile=bool(compile), compile_mode=mode)
    mc = cfg.model_config(arm, input_size=input_size, in_channels=channels, num_classes=1000)
    row = dict(model=mc.label, size=size, patch=patch, arm=arm.name, batch=batch, compile=compile,
               precision=precision_label(device, precision), fused_router=None)
    try:
        from dartool import kernels

        kernels.set_fused(fused)
        row["fused_router"] = bool(fused and kernels.fused_available()) if arm.routing == "dar" else None
    except ImportError:
        pass
    torch.manual_seed(0)
    from dartool.models import SiT

    model = SiT(mc).to(device).train()
    module = TrainModule(model, compile=bool(compile), compile_mode=mode)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, cfg, device)
    ema = EMA(model, cfg.ema_decay)
    g = torch.Generator(device=device).manual_seed(step_seed(0, 0))
    x = torch.randn(batch, channels, input_size, input_size, generator=g, device=device)
    eps = torch.randn(batch, channels, input_size, input_size, generator=g, device=device)
    s = torch.rand(batch, generator=g, device=device)
    y = torch.randint(0, 1000, (batch,), generator=g, device=device)
    drop = torch.rand(batch, generator=g, device=device) < 0.1
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        t_compile = time.perf_counter()
        for k in range(warmup):
            optimizer_step(module, model, params, opt, ema, x, y, eps, s, drop, k, device=device, precision=precision)
        sync(device)
        row["warmup_s"] = round(time.perf_counter() - t_compile, 2)
        t0 = time.perf_counter()
        for k in range(steps):
            per, gnorm, _ = optimizer_step(module, model, params, opt, ema, x, y, eps, s, drop, warmup + k,
                                           device=device, precision=precision)
        sync(device)
        secs = time.perf_counter() - t0
        row.update(ms_per_step=1000 * secs / steps, steps_per_s=steps / secs, img_per_s=steps * batch / secs,
                   loss=float(per.mean()), params_M=round(model.num_params() / 1e6, 2), steps=steps, warmup=warmup)
        if device.type == "cuda":
            row["peak_mem_GiB"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    except torch.cuda.OutOfMemoryError:
        row["error"] = "out of memory"
    finally:
        del model, module, opt, ema
        if compile:
            torch._dynamo.reset()        # and CUDA graphs' trees: the next case records its own
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"# dartool train speed — {meta['card']}, {meta['date']}", "",
             f"torch {meta['torch']}, CUDA {meta['cuda']}, commit {meta['commit']}; input {meta['input_size']} x "
             f"{meta['input_size']} x {meta['channels']}; {meta['precision']}; dartool's own training step "
             f"(loss, backward, grad norm, AdamW, EMA); {meta['steps']} timed steps after {meta['warmup']} warm-up.", "",
             "| model | arm | batch | compile | fused router | ms / step | steps / s | img / s | vs residual | peak GiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    base = {(r["size"], r["patch"], r["batch"], r["compile"]): r for r in rows if r["arm"] == "residual" and "error" not in r}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['arm']} | {r['batch']} | {r['compile']} | - | {r['error']} | | | | |")
            continue
        b = base.get((r["size"], r["patch"], r["batch"], r["compile"]))
        rel = f"{r['ms_per_step'] / b['ms_per_step']:.2f}x" if b else "-"
        fr = "-" if r["fused_router"] is None else ("yes" if r["fused_router"] else "no")
        lines.append(f"| {r['model']} | {r['arm']} | {r['batch']} | {r['compile']} | {fr} | {r['ms_per_step']:.1f} | "
                     f"{r['steps_per_s']:.2f} | {r['img_per_s']:.0f} | {rel} | {r.get('peak_mem_GiB', '-')} |")
    return "\n".join(lines) + "\n"


def _precision(device: torch.device, precision: str) -> str:
    from dartool.train.arms import precision_label

    return precision_label(device, precision)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="B,XL", help="Comma-separated sizes: S, B, L, XL (default B,XL).")
    ap.add_argument("--patch", type=int, default=2)
    ap.add_argument("--batch", default=None, help="Batch for every size (256) or per size (B=256,XL=64). "
                                                  f"Default {DEFAULT_BATCH}.")
    ap.add_argument("--routings", default="residual,dar", help="Arms: residual, dar, dar:dynamic, dar:static_t, dar:c1 ...")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model.")
    ap.add_argument("--both-compile", action="store_true", help="Time every case eager and compiled.")
    ap.add_argument("--compile-mode", default="full", help="With --compile / --both-compile: full | cudagraphs | "
                    "regions | blocks (dartool.models.compiling).")
    ap.add_argument("--precision", default="auto", help="auto (bf16 autocast on CUDA) | bf16 | fp32.")
    ap.add_argument("--no-fused", action="store_true", help="Use the reference (unfused) router.")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--depth", type=int, default=None, help="Override the depth (tiny CPU smoke runs).")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=None, help="Folder for the JSON + Markdown results.")
    a = ap.parse_args(argv)

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    batches = parse_batches(a.batch)
    sizes = [s.strip().upper() for s in a.sizes.split(",") if s.strip()]
    routings = [r.strip() for r in a.routings.split(",") if r.strip()]
    compiles = [False, a.compile_mode] if a.both_compile else [a.compile_mode if a.compile else False]
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    from dartool import bench

    meta = dict(card=card, date=dt.datetime.now().strftime("%Y-%m-%d %H:%M"), torch=torch.__version__,
                cuda=torch.version.cuda, commit=bench.git_commit(), python=sys.version.split()[0], input_size=a.input_size,
                channels=a.channels, precision=_precision(device, a.precision), steps=a.steps, warmup=a.warmup, device=str(device),
                fused=not a.no_fused)
    rows = []
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for size in sizes:
        for comp in compiles:
            for spec in routings:
                row = bench_case(size, a.patch, spec, batches[size], device=device, precision=a.precision,
                                 compile=comp, steps=a.steps, warmup=a.warmup, input_size=a.input_size,
                                 channels=a.channels, depth=a.depth, fused=not a.no_fused)
                rows.append(row)
                msg = row.get("error") or f"{row['ms_per_step']:.1f} ms/step, {row['img_per_s']:.0f} img/s"
                console.print(f"{row['model']} [{row['arm']}] batch {row['batch']} compile={comp}: {msg}")
    table = Table(title=f"train speed on {card}")
    for col in ("model", "arm", "batch", "compile", "ms/step", "steps/s", "img/s", "peak GiB"):
        table.add_column(col)
    for r in rows:
        if "error" in r:
            table.add_row(r["model"], r["arm"], str(r["batch"]), str(r["compile"]), r["error"], "", "", "")
        else:
            table.add_row(r["model"], r["arm"], str(r["batch"]), str(r["compile"]), f"{r['ms_per_step']:.1f}",
                          f"{r['steps_per_s']:.2f}", f"{r['img_per_s']:.0f}", str(r.get("peak_mem_GiB", "-")))
    console.print(table)
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = f"train_speed-{re.sub(r'[^A-Za-z0-9]+', '-', card).strip('-')}-{meta['date'][:10]}"
        (out / f"{stem}.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
        (out / f"{stem}.md").write_text(markdown(meta, rows))
        console.print(f"wrote {out / stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
