"""Caller-owned results of the engine kernels: ``add_rmsnorm(..., inplace=True)`` (vLLM's ``fused_add_rms_norm``),
``rmsnorm(..., out=)`` and ``silu_mul(..., out=)``, on the torch kernels (the CPU provider's) and the numpy ones (the
Mock's). Values equal the kernels' own new results bit for bit; a rejected call raises a typed error and leaves
every tensor as it was. The Triton kernels' forms run in ``tests/triton_interpret_worker.py``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sagellm_backend import MockBackendProvider
from sagellm_backend.errors import (
    BackendError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidDeviceError,
    UnsupportedDTypeError,
)

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def cpu() -> Any:
    from sagellm_backend import get_provider

    p = get_provider("cpu")
    yield p
    p.close()


@pytest.fixture(scope="module")
def mock() -> Any:
    p = MockBackendProvider()
    yield p
    p.close()


def _rand(*shape: int, dtype: Any = None, seed: int = 0) -> Any:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype or torch.float32)


def _snapshot(*ts: Any) -> list[Any]:
    return [t.clone() for t in ts]


def _bits(t: Any) -> Any:
    return t.contiguous().view(torch.uint8)


def _unchanged(before: list[Any], *ts: Any) -> bool:
    """Bit for bit (buffers from ``torch.empty`` may hold NaNs)."""
    return all(torch.equal(_bits(a), _bits(b)) for a, b in zip(before, ts))


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 5),
    hidden=st.integers(1, 70),
    dtype=st.sampled_from(["float32", "float16", "bfloat16"]),
    name=st.sampled_from(["add_rmsnorm", "fused_add_rmsnorm"]),
    seed=st.integers(0, 2**16),
)
def test_inplace_add_rmsnorm_writes_what_the_new_tensors_hold(
    cpu: Any, rows: int, hidden: int, dtype: str, name: str, seed: int
) -> None:
    dt = getattr(torch, dtype)
    k = cpu.get_kernel(name)
    x, r, w = (
        _rand(rows, hidden, dtype=dt, seed=seed),
        _rand(rows, hidden, dtype=dt, seed=seed + 1),
        _rand(hidden, dtype=dt, seed=seed + 2),
    )
    want_y, want_s = k(x, r, w, 1e-5)
    got = k(x, r, w, 1e-5, inplace=True)
    assert got[0] is x and got[1] is r
    assert torch.equal(x, want_y) and torch.equal(r, want_s)


def test_inplace_through_row_strided_views_writes_only_their_elements(cpu: Any) -> None:
    k = cpu.get_kernel("add_rmsnorm")
    bx, br, w = _rand(4, 40), _rand(4, 40, seed=1), _rand(32, seed=2)
    x, r = bx[:, :32], br[:, :32]
    want_y, want_s = k(x, r, w)
    tails = _snapshot(bx[:, 32:], br[:, 32:])
    k(x, r, w, inplace=True)
    assert torch.equal(x, want_y) and torch.equal(r, want_s)
    assert _unchanged(tails, bx[:, 32:], br[:, 32:])


def _inplace_rejections() -> list[tuple[str, Any, type[BackendError]]]:
    """(what, make (x, residual, w), expected error)."""
    buf = _rand(4, 16)
    return [
        ("same tensor", lambda: (buf, buf, _rand(16)), InvalidArgumentError),
        ("interleaved halves of one buffer", lambda: (buf[:, :8], buf[:, 8:], _rand(8)), InvalidArgumentError),
        ("shapes differ", lambda: (_rand(4, 8), _rand(2, 8), _rand(8)), InvalidArgumentError),
        ("dtypes differ", lambda: (_rand(4, 8), _rand(4, 8, dtype=torch.float16), _rand(8)), UnsupportedDTypeError),
        (
            "fp32 weight promotes a bf16 result",
            lambda: (_rand(4, 8, dtype=torch.bfloat16), _rand(4, 8, dtype=torch.bfloat16), _rand(8)),
            UnsupportedDTypeError,
        ),
        ("residual a list", lambda: (_rand(4, 8), [[0.0] * 8] * 4, _rand(8)), InvalidArgumentTypeError),
        ("residual an expanded row", lambda: (_rand(4, 8), _rand(1, 8).expand(4, 8), _rand(8)), InvalidArgumentError),
        ("weight inside x", lambda: (buf[:, :8], _rand(4, 8), buf[0, :8]), InvalidArgumentError),
        ("x requires grad", lambda: (_rand(4, 8).requires_grad_(), _rand(4, 8), _rand(8)), InvalidArgumentError),
        ("residual an inference tensor", lambda: (_rand(4, 8), _inference(4, 8), _rand(8)), InvalidArgumentError),
    ]


def _inference(*shape: int) -> Any:
    """A tensor made under ``torch.inference_mode`` (which torch lets no one write outside it)."""
    with torch.inference_mode():
        return torch.zeros(*shape)


@pytest.mark.parametrize("case", range(len(_inplace_rejections())), ids=[c[0] for c in _inplace_rejections()])
def test_inplace_add_rmsnorm_rejects_and_writes_nothing(cpu: Any, case: int) -> None:
    what, make, err = _inplace_rejections()[case]
    x, r, w = make()
    before = _snapshot(*(t for t in (x, r, w) if isinstance(t, torch.Tensor)))
    with pytest.raises(err, match="inplace=True"):
        cpu.get_kernel("add_rmsnorm")(x, r, w, 1e-5, inplace=True)
    assert _unchanged(before, *(t for t in (x, r, w) if isinstance(t, torch.Tensor))), what


@pytest.mark.parametrize("flag", [1, "yes", None])
def test_inplace_must_be_a_bool(cpu: Any, mock: Any, flag: Any) -> None:
    with pytest.raises(InvalidArgumentTypeError, match="inplace must be True or False"):
        cpu.get_kernel("add_rmsnorm")(_rand(2, 4), _rand(2, 4, seed=1), _rand(4), inplace=flag)
    a = np.ones((2, 4), np.float32)
    with pytest.raises(InvalidArgumentTypeError, match="inplace must be True or False"):
        mock.get_kernel("add_rmsnorm")(a, a.copy(), np.ones(4, np.float32), inplace=flag)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_out_buffers_get_the_new_results(cpu: Any, dtype: str) -> None:
    dt = getattr(torch, dtype)
    x, w, gu = _rand(3, 24, dtype=dt), _rand(24, dtype=dt, seed=1), _rand(3, 48, dtype=dt, seed=2)
    norm, silu = cpu.get_kernel("rmsnorm"), cpu.get_kernel("silu_mul")
    out = torch.full((3, 24), float("nan"), dtype=dt)
    assert norm(x, w, 1e-5, out=out) is out and torch.equal(out, norm(x, w, 1e-5))
    out2 = torch.full((3, 24), float("nan"), dtype=dt)
    assert silu(gu, out=out2) is out2 and torch.equal(out2, silu(gu))
    g, u = gu[:, :24], gu[:, 24:]
    out3 = torch.empty(3, 24, dtype=dt)
    assert cpu.get_kernel("fused_silu_mul").forward(g, u, out=out3) is out3 and torch.equal(out3, silu(g, u))
    # fp32 weight on a bf16 input: the result (and so out) is fp32, as without out
    if dt == torch.bfloat16:
        w32 = _rand(24, seed=4)
        o32 = torch.empty(3, 24)
        assert torch.equal(norm(x, w32, out=o32), norm(x, w32))


def _out_rejections() -> list[tuple[str, str, Any, type[BackendError]]]:
    """(what, kernel, make (args, out), expected error)."""
    x, w, gu = _rand(3, 8), _rand(8, seed=1), _rand(3, 16, seed=2)
    return [
        ("rmsnorm out of another shape", "rmsnorm", lambda: ((x, w), torch.empty(3, 9)), InvalidArgumentError),
        (
            "rmsnorm out of another dtype",
            "rmsnorm",
            lambda: ((x, w), torch.empty(3, 8, dtype=torch.float16)),
            UnsupportedDTypeError,
        ),
        ("rmsnorm out strided", "rmsnorm", lambda: ((x, w), torch.empty(8, 3).t()), InvalidArgumentError),
        ("rmsnorm out is x", "rmsnorm", lambda: ((x, w), x), InvalidArgumentError),
        (
            "rmsnorm out a meta tensor",
            "rmsnorm",
            lambda: ((x, w), torch.empty(3, 8, device="meta")),
            InvalidDeviceError,
        ),
        ("rmsnorm out a list", "rmsnorm", lambda: ((x, w), [0.0] * 24), InvalidArgumentTypeError),
        ("silu_mul out of the input's shape", "silu_mul", lambda: ((gu,), torch.empty(3, 16)), InvalidArgumentError),
        ("silu_mul out is the gate half", "silu_mul", lambda: ((gu,), gu[:, :8]), InvalidArgumentError),
        (
            "silu_mul out of another dtype",
            "silu_mul",
            lambda: ((gu,), torch.empty(3, 8, dtype=torch.float64)),
            UnsupportedDTypeError,
        ),
        (
            "rmsnorm out requires grad",
            "rmsnorm",
            lambda: ((x, w), torch.empty(3, 8).requires_grad_()),
            InvalidArgumentError,
        ),
        ("silu_mul out an inference tensor", "silu_mul", lambda: ((gu,), _inference(3, 8)), InvalidArgumentError),
    ]


@pytest.mark.parametrize("case", range(len(_out_rejections())), ids=[c[0] for c in _out_rejections()])
def test_out_rejections_write_nothing(cpu: Any, case: int) -> None:
    what, name, make, err = _out_rejections()[case]
    args, out = make()
    tensors = [t for t in (*args, out) if isinstance(t, torch.Tensor) and t.device.type == "cpu"]
    before = _snapshot(*tensors)
    with pytest.raises(err, match="out must be"):
        cpu.get_kernel(name)(*args, out=out)
    assert _unchanged(before, *tensors), what


def test_numpy_kernels_take_the_same_caller_buffers(mock: Any) -> None:
    rng = np.random.default_rng(0)
    x, r = rng.standard_normal((3, 16), np.float32), rng.standard_normal((3, 16), np.float32)
    w = rng.standard_normal(16, dtype=np.float32)
    k = mock.get_kernel("fused_add_rmsnorm")
    want_y, want_s = k(x, r, w, 1e-5)
    got = k(x, r, w, 1e-5, inplace=True)
    assert got[0] is x and got[1] is r
    np.testing.assert_array_equal(x, want_y)
    np.testing.assert_array_equal(r, want_s)
    out = np.empty((3, 16), np.float32)
    assert mock.get_kernel("rmsnorm")(x, w, out=out) is out
    np.testing.assert_array_equal(out, mock.get_kernel("rmsnorm")(x, w))
    gu = rng.standard_normal((3, 32), np.float32)
    y = np.empty((3, 16), np.float32)
    np.testing.assert_array_equal(mock.get_kernel("silu_mul")(gu, out=y), mock.get_kernel("silu_mul")(gu))
    before = x.copy()
    with pytest.raises(InvalidArgumentError, match="must not share memory"):
        k(x, x, w, inplace=True)
    with pytest.raises(InvalidArgumentError, match="out must be"):
        mock.get_kernel("silu_mul")(gu, out=gu[:, :16])
    with pytest.raises(UnsupportedDTypeError, match="out must be"):
        mock.get_kernel("rmsnorm")(x, w, out=np.empty((3, 16), np.float16))
    with pytest.raises(InvalidArgumentTypeError, match="numpy arrays"):
        k(x.tolist(), r, w, inplace=True)
    with pytest.raises(InvalidArgumentError, match="weight must not share memory"):
        k(x, r, x[0], inplace=True)
    row = np.lib.stride_tricks.as_strided(r[0], shape=(3, 16), strides=(0, 4))  # writeable, one row three times
    with pytest.raises(InvalidArgumentError, match="each element needs its own memory"):
        k(x, row, w, inplace=True)
    np.testing.assert_array_equal(x, before)
