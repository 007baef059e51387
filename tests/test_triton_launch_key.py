"""The direct-launch cache key of ``kernels.triton_launch`` on CPU (CPU tensors never take the direct path; the
CUDA cases are in tests/gpu/test_triton_launch_gpu.py) and its integer helpers."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")


def test_cpu_tensors_get_no_key() -> None:
    from sagellm_backend.kernels.triton_launch import _signature

    assert _signature(object(), 0, (torch.zeros(64, dtype=torch.float16), 16), {"BS": 16}) is None
    assert _signature(object(), 0, (3, 0.5), {"BS": 16}) is not None  # scalars alone are keyed


def test_integer_helpers_match_triton() -> None:
    """``cdiv`` / ``next_power_of_2`` (plain Python, called per launch) equal Triton's own functions."""
    import triton
    from hypothesis import given
    from hypothesis import strategies as st

    from sagellm_backend.kernels.triton_launch import cdiv, next_power_of_2

    @given(st.integers(0, 2**40), st.integers(1, 2**20))
    def check(a: int, b: int) -> None:
        assert cdiv(a, b) == triton.cdiv(a, b)
        if a >= 1:
            assert next_power_of_2(a) == triton.next_power_of_2(a)

    check()
