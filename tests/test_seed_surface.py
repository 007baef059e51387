"""The seed release's (isagellm-backend 0.2.1.2) import paths and names keep working."""

from __future__ import annotations

import pytest

import sagellm_backend
from sagellm_backend import InvalidArgumentError, UnavailableError
from sagellm_backend.vendors import BUILTIN_VENDORS, load_vendor

torch = pytest.importorskip("torch")


def test_capability_module() -> None:
    from sagellm_backend.capability import CapabilityDescriptor, DType, KernelKind

    assert (CapabilityDescriptor, DType, KernelKind) == (
        sagellm_backend.CapabilityDescriptor,
        sagellm_backend.DType,
        sagellm_backend.KernelKind,
    )


def test_seed_provider_modules() -> None:
    from sagellm_backend.providers.cpu import CPUBackendProvider, CPUEvent, CPUStream
    from sagellm_backend.providers.pytorch_ascend import PyTorchAscendBackendProvider, create_pytorch_ascend_backend
    from sagellm_backend.providers.pytorch_cuda import PyTorchCUDABackendProvider, create_pytorch_cuda_backend

    p = CPUBackendProvider()
    assert isinstance(p.create_stream(), CPUStream) and isinstance(p.create_event(), CPUEvent)
    assert issubclass(PyTorchCUDABackendProvider, sagellm_backend.CUDABackendProvider)
    assert issubclass(PyTorchAscendBackendProvider, sagellm_backend.AscendBackendProvider)
    assert create_pytorch_cuda_backend is sagellm_backend.create_cuda_backend
    assert create_pytorch_ascend_backend is sagellm_backend.create_ascend_backend


@pytest.mark.parametrize("name", sorted(BUILTIN_VENDORS))
def test_is_available_classmethod_on_every_provider_class(name: str) -> None:
    cls = load_vendor(name).load_class()
    assert cls.is_available() is cls.detect().available


def test_seed_engine_passes_device_strings() -> None:
    from sagellm_backend.providers.pytorch_ascend import PyTorchAscendBackendProvider
    from sagellm_backend.providers.pytorch_cuda import PyTorchCUDABackendProvider
    from sagellm_backend.testing.standins import ascend_standin

    if not sagellm_backend.CUDABackendProvider.is_available():
        with pytest.raises(UnavailableError):
            PyTorchCUDABackendProvider(device="cuda:0")
    with ascend_standin():
        assert PyTorchAscendBackendProvider(device="npu:1").device == "npu:1"
        assert PyTorchAscendBackendProvider(1).device == "npu:1"
        with pytest.raises(InvalidArgumentError, match="disagree"):
            PyTorchAscendBackendProvider(0, device="npu:1")
        with pytest.raises(InvalidArgumentError):
            PyTorchAscendBackendProvider(device="cuda:0")


def test_seed_stream_and_event_attributes() -> None:
    import time

    for p in (sagellm_backend.MockBackendProvider(), sagellm_backend.get_provider("cpu")):
        s = p.create_stream()
        assert isinstance(s.stream_id, int) and s.stream_id == s.handle
        e1, e2 = p.create_event(), p.create_event()
        assert e1.event_id != e2.event_id and e1.timestamp is None
        before = time.time()
        e1.record(s)
        s.synchronize()
        assert e1.timestamp is not None and before <= e1.timestamp <= time.time()
