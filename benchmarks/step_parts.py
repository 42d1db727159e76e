#!/usr/bin/env python3
"""The bench's training step against `dartool train`'s, part by part, for a residual and a DAR model.

`dartool bench` times a plain step (PyTorch's default foreach AdamW, no gradient norm, no EMA); `dartool train`
runs :func:`dartool.train.arms.optimizer_step` (fused AdamW on CUDA, the gradient norm, an EMA). Session 19 saw
SiT-XL/2 b32 DAR static c4 at 1.076x the residual in the bench and 1.11-1.14x in `dartool train`. This script
times, per arm and on one compiled model (one compile per arm), in interleaved rounds:

* ``bench``        the bench's step (:func:`dartool.bench._train_step`'s sequence, foreach AdamW);
* ``bench+fused``  the same with fused AdamW;
* ``bench+all``    fused AdamW + the gradient norm + the EMA (``optimizer_step``'s work, the bench's loss call);
* ``train``        ``optimizer_step`` itself (TrainModule, fused AdamW, gradient norm, EMA);
* ``train+copy``   the same after copying the images from pageable host memory, as `dartool train` loaded its
                   batches until session 20 (the copy waits for the GPU's queue to drain: one host sync per step);
* ``train+pinned`` the same after copying them through pinned memory without a sync, as it does now;

each as the median of the GPU time between events around each step, and as wall time per step over a block
(host included: what a training loop gets); and, for ``train``, the GPU time between CUDA events put between its
parts: forward (+ loss), backward, gradient norm, AdamW, EMA. Steps are queued back to back as in training (no
host sync inside a timed block). x is Gaussian noise, or a dataset's first images (``--data``), or both in the
same rounds on the same model (``--x noise,images``; session 20: DAR's ratio at SiT-XL/2 b32 was 1.08 on noise and
1.12 on CIFAR-10 images), with two controls made from the images (``shuffled``, ``matched``: :func:`x_controls`) to
tell which property of the images changes a step's time. ``--profile N`` adds GPU time per kernel of the ``train``
step per kind of x; ``--smi-log`` joins an nvidia-smi log (clock, power) to the timed blocks, so that a step's time
can be split into cycles and clock (a card at its power cap clocks down by how much power the math draws).

    PYTHONPATH=$PWD python3 benchmarks/step_parts.py --size XL --batch 32 --out benchmarks/results
    PYTHONPATH=$PWD python3 benchmarks/step_parts.py --size XL --batch 32 --data cifar.npz --x noise,images \
        --variants bench,train --out benchmarks/results
    nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw --format=csv,noheader,nounits -lms 100 > smi.csv &
    PYTHONPATH=$PWD python3 benchmarks/step_parts.py --size XL --batch 32 --data cifar.npz \
        --x noise,images,shuffled,matched --variants train --profile 3 --smi-log smi.csv --out benchmarks/results
    PYTHONPATH=$PWD python3 benchmarks/step_parts.py --size S --depth 2 --batch 4 --rounds 1 --steps 2   # CPU

Writes ``step_parts-<card>-<date>-<size><batch>-c<channels>[-images].json`` and ``.md`` (card, date, commit,
every setting) under ``--out``, after every arm.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

VARIANTS = ("bench", "bench+fused", "bench+all", "train", "train+copy", "train+pinned")
PARTS = ("forward", "backward", "grad norm", "adamw", "ema")


def _events(cuda: bool):
    if cuda:
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e
    return time.perf_counter()


def _elapsed_ms(a, b, cuda: bool) -> float:
    return a.elapsed_time(b) if cuda else (b - a) * 1e3


X_KINDS = ("noise", "images", "shuffled", "matched")
X_NAMES = {"noise": "Gaussian noise (noise)", "images": "images of {data} (images)",
           "shuffled": "those images with their pixels shuffled (shuffled)",
           "matched": "Gaussian noise of each image's channel means and deviations (matched)"}


def x_controls(images: torch.Tensor, g: torch.Generator) -> dict:
    """The images and two controls that separate what about them could change a step's time:

    * ``shuffled``: each image's pixel positions permuted (the same permutation for its channels): the images'
      values and colours, no spatial structure;
    * ``matched``: Gaussian noise with each image's per-channel mean and standard deviation: the images' scale,
      Gaussian values, no structure.

    ``noise`` (standard Gaussian) against ``matched`` is the scale, ``matched`` against ``shuffled`` the value
    distribution, ``shuffled`` against ``images`` the spatial structure."""
    b, c, h, w = images.shape
    flat = images.reshape(b, c, h * w)
    perm = torch.stack([torch.randperm(h * w, generator=g, device=images.device) for _ in range(b)])  # [B, HW]
    shuffled = flat.gather(2, perm[:, None, :].expand(b, c, h * w)).reshape(b, c, h, w)              # [B, C, H, W]
    mean, std = flat.mean(2, keepdim=True), flat.std(2, keepdim=True)                                # [B, C, 1]
    matched = (mean + std * torch.randn(flat.shape, generator=g, device=images.device)).reshape(b, c, h, w)
    return {"images": images, "shuffled": shuffled, "matched": matched}


def arm_case(size: str, arm_spec: str, batch: int, *, device: torch.device, compile_mode: str | None,
             rounds: int, steps: int, channels: int, classes: int, depth: int | None,
             learn_sigma: bool = False, images: torch.Tensor | None = None, x_kinds: tuple = ("noise",),
             variants: tuple = VARIANTS, profile_steps: int = 0) -> dict:
    """Every variant's median step (ms, median over rounds of the median of ``steps`` queued steps) and the
    ``train`` step's parts, for one arm. ``x_kinds``: any of :data:`X_KINDS` (``noise``: Gaussian x; ``images``:
    ``images`` as x; ``shuffled`` / ``matched``: the controls of :func:`x_controls`), timed in the same rounds on the
    same compiled model; with several, each variant is named ``VARIANT@KIND`` and the parts are timed per kind.
    ``profile_steps`` > 0: afterwards, the ``train`` step's kernels under the profiler, per kind."""
    from dartool.diffusion import diffusion_loss
    from dartool.models import SiT
    from dartool.train.arms import TrainModule, autocast_for, make_optimizer, optimizer_step
    from dartool.train.config import ArmConfig, TrainConfig
    from dartool.train.ema import EMA

    cuda = device.type == "cuda"
    arm = ArmConfig.parse(arm_spec)
    cfg = TrainConfig(size=size, patch=2, depth=depth, arms=[arm], batch_size=batch, compile=compile_mode is not None,
                      compile_mode=compile_mode or "full")
    mc = cfg.model_config(arm, input_size=32, in_channels=channels, num_classes=classes).replace(
        learn_sigma=learn_sigma)
    torch.manual_seed(0)
    model = SiT(mc).to(device).train()
    module = TrainModule(model, compile=compile_mode is not None, compile_mode=compile_mode or "full")
    fwd = module._net                     # the one compiled callable both steps call
    graphs = module.cudagraphs
    params = [p for p in model.parameters() if p.requires_grad]
    opt_foreach = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)      # the bench's
    opt_fused = make_optimizer(params, cfg, device)                          # dartool train's
    ema = EMA(model, cfg.ema_decay)
    g = torch.Generator(device=device).manual_seed(0)
    xs = {"noise": torch.randn(batch, channels, 32, 32, generator=g, device=device)}
    if images is not None:                # real images in [-1, 1], and two controls made from them
        xs.update(x_controls(images[:batch].to(device), g))
    cur = {"kind": x_kinds[0]}            # which x the steps below read
    host_xs = {k: v.cpu() for k, v in xs.items()}      # pageable
    eps = torch.randn(batch, channels, 32, 32, generator=g, device=device)
    s = torch.rand(batch, generator=g, device=device)
    y = torch.randint(0, classes, (batch,), generator=g, device=device)
    drop = torch.rand(batch, generator=g, device=device) < 0.1
    prec = "auto"

    def bench_step(opt, extras: bool, i: int) -> None:
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with autocast_for(device, prec):
            loss = diffusion_loss(fwd, xs[cur["kind"]], y, s, eps=eps, drop_labels=drop)
        loss.backward()
        if extras:
            torch.nn.utils.clip_grad_norm_(params, float("inf"))
        opt.step()
        opt.zero_grad(set_to_none=True)
        if extras:
            ema.update(model, i)

    def train_step(i: int, load: str | None = None) -> None:
        xb, host_x = xs[cur["kind"]], host_xs[cur["kind"]]
        if load == "copy":
            xb = host_x.to(device)
        elif load == "pinned":
            xb = host_x.pin_memory().to(device, non_blocking=True) if cuda else host_x.to(device)
        optimizer_step(module, model, params, opt_fused, ema, xb, y, eps, s, drop, i, device=device, precision=prec)

    def parted_step(i: int, marks: list) -> None:
        """optimizer_step's sequence with an event between its parts."""
        marks.append(_events(cuda))
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with autocast_for(device, prec):
            per, aux = module(xs[cur["kind"]], y, eps, s, drop)
        loss = per.mean()
        opt_fused.zero_grad(set_to_none=True)
        marks.append(_events(cuda))
        loss.backward()
        marks.append(_events(cuda))
        torch.nn.utils.clip_grad_norm_(params, float("inf"))
        marks.append(_events(cuda))
        opt_fused.step()
        if graphs:
            opt_fused.zero_grad(set_to_none=True)
        marks.append(_events(cuda))
        ema.update(model, i)
        marks.append(_events(cuda))

    fns = {"bench": lambda i: bench_step(opt_foreach, False, i), "bench+fused": lambda i: bench_step(opt_fused, False, i),
           "bench+all": lambda i: bench_step(opt_fused, True, i), "train": train_step,
           "train+copy": lambda i: train_step(i, "copy"), "train+pinned": lambda i: train_step(i, "pinned")}

    def block(fn) -> tuple[float, float, float]:
        """(median ms between the events around each step, wall ms per step over the block, unix time at the start
        of the timed steps: a clock log joins from there, not from the untimed step before, which may wait on the
        host, e.g. when Dynamo switches to the graph of another input layout)."""
        fn(0)                             # one untimed step after whatever ran before
        if cuda:
            torch.cuda.synchronize(device)
        t_timed = time.time()
        t0 = time.perf_counter()
        ev = []
        for i in range(steps):
            a = _events(cuda)
            fn(i + 1)
            ev.append((a, _events(cuda)))
        if cuda:
            torch.cuda.synchronize(device)
        wall = (time.perf_counter() - t0) * 1e3 / steps
        ms = sorted(_elapsed_ms(a, b, cuda) for a, b in ev)
        return ms[len(ms) // 2], wall, t_timed

    row: dict = dict(arm=arm.name, model=mc.label, batch=batch, params_m=round(model.num_params() / 1e6, 2),
                     n_params=len(params))
    t0 = time.perf_counter()
    for kind in x_kinds:                   # compile + record every path, for every kind of x: an x of another
        cur["kind"] = kind                 # memory layout (images) is another graph, and compiling it inside the
        for k in range(3):                 # first timed block left that block ~30 s of idle card (session 25)
            for fn in fns.values():
                fn(k)
        parted_step(3, [])
    cur["kind"] = x_kinds[0]
    if cuda:
        torch.cuda.synchronize(device)
    row["warmup_s"] = round(time.perf_counter() - t0, 1)
    names = [(v, k, v if len(x_kinds) == 1 else f"{v}@{k}") for k in x_kinds for v in variants]
    per_variant: dict[str, list[float]] = {n: [] for _, _, n in names}
    wall_variant: dict[str, list[float]] = {n: [] for _, _, n in names}
    per_part: dict[str, dict[str, list[float]]] = {k: {p: [] for p in PARTS} for k in x_kinds}
    row["blocks"] = []                     # (variant, unix start, unix end): to join with a clock / power log
    for _ in range(rounds):
        for v, k, n in names:
            cur["kind"] = k
            ev_ms, wall_ms, t_timed = block(fns[v])
            row["blocks"].append((n, round(t_timed, 3), round(time.time(), 3)))
            per_variant[n].append(ev_ms)
            wall_variant[n].append(wall_ms)
        for kind in x_kinds:
            cur["kind"] = kind
            marks_all = []
            for i in range(steps):
                m: list = []
                parted_step(i, m)
                marks_all.append(m)
            if cuda:
                torch.cuda.synchronize(device)
            for p, k in zip(PARTS, range(len(PARTS))):
                ts = sorted(_elapsed_ms(m[k], m[k + 1], cuda) for m in marks_all)
                per_part[kind][p].append(ts[len(ts) // 2])
        cur["kind"] = x_kinds[0]
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    row["step_ms"] = {v: round(med(xs), 3) for v, xs in per_variant.items()}
    row["step_ms_rounds"] = {v: [round(t, 3) for t in xs] for v, xs in per_variant.items()}
    row["wall_ms"] = {v: round(med(xs), 3) for v, xs in wall_variant.items()}
    parts = {k: {p: round(med(xs), 3) for p, xs in pp.items()} for k, pp in per_part.items()}
    row["train_parts_ms"] = parts[x_kinds[0]]
    row["train_parts_ms_by_x"] = parts
    if profile_steps:
        row["kernels_by_x"] = {}
        for kind in x_kinds:
            cur["kind"] = kind
            try:                           # a profiler failure must not lose the timings above
                row["kernels_by_x"][kind] = profile_kernels(fns["train"], profile_steps, cuda)
            except Exception as e:  # noqa: BLE001
                row["profile_error"] = f"{type(e).__name__}: {e}"
                break
    if cuda:
        row["peak_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
    del model, module, fwd, opt_foreach, opt_fused, ema, fns, xs, host_xs, cur
    if compile_mode is not None:
        torch._dynamo.reset()
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return row


def profile_kernels(fn, steps: int, cuda: bool, top: int = 60) -> list[dict]:
    """GPU time per kernel over ``steps`` calls of ``fn`` under the profiler: [{name, ms (per step), calls (per
    step)}], the ``top`` longest first (CPU: operators' self time)."""
    from torch.profiler import ProfilerActivity, profile

    fn(0)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for i in range(steps):
            fn(i + 1)
        if cuda:
            torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        t = (e.self_device_time_total if cuda else e.self_cpu_time_total) / 1e3 / steps
        if t > 0 and (not cuda or e.device_type == torch.autograd.DeviceType.CUDA):
            rows.append(dict(name=e.key[:160], ms=round(t, 4), calls=round(e.count / steps, 2)))
    return sorted(rows, key=lambda r: -r["ms"])[:top]


def kernel_differences(rows: list[dict], n: int = 12) -> list[str]:
    """Markdown: per arm, the kernels whose time per step differs most between the first kind of x and the others."""
    out = []
    for r in rows:
        by = r.get("kernels_by_x")
        if "profile_error" in r:
            out += [f"{r['arm']}: the profile failed ({r['profile_error']}).", ""]
        if not by or len(by) < 2:
            continue
        kinds = list(by)
        tab = {k: {e["name"]: e["ms"] for e in v} for k, v in by.items()}
        names = set().union(*tab.values())
        diff = lambda nm: max(abs(tab[k].get(nm, 0) - tab[kinds[0]].get(nm, 0)) for k in kinds[1:])  # noqa: E731
        out += [f"{r['arm']}: kernels whose GPU ms per step (CPU runs: operators' self ms) differ most across x "
                "(profiler; the last row sums the longest kernels the run kept):", "",
                "| kernel | " + " | ".join(kinds) + " |",
                "|---|" + "---:|" * len(kinds)]
        for nm in sorted(names, key=diff, reverse=True)[:n]:
            out.append(f"| `{nm[:70]}` | " + " | ".join(f"{tab[k].get(nm, 0):.3f}" for k in kinds) + " |")
        out += ["| total | " + " | ".join(f"{sum(tab[k].values()):.2f}" for k in kinds) + " |", ""]
    return out


def join_clock(rows: list[dict], smi_log: Path) -> None:
    """Mean SM clock (MHz) and power (W) per variant over its blocks, from an nvidia-smi log written as
    ``--query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,... --format=csv,noheader,nounits -lms 100`` (its
    timestamps are the host's local time); adds ``clock_mhz``, ``power_w`` and ``mcycles`` (step ms x MHz / 1e3)."""
    samples = []
    for line in smi_log.read_text().splitlines():
        f = [x.strip() for x in line.split(",")]
        try:
            t = dt.datetime.strptime(f[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
            samples.append((t, float(f[1]), float(f[3])))
        except (ValueError, IndexError):
            continue
    for r in rows:
        acc: dict = {}
        for name, a, b in r["blocks"]:
            for t, mhz, w in samples:
                if a <= t <= b:
                    acc.setdefault(name, []).append((mhz, w))
        r["clock_mhz"] = {n: round(sum(m for m, _ in v) / len(v)) for n, v in acc.items()}
        r["power_w"] = {n: round(sum(w for _, w in v) / len(v)) for n, v in acc.items()}
        # samples drawing under half the arm's busy power (the 90th percentile of its samples: idle ones may be
        # most of them) are an idle card, not the timed steps (session 21's images blocks, which compiled their
        # graph inside the block: 90 % of their samples); their share per variant, to flag
        ws = sorted(w for v in acc.values() for _, w in v)
        half = ws[int(0.9 * (len(ws) - 1))] / 2 if ws else 0.0
        r["idle_share"] = {n: round(sum(w < half for _, w in v) / len(v), 3) for n, v in acc.items()}
        r["mcycles"] = {n: round(r["step_ms"][n] * r["clock_mhz"][n] / 1e3, 2) for n in acc if n in r["step_ms"]}


def markdown(meta: dict, rows: list[dict]) -> str:
    base = rows[0]
    cols = list(base["step_ms"])
    out = [f"# Training step, bench vs `dartool train`, part by part ({meta['card']}, {meta['date']})", "",
           f"commit `{meta['commit']}`, torch {meta['torch']}, SiT-{meta['size']}/2 batch {meta['batch']}, compile "
           f"mode {meta['compile_mode']}, {meta['channels']}-channel 32x32 inputs, {meta['classes']} classes, "
           f"{'with' if meta['learn_sigma'] else 'no'} variance output, x: "
           + ", ".join(X_NAMES[k].format(data=meta["data"]) for k in meta["x"])
           + f" (`VARIANT@KIND` where both), {meta['rounds']} interleaved rounds of {meta['steps']} queued steps "
           "(median of medians)", ""]
    for key, what in (("step_ms", "ms per step between events around each step (ratio to the first arm):"),
                      ("wall_ms", "wall ms per step over a block (host included):")):
        out += [what, "", "| arm | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        for r in rows:
            cells = [f"{r[key][v]:.2f}" + ("" if r is base else f" ({r[key][v] / base[key][v]:.3f}x)") for v in cols]
            out.append(f"| {r['arm']} | " + " | ".join(cells) + " |")
        out.append("")
    if any("clock_mhz" in r for r in rows):
        out += ["Mean SM clock (MHz) / power (W) over each variant's blocks, and millions of cycles per step "
                "(step ms x MHz):", "", "| arm | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        for r in rows:
            cells = [f"{r['clock_mhz'].get(v, 0)} / {r['power_w'].get(v, 0)} / {r['mcycles'].get(v, 0):.1f}"
                     for v in cols]
            out.append(f"| {r['arm']} | " + " | ".join(cells) + " |")
        out.append("")
        idle = [f"{r['arm']} {v} ({share:.0%})" for r in rows for v, share in r.get("idle_share", {}).items()
                if share > 0.1]
        if idle:
            out += ["**Idle card inside timed blocks** (samples under half the arm's busy power): "
                    + ", ".join(idle) + ". Their clock and power are not the steps'; read their cycles with care.",
                    ""]
    out += ["The `train` step's parts (GPU time between events, ms):", "",
            "| arm | x | " + " | ".join(PARTS) + " | sum |", "|---|---|" + "---:|" * (len(PARTS) + 1)]
    for r in rows:
        for kind, p in r.get("train_parts_ms_by_x", {meta["x"][0]: r["train_parts_ms"]}).items():
            out.append(f"| {r['arm']} | {kind} | " + " | ".join(f"{p[k]:.2f}" for k in PARTS)
                       + f" | {sum(p.values()):.2f} |")
    out += [""] + kernel_differences(rows)
    return "\n".join(out) + "\n"


def _write(out: Path, stem: str, meta: dict, rows: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for ext, text in (("json", json.dumps(dict(meta=meta, rows=rows), indent=1)), ("md", markdown(meta, rows))):
        tmp = out / f".{stem}.{ext}.tmp"
        tmp.write_text(text)
        tmp.replace(out / f"{stem}.{ext}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="XL")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--arms", default="residual,dar", help="Comma-separated arms (the first is the ratios' base).")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"Comma-separated subset of {', '.join(VARIANTS)}.")
    ap.add_argument("--compile-mode", default="auto", help="auto (cudagraphs on CUDA, none on CPU) | full | "
                    "cudagraphs | none")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--channels", type=int, default=4, help="4: the bench's latents; 3: CIFAR pixels as in s19_g.")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--learn-sigma", action="store_true", help="Output the variance half too (the bench's models "
                    "do; dartool train's do not).")
    ap.add_argument("--data", default=None, help="Real images (a dataset path as dartool train takes) as x; sets "
                    "the channels and classes.")
    ap.add_argument("--x", default=None, help=f"Comma-separated subset of {', '.join(X_KINDS)}, timed in the same "
                    "rounds on the same model (shuffled / matched: controls made from the images, see x_controls). "
                    "Default: images with --data, else noise.")
    ap.add_argument("--profile", type=int, default=0, metavar="STEPS",
                    help="Then profile STEPS `train` steps per kind of x: GPU time per kernel.")
    ap.add_argument("--smi-log", default=None, help="An nvidia-smi log running beside this (timestamp, clocks.sm, "
                    "clocks.mem, power.draw, ...; csv, noheader, nounits): mean clock and power per variant, and "
                    "cycles per step.")
    ap.add_argument("--depth", type=int, default=None, help="Override the depth (tiny CPU smoke runs).")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    from dartool.bench import env_info

    variants = tuple(v.strip() for v in a.variants.split(",") if v.strip())
    if not variants or set(variants) - set(VARIANTS):
        ap.error(f"--variants: use names of {', '.join(VARIANTS)}")
    x_kinds = tuple(k.strip() for k in (a.x or ("images" if a.data else "noise")).split(",") if k.strip())
    if not x_kinds or set(x_kinds) - set(X_KINDS) or (set(x_kinds) - {"noise"} and not a.data):
        ap.error(f"--x: a comma-separated subset of {', '.join(X_KINDS)} (all but noise need --data)")
    if a.smi_log and not Path(a.smi_log).is_file():
        ap.error(f"--smi-log {a.smi_log}: no such file (start nvidia-smi ... -lms 100 > FILE first)")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device)
    mode = a.compile_mode
    if mode == "auto":
        mode = "cudagraphs" if device.type == "cuda" else "none"
    compile_mode = None if mode == "none" else mode
    images = None
    if a.data:
        from dartool.data import load_dataset

        ds = load_dataset(a.data)
        a.channels, a.classes = ds.channels, ds.num_classes
        if len(ds) < a.batch:
            raise SystemExit(f"--data {a.data} has {len(ds)} images, fewer than --batch {a.batch}")
        images = ds.batch(torch.arange(a.batch).numpy(), 32)[0]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    meta = dict(env_info(), size=a.size, batch=a.batch, compile_mode=mode, rounds=a.rounds, steps=a.steps,
                channels=a.channels, classes=a.classes, learn_sigma=a.learn_sigma, depth=a.depth,
                data=a.data, x=list(x_kinds))
    card = meta.get("card", "cpu").replace(" ", "-")
    stem = (f"step_parts-{card}-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M}-{a.size}{a.batch}-c{a.channels}"
            + "".join(f"-{k}" for k in x_kinds if k != "noise"))
    rows = []
    for spec in [x.strip() for x in a.arms.split(",") if x.strip()]:
        r = arm_case(a.size, spec, a.batch, device=device, compile_mode=compile_mode, rounds=a.rounds, steps=a.steps,
                     channels=a.channels, classes=a.classes, depth=a.depth, learn_sigma=a.learn_sigma, images=images,
                     x_kinds=x_kinds, variants=variants, profile_steps=a.profile)
        print(f"{r['arm']:12s} " + "  ".join(f"{v} {t:.2f}" for v, t in r["step_ms"].items())
              + "  | parts " + " ".join(f"{p} {t:.2f}" for p, t in r["train_parts_ms"].items())
              + f"  | {r.get('peak_gb', 0)} GB, warm-up {r['warmup_s']} s", flush=True)
        rows.append(r)
        if a.smi_log:
            join_clock(rows, Path(a.smi_log))
        if a.out:                          # after every arm: a run cut short keeps what it measured
            _write(Path(a.out), stem, meta, rows)
    print(markdown(meta, rows))
    if a.out:
        print(f"wrote {Path(a.out) / stem}.json / .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
