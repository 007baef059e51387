"""The conformance suite against every provider available here (mock and cpu on CI)."""

from __future__ import annotations

import pytest

from sagellm_backend import MockBackendProvider
from sagellm_backend.testing.pytest_suite import ConformanceSuite


class TestMockConformance(ConformanceSuite):
    @staticmethod
    def make_provider():
        return MockBackendProvider()


class TestMockWithGraphsConformance(ConformanceSuite):
    @staticmethod
    def make_provider():
        return MockBackendProvider(has_graph_exec=True, num_devices=3, max_memory_mb=256)


class TestCPUConformance(ConformanceSuite):
    @staticmethod
    def make_provider():
        pytest.importorskip("torch", reason="the cpu provider needs torch; it is not installed")
        from sagellm_backend import CPUBackendProvider

        return CPUBackendProvider()


@pytest.mark.gpu
class TestCUDAConformance(ConformanceSuite):
    @staticmethod
    def make_provider():
        from sagellm_backend import CUDABackendProvider

        return CUDABackendProvider(0)
