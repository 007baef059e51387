"""Runs the Triton engine kernels in Triton's CPU interpreter and compares them with the torch kernels.

Run by tests/test_triton_interpret.py in a subprocess with ``TRITON_INTERPRET=1`` (the variable has
to be set before Triton compiles anything, and must not leak into other tests). Prints one JSON
list: ``{"case", "err", "ok"}`` per case, where ``err`` is the largest ``|got - want|`` beyond
``rtol * |want|`` and ``ok`` says whether it is within ``atol``, and shapes and dtypes match.

Tolerances: fp32 1e-5; fp16 two units in the last place; bf16 two units too, because the
interpreter converts fp32 to bf16 by truncation where the GPU (and torch) round to nearest.
"""

from __future__ import annotations

import json
import os
import sys

import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

from sagellm_backend.kernels import torch_ops, triton_ops  # noqa: E402

TOL = {torch.float32: (1e-5, 1e-5), torch.float16: (2e-3, 2e-3), torch.bfloat16: (2**-6, 2**-6)}
results: list[dict[str, object]] = []


def check(case: str, got: torch.Tensor, want: torch.Tensor, rounded_to: torch.dtype | None = None) -> None:
    rtol, atol = TOL[rounded_to or want.dtype]
    same = got.shape == want.shape and got.dtype == want.dtype
    err = ((got.double() - want.double()).abs() - rtol * want.double().abs()).max().item() if same else float("inf")
    results.append({"case": case, "err": err, "ok": bool(same and err <= atol)})


