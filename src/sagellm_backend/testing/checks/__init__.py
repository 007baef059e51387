"""The conformance checks: written once, run against every provider (ours and third parties').

One module per area, each registering its checks with :func:`check`:

* :mod:`.identity`: capability, dtypes, availability, torch device, kernels, close.
* :mod:`.blocks`: block sizes, bytes through write/read/copy/migrate, live blocks, memory stats.
* :mod:`.misuse`: wrong calls on blocks raise typed errors and change nothing.
* :mod:`.streams`: streams, events, graph capture.
* :mod:`.pools`: the paged KV-cache pool.
* :mod:`.comm`: the communicator and collectives.

:mod:`.base` holds the registry, :func:`run_check` and the helpers the areas share. To add a
check, write a function ``check_<name>(make)`` decorated with ``@check``, or ``check_<name>(provider)``
decorated with ``@provider_check`` (a fresh provider, closed after), in its area's module; its
docstring's first line is its description.
"""

from __future__ import annotations

from . import blocks, comm, identity, misuse, pools, streams
from .base import AREAS, CHECKS, Check, CheckSkipped, Factory, check, provider_check, run_check

__all__ = ["AREAS", "CHECKS", "Check", "CheckSkipped", "Factory", "check", "provider_check", "run_check"]

_AREA_MODULES = (blocks, comm, identity, misuse, pools, streams)  # imported to register their checks
CHECKS.sort(key=lambda c: AREAS.index(c.area))  # stable: in-module order kept
