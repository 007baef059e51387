"""Runs the Triton RoPE kernel in Triton's CPU interpreter and compares it with the torch kernel.

Run by tests/test_rope.py in a subprocess with ``TRITON_INTERPRET=1``. Prints one JSON list of
``{"case", "err", "ok"}``: ``err`` is the largest ``|got - want|`` beyond one unit in the last place of
the dtype (relative to ``|want|``), ``ok`` whether it is within a small absolute slack. bf16/fp16 allow
one unit because the interpreter truncates fp32 to bf16 where torch rounds to nearest.
"""

from __future__ import annotations

import json
import os

import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

from sagellm_backend.kernels import rope_triton, torch_ops, triton_ops  # noqa: E402
from sagellm_backend.kernels.rope import RopeShape  # noqa: E402

EPS = {torch.float32: 2.0**-23, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}
results: list[dict[str, object]] = []


def check(case: str, got: torch.Tensor, want: torch.Tensor) -> None:
    same = got.shape == want.shape and got.dtype == want.dtype
    rtol = EPS[want.dtype]
    err = ((got.double() - want.double()).abs() - rtol * want.double().abs()).max().item() if same else float("inf")
    results.append({"case": case, "err": err, "ok": bool(same and err <= 1e-6)})


def cache(max_pos: int, rot: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    inv = 1.0 / (10000.0 ** (torch.arange(0, rot, 2, dtype=torch.float64) / rot))
    f = torch.outer(torch.arange(max_pos, dtype=torch.float64), inv)
    return torch.cat([f.cos(), f.sin()], dim=-1).to(dtype)


def rand(*shape: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


for dt in (torch.float32, torch.float16, torch.bfloat16):
    name = str(dt).split(".")[-1]
    for neox in (True, False):
        for hq, hk, d, rot, flat in (
            (4, 2, 16, 16, True),
            (3, 1, 32, 16, False),
            (9, 3, 8, 8, True),
            (2, 2, 24, 12, False),
        ):
            pos = torch.tensor([0, 7, 3, 30, 12], dtype=torch.int64)
            cs = cache(31, rot)
            q = rand(5, hq, d, dtype=dt, seed=1)
            k = rand(5, hk, d, dtype=dt, seed=2)
            if flat:
                q, k = q.flatten(1), k.flatten(1)
            q_ref, k_ref = q.clone(), k.clone()
            torch_ops.rotary_embedding(pos, q_ref, k_ref, d, cs, neox)
            triton_ops.rotary_embedding(pos, q, k, d, cs, neox)
            tag = f"{name} neox={neox} hq={hq} hk={hk} d={d} rot={rot} flat={flat}"
            check(f"query {tag}", q, q_ref)
            check(f"key {tag}", k, k_ref)
    # key=None, a half-precision cache, int32 positions
    q = rand(3, 2, 16, dtype=dt, seed=3)
    q_ref = q.clone()
    pos32 = torch.tensor([1, 0, 5], dtype=torch.int32)
    torch_ops.rotary_embedding(pos32, q_ref, None, 16, cache(8, 16, dt), True)
    triton_ops.rotary_embedding(pos32, q, None, 16, cache(8, 16, dt), True)
    check(f"query only, {name} cache, int32 positions", q, q_ref)

# A strided query (a view into a fused QKV output): only the view's elements change.
qkv = rand(4, 3 * 2 * 16, dtype=torch.float32, seed=4)
before = qkv.clone()
q_view, k_view = qkv[:, :32], qkv[:, 32:64]
want_q, want_k = q_view.clone(), k_view.clone()
pos = torch.tensor([3, 2, 1, 0])
torch_ops.rotary_embedding(pos, want_q, want_k, 16, cache(4, 16), True)
triton_ops.rotary_embedding(pos, q_view, k_view, 16, cache(4, 16), True)
check("strided query view", q_view, want_q)
check("strided key view", k_view, want_k)
results.append({"case": "strided: v untouched", "err": 0.0, "ok": qkv[:, 64:].equal(before[:, 64:])})

# Out-of-range positions reach the kernel only from device memory; the kernel leaves those tokens as they are.
q = rand(4, 2, 16, dtype=torch.float32, seed=5)
k = rand(4, 1, 16, dtype=torch.float32, seed=6)
q0, k0 = q.clone(), k.clone()
bad = torch.tensor([-1, 2, 8, 1 << 40])
cs = cache(8, 16)
rope_triton.launch_rotary(bad, q, k, RopeShape(4, 2, 1, 16, 16, 8), cs, True, rope_triton.rope_strides(q, k, cs))
masked_ok = q[[0, 2, 3]].equal(q0[[0, 2, 3]]) and k[[0, 2, 3]].equal(k0[[0, 2, 3]])
results.append({"case": "out-of-range positions left unrotated", "err": 0.0, "ok": bool(masked_ok)})
want_q, want_k = q0[1:2].clone(), k0[1:2].clone()
torch_ops.rotary_embedding(torch.tensor([2]), want_q, want_k, 16, cache(8, 16), True)
check("in-range row next to masked rows", q[1:2], want_q)

print(json.dumps(results))
