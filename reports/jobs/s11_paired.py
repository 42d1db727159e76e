"""Session 11: one compiled DAR model timed under several kernel configurations (environment variables read at
each kernel call), paired against the residual in interleaved rounds.

    python3 reports/jobs/s11_paired.py SIZE BATCH NAME ROUNDS QUERY LABEL=VAR:VAL|VAR:VAL ...

Builds the residual model and one DAR c4 model (shared prefixes on) of the QUERY kind, compiles both, then per round
(order rotating) times 5 queued steps of the residual and of the DAR model under each labelled environment, medians.
Per round: every variant's ratio to that round's residual. Writes $OUT/NAME.json and prints the medians.
"""
import json
import os
import sys
import time

import torch

from dartool import bench
from dartool.models import SiT, model_config

torch.backends.cuda.matmul.allow_tf32 = True
size, batch, name, rounds, query = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
variants = {}
for spec in sys.argv[6:]:
    label, _, env = spec.partition("=")
    variants[label] = dict(kv.split(":", 1) for kv in env.split("|") if kv)
t0 = time.time()


def build(routing):
    cfg = model_config(size, 2, routing=routing, query=query, chunk_size=4)
    torch.manual_seed(0)
    with torch.device("cuda"):
        m = SiT(cfg)
    return bench._train_step(m, cfg, batch, True, "cuda")[0]


def with_env(step, env):
    def run(i):
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            return step(i)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return run


models = {"residual": build("residual")}
dar = build("dar")
for label, env in variants.items():
    models[label] = with_env(dar, env)
for k, step in models.items():
    t1 = time.time()
    for i in range(3):
        step(i)
    torch.cuda.synchronize()
    print(f"compiled + warmed {k} in {time.time() - t1:.0f} s", flush=True)
order0 = list(models)
per_round = []
for r in range(rounds):
    order = order0[r % len(order0):] + order0[:r % len(order0)]
    t = {}
    for k in order:
        models[k](-1)
        torch.cuda.synchronize()
        ms = bench._queued_step_ms(models[k], 5)
        t[k] = ms[len(ms) // 2]
    per_round.append(t)
    print(f"round {r}: " + " ".join(f"{k} {v:.1f}" for k, v in t.items()), flush=True)


def med(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else 0.5 * (xs[len(xs) // 2 - 1] + xs[len(xs) // 2])


summary = {}
for k in models:
    rat = [t[k] / t["residual"] for t in per_round]
    summary[k] = dict(env=variants.get(k, {}), ms=med([t[k] for t in per_round]), ratio_median=med(rat),
                      ratio_min=min(rat), ratio_max=max(rat))
    print(f"SiT-{size}/2 b{batch} {query} {k:14s} {summary[k]['ms']:7.1f} ms  ratio {summary[k]['ratio_median']:.3f} "
          f"({summary[k]['ratio_min']:.3f}-{summary[k]['ratio_max']:.3f})", flush=True)
with open(os.path.join(os.environ["OUT"], f"{name}.json"), "w") as f:
    json.dump(dict(env=bench.env_info(), size=size, batch=batch, query=query, rounds=per_round, summary=summary,
                   seconds=time.time() - t0), f, indent=1, default=str)
