"""Session 9: shared prefixes (prefix_triton), paired against the same model without them and the residual.

    python3 reports/jobs/s9_shared.py SIZE BATCH NAME ROUNDS [QUERY...]

Builds the residual model and, per query kind (default static), DAR c4 with shared prefixes off and on (the
per-model switch ``SiT.share_prefixes``), compiles all (torch.compile), then times them in interleaved rounds (the
order rotates each round; 5 queued steps per model and round, their median). Per round: every DAR model's ratio to
that round's residual. Also the step's transient peak (max allocated during the model's steps minus what was
allocated before them; all models resident, so only the difference between models means something).
Writes $OUT/NAME.json and prints the medians.
"""
import json
import os
import sys
import time

import torch

from dartool import bench
from dartool.models import SiT, model_config

torch.backends.cuda.matmul.allow_tf32 = True
size, batch, name, rounds = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
queries = sys.argv[5:] or ["static"]
t0 = time.time()
models = {}


def build(routing, query, share):
    cfg = model_config(size, 2, routing=routing, query=query, chunk_size=4)
    torch.manual_seed(0)
    with torch.device("cuda"):
        m = SiT(cfg)
    m.share_prefixes = share
    return bench._train_step(m, cfg, batch, True, "cuda")[0]


models["residual"] = build("residual", "static", None)
for q in queries:
    models[f"{q}-unshared"] = build("dar", q, False)
    models[f"{q}-shared"] = build("dar", q, True)
for k, step in models.items():
    t1 = time.time()
    for i in range(3):
        step(i)
    torch.cuda.synchronize()
    print(f"compiled + warmed {k} in {time.time() - t1:.0f} s", flush=True)
order0 = list(models)
per_round, peaks = [], {k: [] for k in models}
for r in range(rounds):
    order = order0[r % len(order0):] + order0[:r % len(order0)]
    t = {}
    for k in order:
        models[k](-1)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        ms = bench._queued_step_ms(models[k], 5)
        peaks[k].append((torch.cuda.max_memory_allocated() - base) / 1e9)
        t[k] = ms[len(ms) // 2]
    per_round.append(t)
    print(f"round {r}: " + " ".join(f"{k} {v:.1f}" for k, v in t.items()), flush=True)


def med(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else 0.5 * (xs[len(xs) // 2 - 1] + xs[len(xs) // 2])


summary = {}
for k in models:
    rat = [t[k] / t["residual"] for t in per_round]
    summary[k] = dict(ms=med([t[k] for t in per_round]), ratio_median=med(rat), ratio_min=min(rat),
                      ratio_max=max(rat), transient_peak_gb=med(peaks[k]))
    print(f"SiT-{size}/2 b{batch} {k:22s} {summary[k]['ms']:7.1f} ms  ratio {summary[k]['ratio_median']:.3f} "
          f"({summary[k]['ratio_min']:.3f}-{summary[k]['ratio_max']:.3f})  step transient {summary[k]['transient_peak_gb']:.2f} GB",
          flush=True)
with open(os.path.join(os.environ["OUT"], f"{name}.json"), "w") as f:
    json.dump(dict(env=bench.env_info(), size=size, batch=batch, rounds=per_round, peaks=peaks, summary=summary,
                   seconds=time.time() - t0), f, indent=1, default=str)
