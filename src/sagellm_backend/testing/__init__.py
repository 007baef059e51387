"""Conformance kit: one suite, written once, run against every provider.

* :data:`CHECKS` and :func:`run_checks`: plain functions, no pytest needed
  (``sagellm-backend check <provider>`` runs them).
* :class:`sagellm_backend.testing.pytest_suite.ConformanceSuite`: the same checks as pytest items.
* :mod:`sagellm_backend.testing.standins`: stand-in vendor SDK modules for tests without hardware.
"""

from __future__ import annotations

from .checks import CHECKS, Check, CheckSkipped, run_check
from .runner import run_checks

__all__ = ["CHECKS", "Check", "CheckSkipped", "run_check", "run_checks"]
