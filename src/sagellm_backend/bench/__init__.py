"""KV-block benchmarks behind ``sagellm-backend bench``.

Each benchmark measures, in one run, the ceiling (the plain operation on the same bytes), a
baseline (what a caller does without this package), and ours, and reports the ratios:

- ``pool allocate+free``: block-id allocator throughput (:mod:`.pool`);
- ``copy_blocks``: bandwidth on N x 64 KiB scattered blocks, and wall time per call on short
  Python lists (:mod:`.blockcopy`);
- ``swap_out`` / ``swap_in``, ``migrate``: moving blocks between memories (:mod:`.transfer`);
- ``events``: device event overhead (:mod:`.events`).

Timing is in :mod:`.harness`, baselines in :mod:`.baselines`, output in :mod:`.report`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from ..api.provider import BackendProvider
from ..errors import InvalidArgumentError
from ..registry import get_provider
from .baselines import LinkedFreeQueue
from .blockcopy import bench_copy_blocks, bench_copy_short_lists, short_list_case
from .events import bench_events
from .harness import BENCH_GEOMETRY, Result, is_device
from .pool import bench_pool_alloc
from .report import check_output_paths, json_document, machine_line, markdown_report, plot_copy_bandwidth, table
from .transfer import bench_migrate, bench_swap

__all__ = [
    "BENCH_GEOMETRY",
    "LinkedFreeQueue",
    "Result",
    "bench_copy_blocks",
    "bench_copy_short_lists",
    "bench_events",
    "bench_migrate",
    "bench_pool_alloc",
    "bench_swap",
    "plan",
    "run_cli",
    "run_suite",
    "table",
]

SHORT_LIST_PAIRS = (1, 4, 32)
"""(src, dst) pairs per call in the short-list ``copy_blocks`` case."""

_OLD_IDS = {"p1": "copy_blocks", "p6": "copy_blocks", "p2": "swap", "p5": "pool"}


def plan(provider: BackendProvider, quick: bool) -> list[tuple[str, Callable[[], Any]]]:
    """Benchmarks that fit ``provider``, labelled by what they measure.

    Args:
        provider: The provider.
        quick: Smaller sizes.

    Returns:
        ``(label, thunk)`` pairs; a thunk returns a :class:`Result`, a list of them, or None.
        Labels: ``"pool allocate+free"``, ``"copy_blocks 1024 x 64 KiB"``,
        ``"copy_blocks 1 pair (Python lists)"``, ``"swap 1024 x 64 KiB"``, ``"migrate"``,
        ``"events"``, ``"paged attention"``, ``"fused kernels"`` and ``"attention host cost"`` (CUDA),
        ``"paged attention decode (host)"`` (CPU).
    """
    device = is_device(provider)
    sizes = [64, 256, 1024] + ([8192] if device else [])
    if quick:
        sizes = [64, 256] + ([1024] if device else [])
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("pool allocate+free", partial(bench_pool_alloc, provider, quick=quick))
    ]
    steps += [(f"copy_blocks {n} x 64 KiB", partial(bench_copy_blocks, provider, n, quick=quick)) for n in sizes]
    steps += [
        (f"copy_blocks {short_list_case(n)}", partial(bench_copy_short_lists, provider, n, quick=quick))
        for n in SHORT_LIST_PAIRS
    ]
    steps.append((f"swap {sizes[-1]} x 64 KiB", partial(bench_swap, provider, sizes[-1], quick=quick)))
    if device:
        steps.append(("migrate", partial(bench_migrate, provider, quick=quick)))
        steps.append(("events", partial(bench_events, provider, quick=quick)))
    if provider.device_type == "cuda":
        from .fused import bench_fused_kernels
        from .paged_attention import bench_paged_attention
        from .paged_variants import bench_paged_variants

        steps.append(("paged attention", partial(bench_paged_attention, provider.device, quick)))
        steps.append(("paged attention variants", partial(bench_paged_variants, provider.device)))
        steps.append(("fused kernels", partial(bench_fused_kernels, provider.device, quick)))
        from .decode_host import bench_decode_host_cost

        steps.append(("attention host cost", partial(bench_decode_host_cost, provider.device, quick)))
    elif provider.device_type == "cpu":
        from .attention_host import bench_host_paged_decode

        steps.append(("paged attention decode (host)", partial(bench_host_paged_decode, quick=quick)))
    return steps


def _select(steps: list[tuple[str, Callable[[], Any]]], only: set[str] | None) -> list[tuple[str, Callable[[], Any]]]:
    """The steps whose label starts with one of ``only`` (case-insensitive)."""
    if not only:
        return steps
    wanted = {_OLD_IDS.get(o.strip().lower(), o.strip().lower()) for o in only}
    unmatched = sorted(w for w in wanted if not any(label.lower().startswith(w) for label, _ in steps))
    if unmatched:
        names = ", ".join(repr(label) for label, _ in steps)
        raise InvalidArgumentError(
            f"only={', '.join(map(repr, unmatched))} matches no benchmark for this provider (names match by prefix, "
            f"case-insensitive). Pick from: {names}."
        )
    return [s for s in steps if any(s[0].lower().startswith(w) for w in wanted)]


def run_suite(
    provider: BackendProvider, *, quick: bool = False, only: set[str] | None = None, progress: bool = True
) -> list[Result]:
    """Run every benchmark that fits ``provider``, with a progress bar on stderr.

    Args:
        provider: The provider.
        quick: Smaller sizes, fewer repetitions.
        only: Label prefixes to run (``"copy_blocks"``, ``"swap"``, ``"pool"`` ...).
        progress: Draw the progress bar.

    Returns:
        The rows.

    Raises:
        InvalidArgumentError: An entry of ``only`` matches no benchmark (checked before any runs).
    """
    steps = _select(plan(provider, quick), only)
    results: list[Result] = []
    for k, (label, thunk) in enumerate(steps):
        if progress:
            done = int(30 * k / max(1, len(steps)))
            bar = f"[{'#' * done}{'.' * (30 - done)}] {k}/{len(steps)} {label:<36}"
            print(f"\r{bar}", end="", file=sys.stderr, flush=True)
        out = thunk()
        if out is None:
            continue
        results.extend(out if isinstance(out, list) else [out])
    if progress:
        print(f"\r[{'#' * 30}] {len(steps)}/{len(steps)} done{' ' * 36}", file=sys.stderr)
    return results


def run_cli(
    provider_name: str,
    *,
    as_json: bool = False,
    report: str | None = None,
    plot: str | None = None,
    quick: bool = False,
    only: str | None = None,
) -> int:
    """``sagellm-backend bench``.

    Args:
        provider_name: Provider to benchmark.
        as_json: Print JSON.
        report: Markdown report path.
        plot: PNG plot path.
        quick: Smaller sizes.
        only: Comma-separated label prefixes.

    Returns:
        Exit status (0; targets missed are reported, not errors).

    Raises:
        InvalidArgumentError: An output path cannot be written, or ``only`` is empty or matches
            nothing (all checked before any benchmark runs).
        UnavailableError: ``plot`` without matplotlib.
    """
    check_output_paths(report, plot)
    selected = None
    if only is not None:
        selected = {s for s in only.split(",") if s.strip()}
        if not selected:
            raise InvalidArgumentError(
                f"--only {only!r} names no benchmark; give comma-separated name prefixes, e.g. 'copy_blocks,swap'."
            )
    provider = get_provider(provider_name)
    try:
        results = run_suite(provider, quick=quick, only=selected, progress=not as_json)
        machine = machine_line(provider)
        when = time.strftime("%Y-%m-%d %H:%M")
        if as_json:
            print(json_document(provider.name, machine, when, results))
        else:
            print(f"\nprovider {provider.name} on {machine}, {when}\n")
            print(table(results))
        if report is not None:
            command = f"sagellm-backend bench --provider {provider_name}{' --quick' if quick else ''}"
            if only:
                command += f" --only {only}"
            with open(report, "w", encoding="utf-8") as fh:
                fh.write(markdown_report(provider.name, machine, when, command, results))
        if plot is not None:
            plot_copy_bandwidth(results, plot, f"copy_blocks on {provider.name}: {machine}")
    finally:
        provider.close()
    return 0
