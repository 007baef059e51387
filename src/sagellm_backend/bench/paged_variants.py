"""Paged-attention variant rows: a sliding window, and decode over an fp8 KV cache (cases of :mod:`.paged_cases`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..attention.registry import impls_of
from ..errors import InvalidArgumentError
from ..kv.layout import PAGE_LAYOUTS
from .harness import Result
from .paged_cases import CASES, HEAD_DIM, HKV, PAGE, PagedCase, build_case, measure
from .timing import device_time_per_call

#: The ``extra`` entry saying how a row was timed: 1.0 from CUDA-graph replays (device time), 0.0 eagerly.
GRAPHED = "timed from CUDA graph replays (1) or eagerly (0)"

__all__ = [
    "FP8_ROW_PAGES",
    "GRAPHED",
    "bench_fp8_decode",
    "bench_paged_variants",
    "bench_sliding_window",
    "device_seconds",
]


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
        The row, in microseconds of device work per call (:func:`device_seconds`; lower is better).
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
    sec, graphed = device_seconds(fns)
    us = {k: 1e6 * v for k, v in sec.items()}
    diff = float((fns["ours"]().float() - fns["ceiling"]().float()).abs().max())
    extra = {"max abs diff vs window as context x1e3": 1e3 * diff, GRAPHED: graphed}
    return Result(
        "paged attention", f"decode {batch} seqs x {context} tokens, {window}-token sliding window", "us/call",
        us["ceiling"], us["naive"], us["ours"], extra,
        f"<= 1.3x the time of a {window}-token context", us["ours"] <= 1.3 * us["ceiling"], higher_is_better=False,
    )  # fmt: skip


def _stored(cache: Any, page_layout: str) -> Any:
    """A token-major ``[nb, bs, Hkv, D]`` cache's values with each page stored ``page_layout`` (``"NHD"`` or
    ``"HND"``: :data:`..kv.layout.PAGE_LAYOUTS`), seen ``[nb, bs, Hkv, D]``."""
    return cache if page_layout == "NHD" else cache.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)


def bench_fp8_decode(
    case: PagedCase, device: str = "cuda", kv_cache_dtype: str = "fp8_e4m3", page_layout: str = "HND",
    page_size: int = PAGE,
) -> Result:  # fmt: skip
    """Decode over an fp8 KV cache against the bf16 paged decode of the same case, in one run.

    The fp8 pages are the bf16 pages quantised with per-tensor scales, stored in each of a pool's page layouts.
    Times in microseconds of device work per call (:func:`device_seconds`): the ceiling is half the time of a device
    copy of the fp8 KV bytes (reading them once at the copy bandwidth, which counts read + written bytes; the faster
    of its graph-replayed and its event-timed copies), the baseline the bf16 ``paged_decode`` (token-major pages).

    Args:
        case: A decode case.
        device: CUDA device.
        kv_cache_dtype: ``"fp8_e4m3"`` or ``"fp8_e5m2"``.
        page_layout: The fp8 pages of the row (``"NHD"`` or ``"HND"``, the faster for fp8 on an H100: see
            docs/PERFORMANCE.md); ``extra`` times both.
        page_size: Tokens per page, of the bf16 and the fp8 caches alike.

    Returns:
        The row (lower is better); ``extra`` has the speed-up over bf16, both bandwidths, the time over each page
        layout and the largest difference from the bf16 result.

    Raises:
        InvalidArgumentError: Another page layout, or a page size the Triton paged decode does not take.
    """
    if page_layout not in PAGE_LAYOUTS:
        raise InvalidArgumentError(f"page_layout must be one of {PAGE_LAYOUTS}; got {page_layout!r}.")
    sizes = next(i.block_sizes for i in impls_of("paged") if i.name == "triton")  # the decode it times
    if type(page_size) is not int or sizes is None or not sizes.fits(page_size):
        raise InvalidArgumentError(
            f"page_size must be a block size the Triton paged decode takes ({sizes}); got {page_size!r}."
        )
    import torch

    from ..attention.kv_quant import fp8_dtype, quantize
    from ..attention.paged_triton import paged_decode

    t = build_case(case, device, page=page_size)
    q, kc, vc, bt, lens, scale = t["q"], t["kc"], t["vc"], t["bt"], t["seq_lens"], t["scale"]
    fp8 = fp8_dtype(kv_cache_dtype)
    ks, vs = (c.float().abs().amax().reshape(1) / torch.finfo(fp8).max for c in (kc, vc))
    n = kc.shape[0]
    k8, v8 = (
        quantize(c.reshape(-1, HKV, HEAD_DIM), s_, fp8).view(n, page_size, HKV, HEAD_DIM)
        for c, s_ in ((kc, ks), (vc, vs))
    )
    read = case.work() / 2  # fp8 bytes of K + V read
    src = torch.empty(int(read), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)

    def fp8_call(lay: str) -> Callable[[], Any]:
        kp, vp = _stored(k8, lay), _stored(v8, lay)
        return lambda: paged_decode(q, kp, vp, bt, lens, scale, k_scale=ks, v_scale=vs)

    fns: dict[str, Callable[[], Any]] = {
        "copy": lambda: dst.copy_(src),
        "bf16": lambda: paged_decode(q, kc, vc, bt, lens, scale),
        **{lay: fp8_call(lay) for lay in PAGE_LAYOUTS},
    }
    sec, graphed = device_seconds(fns)
    # The faster of the two timings of the copy: graph-replayed copies of more than about 0.5 GB run slower than
    # back-to-back ones timed by events (2.4 against 3.0 TB/s on an H100).
    sec["copy"] = min(sec["copy"], measure(fns["copy"]))
    sec["fp8"] = sec[page_layout]
    copy_bw = 2 * read / sec["copy"]
    outs = {lay: fns[lay]() for lay in PAGE_LAYOUTS}  # each layout's result, computed once
    diff = float((outs[page_layout].float() - fns["bf16"]().float()).abs().max())
    extra = {
        "speed-up over bf16": sec["bf16"] / sec["fp8"],
        "fp8 KV read GB/s": read / sec["fp8"] / 1e9,
        "copy GB/s (read + written)": copy_bw / 1e9,
        **{f"fp8 us, {lay} pages": 1e6 * sec[lay] for lay in PAGE_LAYOUTS},
        "max abs diff vs bf16 x1e3": 1e3 * diff,
        "same result in every layout": float(all(torch.equal(out, outs["NHD"]) for out in outs.values())),
        GRAPHED: graphed,
    }
    met = sec["fp8"] * 1.8 <= sec["bf16"] and read / sec["fp8"] >= 0.9 * copy_bw
    return Result(
        "paged attention", f"{case.label}, {kv_cache_dtype} KV cache, {page_layout} pages"
        + ("" if page_size == PAGE else f" of {page_size} tokens"), "us/call",
        1e6 * sec["copy"] / 2,
        1e6 * sec["bf16"], 1e6 * sec["fp8"], extra, ">= 1.8x bf16 paged decode and >= 90% of the copy bandwidth",
        met, higher_is_better=False,
    )  # fmt: skip


def device_seconds(fns: dict[str, Callable[[], Any]]) -> tuple[dict[str, float], float]:
    """Seconds of device work per call of each function, from CUDA-graph replays, so that the rows compare kernels
    and not the host's cost of an eager call (timed in the "attention host cost" rows); all eagerly, with CUDA
    events around loops of calls, where one of them cannot be captured.

    Args:
        fns: The calls, by name.

    Returns:
        ``(seconds per call by name, 1.0 if from graph replays else 0.0)``.
    """
    graphed = {k: t for k, fn in fns.items() if (t := device_time_per_call(fn)) is not None}
    if len(graphed) == len(fns):
        return graphed, 1.0
    return {k: measure(fn) for k, fn in fns.items()}, 0.0


#: Page sizes of the fp8 rows: the bench's pages, and the pages with which fp8 decode reaches the copy rate's 90 % at
#: 4 x 32k on an H100 (docs/PERFORMANCE.md, seventeenth pass).
FP8_ROW_PAGES = (PAGE, 128)


def bench_paged_variants(device: str = "cuda") -> list[Result]:
    """:func:`bench_sliding_window`, then :func:`bench_fp8_decode` of the decode cases of :data:`.paged_cases.CASES`
    at each page size of :data:`FP8_ROW_PAGES`.

    Args:
        device: CUDA device.

    Returns:
        One row each.
    """
    fp8 = [bench_fp8_decode(c, device, page_size=p) for c in CASES if c.kind == "decode" for p in FP8_ROW_PAGES]
    return [bench_sliding_window(device), *fp8]
