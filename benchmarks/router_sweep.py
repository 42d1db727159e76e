#!/usr/bin/env python3
"""Launch-configuration sweep of the fused router's kernels at the shapes a training step runs.

A bf16-autocast SiT step calls its routers with v_0, h and dh in float32 and N = 1 … S + L/S sources; the
backward's best launch configuration depends on N, on the rows B·T and on D. This sweeps the backward (and,
with --fwd, the forward) at several (size, batch, N) points and writes JSON + a Markdown table:

    PYTHONPATH=$PWD python3 benchmarks/router_sweep.py --out /tmp/sweep \
        --shape B:256:3 --shape B:256:6 --shape B:256:10 --shape XL:64:4 --shape XL:64:9 --shape XL:64:17

(size:batch:N, T = 256 tokens: 256 px latents at patch 2). Needs CUDA.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _cfg_key(r: dict) -> str:
    return (f"br{r['block_r']} rows{r['rows']} w{r['num_warps']} split{r['split']} pf{r['prefetch']}"
            f" unroll{r.get('unroll', 2)}" + (f" ln_slot{r['ln_slot']}" if "ln_slot" in r else "")
            + (f" part_slot{r['part_slot']}" if "part_slot" in r else ""))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--shape", action="append", default=[], help="size:batch:N, e.g. B:256:6 (repeatable)")
    ap.add_argument("--fwd", action="store_true", help="also sweep the forward")
    ap.add_argument("--ln", action="store_true", help="the kernels with the LayerNorm + modulate fused in")
    a = ap.parse_args(argv)
    from dartool.bench import config_sweep, copy_bandwidth, env_info, log
    from dartool.models import SIZES

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    env = env_info()
    bw = copy_bandwidth()
    log(f"sweep on {env.get('card')}, copy {bw['tb_per_s']:.2f} TB/s, commit {env['commit']}")
    res = dict(env=env, copy=bw, shapes=[])
    for spec in a.shape or ["B:256:6", "XL:64:9"]:
        size, batch, n = spec.split(":")
        D = SIZES[size][1]
        log(f"== SiT-{size}/2 batch {batch}, N = {n} (D = {D})")
        r = config_sweep(N=int(n), B=int(batch), T=256, D=D, bw=bw["bytes_per_s"], model_dtypes=True, wide=True,
                         fwd=a.fwd, ln=a.ln)
        r["size"] = size
        res["shapes"].append(r)
        (out / "router_sweep.json").write_text(json.dumps(res, indent=1, default=str))
    lines = [f"# Router launch-configuration sweep — {env.get('card')}, {env.get('date', '')}, commit {env['commit']}",
             "", f"Copy rate {bw['tb_per_s']:.2f} TB/s. Inputs laid out as in a bf16 training step (v_0, h, dh "
             "float32)" + ("; LayerNorm + modulate fused in (dy bf16, h fp32)" if a.ln else "")
             + ". Backward kernel alone; % of its byte floor.", ""]
    for r in res["shapes"]:
        ok = sorted((x for x in r["bwd"] if "ms" in x), key=lambda x: x["ms"])
        keys = ("block_r", "rows", "num_warps", "split", "prefetch", "unroll") + (("ln_slot", "part_slot") if a.ln else ())
        dflt = next((x for x in ok if all(x[k] == r["default_bwd"][k] for k in keys)), None)
        lines.append(f"## SiT-{r['size']}/2, B = {r['B']}, N = {r['N']}")
        lines.append("")
        lines.append("| backward config | ms | % floor |")
        lines.append("|---|---:|---:|")
        for x in ok[:8]:
            lines.append(f"| {_cfg_key(x)} | {x['ms']:.3f} | {x['pct_floor']:.0f} |")
        if dflt:
            lines.append(f"| **in use** {_cfg_key(dflt)} | {dflt['ms']:.3f} | {dflt['pct_floor']:.0f} |")
        lines.append("")
        if r["fwd"]:
            okf = sorted((x for x in r["fwd"] if "ms" in x), key=lambda x: x["ms"])
            lines.append("forward best: " + ", ".join(
                f"br{x['block_r']} w{x['num_warps']} split{x['split']} pf{x['prefetch']} {x['ms']:.3f} ms "
                f"({x['pct_floor']:.0f} %)" for x in okf[:3]))
            lines.append("")
    (out / "router_sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