def rand(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def same(case: str, got: torch.Tensor, want: torch.Tensor) -> None:
    """Bit-for-bit equality (the same kernel on the same values, into a caller's buffer or in place)."""
    results.append({"case": case, "err": 0.0, "ok": got.dtype == want.dtype and got.equal(want)})


def caller_buffers(tag: str, dt: torch.dtype, rows: int, hidden: int, row_stride: int | None = None) -> None:
    """``inplace=True`` and ``out=`` against the kernels' own new tensors; ``row_stride`` makes x and residual
    row-strided views (written in place through the view)."""
    base_x, base_r = rand(rows, row_stride or hidden, dtype=dt) * 2, rand(rows, row_stride or hidden, dtype=dt, seed=1)
    x, r, w = base_x[:, :hidden], base_r[:, :hidden], rand(hidden, dtype=dt, seed=2)
    want_y, want_s = triton_ops.add_rmsnorm(x, r, w, 1e-5)
    tail_x, tail_r = base_x[:, hidden:].clone(), base_r[:, hidden:].clone()
    got = triton_ops.add_rmsnorm(x, r, w, 1e-5, inplace=True)
    same(f"add_rmsnorm inplace normed {tag}", x, want_y)
    same(f"add_rmsnorm inplace sum {tag}", r, want_s)
    results.append({"case": f"add_rmsnorm inplace returns its inputs {tag}", "err": 0.0, "ok": got[0] is x})
    outside = base_x[:, hidden:].equal(tail_x) and base_r[:, hidden:].equal(tail_r)
    results.append({"case": f"add_rmsnorm inplace writes only its rows {tag}", "err": 0.0, "ok": outside})
    out = torch.empty(rows, hidden, dtype=dt)
    same(f"rmsnorm out= {tag}", triton_ops.rmsnorm(want_s, w, 1e-5, out=out), triton_ops.rmsnorm(want_s, w, 1e-5))
    gu = rand(rows, 2 * hidden, dtype=dt, seed=3) * 4
    y = torch.empty(rows, hidden, dtype=dt)
    same(f"silu_mul out= {tag}", triton_ops.silu_mul(gu, out=y), triton_ops.silu_mul(gu))


for dt in (torch.float32, torch.float16, torch.bfloat16):
    name = str(dt).split(".")[-1]
    caller_buffers(name, dt, 5, 100)
    for hidden in (1, 7, 64, 100):
        x, r, w = rand(5, hidden, dtype=dt) * 2, rand(5, hidden, dtype=dt, seed=1), rand(hidden, dtype=dt, seed=2)
        check(f"rmsnorm {name} h={hidden}", triton_ops.rmsnorm(x, w, 1e-6), torch_ops.rmsnorm(x, w, 1e-6))
        x0, r0 = x.clone(), r.clone()
        got, want = triton_ops.add_rmsnorm(x, r, w, 1e-5), torch_ops.add_rmsnorm(x, r, w, 1e-5)
        check(f"add_rmsnorm.normed {name} h={hidden}", got[0], want[0])
        check(f"add_rmsnorm.sum {name} h={hidden}", got[1], want[1])
        results.append({"case": f"add_rmsnorm inputs kept {name}", "err": 0.0, "ok": x.equal(x0) and r.equal(r0)})
    for cols in (1, 37, 300):
        g, u = rand(2, 3, cols, dtype=dt, seed=3) * 4, rand(2, 3, cols, dtype=dt, seed=4)
        check(f"silu_mul(g, u) {name} d={cols}", triton_ops.silu_mul(g, u), torch_ops.silu_mul(g, u))
        cat = torch.cat([g, u], dim=-1)
        check(f"silu_mul([g|u]) {name} d={cols}", triton_ops.silu_mul(cat), torch_ops.silu_mul(cat))
    # fp32 weight on a half input: promoted output, as Hugging Face's module gives.
    x, w32 = rand(4, 33, dtype=dt), rand(33, seed=5)
    check(f"rmsnorm {name} x, fp32 w", triton_ops.rmsnorm(x, w32), torch_ops.rmsnorm(x, w32), rounded_to=dt)

# Strides: a strided last dimension (copied first) and a row stride wider than the row.
wide = rand(6, 80)
check("rmsnorm strided last dim", triton_ops.rmsnorm(wide[:, ::2], rand(40)), torch_ops.rmsnorm(wide[:, ::2], rand(40)))
check("rmsnorm row stride", triton_ops.rmsnorm(wide[:, :50], rand(50)), torch_ops.rmsnorm(wide[:, :50], rand(50)))
check(
    "silu_mul strided gate",
    triton_ops.silu_mul(wide[:, ::2], wide[:, 1::2]),
    torch_ops.silu_mul(wide[:, ::2], wide[:, 1::2]),
)

# The two-pass loop for rows wider than one block, and several rows per program with a ragged tail.
triton_ops.MAX_ONE_PASS, triton_ops.LOOP_BLOCK = 64, 32
x, r, w = rand(3, 100) * 3, rand(3, 100, seed=1), rand(100, seed=2)
check("rmsnorm two-pass", triton_ops.rmsnorm(x, w), torch_ops.rmsnorm(x, w))
got, want = triton_ops.add_rmsnorm(x, r, w), torch_ops.add_rmsnorm(x, r, w)
check("add_rmsnorm two-pass normed", got[0], want[0])
check("add_rmsnorm two-pass sum", got[1], want[1])
caller_buffers("two-pass", torch.bfloat16, 3, 100)
caller_buffers("two-pass, row-strided", torch.float16, 3, 100, row_stride=130)
triton_ops.MAX_ONE_PASS, triton_ops.LOOP_BLOCK = 8192, 4096
triton_ops._OVERRIDE["norm"] = (128, 4, 4)
x = rand(10, 100, dtype=torch.float16)
check("rmsnorm 4 rows per program, 10 rows", triton_ops.rmsnorm(x, w.half()), torch_ops.rmsnorm(x, w.half()))
triton_ops._OVERRIDE["silu_mul"] = (16, 1, 1)
g = rand(3, 2 * 37)
check("silu_mul 3 column blocks", triton_ops.silu_mul(g), torch_ops.silu_mul(g))
triton_ops._OVERRIDE.clear()

# In place on tensors whose rows are no view (a transposed pair): computed, then written back.
xt, rt, w8 = rand(8, 3).t(), rand(8, 3, seed=1).t(), rand(8, seed=2)
want_y, want_s = triton_ops.add_rmsnorm(xt, rt, w8)
triton_ops.add_rmsnorm(xt, rt, w8, inplace=True)
same("add_rmsnorm inplace, transposed normed", xt, want_y)
same("add_rmsnorm inplace, transposed sum", rt, want_s)

# Inputs the kernels do not take go to torch: float64, mixed dtypes, broadcasting.
xd = rand(3, 8).double()
results.append(
    {"case": "float64 -> torch", "err": 0.0, "ok": triton_ops.rmsnorm(xd, xd[0]).equal(torch_ops.rmsnorm(xd, xd[0]))}
)
a, b = rand(3, 8), rand(3, 8, dtype=torch.float16)
results.append(
    {"case": "mixed dtypes -> torch", "err": 0.0, "ok": triton_ops.silu_mul(a, b).equal(torch_ops.silu_mul(a, b))}
)
c = rand(1, 8)
results.append(
    {"case": "broadcast -> torch", "err": 0.0, "ok": triton_ops.silu_mul(a, c).equal(torch_ops.silu_mul(a, c))}
)

json.dump(results, sys.stdout)
