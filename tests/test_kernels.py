"""Kernel registry: seed semantics, priorities, fallback across provider types."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


@settings(max_examples=60, deadline=None)
@given(
    regs=st.lists(
        st.tuples(st.sampled_from(["local", "mock", "cpu_like", "*", "other"]), st.integers(-3, 3)),
        min_size=1,
        max_size=8,
    )
)
def test_provider_kernels_choose_by_target_then_priority_then_latest(regs: list[tuple[str, int]]) -> None:
    from sagellm_backend.kernels import KernelRegistry, ProviderKernels
    from sagellm_backend.kernels import registry as reg

    glob = KernelRegistry()
    kernels = ProviderKernels(search_order=("mock", "cpu_like", "*"))
    for i, (target, priority) in enumerate(regs):
        impl = functools.partial(int, i)
        if target == "local":
            kernels.register("k", impl, priority=priority)
        else:
            glob.register("k", impl, targets=(target,), priority=priority)
    places = {"local": 0, "mock": 1, "cpu_like": 2, "*": 3}
    fitting = [(places[t], -p, -i) for i, (t, p) in enumerate(regs) if t in places]
    saved = reg.global_kernels
    reg.global_kernels = glob
    try:
        if not fitting:
            with pytest.raises(KernelNotFoundError, match="Kernel 'k' not found"):
                kernels.get("k")
            return
        best = min(fitting)
        assert kernels.get("k")() == -best[2]
        order = [e.impl() for e in kernels.candidates("k")]
        assert order == [-i for _, _, i in sorted(fitting)]
    finally:
        reg.global_kernels = saved
