"""The direct-launch cache key of ``kernels.triton_launch``: any argument property Triton specialises on
(int and float values, tensor dtype, device and 16-byte alignment, constexprs and options) gives a different key."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")
pytest.importorskip("triton")


def test_key_separates_every_specialised_property() -> None:
    from sagellm_backend.kernels.triton_launch import _signature

    fn = object()
    t = torch.zeros(64, dtype=torch.float16, device="cuda")
    k = _signature(fn, 0, (t, 16, 0.5), {"BS": 16, "num_warps": 4})
    assert k == _signature(fn, 0, (t.clone(), 16, 0.5), {"BS": 16, "num_warps": 4})
    others = [
        _signature(fn, 0, (t[1:], 16, 0.5), {"BS": 16, "num_warps": 4}),  # misaligned pointer
        _signature(fn, 0, (t.float(), 16, 0.5), {"BS": 16, "num_warps": 4}),
        _signature(fn, 0, (t, 17, 0.5), {"BS": 16, "num_warps": 4}),
        _signature(fn, 0, (t, 16, 0.25), {"BS": 16, "num_warps": 4}),
        _signature(fn, 0, (t, 16, 0.5), {"BS": 32, "num_warps": 4}),
        _signature(fn, 0, (t, 16, 0.5), {"BS": 16, "num_warps": 8}),
        _signature(fn, 1, (t, 16, 0.5), {"BS": 16, "num_warps": 4}),
        _signature(object(), 0, (t, 16, 0.5), {"BS": 16, "num_warps": 4}),
    ]
    assert all(o is not None and o != k for o in others)
    assert len(set(others)) == len(others)
    assert _signature(fn, 0, (t, 16, 0.5), {"BS": 16, "DIRECT": True}) != _signature(
        fn, 0, (t, 16, 0.5), {"BS": 16, "DIRECT": 1}
    )
