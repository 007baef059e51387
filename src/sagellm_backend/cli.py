"""``sagellm-backend`` command line: ``info``, ``demo``, ``check``, ``bench``.

``info`` works on a machine without torch: the table then says why each torch provider is
unavailable, and ``--json`` prints the same facts as JSON.

Exit status: 0 on success (``info`` also when the selected provider is unavailable here: that is
what it reports); 1 when a check failed or the demo's bytes differ; 2 for a usage error or any
:class:`~sagellm_backend.errors.BackendError` (an unknown provider name, a filter matching nothing,
an output path that cannot be written ...), printed as one line on stderr, without a traceback.
Arguments are checked before any benchmark or check runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ._version import __version__
from .errors import BackendError, UnavailableError
from .registry import get_provider, list_providers, resolve_provider_name

__all__ = ["main"]


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def _hardware() -> dict[str, dict[str, Any]]:
    """The hardware profiles the umbrella CLI's detection reads (never raises)."""
    from .hardware import detect_profiles

    return {name: {**prof.to_dict(), "usable": prof.is_usable()} for name, prof in detect_profiles().items()}


def _attention() -> list[dict[str, Any]]:
    """The attention implementations and what each supports (no torch import)."""
    from .attention.registry import describe_attention_impls

    return describe_attention_impls()


def _info(provider_name: str) -> dict[str, Any]:
    if provider_name.strip().lower() != "auto":
        resolve_provider_name(provider_name)  # an unknown name is a usage error, before any detection
    infos = list_providers()
    result: dict[str, Any] = {
        "version": __version__,
        "providers": [i.to_dict() for i in infos],
        "selected": None,
        "selection_error": None,
        "capability": None,
        "memory_stats": None,
        "hardware": _hardware(),
        "attention": _attention(),
    }
    try:
        provider = get_provider(provider_name)
    except UnavailableError as exc:  # a fact to report; unknown names and bad options are errors
        result["selection_error"] = str(exc)
        return result
    try:
        result["selected"] = provider.name
        result["device"] = provider.device
        result["capability"] = provider.capability().to_dict()
        result["memory_stats"] = provider.memory_stats()
    finally:
        provider.close()
    return result


def _print_info(info: dict[str, Any]) -> None:
    print(f"sagellm-backend {info['version']}\n")
    rows = [
        [
            p["name"],
            "yes" if p["available"] else "no",
            "-" if p["priority"] is None else str(p["priority"]),
            p["source"],
            p["reason"],
        ]
        for p in info["providers"]
    ]
    print(_table(rows, ["provider", "available", "auto", "source", "why"]))
    print()
    hw_rows = [
        [
            name,
            str(h.get("max_level")),
            "yes" if h.get("usable") else "no",
            str(h.get("device_count") or 0),
            ", ".join(h.get("device_names") or []) or "-",
        ]
        for name, h in info.get("hardware", {}).items()
    ]
    print(_table(hw_rows, ["hardware", "level", "usable", "devices", "names"]))
    print()
    att_rows = [
        [
            f"{a['backend']}/{a['implementation']}",
            str(a["priority"]),
            ", ".join(a["devices"]),
            ", ".join(a["dtypes"]),
            (", ".join(a["kv_cache_dtypes"]) or "-")
            + (f" (fp8: sm >= {'.'.join(map(str, a['fp8_min_capability']))})" if a["fp8_min_capability"] else ""),
            a["head_sizes"],
            a["block_sizes"] or "-",
            ", ".join(a["variants"]) or "-",
            a["unavailable_reason"] or "yes",
        ]
        for a in info.get("attention", [])
    ]
    headers = ["attention", "priority", "devices", "dtypes", "kv cache", "head sizes", "block sizes", "variants"]
    print(_table(att_rows, [*headers, "usable"]))
    print()
    if info["selected"] is None:
        print(f"selected: none ({info['selection_error']})")
        return
    print(f"selected: {info['selected']} on {info['device']}")
    cap = info["capability"] or {}
    for key, value in cap.items():
        if isinstance(value, list):
            value = ", ".join(map(str, value)) or "-"
        print(f"  {key:<24} {value}")
    print("memory:")
    for key, value in (info["memory_stats"] or {}).items():
        print(f"  {key:<24} {value:,}")


