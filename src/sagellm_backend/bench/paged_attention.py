"""Paged-attention benchmark: the Triton kernels against contiguous SDPA, gather-then-SDPA and FlexAttention.

The cases and their geometry are in :mod:`.paged_cases`. Each row is measured in one run (decode rows:
medians over 3 fresh allocations, see :func:`bench_case`):

- ceiling: ``F.scaled_dot_product_attention`` (default dispatch, ``enable_gqa``) on the same K/V laid out
  contiguously as ``[B, Hkv, S, D]``; the chunked-prefill case uses a lower-right causal bias;
- naive: index the cache with the block tables into contiguous tensors, then the same SDPA, timed together;
- ours: ``paged_decode`` / ``paged_prefill`` on the pages; for the ``backend`` case, the whole
  ``PagedAttentionBackend.forward`` on packed new tokens (``store_kv`` into the pages, then attention over the
  call's own K/V, :mod:`sagellm_backend.attention.paged_dense`), with the dense attention alone, the
  store alone and the two on separate streams as extras;
- extra: ``torch.compile``d FlexAttention on the contiguous K/V (NaN when it fails to compile or run), SDPA
  with each backend forced, and the largest difference between ours and the ceiling's output.

The variant rows (sliding window, fp8 KV cache) are in :mod:`.paged_variants`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

from .harness import Result
from .paged_cases import CASES, HEAD_DIM, HKV, PAGE, PagedCase, build_case, measure, measure_optional, sdpa_fn

__all__ = ["bench_case", "bench_paged_attention"]


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
    attend = measure(lambda: dense_prefill(t["q"], k, v, lens, t["scale"]))
    store = measure(lambda: ops.store_kv(k, v, t["kc"], t["vc"], slots))
    side = torch.cuda.Stream()  # type: ignore[no-untyped-call]  # torch.cuda.Stream.__new__ is untyped

    def overlapped() -> Any:  # the store on a side stream while the attention runs: could the two overlap?
        cur = torch.cuda.current_stream()
        side.wait_stream(cur)
        with torch.cuda.stream(side):
            ops.store_kv(k, v, t["kc"], t["vc"], slots)
        out = dense_prefill(t["q"], k, v, lens, t["scale"])
        cur.wait_stream(side)
        return out

    both = measure(overlapped)
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

        extra[f"SDPA {name} only"] = case.work() / measure_optional(forced, f"SDPA {name}") / per
    if flex:
        built: list[Callable[[], Any]] = []

        def flex_call() -> Any:  # built at the first call, inside measure_optional: torch 2.4 has no Flex
            if not built:
                built.append(_flex_fn(case, t))
            return built[0]()

        extra["flex (compiled, contiguous KV)"] = case.work() / measure_optional(flex_call, "compiled Flex") / per
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
            rates[name].append(case.work() / measure(fn) / per)
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


def bench_paged_attention(device: str = "cuda", quick: bool = False, *, flex: bool = True) -> list[Result]:
    """Every case of :data:`CASES` (``quick``: the decode cases and the empty-cache prefill kernel, without Flex).

    Args:
        device: CUDA device.
        quick: Fewer cases, no FlexAttention.
        flex: Measure compiled FlexAttention (ignored when ``quick``).

    Returns:
        One row per case.
    """
    cases = CASES[:3] if quick else CASES
    return [bench_case(c, device, flex=flex and not quick) for c in cases]
