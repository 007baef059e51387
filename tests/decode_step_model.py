"""A tiny Llama-shaped decode step for the plan/run tests (CPU) and the CUDA-graph test (GPU).

Per layer: rmsnorm -> qkv linear -> RoPE (neox) -> attention -> o-proj -> add_rmsnorm -> silu_mul MLP -> add.
Attention is either :class:`PagedAttentionWrapper.run` (plan once per step) or
:meth:`PagedAttentionBackend.forward` with builder metadata; everything else is the provider's kernels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Dims:
    layers: int = 2
    hidden: int = 64
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 16
    mlp: int = 96
    block_size: int = 4
    num_blocks: int = 40
    max_batch: int = 6
    max_blocks: int = 8
    max_pos: int = 64


def rope_torch(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, head: int, cos_sin: torch.Tensor) -> None:
    """Neox RoPE in place on ``q [T, Hq*D]`` and ``k [T, Hkv*D]`` (capturable: device ops only)."""
    cs = cos_sin.index_select(0, positions)
    half = cs.shape[1] // 2
    cos, sin = cs[:, None, :half], cs[:, None, half:]
    for x in (q, k):
        xv = x.view(x.shape[0], -1, head)
        x1, x2 = xv[..., :half].float(), xv[..., half : 2 * half].float()
        r1 = (x1 * cos - x2 * sin).to(x.dtype)
        r2 = (x2 * cos + x1 * sin).to(x.dtype)
        xv[..., :half].copy_(r1)
        xv[..., half : 2 * half].copy_(r2)


def make_weights(dims: Dims, dtype: torch.dtype, device: str, seed: int = 0) -> dict[str, Any]:
    g = torch.Generator(device="cpu").manual_seed(seed)

    def w(*shape: int, s: float = 0.08) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * s).to(device=device, dtype=dtype)

    qkv_out = (dims.heads + 2 * dims.kv_heads) * dims.head_dim
    layers = [
        {
            "ln1": 1 + w(dims.hidden, s=0.1), "qkv": w(qkv_out, dims.hidden),
            "o": w(dims.hidden, dims.heads * dims.head_dim),
            "ln2": 1 + w(dims.hidden, s=0.1), "gate_up": w(2 * dims.mlp, dims.hidden), "down": w(dims.hidden, dims.mlp),
        }
        for _ in range(dims.layers)
    ]  # fmt: skip
    inv = 1.0 / (10000 ** (torch.arange(0, dims.head_dim, 2, dtype=torch.float64) / dims.head_dim))
    ang = torch.arange(dims.max_pos, dtype=torch.float64)[:, None] * inv[None, :]
    cos_sin = torch.cat([ang.cos(), ang.sin()], dim=1).to(device=device, dtype=torch.float32)
    return {"layers": layers, "cos_sin": cos_sin}


def decode_step(
    x: torch.Tensor,
    positions: torch.Tensor,
    weights: dict[str, Any],
    caches: list[tuple[torch.Tensor, torch.Tensor]],
    kernels: dict[str, Any],
    attend: Any,
    dims: Dims,
) -> torch.Tensor:
    """One decode step over every layer; ``attend(layer, q, k, v, cache) -> [T, Hq, D]``."""
    t = x.shape[0]
    lin, rms, add_rms, silu_mul, rope = (kernels[n] for n in ("linear", "rmsnorm", "add_rmsnorm", "silu_mul", "rope"))
    residual = x
    h = rms(x, weights["layers"][0]["ln1"], 1e-6)
    for i, lw in enumerate(weights["layers"]):
        if i:
            h, residual = add_rms(h, residual, lw["ln1"], 1e-6)
        qkv = lin(h, lw["qkv"])
        nq, nkv = dims.heads * dims.head_dim, dims.kv_heads * dims.head_dim
        q, k, v = qkv[:, :nq].contiguous(), qkv[:, nq : nq + nkv].contiguous(), qkv[:, nq + nkv :].contiguous()
        rope(positions, q, k, dims.head_dim, weights["cos_sin"])
        q3 = q.view(t, dims.heads, dims.head_dim)
        k3 = k.view(t, dims.kv_heads, dims.head_dim)
        v3 = v.view(t, dims.kv_heads, dims.head_dim)
        a = attend(i, q3, k3, v3, caches[i])
        o = lin(a.reshape(t, nq), lw["o"])
        h, residual = add_rms(o, residual, lw["ln2"], 1e-6)
        m = lin(silu_mul(lin(h, lw["gate_up"])), lw["down"])
        h = m
    out: torch.Tensor = h + residual
    return out


def step_batch(
    rng: Any, dims: Dims, owned: list[list[int]], lens: list[int]
) -> tuple[list[int], list[list[int]], list[int]]:
    """Grow each sequence by one token (allocating a block when it crosses a boundary); returns
    ``(context_lens, block_tables (padded to max_blocks), slots)`` for the step."""
    ctx, tables, slots = [], [], []
    free = sorted(set(range(dims.num_blocks)) - {b for row in owned for b in row})
    for i, n in enumerate(lens):
        while n // dims.block_size >= len(owned[i]):
            owned[i].append(free.pop(rng.randrange(len(free))))
        ctx.append(n)
        slots.append(owned[i][n // dims.block_size] * dims.block_size + n % dims.block_size)
        tables.append(owned[i] + [rng.randrange(dims.num_blocks)] * (dims.max_blocks - len(owned[i])))
    return ctx, tables, slots
