"""The direct-launch cache key of ``kernels.triton_launch`` on CPU: CPU tensors never take the direct path
(the CUDA cases are in tests/gpu/test_triton_launch_gpu.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")


def test_cpu_tensors_get_no_key() -> None:
    from sagellm_backend.kernels.triton_launch import _signature

    assert _signature(object(), 0, (torch.zeros(64, dtype=torch.float16), 16), {"BS": 16}) is None
    assert _signature(object(), 0, (3, 0.5), {"BS": 16}) is not None  # scalars alone are keyed