def _demo(provider_name: str) -> int:
    from .protocol import DType

    provider = get_provider(provider_name)
    print(f"provider: {provider!r}")
    cap = provider.capability()
    print(f"capability: {cap.device_name} ({cap.device_type}), dtypes {[d.value for d in cap.supported_dtypes]}")
    block = provider.kv_block_alloc(128, DType.FP16)
    print(f"allocated {block!r}")
    import os

    payload = os.urandom(block.nbytes)
    provider.kv_block_write(block, payload)
    other = provider.kv_block_alloc(128, DType.FP16)
    stream = provider.create_stream()
    start = stream.record_event()
    provider.kv_block_copy(block, other, stream=stream)
    end = stream.record_event()
    stream.synchronize()
    same = provider.kv_block_read(other) == payload
    print(
        f"async copy of {block.nbytes:,} random bytes on {stream!r}: {end.elapsed_ms(start):.3f} ms, bit-exact: {same}"
    )
    targets = [d for d in provider.reachable_devices() if d != other.device]
    if targets:
        provider.kv_block_migrate(other, targets[-1])
        print(f"migrated block {other.handle} to {other.device}, bit-exact: {provider.kv_block_read(other) == payload}")
    else:
        print(f"no other device to migrate to from {other.device} (the provider reaches only that one)")
    stats = provider.memory_stats()
    print(f"memory_stats: allocated_bytes={stats.get('allocated_bytes', 0):,} num_blocks={stats.get('num_blocks')}")
    provider.kv_block_free(block)
    provider.kv_block_free(other)
    print(f"after free: num_blocks={provider.memory_stats().get('num_blocks')}")
    provider.close()
    return 0 if same else 1


def main(argv: list[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        Process exit status.
    """
    parser = argparse.ArgumentParser(prog="sagellm-backend", description="sageLLM hardware abstraction layer")
    parser.add_argument("--version", action="version", version=f"sagellm-backend {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="providers, availability and the chosen provider's capability")
    p_info.add_argument("--provider", default="auto", help="provider to describe (default: auto)")
    p_info.add_argument("--json", action="store_true", help="print JSON")
    p_demo = sub.add_parser("demo", help="allocate, write, copy on a stream, migrate, free")
    p_demo.add_argument("--provider", default="auto")
    p_check = sub.add_parser("check", help="run the conformance suite against a provider")
    p_check.add_argument("provider", help="provider name (mock, cpu, cuda ...)")
    p_check.add_argument("--json", action="store_true")
    p_check.add_argument("-k", dest="select", default=None, help="only checks whose name contains this")
    p_bench = sub.add_parser("bench", help="KV block benchmarks for the provider at hand")
    p_bench.add_argument("--provider", default="auto")
    p_bench.add_argument("--json", action="store_true", help="print results as JSON")
    p_bench.add_argument("--report", default=None, help="write a Markdown report here (directory must exist)")
    p_bench.add_argument("--plot", default=None, help="write a PNG plot here (needs matplotlib; directory must exist)")
    p_bench.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    p_bench.add_argument(
        "--only", default=None, help="comma-separated name prefixes, e.g. 'copy_blocks,swap' or 'pool allocate+free'"
    )
    args = parser.parse_args(argv)

    try:
        if args.command == "info":
            info = _info(args.provider)
            if args.json:
                print(json.dumps(info, indent=2, default=str))
            else:
                _print_info(info)
            return 0
        if args.command == "demo":
            return _demo(args.provider)
        if args.command == "check":
            from .testing.runner import run_cli

            name = args.provider
            return run_cli(lambda: get_provider(name), as_json=args.json, select=args.select)
        if args.command == "bench":
            from .bench import run_cli as bench_cli

            return bench_cli(
                args.provider, as_json=args.json, report=args.report, plot=args.plot, quick=args.quick, only=args.only
            )
    except BackendError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message holds
        print(f"error [{exc.code.value}]: {message}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
