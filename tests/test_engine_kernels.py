"""Engine kernels (engine interface 0.5, section 3) through real providers, against independent references.

The torch kernels are resolved from ``get_provider("cpu")``, the numpy ones from
``MockBackendProvider()``; every name is called the way the engine calls it (``k(*a)`` and
``k.forward(*a)``). References are written here from the documented formulas; the RMSNorm one is
a module reproducing Hugging Face's ``LlamaRMSNorm.forward``.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sagellm_backend import KernelNotFoundError, MockBackendProvider, global_kernels
from sagellm_backend.errors import InvalidArgumentError, UnsupportedDTypeError, UnsupportedOperationError
from sagellm_backend.kernels import (
    ENGINE_KERNEL_NAMES,
    FunctionKernel,
    FusedAddRMSNormKernel,
    FusedQKVProjectionKernel,
    FusedSiLUMulKernel,
    Kernel,
    register_engine_kernels,
)
from sagellm_backend.protocol import DType

torch = pytest.importorskip("torch")
nn = torch.nn


class HFLlamaRMSNorm(nn.Module):  # type: ignore[misc]  # torch is untyped here
    """Hugging Face's LlamaRMSNorm forward: fp32 statistics, cast back, then weight * normed."""

    def __init__(self, weight: torch.Tensor, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone(), requires_grad=False)
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


@pytest.fixture(scope="module")
def cpu():
    from sagellm_backend import get_provider

    p = get_provider("cpu")
    yield p
    p.close()


@pytest.fixture(scope="module")
def mock():
    p = MockBackendProvider()
    yield p
    p.close()


def _rand(*shape: int, dtype=None, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float32).to(dtype or torch.float32)


def _both(k, *args):
    """``k(*args)`` and ``k.forward(*args)``, checked equal; the engine uses either."""
    assert callable(k) and callable(k.forward)
    a, b = k(*args), k.forward(*args)
    for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        assert torch.equal(torch.as_tensor(x), torch.as_tensor(y))
    return a


# ------------------------------------------------------------------ names and objects
def test_kernels_package_imports_neither_torch_nor_triton() -> None:
    import sagellm_backend

    src = str(Path(sagellm_backend.__file__).resolve().parents[1])
    code = (
        "import sys, sagellm_backend.kernels, sagellm_backend.kernels.engine, sagellm_backend.kernels.fused_ops; "
        "from sagellm_backend import MockBackendProvider; MockBackendProvider().get_kernel('rmsnorm'); "
        "print(sorted(m for m in ('torch', 'triton') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": src}
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_every_engine_name_resolves_to_a_callable_kernel_object(cpu, mock) -> None:
    assert {"linear", "embedding", "rmsnorm", "silu", "gelu", "relu", "layernorm"} <= set(ENGINE_KERNEL_NAMES)
    for p, backend in ((cpu, "torch"), (mock, "numpy")):
        for name in ENGINE_KERNEL_NAMES:
            k = p.get_kernel(name)
            assert isinstance(k, Kernel) and callable(k) and callable(k.forward)
            assert k.backend == backend and k.name == name and k.device_type == p.device_type
            assert name in repr(k) and backend in repr(k)


def test_unknown_kernel_is_a_key_error_naming_the_provider(cpu, mock) -> None:
    for p in (cpu, mock):
        with pytest.raises(KeyError) as info:
            p.get_kernel("nope")
        assert isinstance(info.value, KernelNotFoundError) and p.name in str(info.value)


def test_engine_kernels_beat_the_older_torch_builtins_and_lose_to_user_kernels(cpu) -> None:
    # layernorm was F.layer_norm(x, shape, w, b, eps) at priority -100; the engine form wins at -50.
    x, w, b = _rand(2, 6), _rand(6, seed=1), _rand(6, seed=2)
    assert torch.allclose(cpu.get_kernel("layernorm")(x, w, b, 1e-5), torch.nn.functional.layer_norm(x, (6,), w, b))
    mine = FunctionKernel(lambda x, w, eps=1e-6: x, "rmsnorm")
    cpu.register_kernel("rmsnorm", mine)
    try:
        assert cpu.get_kernel("rmsnorm") is mine
    finally:
        cpu._kernels.local.unregister("rmsnorm")
    assert cpu.get_kernel("rmsnorm").backend == "torch"


# ------------------------------------------------------------------ torch kernels (cpu provider)
def test_linear_three_args_two_args_and_none_bias(cpu) -> None:
    k = cpu.get_kernel("linear")
    x, w, b = _rand(2, 3, 5), _rand(4, 5, seed=1), _rand(4, seed=2)
    ref = torch.einsum("bsi,oi->bso", x, w)
    assert torch.allclose(_both(k, x, w, b), ref + b, atol=1e-6)
    assert torch.allclose(_both(k, x, w, None), ref, atol=1e-6)
    assert torch.allclose(_both(k, x, w), ref, atol=1e-6)


