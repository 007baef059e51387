"""Paged-attention benchmark: the Triton kernels against contiguous SDPA, gather-then-SDPA and FlexAttention.

Geometry of every case: bf16, 32 query heads / 8 KV heads, head dim 128, 16-token pages handed out in
random order from a block-major arena (K and V pages interleaved, so ``stride(0)`` is twice a page).
Each row is measured in one run (decode rows: medians over 3 fresh allocations, see :func:`bench_case`):

- ceiling: ``F.scaled_dot_product_attention`` (default dispatch, ``enable_gqa``) on the same K/V laid out
  contiguously as ``[B, Hkv, S, D]``; the chunked-prefill case uses a lower-right causal bias;
- naive: index the cache with the block tables into contiguous tensors, then the same SDPA, timed together;
- ours: ``paged_decode`` / ``paged_prefill`` on the pages; for the ``backend`` case, the whole
  ``PagedAttentionBackend.forward`` on packed new tokens (``store_kv`` into the pages, then attention over the
  call's own K/V, :mod:`sagellm_backend.attention.paged_dense`), with the dense attention alone, the
  store alone and the two on separate streams as extras;
- extra: ``torch.compile``d FlexAttention on the contiguous K/V (NaN when it fails to compile or run), SDPA
  with each backend forced, and the largest difference between ours and the ceiling's output.

Decode reports KV-read bandwidth, ``bytes(K + V of all visible positions) / time``; prefill reports
``4 * sum(q_len * visible keys) * Hq * D / time`` in TFLOP/s, the same count for every variant. Times
come from CUDA events around a loop of calls (about 30 ms per trial), median of 7 trials after warm-up.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .harness import Result, event_trials

__all__ = [
    "CASES",
    "PagedCase",
    "bench_case",
    "bench_fp8_decode",
    "bench_paged_attention",
    "bench_sliding_window",
    "build_case",
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


def build_case(case: PagedCase, device: str, seed: int = 0) -> dict[str, Any]:
    """Tensors of one case: shuffled pages, the same K/V contiguous, queries, index tensors.

    Args:
        case: The case.
        device: CUDA device.
        seed: Random seed.

    Returns:
        ``q`` (``[B, Hq, D]`` decode or packed ``[T, Hq, D]``), ``q4`` (``[B, Hq, L, D]`` view), ``kc``, ``vc``,
        ``bt``, ``seq_lens``, ``cu``, ``k``, ``v`` (contiguous ``[B, Hkv, S, D]``), ``scale``.
    """
    import torch

    torch.manual_seed(seed)
    dt = torch.bfloat16
    b, s = case.batch, case.keys
    pages = math.ceil(s / PAGE)
    n_blocks = b * pages + 7
    arena = torch.randn(n_blocks, 2, PAGE, HKV, HEAD_DIM, device=device, dtype=dt)
    kc, vc = arena[:, 0], arena[:, 1]
    bt = torch.randperm(n_blocks, device=device)[: b * pages].view(b, pages).to(torch.int32)
    k = kc[bt.long()].reshape(b, pages * PAGE, HKV, HEAD_DIM)[:, :s].transpose(1, 2).contiguous()
    v = vc[bt.long()].reshape(b, pages * PAGE, HKV, HEAD_DIM)[:, :s].transpose(1, 2).contiguous()
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
    except Exception:  # this build's CausalBias does not take enable_gqa: a dense boolean mask
        keep = torch.ones(case.new, case.keys, dtype=torch.bool, device=q4.device).tril(case.cached)
        return (
            lambda k, v: F.scaled_dot_product_attention(q4, k, v, attn_mask=keep, scale=scale, enable_gqa=True)
        ), "dense bool mask"


def _flex_fn(case: PagedCase, t: dict[str, Any]) -> Callable[[], Any]:
    """Compiled FlexAttention on the contiguous K/V."""
    import torch
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    flex = torch.compile(flex_attention, dynamic=False)
    q4, k, v, scale = t["q4"].contiguous(), t["k"], t["v"], t["scale"]
    if case.kind == "decode":
        return lambda: flex(q4, k, v, scale=scale, enable_gqa=True)
    off = case.cached

    def causal(b: Any, h: Any, qi: Any, ki: Any) -> Any:
        return qi + off >= ki

    bm = create_block_mask(causal, None, None, case.new, case.keys, device=str(k.device))
    return lambda: flex(q4, k, v, block_mask=bm, scale=scale, enable_gqa=True)


def _measure(fn: Callable[[], Any]) -> float:
    try:
        return time_cuda(fn)
    except Exception:  # a variant this torch build cannot run: reported as NaN
        return math.nan


def _variants(case: PagedCase, t: dict[str, Any]) -> tuple[dict[str, Callable[[], Any]], str]:
    """The three timed variants of one case (ceiling, naive, ours) and the ceiling's mask kind."""
    import torch

    from ..attention.paged_triton import paged_decode
    from ..attention.paged_triton_prefill import paged_prefill

    sdpa, mask_kind = sdpa_fn(case, t)
    kc, vc, bt, lens, cu, scale = t["kc"], t["vc"], t["bt"], t["seq_lens"], t["cu"], t["scale"]
    b, s, pages = case.batch, case.keys, t["bt"].shape[1]
    out = torch.empty_like(t["q"])

    def ours() -> Any:
        if case.kind == "decode":
            return paged_decode(t["q"], kc, vc, bt, lens, scale, out=out)
        return paged_prefill(t["q"], kc, vc, bt, cu, lens, scale, out=out)

    if case.path == "backend":
        ours = _backend_forward(case, t)

    def naive() -> Any:
        idx = bt.long()
        k = kc[idx].view(b, pages * PAGE, HKV, HEAD_DIM)[:, :s].transpose(1, 2)
        v = vc[idx].view(b, pages * PAGE, HKV, HEAD_DIM)[:, :s].transpose(1, 2)
        return sdpa(k, v)

    return {"sdpa": lambda: sdpa(t["k"], t["v"]), "naive": naive, "ours": ours}, mask_kind


