"""The fused Triton engine kernels on a real GPU, against the torch kernels, through the CUDA provider.

Tolerances: fp32 1e-5 relative; fp16 and bf16 about two units in the last place (rsqrt, exp and
the order of the row sum differ between Triton and torch's kernels, so a value next to a rounding
boundary can round the other way, and the weight multiplies that difference).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gpu

TOL = {"float32": (1e-5, 1e-5), "float16": (2**-9, 2**-10), "bfloat16": (2**-7, 2**-7)}
HIDDEN = [1, 7, 127, 1000, 4096, 5120, 8193]


@pytest.fixture(scope="module")
def cuda():
    from sagellm_backend import CUDABackendProvider

    p = CUDABackendProvider(0, kv_geometry={"num_layers": 1, "num_kv_heads": 1, "head_dim": 8})
    yield p
    p.close()


def _close(got, want, dtype: str, rounded_to: str | None = None) -> None:
    import torch

    rtol, atol = TOL[rounded_to or dtype]
    assert got.shape == want.shape and got.dtype == want.dtype
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


def _rand(*shape, dtype, seed=0):
    import torch

    g = torch.Generator(device="cuda").manual_seed(seed)
    return torch.randn(*shape, generator=g, device="cuda", dtype=torch.float32).to(getattr(torch, dtype))


def test_cuda_provider_serves_the_triton_kernels(cuda) -> None:
    for name in ("rmsnorm", "add_rmsnorm", "fused_add_rmsnorm", "fused_rmsnorm", "silu_mul", "fused_silu_mul"):
        k = cuda.get_kernel(name)
        assert k.backend == "triton" and callable(k) and callable(k.forward), (name, k)
    for name in ("linear", "embedding", "silu", "gelu", "relu", "layernorm", "fused_qkv_projection"):
        assert cuda.get_kernel(name).backend == "torch"
    with pytest.raises(KeyError):
        cuda.get_kernel("nope")


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("hidden", HIDDEN)
def test_rmsnorm_and_add_rmsnorm(cuda, dtype: str, hidden: int) -> None:
    from sagellm_backend.kernels import torch_ops

    for rows in (1, 3, 600):  # 600 rows of a narrow hidden size packs several rows per program
        x, r, w = (
            _rand(rows, hidden, dtype=dtype) * 3,
            _rand(rows, hidden, dtype=dtype, seed=1),
            _rand(hidden, dtype=dtype, seed=2),
        )
        _close(cuda.get_kernel("rmsnorm")(x, w, 1e-6), torch_ops.rmsnorm(x, w, 1e-6), dtype)
        x0, r0 = x.clone(), r.clone()
        normed, s = cuda.get_kernel("add_rmsnorm")(x, r, w, 1e-5)
        want_n, want_s = torch_ops.add_rmsnorm(x, r, w, 1e-5)
        assert s.equal(want_s) and x.equal(x0) and r.equal(r0)  # the sum is one rounding: exact
        _close(normed, want_n, dtype)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_rmsnorm_fp32_weight_on_half_input(cuda, dtype: str) -> None:
    from sagellm_backend.kernels import torch_ops

    x, w = _rand(4, 4096, dtype=dtype), _rand(4096, dtype="float32", seed=1)
    _close(cuda.get_kernel("rmsnorm")(x, w), torch_ops.rmsnorm(x, w), "float32", rounded_to=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("cols", [1, 37, 1000, 11008])
def test_silu_mul_both_forms(cuda, dtype: str, cols: int) -> None:
    from sagellm_backend.kernels import torch_ops

    k = cuda.get_kernel("silu_mul")
    for rows in (1, 5, 300):
        g, u = _rand(rows, cols, dtype=dtype) * 4, _rand(rows, cols, dtype=dtype, seed=1)
        _close(k(g, u), torch_ops.silu_mul(g, u), dtype)
        cat = torch_cat(g, u)
        _close(k(cat), torch_ops.silu_mul(cat), dtype)


def torch_cat(g, u):
    import torch

    return torch.cat([g, u], dim=-1)


def test_strided_inputs_and_fallbacks(cuda) -> None:
    import torch

    from sagellm_backend.kernels import torch_ops

    wide = _rand(8, 2 * 4096, dtype="bfloat16")
    w = _rand(4096, dtype="bfloat16", seed=1)
    _close(cuda.get_kernel("rmsnorm")(wide[:, ::2], w), torch_ops.rmsnorm(wide[:, ::2], w), "bfloat16")
    _close(cuda.get_kernel("rmsnorm")(wide[:, :4096], w), torch_ops.rmsnorm(wide[:, :4096], w), "bfloat16")
    x3 = _rand(2, 5, 4096, dtype="float16")
    _close(cuda.get_kernel("rmsnorm")(x3, w.half()), torch_ops.rmsnorm(x3, w.half()), "float16")
    xd = torch.randn(3, 64, device="cuda", dtype=torch.float64)  # not a kernel dtype: torch computes it
    assert cuda.get_kernel("rmsnorm")(xd, xd[0]).equal(torch_ops.rmsnorm(xd, xd[0]))
    xc = torch.randn(3, 64)  # a CPU tensor given to the CUDA kernel: torch computes it
    assert cuda.get_kernel("rmsnorm")(xc, xc[0]).equal(torch_ops.rmsnorm(xc, xc[0]))
    empty = torch.empty(0, 64, device="cuda")
    assert cuda.get_kernel("silu_mul")(torch.empty(0, 128, device="cuda")).shape == (0, 64)
    assert cuda.get_kernel("rmsnorm")(empty, torch.ones(64, device="cuda")).shape == (0, 64)


def test_hugging_face_rmsnorm_in_fp32_on_gpu(cuda) -> None:
    import torch

    x, w = _rand(2, 7, 4096, dtype="float32"), _rand(4096, dtype="float32", seed=1)
    h = x.float()
    want = w * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype)
    torch.testing.assert_close(cuda.get_kernel("rmsnorm")(x, w, 1e-6), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("hidden", [4096, 8193, 16384])  # one pass, and the two-pass loop of long rows
def test_inplace_and_out_equal_the_new_results_bit_for_bit(cuda, dtype: str, hidden: int) -> None:
    import torch

    norm, add, silu = cuda.get_kernel("rmsnorm"), cuda.get_kernel("add_rmsnorm"), cuda.get_kernel("silu_mul")
    for rows in (1, 64, 600):
        x, r, w = (
            _rand(rows, hidden, dtype=dtype) * 3,
            _rand(rows, hidden, dtype=dtype, seed=1),
            _rand(hidden, dtype=dtype, seed=2),
        )
        want_y, want_s = add(x, r, w, 1e-5)
        got = add(x, r, w, 1e-5, inplace=True)
        assert got[0] is x and got[1] is r
        assert x.equal(want_y) and r.equal(want_s), (rows, hidden)
        out = torch.empty_like(x)
        assert norm(r, w, 1e-5, out=out) is out and out.equal(norm(r, w, 1e-5))
        gu = _rand(rows, 2 * hidden, dtype=dtype, seed=3)
        y = torch.empty(rows, hidden, dtype=x.dtype, device="cuda")
        assert silu(gu, out=y) is y and y.equal(silu(gu))