def test_embedding_int64_ids_including_a_position_table(cpu) -> None:
    k = cpu.get_kernel("embedding")
    table = _rand(11, 4)
    ids = torch.tensor([[0, 10, 3], [3, 3, 7]], dtype=torch.int64)
    out = _both(k, ids, table)
    assert out.shape == (2, 3, 4)
    for i in range(2):
        for j in range(3):
            assert torch.equal(out[i, j], table[int(ids[i, j])])
    assert torch.equal(k(torch.arange(5), table), table[:5])  # GPT-2 style positions


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("eps", [1e-6, 1e-5])
def test_rmsnorm_equals_hugging_face_bit_for_bit(cpu, dtype: str, eps: float) -> None:
    dt = getattr(torch, dtype)
    x, w = _rand(2, 3, 64, dtype=dt) * 3, _rand(64, dtype=dt, seed=1)
    want = HFLlamaRMSNorm(w, eps)(x)
    got = _both(cpu.get_kernel("rmsnorm"), x, w, eps)
    assert got.dtype == want.dtype == dt and torch.equal(got, want)
    # fp32 weight on a half input: HF's result is promoted to fp32, after rounding the normed value.
    w32 = _rand(64, seed=1)
    assert torch.equal(cpu.get_kernel("rmsnorm")(x, w32, eps), HFLlamaRMSNorm(w32, eps)(x))


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 5),
    hidden=st.integers(1, 300),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    eps=st.sampled_from([1e-6, 1e-5, 1e-2]),
)
def test_rmsnorm_matches_the_formula_in_fp32(rows: int, hidden: int, scale: float, eps: float) -> None:
    from sagellm_backend.kernels import torch_ops

    x, w = _rand(rows, hidden) * scale, _rand(hidden, seed=1)
    xd, wd = x.double(), w.double()
    ref = wd * xd / torch.sqrt((xd * xd).mean(-1, keepdim=True) + eps)
    assert torch.allclose(torch_ops.rmsnorm(x, w, eps).double(), ref, rtol=1e-5, atol=1e-6)


def test_default_eps_is_1e_6(cpu) -> None:
    x, w = _rand(2, 8) * 1e-3, torch.ones(8)
    assert torch.equal(cpu.get_kernel("rmsnorm")(x, w), HFLlamaRMSNorm(w, 1e-6)(x))


def test_activations_against_their_formulas(cpu) -> None:
    x = torch.linspace(-12, 12, 241)
    silu, gelu, relu = (cpu.get_kernel(n) for n in ("silu", "gelu", "relu"))
    assert torch.allclose(_both(silu, x), x / (1 + torch.exp(-x)), atol=1e-6)
    erf_ref = torch.tensor([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.tolist()])
    assert torch.allclose(_both(gelu, x), erf_ref, atol=1e-6)
    tanh_form = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    assert not torch.allclose(gelu(x), tanh_form, atol=1e-5)  # exact erf form, not the tanh approximation
    assert torch.equal(_both(relu, x), torch.where(x > 0, x, torch.zeros_like(x)))


def test_layernorm_against_mean_and_biased_variance(cpu) -> None:
    k = cpu.get_kernel("layernorm")
    x, w, b = _rand(3, 10) * 4 + 1, _rand(10, seed=1), _rand(10, seed=2)
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    ref = (x - mu) / torch.sqrt(var + 1e-5) * w + b
    assert torch.allclose(_both(k, x, w, b), ref, atol=1e-5)
    assert torch.allclose(k(x, w, b, 1e-2), (x - mu) / torch.sqrt(var + 1e-2) * w + b, atol=1e-5)
    assert torch.allclose(k(x, None, None), (x - mu) / torch.sqrt(var + 1e-5), atol=1e-5)


@pytest.mark.parametrize("name", ["silu_mul", "fused_silu_mul"])
def test_silu_mul_two_argument_and_concatenated_forms(cpu, name: str) -> None:
    k = cpu.get_kernel(name)
    g, u = _rand(2, 3, 7), _rand(2, 3, 7, seed=1)
    ref = g * torch.sigmoid(g) * u
    assert torch.allclose(_both(k, g, u), ref, atol=1e-6)
    cat = torch.cat([g, u], dim=-1)  # vLLM layout: [gate | up]
    assert torch.allclose(_both(k, cat), ref, atol=1e-6)
    with pytest.raises(InvalidArgumentError, match="even"):
        k(_rand(2, 7))


