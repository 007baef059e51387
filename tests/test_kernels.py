"""Kernel registry: seed semantics, priorities, fallback across provider types."""

from __future__ import annotations

import pytest

from sagellm_backend import KernelKind, KernelNotFoundError, MockBackendProvider, global_kernels, register_kernel


def test_seed_semantics() -> None:
    p = MockBackendProvider()
    p.register_kernel("rms_norm", lambda x: x)
    assert p.get_kernel("rms_norm")(3) == 3
    with pytest.raises(KeyError, match="Kernel 'x' not found"):
        p.get_kernel("x")
    with pytest.raises(KernelNotFoundError) as info:
        p.get_kernel("x")
    assert info.value.code.value == "operator_not_found"
    with pytest.raises(TypeError):
        p.register_kernel("bad", 42)  # type: ignore[arg-type]


def test_priority_and_fallback_order() -> None:
    def generic(x):
        return "generic"

    def mock_fast(x):
        return "mock"

    register_kernel("t_fallback", generic, targets=("*",), priority=0, kind=KernelKind.FUSION)
    try:
        p, q = MockBackendProvider(), MockBackendProvider()
        assert p.get_kernel("t_fallback") is generic
        register_kernel("t_fallback", mock_fast, targets=("mock",), priority=-5)
        assert p.get_kernel("t_fallback") is mock_fast  # a provider-type entry beats "*", any priority
        p.register_kernel("t_fallback", lambda x: "local", priority=-50)
        assert p.get_kernel("t_fallback")(0) == "local"  # instance registrations first
        assert q.get_kernel("t_fallback") is mock_fast  # ... and only for that instance
        names = [e.target for e in p.kernel_candidates("t_fallback")]
        assert names == ["local", "mock", "*"]
    finally:
        global_kernels.unregister("t_fallback")


def test_torch_kernels_back_supported_kernels() -> None:
    torch = pytest.importorskip("torch")
    from sagellm_backend import CPUBackendProvider

    p = CPUBackendProvider()
    assert set(p.capability().supported_kernels) >= {KernelKind.MATMUL, KernelKind.ATTENTION}
    mm = p.get_kernel("matmul")
    a = torch.randn(3, 4)
    assert torch.allclose(mm(a, a.T), a @ a.T)
    q = torch.randn(1, 2, 5, 8)
    assert p.get_kernel("attention")(q, q, q).shape == q.shape
