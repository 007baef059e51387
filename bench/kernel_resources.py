"""Registers, stack (spills) and load instructions of the paged decode kernel compiled for a GPU, on any machine.

    PYTHONPATH=src python3 bench/kernel_resources.py [--arch 90]

Needs no GPU: Triton compiles the kernel for ``sm_<arch>`` (its bundled ptxas) with the launch arguments
``decode_launch_args`` builds for a 64-sequence decode (32/8 heads, head dim 128, 16-token blocks), and the
integer and pointer arguments specialised as Triton's launcher specialises them (divisible by 16). ``cuobjdump
-res-usage`` reports registers per thread and stack bytes; registers bound how many programs share a
multiprocessor (65,536 registers per SM on sm_80/sm_90). ``cuobjdump -sass`` gives the machine instructions, and
the PTX the byte-wide loads from shared memory (fp8 value tiles gathered for the dot one byte at a time). Each
point compiles one, eight and the default split count with ``long_splits=6`` (``(long)``: the launch a mixed batch
of 64 gets, which reads the batch's lengths to split only its long spans).
Rows marked "step" compile the launch a decode step makes (``PagedAttentionWrapper.run``: the new token stored and
attended to in the launch, RoPE inside, query/key/value as views of the QKV GEMM's output).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import tempfile
from typing import Any

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from sagellm_backend.attention import paged_triton as pt
from sagellm_backend.attention import triton_args
from sagellm_backend.attention.triton_kernels import decode_kernel

_PTR = {torch.bfloat16: "*bf16", torch.float16: "*fp16", torch.float32: "*fp32", torch.int32: "*i32",
        torch.int64: "*i64", torch.float8_e4m3fn: "*fp8e4nv", torch.float8_e5m2: "*fp8e5"}  # fmt: skip
# (cache dtype, block_n, warps, stages, early_v, maxnreg, fp8_v_asm)
POINTS = [
    (torch.bfloat16, 64, 4, 2, False, None, False), (torch.float8_e4m3fn, 64, 4, 2, False, None, False),
    (torch.float8_e4m3fn, 64, 4, 2, False, None, True), (torch.float8_e4m3fn, 128, 4, 1, False, None, False),
    (torch.float8_e4m3fn, 128, 4, 1, False, None, True), (torch.float8_e4m3fn, 128, 4, 2, False, None, False),
    (torch.float8_e4m3fn, 128, 4, 2, False, None, True), (torch.float8_e4m3fn, 128, 4, 2, True, None, False),
    (torch.float8_e4m3fn, 128, 8, 2, False, None, False), (torch.float8_e4m3fn, 128, 8, 2, False, None, True),
    (torch.float8_e4m3fn, 128, 4, 2, False, 168, False), (torch.float8_e4m3fn, 128, 4, 2, False, 128, False),
    (torch.float8_e4m3fn, 128, 4, 2, False, 168, True), (torch.float8_e5m2, 128, 4, 2, False, None, True),
    (torch.float8_e4m3fn, 64, 4, 2, False, 96, True), (torch.float8_e4m3fn, 64, 4, 2, False, 88, True),
]  # fmt: skip
#: The defaults (``triton_args.decode_config``): bf16, and fp8 with fp16 dots, value tiles converted as loaded and
#: 96 registers (ninth pass; the row before it, the compiler's choice, is POINTS[2]).
DEFAULTS = [POINTS[0], POINTS[14]]


def source(args: tuple[Any, ...], kw: dict[str, Any]) -> ASTSource:
    """The kernel with the launch's signature, constexprs and divisibility specialisation."""
    names = decode_kernel.arg_names
    constexpr = {p.name for p in decode_kernel.params if p.is_constexpr}
    values = [*args, *(kw[n] for n in names[len(args) :])]
    sig: dict[str, str] = {}
    consts: dict[tuple[int, ...], Any] = {}
    attrs: dict[tuple[int, ...], list[list[Any]]] = {}
    for i, (name, v) in enumerate(zip(names, values)):
        if name in constexpr or v is None:  # None: Triton specialises it as a constant
            sig[name] = "constexpr"
            consts[(i,)] = v
            continue
        if isinstance(v, torch.Tensor):
            sig[name] = _PTR[v.dtype]
        elif isinstance(v, bool):
            sig[name] = "i1"
        elif isinstance(v, int):
            sig[name] = "i32" if -(2**31) <= v < 2**31 else "i64"
        else:
            sig[name] = "fp32"
        if isinstance(v, torch.Tensor) or (type(v) is int and v % 16 == 0):
            attrs[(i,)] = [["tt.divisibility", 16]]
    return ASTSource(fn=decode_kernel, signature=sig, constexprs=consts, attrs=attrs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, default=90)
    args = ap.parse_args(argv)
    triton_args.sm_count = pt.sm_count = lambda device: 132  # type: ignore[assignment]  # no GPU to ask
    triton_args._capability = lambda device: divmod(args.arch, 10)  # no GPU to ask: the target architecture
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    b, hq, hkv, d, bs = 64, 32, 8, 128, 16
    print(
        "| cache | block_n/warps/stages | early_v | maxnreg | fp8_v_asm | splits | registers | stack B | "
        "programs/SM | SASS instructions | byte loads from shared | loads |"
    )
    print("|---|---|---|---|---|---|---:|---:|---:|---:|---:|---|")
    step_points = [(*p, True) for p in DEFAULTS]  # bf16 and e4m3 defaults as a decode step launches them
    for cdt, bn, warps, stages, early, maxnreg, v_asm, *step in [*POINTS, *step_points]:
        for splits in (1, 8, None):  # None: the default count with long splits (a mixed batch's launch)
            qkv = torch.empty(b, (hq + 2 * hkv) * d, dtype=torch.bfloat16)
            q, k, v = qkv.view(b, hq + 2 * hkv, d).split((hq, hkv, hkv), 1)
            extra: dict[str, Any] = {}
            if step:
                extra = {"new": (k, v, torch.zeros(b, dtype=torch.int64)), "rope": (torch.empty(64, d), True)}
            else:
                q = torch.empty(b, hq, d, dtype=torch.bfloat16)
            cache = torch.empty(64, bs, hkv, d, dtype=cdt)
            table, lens = torch.zeros(b, 520, dtype=torch.int32), torch.ones(b, dtype=torch.int32)  # 8,320 tokens
            fp8 = cdt != torch.bfloat16
            scales = {"k_scale": torch.ones(1), "v_scale": torch.ones(1)} if fp8 else {}
            cfg = pt.DecodeConfig(block_n=bn, num_warps=warps, num_stages=stages, fp8_f16_dot=fp8, early_v=early,
                                  maxnreg=maxnreg, fp8_v_asm=v_asm, long_splits=6)  # fmt: skip
            out = torch.empty(b, hq, d, dtype=torch.bfloat16)
            grid, a, kw = pt.decode_launch_args(
                q, cache, cache, table, lens, 0.1, out, cfg=cfg, splits=splits, **scales, **extra
            )
            opts = {k: kw.pop(k) for k in ("num_warps", "num_stages", "maxnreg") if k in kw}
            splits = f"{grid[2]} (long)" if kw["LONG_ROWS"] else grid[2]
            compiled = triton.compile(source(a, kw), target=GPUTarget("cuda", args.arch, 32), options=opts)
            with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
                f.write(compiled.asm["cubin"])
                f.flush()
                usage = subprocess.run([cuobjdump, "-res-usage", f.name], capture_output=True, text=True).stdout
                sass = subprocess.run([cuobjdump, "-sass", f.name], capture_output=True, text=True).stdout
            ins = re.findall(r"/\*[0-9a-f]{4}\*/\s+([A-Z][A-Z0-9.]*)", sass)
            lds8 = len(re.findall(r"ld\.shared\.[us]?b?8\b|ld\.shared\.b8\b", compiled.asm["ptx"]))
            m = re.search(r"REG:(\d+) STACK:(\d+)", usage)
            regs, stack = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
            loads = collections.Counter(re.findall(r"(ld\.global[a-z0-9.]*|cp\.async[a-z0-9.]*)", compiled.asm["ptx"]))
            per_sm = 65536 // max(1, regs * 32 * warps)
            top = ", ".join(f"{k} x{v}" for k, v in loads.most_common(3))
            name = str(cdt)[6:] + (", step" if step else "")
            print(f"| {name} | {bn}/{warps}/{stages} | {early} | {maxnreg} | {v_asm} | {splits} | {regs} | "
                  f"{stack} | {per_sm} | {len(ins)} | {lds8} | {top} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