@pytest.mark.parametrize("name", ["add_rmsnorm", "fused_rmsnorm", "fused_add_rmsnorm"])
def test_add_rmsnorm_returns_normed_sum_and_sum_without_touching_inputs(cpu, name: str) -> None:
    k = cpu.get_kernel(name)
    x, r, w = _rand(2, 5, 32), _rand(2, 5, 32, seed=1), _rand(32, seed=2)
    x0, r0 = x.clone(), r.clone()
    normed, s = _both(k, x, r, w, 1e-6)
    assert torch.equal(s, x0 + r0) and torch.equal(x, x0) and torch.equal(r, r0)
    assert torch.equal(normed, HFLlamaRMSNorm(w, 1e-6)(x0 + r0))


@pytest.mark.parametrize("bias", [False, True])
def test_fused_qkv_projection_against_three_linears(cpu, bias: bool) -> None:
    nh, nkv, hd, hidden = 4, 2, 8, 16
    wq, wk, wv = _rand(nh * hd, hidden), _rand(nkv * hd, hidden, seed=1), _rand(nkv * hd, hidden, seed=2)
    bq, bk, bv = (_rand(n * hd, seed=s) for n, s in ((nh, 3), (nkv, 4), (nkv, 5)))
    h = _rand(2, 3, hidden, seed=6)
    qkv_w = torch.cat([wq, wk, wv])
    qkv_b = torch.cat([bq, bk, bv]) if bias else None
    q, k, v = _both(cpu.get_kernel("fused_qkv_projection"), h, qkv_w, nh, nkv, hd, qkv_b)
    assert q.shape == (2, 3, nh, hd) and k.shape == v.shape == (2, 3, nkv, hd)
    for got, w_, b_, n in ((q, wq, bq, nh), (k, wk, bk, nkv), (v, wv, bv, nkv)):
        want = h @ w_.T + (b_ if bias else 0)
        assert torch.allclose(got, want.view(2, 3, n, hd), atol=1e-5)
    with pytest.raises(InvalidArgumentError, match="rows"):
        cpu.get_kernel("fused_qkv_projection")(h, qkv_w, nh, nkv + 1, hd)


# ------------------------------------------------------------------ numpy kernels (mock provider)
def _np(t: torch.Tensor, dtype=np.float32) -> np.ndarray:
    return t.numpy().astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_mock_numpy_kernels_match_torch_references(mock, dtype) -> None:
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == np.float32 else {"atol": 2e-3, "rtol": 2e-3}
    x, w, b = _rand(2, 3, 16), _rand(16, seed=1), _rand(16, seed=2)
    xn, wn, bn = _np(x, dtype), _np(w, dtype), _np(b, dtype)
    xt, wt, bt = (torch.from_numpy(a) for a in (xn, wn, bn))  # torch references on the same values

    def check(name: str, args: tuple, want: torch.Tensor) -> None:
        got = _both(mock.get_kernel(name), *args)
        assert isinstance(got, np.ndarray) and got.dtype == dtype, (name, type(got))
        np.testing.assert_allclose(got.astype(np.float32), want.float().numpy(), **tol, err_msg=name)

    wl, bl = _np(_rand(5, 16, seed=3), dtype), _np(_rand(5, seed=4), dtype)
    lin_ref = xt.float() @ torch.from_numpy(wl).float().T
    check("linear", (xn, wl, bl), lin_ref + torch.from_numpy(bl).float())
    check("linear", (xn, wl, None), lin_ref)
    check("linear", (xn, wl), lin_ref)
    check("rmsnorm", (xn, wn, 1e-6), HFLlamaRMSNorm(wt, 1e-6)(xt))
    check("silu", (xn,), torch.nn.functional.silu(xt.float()))
    check("gelu", (xn,), torch.nn.functional.gelu(xt.float()))
    check("relu", (xn,), torch.relu(xt))
    check("layernorm", (xn, wn, bn, 1e-5), torch.nn.functional.layer_norm(xt.float(), (16,), wt.float(), bt.float()))
    g, u = xn[..., :8], xn[..., 8:]
    silu_mul_ref = torch.nn.functional.silu(xt[..., :8].float()) * xt[..., 8:].float()
    for name in ("silu_mul", "fused_silu_mul"):
        check(name, (g, u), silu_mul_ref)
        check(name, (xn,), silu_mul_ref)
    table = _np(_rand(9, 4, seed=5), dtype)
    ids = np.array([[8, 0], [2, 2]], dtype=np.int64)
    got = _both(mock.get_kernel("embedding"), ids, table)
    assert np.array_equal(got, table[[[8, 0], [2, 2]]]) and got.dtype == dtype
    r = _np(_rand(2, 3, 16, seed=6), dtype)
    for name in ("add_rmsnorm", "fused_rmsnorm", "fused_add_rmsnorm"):
        normed, s = _both(mock.get_kernel(name), xn, r, wn, 1e-6)
        np.testing.assert_array_equal(s, xn + r)
        np.testing.assert_allclose(
            normed.astype(np.float32), HFLlamaRMSNorm(wt, 1e-6)(torch.from_numpy(xn + r)).float().numpy(), **tol
        )


