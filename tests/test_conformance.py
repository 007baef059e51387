"""The conformance suite against every provider available here (mock and cpu on CI)."""

from __future__ import annotations

import pytest

from sagellm_backend import DType, MockBackendProvider
from sagellm_backend.testing import CHECKS, run_check
from sagellm_backend.testing.checks import AREAS
from sagellm_backend.testing.pytest_suite import ConformanceSuite


class TestMockConformance(ConformanceSuite):
    @staticmethod
    def make_provider():
        return MockBackendProvider()


class TestMockWithGraphsConformance(ConformanceSuite):
    @staticmethod
    def make_provider():
        return MockBackendProvider(has_graph_exec=True, num_devices=3, max_memory_mb=256)


class TestMockNarrowConformance(ConformanceSuite):
    """Two dtypes, no collectives: the storage-dtype refusals and the refusing communicator."""

    @staticmethod
    def make_provider():
        return MockBackendProvider(supported_dtypes=[DType.FP32, DType.INT8], has_collective=False)


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


# ------------------------------------------------------- the checks catch what they check
class _NoLiveBlocks(MockBackendProvider):
    def live_blocks(self):
        return []


class _PeakNeverResets(MockBackendProvider):
    def reset_peak_memory_stats(self) -> None:
        pass


class _StoresLessThanItComputes(MockBackendProvider):
    def kv_storage_dtypes(self):
        return [DType.FP32]


class _SaysUnavailable(MockBackendProvider):
    @classmethod
    def is_available(cls) -> bool:
        return False


class _ToDeviceScales(MockBackendProvider):
    def to_device(self, tensor):
        return tensor * 2


class _CloseDoesNothing(MockBackendProvider):
    def close(self) -> None:
        pass


class _RankDisagrees(MockBackendProvider):
    @property
    def rank(self) -> int:
        return 1


def _cpu_on_meta():
    pytest.importorskip("torch", reason="the cpu provider needs torch; it is not installed")
    import torch

    from sagellm_backend import CPUBackendProvider

    class CPUOnMeta(CPUBackendProvider):
        def get_torch_device(self):
            return torch.device("meta")

    return CPUOnMeta()


@pytest.mark.parametrize(
    ("name", "broken"),
    [
        ("live_blocks", _NoLiveBlocks),
        ("reset_peak_memory_stats", _PeakNeverResets),
        ("storage_dtypes", _StoresLessThanItComputes),
        ("availability", _SaysUnavailable),
        ("to_device", _ToDeviceScales),
        ("close_idempotent", _CloseDoesNothing),
        ("communicator", _RankDisagrees),
        ("torch_device", _cpu_on_meta),
    ],
)
def test_new_checks_fail_on_a_provider_that_breaks_them(name, broken) -> None:
    (chk,) = [c for c in CHECKS if c.name == name]
    status, detail, _ = run_check(chk, broken)
    assert status == "fail", f"{name} did not catch {broken.__name__}: {status} {detail}"
    assert detail.startswith("AssertionError"), detail


def test_checks_are_split_by_area_and_unique() -> None:
    names = [c.name for c in CHECKS]
    assert len(names) == len(set(names)), names
    assert [c.area for c in CHECKS] == sorted((c.area for c in CHECKS), key=AREAS.index)
    for new in ("live_blocks", "storage_dtypes", "availability", "torch_device", "to_device", "communicator"):
        assert new in names
