"""The paged-attention benchmark's cases: geometry, work counts, tensors, the SDPA ceiling and the timer.

Geometry of every case: bf16, 32 query heads / 8 KV heads, head dim 128, 16-token pages handed out in
random order from a block-major arena (K and V pages interleaved, so ``stride(0)`` is twice a page).
Decode reports KV-read bandwidth, ``bytes(K + V of all visible positions) / time``; prefill reports
``4 * sum(q_len * visible keys) * Hq * D / time`` in TFLOP/s, the same count for every variant. Times
come from CUDA events around a loop of calls (about 30 ms per trial), median of 7 trials after warm-up.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .timing import event_trials

__all__ = [
    "CASES",
    "HEAD_DIM",
    "HKV",
    "HQ",
    "PAGE",
    "PagedCase",
    "build_case",
    "measure",
    "measure_optional",
    "sdpa_fn",
    "time_cuda",
]


HQ, HKV, HEAD_DIM, PAGE = 32, 8, 128, 16


@dataclass(frozen=True)
class PagedCase:
    """One benchmark case.

    Attributes:
        kind: ``"decode"`` or ``"prefill"``.
        batch: Sequences.
        new: New query tokens per sequence (1 for decode).
        cached: Key positions before the new tokens.
        path: ``"kernel"`` (the Triton op on the pages) or ``"backend"`` (the backend's ``forward``).
    """

    kind: str
    batch: int
    new: int
    cached: int
    path: str = "kernel"

    @property
    def keys(self) -> int:
        """Key positions per sequence (cached + new; decode: the visible context)."""
        return self.cached + (self.new if self.kind == "prefill" else 0)

    @property
    def label(self) -> str:
        """Human-readable case name."""
        if self.kind == "decode":
            return f"decode {self.batch} seqs x {self.cached} tokens"
        after = f" after {self.batch} x {self.cached} cached" if self.cached else " on empty cache"
        via = ", backend forward" if self.path == "backend" else ""
        return f"prefill {self.batch} x {self.new} new tokens{after}{via}"

    def work(self) -> float:
        """Bytes of K+V read (decode) or attention FLOPs (prefill)."""
        if self.kind == "decode":
            return 2.0 * self.batch * self.cached * HKV * HEAD_DIM * 2
        pairs = self.batch * (self.new * self.cached + self.new * (self.new + 1) / 2)
        return 4.0 * pairs * HQ * HEAD_DIM


CASES = (
    PagedCase("decode", 64, 1, 4096),
    PagedCase("decode", 4, 1, 32768),
    PagedCase("prefill", 8, 2048, 0),
    PagedCase("prefill", 8, 512, 4096),
    PagedCase("prefill", 8, 2048, 0, path="backend"),
)


def time_cuda(fn: Callable[[], Any], *, trials: int = 7, target_s: float = 0.03) -> float:
    """Seconds per call: CUDA events around a loop sized to ``target_s``, median of ``trials``.

    Args:
        fn: The call.
        trials: Timed trials.
        target_s: Approximate length of one trial.

    Returns:
        Median seconds per call.
    """
    import torch

    fn()
    torch.cuda.synchronize()
    reps = max(2, min(200, int(target_s / max(event_trials(fn, torch.cuda.Event, 1, 1)[0], 1e-6))))
    for _ in range(2):
        fn()
    return float(statistics.median(event_trials(fn, torch.cuda.Event, reps, trials)))


def build_case(case: PagedCase, device: str, seed: int = 0, page: int = PAGE) -> dict[str, Any]:
    """Tensors of one case: shuffled pages, the same K/V contiguous, queries, index tensors.

    Args:
        case: The case.
        device: CUDA device.
        seed: Random seed.
        page: Tokens per page.

    Returns:
        ``q`` (``[B, Hq, D]`` decode or packed ``[T, Hq, D]``), ``q4`` (``[B, Hq, L, D]`` view), ``kc``, ``vc``,
        ``bt``, ``seq_lens``, ``cu``, ``k``, ``v`` (contiguous ``[B, Hkv, S, D]``), ``scale``.
    """
    import torch

    torch.manual_seed(seed)
    dt = torch.bfloat16
    b, s = case.batch, case.keys
    pages = math.ceil(s / page)
    n_blocks = b * pages + 7
    arena = torch.randn(n_blocks, 2, page, HKV, HEAD_DIM, device=device, dtype=dt)
    kc, vc = arena[:, 0], arena[:, 1]
    bt = torch.randperm(n_blocks, device=device)[: b * pages].view(b, pages).to(torch.int32)
    k = kc[bt.long()].reshape(b, pages * page, HKV, HEAD_DIM)[:, :s].transpose(1, 2).contiguous()
    v = vc[bt.long()].reshape(b, pages * page, HKV, HEAD_DIM)[:, :s].transpose(1, 2).contiguous()
    seq_lens = torch.full((b,), s, device=device, dtype=torch.int32)
    if case.kind == "decode":
        q = torch.randn(b, HQ, HEAD_DIM, device=device, dtype=dt)
        q4 = q.unsqueeze(2)
    else:
        q = torch.randn(b * case.new, HQ, HEAD_DIM, device=device, dtype=dt)
        q4 = q.view(b, case.new, HQ, HEAD_DIM).transpose(1, 2)
    cu = torch.arange(0, b + 1, device=device, dtype=torch.int32) * case.new
    return {
        "q": q, "q4": q4, "kc": kc, "vc": vc, "bt": bt, "seq_lens": seq_lens, "cu": cu, "k": k, "v": v,
        "scale": HEAD_DIM**-0.5,
    }  # fmt: skip


def sdpa_fn(case: PagedCase, t: dict[str, Any]) -> tuple[Callable[[Any, Any], Any], str]:
    """SDPA of the case's queries on given ``[B, Hkv, S, D]`` K/V, causal as the case needs.

    Args:
        case: The case.
        t: Its tensors (:func:`build_case`).

    Returns:
        ``(fn(k, v), mask description)``.
    """
    import torch
    import torch.nn.functional as F

    q4, scale = t["q4"], t["scale"]
    if case.kind == "decode":
        return (lambda k, v: F.scaled_dot_product_attention(q4, k, v, scale=scale, enable_gqa=True)), "no mask"
    if case.cached == 0:
        return (
            lambda k, v: F.scaled_dot_product_attention(q4, k, v, is_causal=True, scale=scale, enable_gqa=True)
        ), "is_causal"
    from torch.nn.attention.bias import causal_lower_right

    bias = causal_lower_right(case.new, case.keys)
    try:
        F.scaled_dot_product_attention(q4, t["k"], t["v"], attn_mask=bias, scale=scale, enable_gqa=True)
        return (
            lambda k, v: F.scaled_dot_product_attention(q4, k, v, attn_mask=bias, scale=scale, enable_gqa=True)
        ), "causal_lower_right bias"
    except (RuntimeError, TypeError, ValueError, NotImplementedError):  # this build's CausalBias refuses enable_gqa
        keep = torch.ones(case.new, case.keys, dtype=torch.bool, device=q4.device).tril(case.cached)
        return (
            lambda k, v: F.scaled_dot_product_attention(q4, k, v, attn_mask=keep, scale=scale, enable_gqa=True)
        ), "dense bool mask"


def measure(fn: Callable[[], Any]) -> float:
    """Seconds per call of ``fn`` (:func:`time_cuda`); an error in ``fn`` propagates.

    Args:
        fn: The call.

    Returns:
        Median seconds per call.
    """
    return time_cuda(fn)


def measure_optional(fn: Callable[[], Any], what: str) -> float:
    """Seconds per call of a baseline this torch build may lack (a forced SDPA backend, compiled FlexAttention),
    or NaN with a warning naming it and the error where it cannot run (torch raises ``RuntimeError``,
    ``NotImplementedError`` or, for a module it lacks, ``ImportError`` then); any other error propagates.

    Args:
        fn: The call.
        what: The baseline's name, for the warning.

    Returns:
        Median seconds per call, or NaN.
    """
    try:
        return time_cuda(fn)
    except (RuntimeError, NotImplementedError, ImportError) as e:
        warnings.warn(f"{what} cannot run with this torch build, reported as NaN: {e}", stacklevel=2)
        return math.nan