def test_mock_numpy_qkv_and_erf(mock) -> None:
    from sagellm_backend.kernels import numpy_ops

    xs = np.linspace(-6, 6, 1201, dtype=np.float32)
    np.testing.assert_allclose(numpy_ops.erf(xs), [math.erf(v) for v in xs.tolist()], atol=2e-7)
    h, w, bias = _np(_rand(3, 8)), _np(_rand(16, 8, seed=1)), _np(_rand(16, seed=2))
    q, k, v = _both(mock.get_kernel("fused_qkv_projection"), h, w, 2, 1, 4, bias)
    full = h @ w.T + bias
    np.testing.assert_allclose(q, full[:, :8].reshape(3, 2, 4), atol=1e-5)
    np.testing.assert_allclose(k, full[:, 8:12].reshape(3, 1, 4), atol=1e-5)
    np.testing.assert_allclose(v, full[:, 12:].reshape(3, 1, 4), atol=1e-5)


def test_mock_refuses_raw_bf16_bits_and_float_ids(mock) -> None:
    bits = np.zeros((2, 4), dtype=np.uint16)  # how the Mock stores bf16
    with pytest.raises(UnsupportedDTypeError, match="raw bits"):
        mock.get_kernel("rmsnorm")(bits, np.ones(4, np.float32))
    with pytest.raises(TypeError, match="integers"):
        mock.get_kernel("embedding")(np.zeros(2, np.float32), np.ones((3, 4), np.float32))


# ------------------------------------------------------------------ registration
def _entries(target: str) -> list:
    return [e for n in ENGINE_KERNEL_NAMES for e in global_kernels.candidates(n, (target,))]


def test_registration_is_idempotent_thread_safe_and_prioritised() -> None:
    target = "t_engine_kernels"
    try:
        threads = [threading.Thread(target=register_engine_kernels, args=(target, "torch")) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        register_engine_kernels(target, "torch")
        entries = _entries(target)
        assert sorted(e.name for e in entries) == sorted(ENGINE_KERNEL_NAMES)
        assert {e.priority for e in entries} == {-50}
        register_engine_kernels(target, "triton")  # not a CUDA target: nothing is registered
        assert len(_entries(target)) == len(ENGINE_KERNEL_NAMES)
    finally:
        for e in _entries(target):
            global_kernels.unregister(e.name, e.impl)
    with pytest.raises(InvalidArgumentError, match="backend"):
        register_engine_kernels(target, "cuda")
    with pytest.raises(InvalidArgumentError, match="target"):
        register_engine_kernels("", "torch")


def test_kernel_objects() -> None:
    k = Kernel("k", dtypes=["fp16"])
    with pytest.raises(UnsupportedOperationError, match="forward"):
        k(1)
    assert k.supports(DType.FP16) and not k.supports("fp32")
    assert "dtypes=[fp16]" in repr(k)
    with pytest.raises(InvalidArgumentError):
        FunctionKernel(42, "bad")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        Kernel("")
    import importlib.util

    on_gpu = torch.cuda.is_available() and importlib.util.find_spec("triton") is not None
    for cls in (FusedSiLUMulKernel, FusedAddRMSNormKernel, FusedQKVProjectionKernel):
        auto, np_k = cls(), cls("numpy")
        assert np_k.backend == "numpy"
        assert auto.backend in (("triton", "torch") if on_gpu else ("torch",))  # auto: Triton where it runs
        with pytest.raises(InvalidArgumentError, match="backend"):
            cls("jax")
    g, u = _rand(3, 4), _rand(3, 4, seed=1)
    assert torch.allclose(
        FusedSiLUMulKernel("torch")(g, u), torch.from_numpy(FusedSiLUMulKernel("numpy")(g.numpy(), u.numpy()))
    )


def test_triton_kernels_fall_back_to_torch_outside_cuda_and_interpret_mode() -> None:
    pytest.importorskip("triton")
    from sagellm_backend.kernels import torch_ops, triton_ops

    if triton_ops.INTERPRET:
        pytest.skip("TRITON_INTERPRET=1 in this process: CPU tensors run the kernels (tested in a subprocess)")
    x, r, w = _rand(3, 8), _rand(3, 8, seed=1), _rand(8, seed=2)
    assert torch.equal(triton_ops.rmsnorm(x, w), torch_ops.rmsnorm(x, w))
    for a, b in zip(triton_ops.add_rmsnorm(x, r, w), torch_ops.add_rmsnorm(x, r, w)):
        assert torch.equal(a, b)
    assert torch.equal(triton_ops.silu_mul(x), torch_ops.silu_mul(x))
    xd = x.double()  # a dtype the kernels do not take
    assert torch.equal(triton_ops.rmsnorm(xd, w.double()), torch_ops.rmsnorm(xd, w.double()))
