"""Benchmarks of the fused Triton engine kernels against torch eager, torch.compile and a copy ceiling.

For ``rmsnorm``, ``add_rmsnorm`` (hidden 4096) and ``silu_mul`` (intermediate 11008, one-argument
``[gate | up]`` form) at 1, 16, 256 and 4096 tokens in bf16, one run measures:

* ours: the Triton kernel (:mod:`.kernels.triton_ops`);
* eager: the torch implementation (:mod:`.kernels.torch_ops`, Hugging Face's order of ops);
* torch.compile of that same function (mode ``default``, ``dynamic=False``; compilation excluded);
* ceiling: ``dst.copy_(src)`` moving as many bytes as the op reads plus writes.

Two times per variant, each the median of several trials of CUDA events around a loop, after
warm-up:

* device time: 20 calls captured in one CUDA graph, replayed; the GPU work of a call without the
  host's launch cost. The GB/s figures and ratios use it.
* per call: the Python call as an eager engine makes it, events around a loop of calls, so host
  overhead the GPU cannot hide counts (at small sizes it is all host time).

Bandwidth counts the bytes the op must read plus write (weights included), the same count for
every variant; the ceiling copy moves half that many bytes (read once, written once). At the
smaller sizes the data stays in the GPU's L2 cache, so figures above DRAM bandwidth are possible
(for the ceiling too).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from .harness import Result
from .timing import device_time_per_call, time_per_call

__all__ = [
    "HIDDEN",
    "INTERMEDIATE",
    "TOKENS",
    "bench_fused_kernels",
    "fused_table",
]

HIDDEN = 4096
INTERMEDIATE = 11008
TOKENS = (1, 16, 256, 4096)


def _cases(tokens: int, device: str) -> list[tuple[str, str, str, tuple[Any, ...], int]]:
    """(op, case, function name, args, bytes read + written) per op at this token count."""
    import torch

    bf16 = torch.bfloat16
    g = torch.Generator(device=device).manual_seed(tokens)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, device=device, dtype=torch.float32).to(bf16)

    x, r, w = rnd(tokens, HIDDEN), rnd(tokens, HIDDEN), rnd(HIDDEN)
    gu = rnd(tokens, 2 * INTERMEDIATE)
    act, wb = tokens * HIDDEN * 2, HIDDEN * 2
    return [
        ("rmsnorm", f"{tokens} x {HIDDEN} bf16", "rmsnorm", (x, w, 1e-6), 2 * act + wb),
        ("add_rmsnorm", f"{tokens} x {HIDDEN} bf16", "add_rmsnorm", (x, r, w, 1e-6), 4 * act + wb),
        ("silu_mul", f"{tokens} x 2*{INTERMEDIATE} bf16", "silu_mul", (gu,), tokens * INTERMEDIATE * 2 * 3),
    ]


def bench_fused_kernels(device: str = "cuda", quick: bool = False) -> list[Result]:
    """Measure the fused kernels, eager torch, torch.compile and the copy ceiling.

    Args:
        device: A CUDA device (``"cuda"``, ``"cuda:1"``).
        quick: Fewer trials, and only 16 and 4096 tokens.

    Returns:
        One :class:`~sagellm_backend.bench.Result` per op and token count, in GB/s (read + written):
        ``ours`` = Triton, ``naive`` = eager, ``ceiling`` = copy; ``extra`` holds ``torch_compile``
        and the ratios ``ours/ceiling``, ``ours/eager``, ``ours/compile``.
    """
    import torch

    from ..kernels import torch_ops, triton_ops

    with torch.cuda.device(torch.device(device)):
        compiled: dict[str, Callable[..., Any]] = {
            name: torch.compile(getattr(torch_ops, name), mode="default", dynamic=False)
            for name in ("rmsnorm", "add_rmsnorm", "silu_mul")
        }
        results = []
        for tokens in (16, 4096) if quick else TOKENS:
            for op, case, fname, args, nbytes in _cases(tokens, device):
                src = torch.empty(nbytes // 2, dtype=torch.uint8, device=device)
                dst = torch.empty_like(src)
                fns = {
                    "ceiling": partial(dst.copy_, src),
                    "eager": partial(getattr(torch_ops, fname), *args),
                    "compile": partial(compiled[fname], *args),
                    "ours": partial(getattr(triton_ops, fname), *args),
                }
                fns["compile"]()  # compile outside the timing
                dev = {k: device_time_per_call(f, quick=quick) for k, f in fns.items()}
                call = {k: time_per_call(f, quick=quick) for k, f in fns.items()}
                gbs = {k: (nbytes / v / 1e9 if v else 0.0) for k, v in dev.items()}
                extra = {"torch_compile": gbs["compile"]}
                for k in ("ceiling", "eager", "compile"):
                    extra[f"ours/{k}"] = gbs["ours"] / gbs[k] if gbs[k] else 0.0
                extra.update({f"{k}_us_device": (v or 0.0) * 1e6 for k, v in dev.items()})
                extra.update({f"{k}_us_call": v * 1e6 for k, v in call.items()})
                results.append(
                    Result(
                        bench=f"fused {op}",
                        case=case,
                        unit="GB/s",
                        ceiling=gbs["ceiling"],
                        naive=gbs["eager"],
                        ours=gbs["ours"],
                        extra=extra,
                        target=">= eager and >= torch.compile (device time)",
                        met=gbs["ours"] >= gbs["eager"] and gbs["ours"] >= gbs["compile"],
                    )
                )
    return results


def fused_table(results: list[Result]) -> str:
    """Markdown tables of :func:`bench_fused_kernels` rows.

    Args:
        results: Rows.

    Returns:
        Two tables: GB/s by device time with the ratios, then microseconds per call (device and
        host-inclusive).
    """
    lines = [
        "Device time (CUDA graph replay), GB/s = bytes read + written / time:",
        "",
        "| op | case | ceiling (copy) | eager | torch.compile | ours (Triton) | ours/ceiling | ours/eager "
        "| ours/compile |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        e = r.extra
        lines.append(
            f"| {r.bench.removeprefix('fused ')} | {r.case} | {r.ceiling or 0:,.0f} | {r.naive or 0:,.0f} | "
            f"{e['torch_compile']:,.0f} | {r.ours:,.0f} | {e['ours/ceiling']:.0%} | "
            f"{e['ours/eager']:.2f}x | {e['ours/compile']:.2f}x |"
        )
    lines += [
        "",
        "Microseconds per call: device time / one Python call as an eager engine makes it (host included):",
        "",
        "| op | case | copy | eager | torch.compile | ours (Triton) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        e = r.extra
        cells = " | ".join(
            f"{e[f'{k}_us_device']:.1f} / {e[f'{k}_us_call']:.1f}" for k in ("ceiling", "eager", "compile", "ours")
        )
        lines.append(f"| {r.bench.removeprefix('fused ')} | {r.case} | {cells} |")
    return "\n".join(lines)
