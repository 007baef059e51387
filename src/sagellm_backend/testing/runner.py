"""Run the conformance checks from the command line (``sagellm-backend check <provider>``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from ..api import BackendProvider
from ..errors import InvalidArgumentError
from .checks import CHECKS, run_check

__all__ = ["run_checks", "run_cli"]


def run_checks(make: Callable[[], BackendProvider], select: str | None = None) -> list[dict[str, Any]]:
    """Run every check (or those whose name contains ``select``) against fresh providers.

    Args:
        make: Zero-argument factory returning a new provider each call.
        select: Substring filter on check names.

    Returns:
        One dict per check: ``name``, ``status`` (pass/fail/skip), ``detail``, ``seconds``, ``doc``.
    """
    results = []
    for c in CHECKS:
        if select and select not in c.name:
            continue
        status, detail, secs = run_check(c, make)
        results.append({"name": c.name, "status": status, "detail": detail, "seconds": round(secs, 4), "doc": c.doc})
    return results


def run_cli(make: Callable[[], BackendProvider], *, as_json: bool = False, select: str | None = None) -> int:
    """Run the suite against the providers ``make`` creates and print a pass/fail table.

    Args:
        make: Creates a fresh provider (``lambda: get_provider(name)``); called once first to
            name the provider, then once per check.
        as_json: Print JSON instead of a table.
        select: Substring filter on check names.

    Returns:
        0 when nothing failed, 1 otherwise.

    Raises:
        InvalidArgumentError: ``select`` matches no check (checked before the provider is created).
        ProviderNotFoundError: ``make`` names an unknown provider.
        UnavailableError: ``make``'s provider cannot run here.
    """
    if select and not any(select in c.name for c in CHECKS):
        raise InvalidArgumentError(
            f"-k {select!r} matches no check (a check is selected when its name contains the text). "
            f"Checks: {', '.join(c.name for c in CHECKS)}."
        )
    first = make()
    name, device = first.name, first.device
    first.close()
    t0 = time.perf_counter()
    results = run_checks(make, select)
    elapsed = time.perf_counter() - t0
    counts = {s: sum(r["status"] == s for r in results) for s in ("pass", "fail", "skip")}
    if as_json:
        print(json.dumps({"provider": name, "device": device, "counts": counts, "results": results}, indent=2))
    else:
        width = max((len(str(r["name"])) for r in results), default=10)
        print(f"conformance: provider {name!r} on {device}\n")
        print(f"{'check'.ljust(width)}  result  time     detail")
        print(f"{'-' * width}  ------  -------  ------")
        for r in results:
            mark = {"pass": "PASS", "fail": "FAIL", "skip": "skip"}[str(r["status"])]
            detail = str(r["detail"] or r["doc"])[:110]
            print(f"{str(r['name']).ljust(width)}  {mark:<6}  {float(r['seconds']):6.3f}s  {detail}")
        print(f"\n{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped in {elapsed:.1f}s")
    return 0 if counts["fail"] == 0 else 1
