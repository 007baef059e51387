"""Presenting benchmark rows: Markdown table, JSON document, report file, bandwidth plot."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from ..api.provider import BackendProvider
from ..errors import InvalidArgumentError, UnavailableError
from .harness import Result

__all__ = [
    "check_output_paths",
    "json_document",
    "machine_line",
    "markdown_report",
    "plot_copy_bandwidth",
    "table",
]


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def table(results: list[Result]) -> str:
    """Markdown table of the rows.

    Args:
        results: Rows.

    Returns:
        The table; for times (``us``) the ratios are inverted so that above 1 is better.
    """
    lines = [
        "| benchmark | case | unit | ceiling | baseline | ours | ours/ceiling | ours/baseline | target | met |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        extra = "".join(f"<br>{k}: {_fmt(v)}" for k, v in r.extra.items())
        oc = "-" if r.of_ceiling is None else f"{r.of_ceiling:.0%}"
        vn = "-" if r.vs_naive is None else f"{r.vs_naive:.1f}x"
        met = "-" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(
            f"| {r.bench} | {r.case} | {r.unit} | {_fmt(r.ceiling)} | {_fmt(r.naive)} | "
            f"{_fmt(r.ours)}{extra} | {oc} | {vn} | {r.target or '-'} | {met} |"
        )
    return "\n".join(lines)


def machine_line(provider: BackendProvider) -> str:
    """One line naming the machine for reports.

    Args:
        provider: The provider.

    Returns:
        Device name, cores, versions.
    """
    cap = provider.capability()
    bits = [f"{cap.device_name} ({provider.device})", f"{os.cpu_count()} CPU cores"]
    try:
        import torch

        bits.append(f"torch {torch.__version__}")
    except ImportError:
        pass
    return ", ".join(bits)


def json_document(provider_name: str, machine: str, when: str, results: list[Result]) -> str:
    """The ``--json`` output.

    Args:
        provider_name: Provider benchmarked.
        machine: :func:`machine_line`.
        when: Date and time.
        results: Rows.

    Returns:
        Indented JSON: provider, machine, date, results (each row with its ratios).
    """
    doc = {"provider": provider_name, "machine": machine, "date": when, "results": [r.to_dict() for r in results]}
    return json.dumps(doc, indent=2)


def markdown_report(provider_name: str, machine: str, when: str, command: str, results: list[Result]) -> str:
    """The ``--report`` file.

    Args:
        provider_name: Provider benchmarked.
        machine: :func:`machine_line`.
        when: Date and time.
        command: The command line that produced it.
        results: Rows.

    Returns:
        Markdown text.
    """
    return (
        f"# sagellm-backend bench: {provider_name}\n\nMachine: {machine}  \nDate: {when}  \n"
        f"Command: `{command}`\n\n{table(results)}\n"
    )


def check_output_paths(report: str | None, plot: str | None) -> None:
    """Fail before any benchmark runs if an output file could not be written.

    Args:
        report: Markdown report path, or None.
        plot: PNG plot path, or None.

    Raises:
        InvalidArgumentError: A path is a directory, or its directory is missing or not writable,
            or the plot's file type is not one matplotlib writes.
        UnavailableError: ``plot`` is given but matplotlib is not installed.
    """
    for what, path in (("report", report), ("plot", plot)):
        if path is None:
            continue
        p = Path(path)
        parent = p.parent
        if p.is_dir():
            raise InvalidArgumentError(f"{what} path {path!r} is a directory; give a file name, e.g. {p / 'out'}.")
        if not parent.is_dir():
            raise InvalidArgumentError(
                f"{what} path {path!r}: directory {str(parent)!r} does not exist. Create it first or pick another path."
            )
        if not os.access(parent, os.W_OK):
            raise InvalidArgumentError(f"{what} path {path!r}: directory {str(parent)!r} is not writable.")
    if plot is None:
        return
    if importlib.util.find_spec("matplotlib") is None:
        raise UnavailableError("plot needs matplotlib, which is not installed: pip install matplotlib, or drop --plot.")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    kinds = FigureCanvasAgg.get_supported_filetypes()
    suffix = Path(plot).suffix.lower().lstrip(".")
    if suffix and suffix not in kinds:
        raise InvalidArgumentError(
            f"plot path {plot!r}: matplotlib cannot write {suffix!r} files; use .png (or one of "
            f"{', '.join(sorted(kinds))})."
        )


def plot_copy_bandwidth(results: list[Result], path: str, title: str) -> None:
    """PNG: copy_blocks bandwidth against block count, ceiling drawn in.

    Args:
        results: Rows (the ``copy_blocks`` bandwidth ones are plotted; nothing is written
            when there are none).
        path: Output PNG.
        title: Plot title.
    """
    rows = [r for r in results if r.bench == "copy_blocks" and r.unit == "GB/s"]
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [int(r.case.split()[0]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(xs, [r.ceiling or 0.0 for r in rows], "k--", marker="o", label="ceiling: contiguous copy, same bytes")
    ax.plot(xs, [r.ours for r in rows], marker="o", label="ours: pool.copy_blocks (index tensors)")
    ax.plot(xs, [r.naive or 0.0 for r in rows], marker="s", label="baseline: index_select + index_copy_")
    for key in ("validated_python_lists", "per_block_copy_loop"):
        if all(key in r.extra for r in rows):
            ax.plot(xs, [r.extra[key] for r in rows], marker="^", label=key.replace("_", " "))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("scattered 64 KiB blocks per call")
    ax.set_ylabel("GB/s (read + written)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
