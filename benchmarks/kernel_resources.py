#!/usr/bin/env python3
"""Registers and stack (spill) bytes of the fused router's kernels, compiled ahead of time for a CUDA target
without a GPU (Triton's bundled ptxas and cuobjdump), per width D and configuration:

    python3 benchmarks/kernel_resources.py                 # sm_90 (H100 / H200), D = 384, 768, 1024, 1152
    python3 benchmarks/kernel_resources.py --arch 80 --D 1152

A kernel at 255 registers with a non-zero stack frame is spilling: values that do not fit are kept in local
memory (L1 / L2) and re-read, inside the source loop if they are live across it. The numbers are what ptxas
reports for the PTX Triton generates here; the GPU image's Triton may differ slightly. No timing: measure on a
GPU (``router_sweep.py``, ``dartool bench``).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _usage(kernel, sig: dict, cx: dict, arch: int, num_warps: int, maxnreg: int = 0) -> tuple[int, int]:
    import triton

    k = _compile(kernel, sig, cx, arch, num_warps, maxnreg)
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(k.asm["cubin"])
    try:
        tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    return int(re.search(r"REG:(\d+)", out).group(1)), int(re.search(r"STACK:(\d+)", out).group(1))


def _compile(kernel, sig: dict, cx: dict, arch: int, num_warps: int, maxnreg: int = 0):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = dict(sig, **{k: "constexpr" for k in cx})
    names = list(sig)
    # what the JIT assumes at a real launch: every pointer 16-byte aligned and T a multiple of 16 (without it the
    # loads and stores compile to scalar 16-bit accesses and the register counts are a different kernel's)
    attrs = {(names.index(k),): [["tt.divisibility", 16]] for k, v in sig.items()
             if str(v).startswith("*") or k == "T"}
    src = ASTSource(fn=kernel, signature=sig, constexprs={(names.index(k),): v for k, v in cx.items()}, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32),
                          options=dict(num_warps=num_warps, num_stages=1, **({"maxnreg": maxnreg} if maxnreg else {})))


def bwd_usage(D: int, ln: bool, cfg: dict, dynamic: bool = False, arch: int = 90,
              recompute_h: bool = False, count_async: bool = False):
    """(registers, stack bytes) of the backward kernel: bf16 sources with an fp32 v_0, fp32 h (bf16 autocast);
    ``recompute_h``: h recomputed from the sources (a forward with keep_h=False). ``count_async``: instead, the
    number of asynchronous global-to-shared copies in its Triton GPU IR (> 0: the source loop is pipelined)."""
    from dartool.kernels import router_triton as rt

    DA, DB = rt._tiles(D, bool(cfg["split"]))
    sig = dict(src0_ptr="*fp32", rest_ptr="*bf16", tab_ptr="*i64", dv0_ptr="*fp32", dvrest_ptr="*bf16",
               otab_ptr="*i64", N="i32", q_ptr="*bf16" if dynamic else "*fp32", q_sb="i32", q_st="i32", g_ptr="*fp32",
               h_ptr="*fp32", dh_ptr="*bf16" if ln else "*fp32", lse_ptr="*fp32", dq_ptr="*bf16" if dynamic else "*fp32",
               part_ptr="*fp32", mscale_ptr="*bf16", pmod_ptr="*fp32", ln_eps="fp32", msc_sb="i32", T="i32", eps="fp32",
               scale="fp32", n_tprog="i32", plam_ptr="*fp32", dpre_ptr="*fp32", glam_ptr="*fp32",
               acc_ptr="*fp32", acc_div="i32", acc_mod="i32", macc_ptr="*fp32", macc2_ptr="*fp32")
    cx = dict(D=D, BLOCK_R=cfg["block_r"], ROWS=max(cfg["rows"], cfg["block_r"]), DA=DA, DB=DB, UNROLL=cfg["unroll"],
              PREFETCH=bool(cfg["prefetch"]), ALIGN=8, OALIGN=8, DYNAMIC=dynamic, ACCUM=False, LN_MOD=ln,
              LN_SLOT=bool(cfg.get("ln_slot", 0)), RECOMPUTE_H=recompute_h, PART_SLOT=bool(cfg.get("part_slot", 0)),
              VEC4=int(cfg.get("vec4", 0)), PIPE=int(cfg.get("pipe", 1)), PREFIX=int(cfg.get("prefix", 0)),
              ATOMIC=int(cfg.get("atomic", 1)), NC=int(cfg.get("nc", 0)), RPIPE=int(cfg.get("rpipe", 1)),
              SLOT_ASM=int(cfg.get("slot_asm", 0)), LEAN=int(cfg.get("lean", 0)))
    # (in the kernel's argument order: constexprs bind by position)
    if count_async:   # asynchronous copies into shared memory in the Triton GPU IR: the pipelined source loop
        return _compile(rt._router_bwd_kernel, sig, cx, arch, cfg["num_warps"]).asm["ttgir"].count(
            "async_copy_global_to_local")
    return _usage(rt._router_bwd_kernel, sig, cx, arch, cfg["num_warps"], int(cfg.get("maxnreg", 0)))


def fwd_usage(D: int, ln: bool, cfg: dict, arch: int = 90) -> tuple[int, int]:
    """(registers, stack bytes) of the forward kernel, laid out as :func:`bwd_usage`."""
    from dartool.kernels import router_triton as rt

    DA, DB = rt._tiles(D, bool(cfg["split"]))
    sig = dict(src0_ptr="*fp32", rest_ptr="*bf16", tab_ptr="*i64", N="i32", q_ptr="*fp32", q_sb="i32", q_st="i32",
               g_ptr="*fp32", h_ptr="*fp32", h32_ptr="*fp32", lse_ptr="*fp32", logit_ptr="*fp32", y_ptr="*bf16",
               shift_ptr="*bf16", mscale_ptr="*bf16", ln_eps="fp32", sh_sb="i32", sc_sb="i32", T="i32", eps="fp32", scale="fp32",
               pre_ptr="*fp32", plam_ptr="*fp32")
    cx = dict(D=D, BLOCK_R=cfg["block_r"], DA=DA, DB=DB, UNROLL=cfg["unroll"], PREFETCH=bool(cfg["prefetch"]), ALIGN=8,
              WRITE_LOGITS=False, WRITE_H32=False, LN_MOD=ln, WRITE_H=True, VEC4=int(cfg.get("vec4", 0)),
              PIPE=int(cfg.get("pipe", 1)))
    return _usage(rt._router_fwd_kernel, sig, cx, arch, cfg["num_warps"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", type=int, default=90, help="CUDA compute capability x10 (90: H100 / H200)")
    ap.add_argument("--D", type=int, action="append", help="widths (default 384 768 1024 1152)")
    ap.add_argument("--N", type=int, default=9, help="sources (picks the per-shape configuration)")
    a = ap.parse_args(argv)
    from dartool.kernels import router_triton as rt

    print(f"sm_{a.arch}, per-shape launch configuration at N = {a.N}; registers / stack bytes (> 0: spills)")
    print("| D | kernel | LayerNorm fused | registers | stack bytes |")
    print("|---:|---|---|---:|---:|")
    for D in a.D or (384, 768, 1024, 1152):
        fcfg, bcfg = rt.fwd_config(a.N, D), rt.bwd_config(a.N, D)
        for ln, v4 in ((False, 0), (True, 0), (True, 1)):
            r, st = fwd_usage(D, ln, dict(fcfg, vec4=v4), a.arch)
            pipe = f", pipe {fcfg['pipe']}" if fcfg.get("pipe", 1) > 1 else ""
            print(f"| {D} | forward | {'yes' if ln else 'no'}{', vec4' if v4 else ''}{pipe} | {r} | {st} |")
        for ln, slot, rh, dyn, v4 in ((False, 0, False, False, 0), (True, 0, False, False, 0),
                                      (True, 1, False, False, 0), (True, 1, True, False, 0), (True, 1, False, True, 0),
                                      (True, 1, False, False, 1), (True, 1, False, True, 1)):
            bc = rt.bwd_config(a.N, D, dynamic=dyn)
            r, st = bwd_usage(D, ln, dict(bc, ln_slot=slot, vec4=v4), dynamic=dyn, arch=a.arch, recompute_h=rh)
            label = ("yes, partials in slots (ln_slot)" if slot else "yes") if ln else "no"
            label += ", part_slot" if bcfg.get("part_slot") else ""
            label += ", h recomputed" if rh else ""
            label += ", dynamic query" if dyn else ""
            label += ", vec4" if v4 else ""
            label += f", pipe {bc['pipe']}" if bc.get("pipe", 1) > 1 else ""
            print(f"| {D} | backward | {label} | {r} | {st} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