def _packed_kv(t: dict[str, Any]) -> tuple[Any, Any]:
    """The contiguous ``[B, Hkv, S, D]`` K/V of a case packed as ``[B*S, Hkv, D]`` (new tokens of a prefill)."""
    return tuple(x.transpose(1, 2).reshape(-1, HKV, HEAD_DIM).contiguous() for x in (t["k"], t["v"]))


def _backend_forward(case: PagedCase, t: dict[str, Any]) -> Callable[[], Any]:
    """``PagedAttentionBackend.forward`` of a prefill case's packed tokens into its pages (metadata built once)."""
    import torch

    from ..attention.builder import PagedAttentionMetadataBuilder
    from ..attention.paged import PagedAttentionBackend

    k, v = _packed_kv(t)
    builder = PagedAttentionMetadataBuilder(PAGE, device=torch.device(t["q"].device))
    md = builder.build_prefill_metadata(
        seq_lens=[case.new] * case.batch, block_tables=t["bt"], cached_lens=[case.cached] * case.batch
    )
    backend = PagedAttentionBackend(PAGE)
    caches = (t["kc"], t["vc"])
    return lambda: backend.forward(t["q"], k, v, md, kv_cache=caches, scale=t["scale"])


def _backend_parts(case: PagedCase, t: dict[str, Any]) -> dict[str, float]:
    """The backend case's dense attention alone and ``store_kv`` alone, in the row's unit (store: us)."""
    import torch

    from ..attention.paged import select_paged_ops
    from ..attention.paged_dense import dense_prefill

    k, v = _packed_kv(t)
    lens = [case.new] * case.batch
    ops, impl = select_paged_ops(t["q"].device, t["q"].dtype, HEAD_DIM, PAGE)
    bt = t["bt"].long()
    slots = (bt[:, :, None] * PAGE + torch.arange(PAGE, device=bt.device)).reshape(case.batch, -1)[:, : case.new]
    slots = slots.reshape(-1).contiguous()
    attend = _measure(lambda: dense_prefill(t["q"], k, v, lens, t["scale"]))
    store = _measure(lambda: ops.store_kv(k, v, t["kc"], t["vc"], slots))
    side = torch.cuda.Stream()  # type: ignore[no-untyped-call]  # torch.cuda.Stream.__new__ is untyped

    def overlapped() -> Any:  # the store on a side stream while the attention runs: could the two overlap?
        cur = torch.cuda.current_stream()
        side.wait_stream(cur)
        with torch.cuda.stream(side):
            ops.store_kv(k, v, t["kc"], t["vc"], slots)
        out = dense_prefill(t["q"], k, v, lens, t["scale"])
        cur.wait_stream(side)
        return out

    both = _measure(overlapped)
    return {
        "dense attention alone": case.work() / attend / 1e12,
        f"store_kv ({impl}) alone, us": 1e6 * store,
        "store on a side stream || attention": case.work() / both / 1e12,
    }


