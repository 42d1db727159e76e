"""Summarise a study folder (the unpacked outputs of reports/jobs/study2.sh or study.sh) into Markdown tables.

    python reports/jobs/summarize.py reports/study-2026-11-26-b [--stores DIR] > reports/study-2026-11-26-b/SUMMARY.md

Reads the runs' log.jsonl / summary.json files (committed): FD (EfficientNet-Lite0), precision, recall, the
high-frequency detail ratio and the training loss per arm and step, mean and 95 % t-interval over seeds, paired
differences against the residual arm per seed, training throughput; REPA, retrofit, Fashion-MNIST and scaling
sections when those runs are present. With ``--stores DIR`` (the unpacked folder that still holds the probe
stores, which are not committed) it also writes the diagnosis across seeds (``analyses/``) and
``diagnosis.csv`` next to the summary.
"""
from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

METRICS = ("fd_effnet", "precision", "recall", "hf_energy_ratio")


def records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def interval(xs: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95 % t-interval (nan for n = 1)."""
    xs = [x for x in xs if x is not None and np.isfinite(x)]
    if not xs:
        return float("nan"), float("nan")
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, float("nan")
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    return m, stats.t.ppf(0.975, len(xs) - 1) * sd / math.sqrt(len(xs))


def fmt(xs: list[float], digits: int = 1, show: bool = True) -> str:
    xs = [x for x in xs if x is not None and np.isfinite(x)]
    if not xs:
        return "-"
    m, h = interval(xs)
    f = f"{{:.{digits}f}}"
    if len(xs) == 1:
        return f.format(m) + " (n=1)"
    vals = ", ".join(f.format(x) for x in xs) if show else ""
    return f"{f.format(m)} ± {f.format(h)} (n={len(xs)}" + (f"; {vals})" if show else ")")


def arm_logs(run: Path) -> dict[str, dict]:
    """{arm folder name: {'evals': {step: {metric: value}}, 'train': {step: rec}, 'summary': run summary}}."""
    out = {}
    summ = {}
    if (run / "summary.json").exists():
        summ = {r["run"]: r for r in json.loads((run / "summary.json").read_text())["runs"]}
    for arm in sorted(p for p in run.iterdir() if (p / "log.jsonl").exists()):
        recs = records(arm / "log.jsonl")
        evals: dict = defaultdict(dict)
        proto = ""
        for r in recs:
            if r.get("kind") == "eval" and r.get("metric") in METRICS:
                evals[r["step"]][r["metric"]] = r["value"]
                if r["metric"] == "fd_effnet":
                    proto = f"{r['n_samples']} samples vs {r['n_reference']} ({r['reference']}), {r['sampler']}"
        train = {r["step"]: r for r in recs if r.get("kind") == "train"}
        out[arm.name] = dict(evals=dict(evals), train=train, summary=summ.get(arm.name, {}), protocol=proto)
    return out


def split_seed(name: str) -> tuple[str, str]:
    """'dar-statict-c4-seed1' -> ('dar-statict-c4', '1'); 'residual' -> ('residual', '')."""
    if "-seed" in name:
        a, s = name.rsplit("-seed", 1)
        return a, s
    return name, ""


def collect(runs: list[tuple[str, Path]]) -> dict:
    """{arm: {seed: arm_log}} over runs; the seed comes from the arm suffix or the run's name."""
    out: dict = defaultdict(dict)
    for run_seed, run in runs:
        for name, log in arm_logs(run).items():
            arm, s = split_seed(name)
            out[arm][s or run_seed] = log
    return out


def eval_table(data: dict, baseline: str | None = "residual", title_arm: str = "arm") -> list[str]:
    steps = sorted({st for seeds in data.values() for log in seeds.values() for st in log["evals"]})
    L = [f"| {title_arm} | step | FD (EfficientNet-Lite0) | precision | recall | detail ratio (hf) | loss at the step |",
         "|---|---|---|---|---|---|---|"]
    for st in steps:
        for arm in data:
            seeds = {s: log for s, log in sorted(data[arm].items()) if st in log["evals"]}
            if not seeds:
                continue
            col = lambda m: [log["evals"][st].get(m) for log in seeds.values()]  # noqa: E731
            loss = [log["train"][st]["loss"] for log in seeds.values() if st in log["train"]]
            L.append(f"| {arm} | {st} | {fmt(col('fd_effnet'))} | {fmt(col('precision'), 3, False)} | "
                     f"{fmt(col('recall'), 4, False)} | {fmt(col('hf_energy_ratio'), 3, False)} | {fmt(loss, 4, False)} |")
    paired = []
    if baseline and baseline in data:
        paired = ["", f"Paired difference arm − {baseline} in FD (same seed, same step; negative = the arm is better):",
                  "", "| arm | step | FD difference | per seed |", "|---|---|---|---|"]
        for st in steps:
            for arm in data:
                if arm == baseline:
                    continue
                d = {s: log["evals"][st]["fd_effnet"] - data[baseline][s]["evals"][st]["fd_effnet"]
                     for s, log in sorted(data[arm].items())
                     if st in log["evals"] and s in data[baseline] and st in data[baseline][s]["evals"]}
                if d:
                    m, h = interval(list(d.values()))
                    sig = "" if not np.isfinite(h) else (" (interval excludes 0)" if abs(m) > h else " (interval covers 0)")
                    paired.append(f"| {arm} | {st} | " + (f"{m:+.1f} ± {h:.1f}{sig}" if np.isfinite(h) else f"{m:+.1f} (one seed)") + " | " +
                             ", ".join(f"seed {s}: {v:+.1f}" for s, v in d.items()) + " |")
    if len(paired) > 5:
        L += paired
    protos = {log["protocol"] for seeds in data.values() for log in seeds.values() if log["protocol"]}
    L += ["", "Evaluation: " + "; ".join(sorted(protos)) + ". Intervals: mean ± 95 % t-interval over seeds. "
          "EfficientNet-Lite0 distances are not comparable with published (Inception) FIDs. Detail ratio: the "
          "samples' share of spectral energy above half the Nyquist frequency over the training data's (1 = as "
          "much fine detail as the data)."]
    return L


def reach_table(data: dict, baseline: str = "residual") -> list[str]:
    """Steps each arm needs to reach the baseline's final mean FD (from the evaluated checkpoints only)."""
    if baseline not in data:
        return []
    last = max(st for log in data[baseline].values() for st in log["evals"])
    target = interval([log["evals"][last]["fd_effnet"] for log in data[baseline].values() if last in log["evals"]])[0]
    L = [f"Steps to reach the {baseline} arm's final mean FD ({target:.1f} at step {last}), read off the evaluated "
         "checkpoints only (so the resolution is the evaluation interval):", "",
         "| arm | mean FD per evaluated step | first evaluated step at or below the target |", "|---|---|---|"]
    for arm, seeds in data.items():
        steps = sorted({st for log in seeds.values() for st in log["evals"]})
        means = {st: interval([log["evals"][st]["fd_effnet"] for log in seeds.values() if st in log["evals"]])[0]
                 for st in steps}
        hit = next((st for st in steps if means[st] <= target + 1e-9), None)
        L.append(f"| {arm} | " + ", ".join(f"{st}: {m:.1f}" for st, m in means.items()) +
                 f" | {hit if hit is not None else 'not reached'} |")
    return L


def throughput_table(data: dict) -> list[str]:
    L = ["| arm | steps | training img/s (own compute, lockstep) | seconds of own compute for those steps | vs residual |",
         "|---|---|---|---|---|"]
    base = None
    rows = []
    for arm, seeds in data.items():
        ips = [log["summary"].get("img_per_s") for log in seeds.values() if log["summary"].get("img_per_s")]
        steps = [log["summary"].get("steps") for log in seeds.values() if log["summary"].get("steps")]
        if not ips:
            continue
        m = interval(ips)[0]
        st = int(np.median(steps))
        sec = st * 256 / m
        rows.append((arm, st, ips, sec))
        if arm == "residual":
            base = sec
    if not rows:
        return ["(no throughput recorded: the runs have no summary.json)"]
    for arm, st, ips, sec in rows:
        rel = f"{sec / base:.2f}×" if base else "-"
        L.append(f"| {arm} | {st} | {fmt(ips, 0, False)} | {sec:.0f} | {rel} |")
    return L


# ------------------------------------------------------------------------------------------ diagnosis


DIAG = [  # (analysis, verdict key, label, paper)
    ("inflation", "ratio_last_first", "hidden-state RMS, last / first block, noise level 0", "≈100× (SiT-XL/2, t = 1.0)"),
    ("inflation", "ratio_last_first_max", "… largest over the 32 noise levels", "-"),
    ("gradient_decay", "ratio_early_deep", "∂L/∂z RMS, first blocks / deeper blocks, noise level 0", "> 10×"),
    ("gradient_decay", "ratio_early_deep_median", "… median over noise levels", "-"),
    ("redundancy", "deep_adjacent_cos", "adjacent-block cosine, deep blocks, noise level 0", "> 0.9"),
    ("redundancy", "effective_blocks", "effectively distinct blocks (participation ratio)", "-"),
    ("decodability", "first_block_above_0.95", "first block whose router input decodes t with R² > 0.95", "≤ 5"),
    ("decodability", "median_r2_deep", "median R² over blocks 6+", "≈ 1.0"),
    ("routing", "mean_normalized_entropy", "routing entropy / uniform (DAR: α; residual: importance shares)", "DAR concentrates"),
    ("routing", "mean_effective_sources", "effective sources read per router", "-"),
    ("routing", "block3_top_source_changes", "block 3: changes of the top source over 32 noise levels", "residual shifts; DAR smooth"),
    ("routing", "block3_mean_tv_step", "block 3: mean total-variation step between neighbouring noise levels", "-"),
]


def diagnosis(stores: dict[str, list[Path]]) -> tuple[list[str], list[dict]]:
    import importlib

    rows = []
    for arm, paths in stores.items():
        for p in paths:
            for mod in sorted({d[0] for d in DIAG}):
                v = importlib.import_module(f"analyses.{mod}").analyze(p).verdict
                for a, key, label, paper in DIAG:
                    if a == mod and key in v:
                        rows.append(dict(arm=arm, store=str(p), analysis=mod, key=key, label=label, paper=paper,
                                         value=float(v[key])))
    arms = list(stores)
    L = ["| quantity | paper (SiT-XL/2, ImageNet) | " + " | ".join(arms) + " |", "|---|---|" + "---|" * len(arms)]
    for a, key, label, paper in DIAG:
        cells = []
        for arm in arms:
            xs = [r["value"] for r in rows if r["arm"] == arm and r["key"] == key]
            cells.append(fmt(xs, 3 if abs(np.nanmean(xs) if xs else 0) < 10 else 1, False) if xs else "-")
        L.append(f"| {label} | {paper} | " + " | ".join(cells) + " |")
    return L, rows


def plot_fd(sections: list[tuple[str, dict]], path: Path) -> None:
    """FD over training steps per arm (every seed a dot, the mean a line) and the paired differences."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(sections), figsize=(5.2 * len(sections), 7.2), squeeze=False, layout="constrained")
    colours = {"residual": "#1f4e79", "dar-statict-c4": "#c0392b", "dar-dynamic-c4": "#2e8b57", "dar-static-c4": "#8e44ad",
               "dar-statict-c1": "#e67e22"}
    for j, (title, data) in enumerate(sections):
        ax, dx = axes[0, j], axes[1, j]
        for k, (arm, seeds) in enumerate(data.items()):
            c = colours.get(arm, f"C{k}")
            steps = sorted({st for log in seeds.values() for st in log["evals"]})
            full = [st for st in steps if sum(st in log["evals"] for log in seeds.values()) >= min(2, len(seeds))]
            for log in seeds.values():
                xs = sorted(log["evals"])
                ax.plot(xs, [log["evals"][x]["fd_effnet"] for x in xs], "o", color=c, ms=3.5, alpha=0.55)
            if full:
                ax.plot(full, [np.mean([log["evals"][x]["fd_effnet"] for log in seeds.values() if x in log["evals"]])
                               for x in full], "-", color=c, lw=2,
                        label=f"{arm} (mean of the seeds at each step, {len(seeds)} seeds; dots = seeds)")
            if arm != "residual" and "residual" in data:
                for s, log in seeds.items():
                    base = data["residual"].get(s)
                    if base is None:
                        continue
                    xs = [x for x in sorted(log["evals"]) if x in base["evals"]]
                    dx.plot(xs, [log["evals"][x]["fd_effnet"] - base["evals"][x]["fd_effnet"] for x in xs], "o-",
                            color=c, ms=3.5, lw=1, alpha=0.7, label=f"{arm}" if s == min(seeds) else None)
        ax.set(title=title, xlabel="training step (batch 256)", ylabel="FD, EfficientNet-Lite0 (10K samples)")
        ax.grid(True, color="#dddddd", lw=0.6)
        ax.legend(frameon=False, fontsize=8)
        dx.axhline(0, color="#555555", lw=1, ls=":")
        dx.set(title="paired difference arm − residual (one line per seed; < 0 = arm better)",
               xlabel="training step (batch 256)", ylabel="Δ FD")
        dx.title.set_fontsize(9)
        dx.grid(True, color="#dddddd", lw=0.6)
        dx.legend(frameon=False, fontsize=8)
    fig.suptitle("Sample quality over training: ODE Euler 16 steps, no guidance, EMA weights, vs 10K training images",
                 x=0.01, ha="left", fontsize=10, fontweight="bold")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--stores", default=None, help="unpacked study folder that still has the probe stores")
    a = ap.parse_args()
    root = Path(a.folder)
    P = print
    P(f"# Study summary: `{root}`\n")
    P(f"Generated by `python reports/jobs/summarize.py {root}" + (" --stores DIR" if a.stores else "") +
      "` from the runs' log.jsonl / summary.json files.\n")

    figs: list[tuple[str, dict]] = []
    seeds = sorted(root.glob("cifar-seed*"))
    if seeds:
        data = collect([(p.name.split("seed")[-1], p) for p in seeds if p.is_dir()])
        figs.append(("CIFAR-10, SiT-S/2: residual vs DAR", data))
        P("## 1. CIFAR-10 (JPEG q75), SiT-S/2: residual vs DAR, paired per seed\n")
        P("![FD over training](fd_over_training.png)\n")
        P("\n".join(eval_table(data)) + "\n")
        P("\n".join(reach_table(data)) + "\n")
        P("Same number of steps for every arm (lockstep). Wall-clock is reported separately: each arm's own "
          "training throughput (the arms share one GPU in turn, so each arm's img/s is measured over its own "
          "compute) and the seconds that many steps cost it:\n")
        P("\n".join(throughput_table(data)) + "\n")
    chunks = sorted(p for p in root.glob("cifar-chunks*") if p.is_dir())
    if chunks:
        data = collect([(p.name.split("seed")[-1] if "seed" in p.name else "0", p) for p in chunks])
        P("## 2. Chunk-size sweep (CIFAR-10)\n")
        P("\n".join(eval_table(data, baseline=None)) + "\n")
    fm = root / "fmnist"
    if fm.is_dir():
        P("## 3. Fashion-MNIST (20K-image subset), SiT-S/2, seed 0\n")
        P("\n".join(eval_table(collect([("0", fm)]))) + "\n")
    repa = root / "cifar-repa"
    if repa.is_dir():
        data = collect([("", repa)])
        figs.append(("CIFAR-10, SiT-S/2, with REPA", data))
        P("## 4. REPA vs DAR + REPA (CIFAR-10, SiT-S/2, EfficientNet-Lite0 alignment target)\n")
        P("Seeds run one after the other in one process and share its time budget; a seed cut short is shown at "
          "the steps it reached (pairs are always within a seed at equal steps).\n")
        P("\n".join(eval_table(data)) + "\n")
    for rf in sorted(p for p in root.glob("retrofit-seed*") if p.is_dir()):
        s = rf.name.split("seed")[-1]
        data = collect([(s, rf)])
        cfg = json.loads((rf / "config.json").read_text())["train"]
        P(f"## 5. Retrofit (CIFAR-10, seed {s}): fine-tune a trained residual SiT-S/2 as it is vs converted to dense DAR\n")
        src = root / f"cifar-seed{s}" / "residual"
        if src.is_dir():
            ev = arm_logs(src.parent)["residual"]["evals"]
            st = max(ev)
            P(f"Starting point: the residual arm of `cifar-seed{s}` at step {st} (EMA weights): FD "
              f"{ev[st]['fd_effnet']:.1f}, detail ratio {ev[st].get('hf_energy_ratio', float('nan')):.3f}. "
              f"Both arms fine-tune from it with lr {cfg['lr']}, same batches, noise and timesteps.\n")
        P("\n".join(eval_table(data)) + "\n")
    if figs:
        plot_fd(figs, root / "fd_over_training.png")
    one, two = root / "scale1" / "residual" / "log.jsonl", root / "scale2" / "residual" / "log.jsonl"
    if one.exists() and two.exists():
        def rate(p: Path) -> tuple[float, int]:
            tr = [r for r in records(p) if r.get("kind") == "train"]
            x, y = tr[0], tr[-1]
            return (y["step"] - x["step"]) * 256 / (y["elapsed_s"] - x["elapsed_s"]), y["step"] - x["step"]

        (r1, n1), (r2, _) = rate(one), rate(two)
        l1 = {r["step"]: r["loss"] for r in records(one) if r.get("kind") == "train"}
        l2 = {r["step"]: r["loss"] for r in records(two) if r.get("kind") == "train"}
        dmax = max(abs(l1[k] - l2[k]) for k in l1.keys() & l2.keys())
        P("## Multi-GPU path: torchrun on 2 GPUs vs 1 GPU\n")
        P(f"SiT-S/2 residual, global batch 256, {n1} steady-state steps: 1 GPU {r1:,.0f} img/s, 2 GPUs {r2:,.0f} "
          f"img/s → {r2 / r1:.2f}×, scaling efficiency {r2 / r1 / 2:.0%}. Largest difference of the logged losses "
          f"{dmax:.1e}.\n")
    if a.stores:
        S = Path(a.stores)
        groups: dict[str, list[Path]] = defaultdict(list)
        for p in sorted(S.glob("cifar-seed*/*/probe.zarr")):
            groups[p.parent.name].append(p)
        if groups:
            P("## 6. Diagnosis of the trained CIFAR-10 models (final probe: 32 noise levels × 128 samples)\n")
            P("Mean ± 95 % t-interval over seeds (n = number of seeds). Noise level 0 = data (the paper's SiT "
              "t = 1.0). Decodability uses ridge regression on 64 pooled samples per noise level (48 train / 16 "
              "test).\n")
            L, rows = diagnosis(dict(groups))
            P("\n".join(L) + "\n")
            import csv

            with open(root / "diagnosis.csv", "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                for r in rows:
                    w.writerow({**r, "store": str(Path(r["store"]).relative_to(S))})


if __name__ == "__main__":
    main()
