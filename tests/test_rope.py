"""The ``rotary_embedding`` engine kernel: NeoX style against Hugging Face's ``apply_rotary_pos_emb``, GPT-J style
against a complex-number float64 reference, hostile inputs, the numpy (Mock) kernel, and the Triton kernel in
Triton's CPU interpreter (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sagellm_backend
from sagellm_backend import MockBackendProvider, get_provider
from sagellm_backend.errors import (
    BackendError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidDeviceError,
    UnsupportedDTypeError,
)

torch = pytest.importorskip("torch")
llama = pytest.importorskip("transformers.models.llama.modeling_llama")

EPS = {torch.float32: 2.0**-23, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}


@pytest.fixture(scope="module")
def rope() -> Any:
    p = get_provider("cpu")
    yield p.get_kernel("rotary_embedding")
    p.close()


def cos_sin_cache(max_pos: int, rot: int, dtype: Any = torch.float32, base: float = 10000.0) -> Any:
    inv = 1.0 / (base ** (torch.arange(0, rot, 2, dtype=torch.float64) / rot))
    f = torch.outer(torch.arange(max_pos, dtype=torch.float64), inv)
    return torch.cat([f.cos(), f.sin()], dim=-1).to(dtype)


def hf_neox(x: Any, pos: Any, cache: Any, rot: int) -> Any:
    """Hugging Face's apply_rotary_pos_emb on the first ``rot`` dims of x [T, H, D], in float64."""
    x64 = x.double().transpose(0, 1).unsqueeze(0)  # [1, H, T, D]
    rows = cache.double()[pos]
    c, s = rows[:, : rot // 2], rows[:, rot // 2 :]
    cos, sin = torch.cat([c, c], -1).unsqueeze(0), torch.cat([s, s], -1).unsqueeze(0)  # HF's emb = cat(freqs, freqs)
    rotated, _ = llama.apply_rotary_pos_emb(x64[..., :rot], x64[..., :rot], cos, sin)
    out = torch.cat([rotated, x64[..., rot:]], -1)
    return out.squeeze(0).transpose(0, 1)


def gptj_reference(x: Any, pos: Any, cache: Any, rot: int) -> np.ndarray:
    """Interleaved pairs (2i, 2i+1) as complex numbers times exp(i * theta), float64."""
    a = x.double().numpy().copy()
    rows = cache.double().numpy()[pos.numpy()]
    half = rot // 2
    z = a[..., 0:rot:2] + 1j * a[..., 1:rot:2]
    z = z * (rows[:, None, :half] + 1j * rows[:, None, half:])
    a[..., 0:rot:2], a[..., 1:rot:2] = z.real, z.imag
    return a


def assert_close(got: Any, want: Any, dtype: Any, scale: float) -> None:
    """Within one rounding of ``dtype`` plus fp32 arithmetic on values of size ``scale``."""
    err = (got.double() - torch.as_tensor(want, dtype=torch.float64)).abs()
    bound = EPS[dtype] * torch.as_tensor(want, dtype=torch.float64).abs() + 8 * 2.0**-24 * scale
    assert bool((err <= bound).all()), float((err - bound).max())


shapes = st.tuples(
    st.integers(0, 6),  # tokens
    st.sampled_from([(1, 1), (2, 1), (4, 2), (3, 3), (8, 2)]),  # (Hq, Hkv)
    st.sampled_from([(2, 2), (8, 8), (16, 8), (32, 32), (64, 16), (128, 128), (128, 64)]),  # (head_size, rot_dim)
)
dtypes = st.sampled_from([torch.float32, torch.bfloat16, torch.float16])


@settings(max_examples=60, deadline=None)
@given(
    shape=shapes,
    dtype=dtypes,
    cache_dtype=dtypes,
    flat=st.booleans(),
    with_key=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_neox_matches_hugging_face(rope, shape, dtype, cache_dtype, flat, with_key, seed) -> None:
    tokens, (hq, hkv), (d, rot) = shape
    g = torch.Generator().manual_seed(seed)
    max_pos = 64
    pos = torch.randint(0, max_pos, (tokens,), generator=g)
    cache = cos_sin_cache(max_pos, rot, cache_dtype, base=float(torch.randint(100, 500000, (1,), generator=g)))
    q = (torch.randn(tokens, hq, d, generator=g) * 3).to(dtype)
    k = (torch.randn(tokens, hkv, d, generator=g) * 3).to(dtype)
    want_q, want_k = hf_neox(q, pos, cache, rot), hf_neox(k, pos, cache, rot)
    q_arg = q.flatten(1) if flat else q
    k_arg = (k.flatten(1) if flat else k) if with_key else None
    k_before, q_before = k.clone(), q.clone()
    assert rope(pos, q_arg, k_arg, d, cache, True) is None
    assert q_arg.dtype == dtype and q_arg.shape == ((tokens, hq * d) if flat else (tokens, hq, d))
    scale = float(q.abs().max()) * 2 if tokens else 1.0
    assert_close(q, want_q, dtype, scale)
    if with_key:
        assert_close(k, want_k, dtype, scale=float(k.abs().max()) * 2 if tokens else 1.0)
    else:
        assert k.equal(k_before)
    assert q[..., rot:].equal(q_before[..., rot:])  # partial rotary: the tail is not touched


@settings(max_examples=40, deadline=None)
@given(shape=shapes, dtype=dtypes, flat=st.booleans(), seed=st.integers(0, 2**16))
def test_gptj_matches_the_interleaved_formula(rope, shape, dtype, flat, seed) -> None:
    tokens, (hq, hkv), (d, rot) = shape
    g = torch.Generator().manual_seed(seed)
    pos = torch.randint(0, 100, (tokens,), generator=g, dtype=torch.int32)
    cache = cos_sin_cache(100, rot)
    q = (torch.randn(tokens, hq, d, generator=g) * 2).to(dtype)
    k = (torch.randn(tokens, hkv, d, generator=g) * 2).to(dtype)
    want_q, want_k = gptj_reference(q, pos.long(), cache, rot), gptj_reference(k, pos.long(), cache, rot)
    rope(pos, q.flatten(1) if flat else q, k.flatten(1) if flat else k, d, cache, False)
    assert_close(q, want_q, dtype, 8.0 * 2)
    assert_close(k, want_k, dtype, 8.0 * 2)


def test_the_two_styles_differ_and_partial_rotary_keeps_the_tail(rope) -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 2, 16, generator=g)
    a, b = q.clone(), q.clone()
    cache = cos_sin_cache(8, 8)
    pos = torch.tensor([1, 2, 3])
    rope(pos, a, None, 16, cache, True)
    rope(pos, b, None, 16, cache, False)
    assert not torch.allclose(a, b)
    assert a[..., 8:].equal(q[..., 8:]) and b[..., 8:].equal(q[..., 8:])
    assert not a[..., :8].equal(q[..., :8])
    c = q.clone()
    rope(torch.zeros(3, dtype=torch.int64), c, None, 16, cache, True)  # position 0 is the identity
    assert c.equal(q)


def test_bf16_agrees_with_hugging_face_in_bf16(rope) -> None:
    """Hugging Face computes in the tensor's dtype (several roundings); ours rounds once: within 2 bf16 units."""
    g = torch.Generator().manual_seed(1)
    q = torch.randn(4, 8, 128, generator=g).to(torch.bfloat16)
    pos = torch.tensor([0, 100, 2047, 513])
    cache = cos_sin_cache(2048, 128)
    rows = cache[pos]
    cos = torch.cat([rows[:, :64], rows[:, :64]], -1).to(torch.bfloat16).unsqueeze(0)
    sin = torch.cat([rows[:, 64:], rows[:, 64:]], -1).to(torch.bfloat16).unsqueeze(0)
    hf, _ = llama.apply_rotary_pos_emb(q.transpose(0, 1)[None], q.transpose(0, 1)[None], cos, sin)
    ours = q.clone()
    rope(pos, ours, None, 128, cache.to(torch.bfloat16), True)
    diff = (ours.float() - hf[0].transpose(0, 1).float()).abs()
    assert float(diff.max()) <= 4 * 2.0**-7 * float(q.float().abs().max())


def test_writes_through_strided_views_only(rope) -> None:
    g = torch.Generator().manual_seed(2)
    qkv = torch.randn(5, (4 + 2 + 2) * 8, generator=g)
    before = qkv.clone()
    q, k = qkv[:, :32], qkv[:, 32:48]
    pos = torch.tensor([4, 3, 2, 1, 0])
    cache = cos_sin_cache(5, 8)
    rope(pos, q, k, 8, cache, True)
    assert qkv[:, 48:].equal(before[:, 48:])
    want = hf_neox(before[:, :32].reshape(5, 4, 8), pos, cache, 8).reshape(5, 32)
    assert_close(q, want, torch.float32, 8.0)


def test_numpy_kernel_of_the_mock_matches_torch(rope) -> None:
    m = MockBackendProvider()
    try:
        k_np = m.get_kernel("rotary_embedding")
        assert k_np.backend == "numpy"
        g = torch.Generator().manual_seed(3)
        for neox in (True, False):
            q = torch.randn(4, 3 * 16, generator=g)
            k = torch.randn(4, 16, generator=g)
            qn, kn = q.numpy().copy(), k.numpy().copy()
            pos, cache = torch.tensor([5, 0, 9, 2]), cos_sin_cache(10, 12)
            rope(pos, q, k, 16, cache, neox)
            k_np(pos.numpy(), qn, kn, 16, cache.numpy(), neox)
            np.testing.assert_allclose(qn, q.numpy(), rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(kn, k.numpy(), rtol=1e-6, atol=1e-6)
        with pytest.raises(InvalidArgumentError):
            k_np(np.array([10]), np.zeros((1, 16), np.float32), None, 16, cos_sin_cache(10, 16).numpy())
    finally:
        m.close()


def test_device_positions_out_of_range_are_left_unrotated() -> None:
    """The no-sync path (positions in device memory): a position outside the cache rotates by nothing."""
    from sagellm_backend.kernels import torch_ops

    g = torch.Generator().manual_seed(4)
    q = torch.randn(4, 2, 8, generator=g)
    q0 = q.clone()
    torch_ops.rotate_in_place(torch.tensor([-3, 1, 8, 2**40]), [q], 8, cos_sin_cache(8, 8), True)
    assert q[[0, 2, 3]].equal(q0[[0, 2, 3]])
    assert_close(q[1:2], hf_neox(q0[1:2], torch.tensor([1]), cos_sin_cache(8, 8), 8), torch.float32, 8.0)


BAD: list[tuple[str, dict[str, Any], type[BackendError]]] = [
    ("position past the cache", {"positions": torch.tensor([0, 4])}, InvalidArgumentError),
    ("negative position", {"positions": torch.tensor([-1, 0])}, InvalidArgumentError),
    ("float positions", {"positions": torch.tensor([0.0, 1.0])}, UnsupportedDTypeError),
    ("2-D positions", {"positions": torch.tensor([[0, 1]])}, InvalidArgumentTypeError),
    ("list positions", {"positions": [0, 1]}, InvalidArgumentTypeError),
    ("token count differs", {"positions": torch.tensor([0, 1, 2])}, InvalidArgumentError),
    ("head_size not dividing", {"head_size": 12}, InvalidArgumentError),
    ("head_size bool", {"head_size": True}, InvalidArgumentTypeError),
    ("head_size zero", {"head_size": 0}, InvalidArgumentTypeError),
    ("3-D head dim differs", {"query": torch.zeros(2, 2, 8)}, InvalidArgumentError),
    ("1-D query", {"query": torch.zeros(32)}, InvalidArgumentTypeError),
    ("int query", {"query": torch.zeros(2, 32, dtype=torch.int32)}, UnsupportedDTypeError),
    ("float64 query", {"query": torch.zeros(2, 32, dtype=torch.float64)}, UnsupportedDTypeError),
    ("key dtype differs", {"key": torch.zeros(2, 16, dtype=torch.float16)}, UnsupportedDTypeError),
    ("odd rot_dim", {"cos_sin_cache": torch.zeros(4, 7)}, InvalidArgumentError),
    ("rot_dim > head_size", {"cos_sin_cache": torch.zeros(4, 32)}, InvalidArgumentError),
    ("empty cache", {"cos_sin_cache": torch.zeros(0, 16)}, InvalidArgumentError),
    ("1-D cache", {"cos_sin_cache": torch.zeros(16)}, InvalidArgumentTypeError),
    ("is_neox not bool", {"is_neox": "neox"}, InvalidArgumentTypeError),
    ("positions on another device", {"positions": torch.tensor([0, 1], device="meta")}, InvalidDeviceError),
    ("numpy query", {"query": np.zeros((2, 32), np.float32)}, InvalidDeviceError),
]


@pytest.mark.parametrize(("case", "override", "error"), BAD, ids=[c[0] for c in BAD])
def test_bad_inputs_raise_typed_errors_and_write_nothing(rope, case, override, error) -> None:
    g = torch.Generator().manual_seed(5)
    q, k = torch.randn(2, 32, generator=g), torch.randn(2, 16, generator=g)
    args = {"positions": torch.tensor([0, 1]), "query": q, "key": k, "head_size": 16}
    args.update(cos_sin_cache=cos_sin_cache(4, 16), is_neox=True)
    args.update(override)
    before = [args["query"].clone() if hasattr(args["query"], "clone") else args["query"].copy(), k.clone()]
    with pytest.raises(error) as info:
        rope(**args)
    assert "rotary_embedding" in str(info.value)
    after = args["query"]
    assert torch.as_tensor(after).equal(torch.as_tensor(before[0])) and k.equal(before[1]), case


def test_kernel_is_registered_for_every_torch_target_and_the_mock() -> None:
    from sagellm_backend.kernels.engine import ENGINE_KERNEL_NAMES, TRITON_KERNEL_NAMES

    assert "rotary_embedding" in ENGINE_KERNEL_NAMES and "rotary_embedding" in TRITON_KERNEL_NAMES
    p = get_provider("cpu")
    try:
        k = p.get_kernel("rotary_embedding")
        assert k.backend == "torch" and k.device_type == "cpu" and callable(k.forward)
    finally:
        p.close()


def test_triton_kernel_matches_torch_in_the_interpreter() -> None:
    src = str(Path(sagellm_backend.__file__).resolve().parents[1])
    worker = str(Path(__file__).with_name("rope_interpret_worker.py"))
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    pytest.importorskip("triton")
    out = subprocess.run([sys.executable, worker], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    results = json.loads(out.stdout)
    assert len(results) >= 40, len(results)
    bad = [r for r in results if not r["ok"]]
    assert not bad, bad


def test_repeated_signatures_still_check_host_positions_and_new_devices(rope) -> None:
    q, cache = torch.zeros(2, 32), cos_sin_cache(4, 16)
    for _ in range(3):
        rope(torch.tensor([0, 3]), q, None, 16, cache, True)
    with pytest.raises(InvalidArgumentError):
        rope(torch.tensor([0, 4]), q, None, 16, cache, True)
    with pytest.raises(InvalidDeviceError):
        rope(torch.tensor([0, 1], device="meta"), q, None, 16, cache, True)
    with pytest.raises(InvalidArgumentTypeError):
        rope(torch.tensor([0, 1]), q, None, 16, cache, 1)
