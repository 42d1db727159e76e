#!/usr/bin/env python3
"""DAR / residual training-step time ratio from interleaved rounds (both models alive in one process).

Separate benchmark runs put the two steps minutes apart, and the compiled residual step alone moves by a few per
cent between runs on the same card: enough to decide whether a ratio meets its target. This times the residual
and the DAR step in alternating rounds and reports every round's ratio, the median, min and max
(``dartool.bench.paired_step_bench``); peak memory is left to ``dartool bench`` (one model per measurement).

    PYTHONPATH=$PWD python3 benchmarks/paired_step.py --size B --batch 256 --query static --compiled \
        --rounds 8 --out /tmp/paired
    # several DAR models against one residual (compiled once), e.g. --query static --query dynamic
    # one DAR model under several kernel configurations (environment variables, read at each kernel call):
    PYTHONPATH=$PWD python3 benchmarks/paired_step.py --size XL --batch 128 --compiled --rounds 4 \
        --env "old=DARTOOL_PREFIX_GRAD:16,4,128,2,3,0" --env "new=" --out /tmp/paired

Needs CUDA for real numbers; on CPU it runs (slowly) for a smoke test.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="B", help="S, B, L or XL (patch 2)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--query", action="append", choices=("static", "static_t", "dynamic"),
                    help="DAR query kind (repeatable: several DAR models against one residual; default static)")
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--compiled", action="store_true", help="torch.compile every model")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=5, help="steps per model and round (their median is the round's)")
    ap.add_argument("--env", action="append", metavar="LABEL=VAR:VALUE|VAR:VALUE",
                    help="time each DAR model once more per label with these environment variables set around its "
                         "steps (repeatable; 'LABEL=' for the environment as it is)")
    ap.add_argument("--out", required=True, help="a folder: paired_step-CARD-DATE.json and .md are written there")
    a = ap.parse_args(argv)
    import torch

    from dartool import bench
    from dartool.bench import env_info

    if a.rounds < 1 or a.steps < 1:
        ap.error("--rounds and --steps must be at least 1")
    queries = list(dict.fromkeys(a.query or ["static"]))
    envs = None
    for spec in a.env or []:
        label, eq, rest = spec.partition("=")
        pairs = [kv.partition(":") for kv in rest.split("|") if kv]
        if not eq or not label or any(not k or not c for k, c, _ in pairs):
            ap.error(f"--env {spec!r}: write LABEL=VAR:VALUE|VAR:VALUE (or LABEL= for no change)")
        envs = {**(envs or {}), label: {k: v for k, _, v in pairs}}
    env = env_info()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        print("no CUDA device: timing the PyTorch reference on the CPU (a smoke test, not a measurement)")
    variants = [("dar", q, a.chunk, True) for q in queries]
    if len(variants) == 1 and not envs:
        res = [bench.paired_step_bench(a.size, a.batch, variants[0], a.compiled, rounds=a.rounds, steps=a.steps,
                                       device=device)]
    else:
        res = bench.paired_steps_bench(a.size, a.batch, variants, a.compiled, rounds=a.rounds, steps=a.steps,
                                       device=device, envs=envs)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"paired_step-{str(env.get('card', device)).replace(' ', '-')}-{env['date'][:16].replace(' ', '-').replace(':', '')}"
    tmp = out / (stem + ".json.tmp")
    tmp.write_text(json.dumps(dict(env=env, result=res[0] if len(res) == 1 else None, results=res), indent=1,
                              default=str))
    tmp.replace(out / (stem + ".json"))
    r0 = res[0]
    graphs = f"; Dynamo graphs {r0['dynamo_graphs']}" if "dynamo_graphs" in r0 else ""
    lines = [f"# Paired step ratio — {env.get('card', device)} — {env['date']}, commit {env['commit']}", "",
             f"{r0['model']} batch {r0['batch']}, {', '.join(r['variant'] for r in res)}, "
             f"{'torch.compile' if r0['compiled'] else 'eager'}, {len(r0['rounds'])} rounds of "
             f"{r0['steps_per_round']} steps per model (the order rotates every round; one untimed step before each "
             f"model's steps){graphs}.", "",
             "| round | residual ms | " + " | ".join(f"{r['variant']} ms | ratio" for r in res) + " |",
             "|---:|---:|" + "---:|---:|" * len(res)]
    for i in range(len(r0["rounds"])):
        lines.append(f"| {i + 1} | {r0['rounds'][i]['residual_ms']:.2f} | "
                     + " | ".join(f"{r['rounds'][i]['dar_ms']:.2f} | {r['rounds'][i]['ratio']:.3f}" for r in res) + " |")
    lines.append("")
    for r in res:
        lines.append(f"{r['variant']}: median ratio **{r['ratio_median']:.3f}** (min {r['ratio_min']:.3f}, "
                     f"max {r['ratio_max']:.3f}).")
    md = out / (stem + ".md")
    md.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