def _extras(case: PagedCase, t: dict[str, Any], fns: dict[str, Callable[[], Any]], flex: bool) -> dict[str, float]:
    """Forced SDPA backends, compiled Flex, and the largest output difference, on one allocation."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    per = 1e9 if case.kind == "decode" else 1e12
    extra: dict[str, float] = {}
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                          ("efficient", SDPBackend.EFFICIENT_ATTENTION)):  # fmt: skip

        def forced(backend: Any = backend) -> Any:
            with sdpa_kernel([backend]):
                return fns["sdpa"]()

        extra[f"SDPA {name} only"] = case.work() / _measure(forced) / per
    if flex:
        try:
            extra["flex (compiled, contiguous KV)"] = case.work() / _measure(_flex_fn(case, t)) / per
        except Exception:  # compile failure: n/a
            extra["flex (compiled, contiguous KV)"] = math.nan
    if case.path == "backend":
        extra.update(_backend_parts(case, t))
    ref, got = fns["sdpa"](), fns["ours"]()
    extra["max abs diff vs SDPA x1e3"] = 1e3 * float((got.float() - ref.transpose(1, 2).reshape(got.shape)).abs().max())
    return extra


def bench_case(case: PagedCase, device: str = "cuda", *, flex: bool = True, allocations: int | None = None) -> Result:
    """Measure one case.

    Decode bandwidth moves by a few per cent with where the arena lands in device memory, so decode
    cases are rebuilt ``allocations`` times (default 3; fresh arena and page order each time) and the
    row reports the medians, with the lowest ``ours`` and ratios in ``extra``.

    Args:
        case: The case.
        device: CUDA device.
        flex: Also measure compiled FlexAttention (first allocation).
        allocations: Fresh allocations to measure (default 3 for decode, 1 for prefill).

    Returns:
        The row.
    """
    import torch

    n = allocations or (3 if case.kind == "decode" else 1)
    per = 1e9 if case.kind == "decode" else 1e12
    rates: dict[str, list[float]] = {"sdpa": [], "naive": [], "ours": []}
    extra: dict[str, float] = {}
    mask_kind = ""
    for r in range(n):
        t = build_case(case, device, seed=r)
        fns, mask_kind = _variants(case, t)
        if r == 0:
            extra = _extras(case, t, fns, flex)
        for name, fn in fns.items():
            rates[name].append(case.work() / _measure(fn) / per)
        del t, fns
        torch.cuda.empty_cache()
    rate = {k: statistics.median(v) for k, v in rates.items()}
    if n > 1:
        extra[f"ours, lowest of {n} allocations"] = min(rates["ours"])
        extra["lowest ours/sdpa %"] = 100 * min(o / c for o, c in zip(rates["ours"], rates["sdpa"]))
        extra["lowest ours/naive"] = min(o / c for o, c in zip(rates["ours"], rates["naive"]))
    if case.kind == "decode":
        target = ">= 90% of contiguous SDPA and >= 3x gather+SDPA"
        met = rate["ours"] >= 0.9 * rate["sdpa"] and rate["ours"] >= 3 * rate["naive"]
    elif case.path == "backend":
        forced = [extra.get(f"SDPA {name} only", math.nan) for name in ("flash", "cudnn", "efficient")]
        best = max([rate["sdpa"], *(x for x in forced if not math.isnan(x))])
        extra["ours / best SDPA backend %"] = 100 * rate["ours"] / best
        target = ">= 90% of the best SDPA backend"
        met = rate["ours"] >= 0.9 * best
    else:
        target = ">= 70% of contiguous SDPA"
        met = rate["ours"] >= 0.7 * rate["sdpa"]
    unit = "GB/s (KV read)" if case.kind == "decode" else "TFLOP/s"
    label = f"{case.label} (SDPA: {mask_kind})" if case.kind == "prefill" else case.label
    return Result("paged attention", label, unit, rate["sdpa"], rate["naive"], rate["ours"], extra, target, met)


def bench_sliding_window(device: str = "cuda", *, batch: int = 4, context: int = 32768, window: int = 4096) -> Result:
    """Decode over ``context`` tokens with a ``window``-token sliding window against decode over ``window`` tokens.

    The ceiling is ``paged_decode`` over exactly the window's keys as a ``window``-token context (the block
    table's last columns), the baseline the same ``context`` without a window; both use the same pages, so
    ``extra`` also reports the largest difference between the windowed and the ceiling's output.

    Args:
        device: CUDA device.
        batch: Sequences.
        context: Tokens per sequence (a multiple of the page size).
        window: Window in tokens (a multiple of the page size).

    Returns:
        The row, in microseconds per call (lower is better).
    """
    from ..attention.paged_triton import paged_decode

    t = build_case(PagedCase("decode", batch, 1, context), device)
    q, kc, vc, bt, lens, scale = t["q"], t["kc"], t["vc"], t["bt"], t["seq_lens"], t["scale"]
    tail_bt = bt[:, (context - window) // PAGE :].contiguous()
    tail_lens = lens.clone().fill_(window)
    fns: dict[str, Callable[[], Any]] = {
        "ceiling": lambda: paged_decode(q, kc, vc, tail_bt, tail_lens, scale),
        "naive": lambda: paged_decode(q, kc, vc, bt, lens, scale),
        "ours": lambda: paged_decode(q, kc, vc, bt, lens, scale, sliding_window=window),
    }
    us = {k: 1e6 * _measure(fn) for k, fn in fns.items()}
    diff = float((fns["ours"]().float() - fns["ceiling"]().float()).abs().max())
    return Result(
        "paged attention", f"decode {batch} seqs x {context} tokens, {window}-token sliding window", "us/call",
        us["ceiling"], us["naive"], us["ours"], {"max abs diff vs window as context x1e3": 1e3 * diff},
        f"<= 1.3x the time of a {window}-token context", us["ours"] <= 1.3 * us["ceiling"], higher_is_better=False,
    )  # fmt: skip


def bench_fp8_decode(case: PagedCase, device: str = "cuda", kv_cache_dtype: str = "fp8_e4m3") -> Result:
    """Decode over an fp8 KV cache against the bf16 paged decode of the same case, in one run.

    The fp8 pages are the bf16 pages quantised with per-tensor scales. Times in microseconds per call:
    the ceiling is half the time of a device copy of the fp8 KV bytes (reading them once at the copy
    bandwidth, which counts read + written bytes), the baseline the bf16 ``paged_decode``.

    Args:
        case: A decode case.
        device: CUDA device.
        kv_cache_dtype: ``"fp8_e4m3"`` or ``"fp8_e5m2"``.

    Returns:
        The row (lower is better); ``extra`` has the speed-up over bf16, both bandwidths and the largest
        difference from the bf16 result.
    """
    import torch

    from ..attention.kv_quant import fp8_dtype, quantize
    from ..attention.paged_triton import paged_decode

    t = build_case(case, device)
    q, kc, vc, bt, lens, scale = t["q"], t["kc"], t["vc"], t["bt"], t["seq_lens"], t["scale"]
    fp8 = fp8_dtype(kv_cache_dtype)
    ks, vs = (c.float().abs().amax().reshape(1) / torch.finfo(fp8).max for c in (kc, vc))
    n = kc.shape[0]
    k8, v8 = (
        quantize(c.reshape(-1, HKV, HEAD_DIM), s_, fp8).view(n, PAGE, HKV, HEAD_DIM) for c, s_ in ((kc, ks), (vc, vs))
    )
    read = case.work() / 2  # fp8 bytes of K + V read
    src = torch.empty(int(read), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    fns: dict[str, Callable[[], Any]] = {
        "copy": lambda: dst.copy_(src),
        "bf16": lambda: paged_decode(q, kc, vc, bt, lens, scale),
        "fp8": lambda: paged_decode(q, k8, v8, bt, lens, scale, k_scale=ks, v_scale=vs),
    }
    sec = {k: _measure(fn) for k, fn in fns.items()}
    copy_bw = 2 * read / sec["copy"]
    diff = float((fns["fp8"]().float() - fns["bf16"]().float()).abs().max())
    extra = {
        "speed-up over bf16": sec["bf16"] / sec["fp8"],
        "fp8 KV read GB/s": read / sec["fp8"] / 1e9,
        "copy GB/s (read + written)": copy_bw / 1e9,
        "max abs diff vs bf16 x1e3": 1e3 * diff,
    }
    met = sec["fp8"] * 1.8 <= sec["bf16"] and read / sec["fp8"] >= 0.9 * copy_bw
    return Result(
        "paged attention", f"{case.label}, {kv_cache_dtype} KV cache", "us/call", 1e6 * sec["copy"] / 2,
        1e6 * sec["bf16"], 1e6 * sec["fp8"], extra, ">= 1.8x bf16 paged decode and >= 90% of the copy bandwidth",
        met, higher_is_better=False,
    )  # fmt: skip


def bench_paged_attention(device: str = "cuda", quick: bool = False, *, flex: bool = True) -> list[Result]:
    """Every case of :data:`CASES` (``quick``: the decode cases and the empty-cache prefill kernel, without Flex),
    then :func:`bench_sliding_window` and :func:`bench_fp8_decode` of the decode cases.

    Args:
        device: CUDA device.
        quick: Fewer cases, no FlexAttention.
        flex: Measure compiled FlexAttention (ignored when ``quick``).

    Returns:
        One row per case.
    """
    cases = CASES[:3] if quick else CASES
    rows = [bench_case(c, device, flex=flex and not quick) for c in cases]
    rows.append(bench_sliding_window(device))
    rows += [bench_fp8_decode(c, device) for c in CASES if c.kind == "decode"]
    return rows
