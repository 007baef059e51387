"""The conformance suite as a pytest base class, for third-party providers.

Usage in your provider's tests::

    from sagellm_backend.testing.pytest_suite import ConformanceSuite

    class TestMyProvider(ConformanceSuite):
        @staticmethod
        def make_provider():
            return MyBackendProvider()

Each check becomes one test item; checks that do not apply are skipped with a reason saying what
they need and what the provider has.
"""

from __future__ import annotations

import pytest

from ..api import BackendProvider
from .checks import CHECKS, Check, CheckSkipped

__all__ = ["ConformanceSuite"]


class ConformanceSuite:
    """Subclass and implement :meth:`make_provider`."""

    @staticmethod
    def make_provider() -> BackendProvider:
        """Return a fresh provider (called once or twice per check)."""
        raise NotImplementedError("subclass ConformanceSuite and implement make_provider()")

    @pytest.mark.parametrize("conformance_check", CHECKS, ids=[c.name for c in CHECKS])
    def test_conformance(self, conformance_check: Check) -> None:
        try:
            conformance_check.fn(self.make_provider)
        except CheckSkipped as exc:
            pytest.skip(str(exc))
