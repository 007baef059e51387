"""Paged attention on a CUDA GPU: the torch ops and (when Triton imports) the Triton ops against the float64
reference, and the backend's dispatch and diagnostics. Marked `gpu`: skipped where no NVIDIA GPU is visible."""

from __future__ import annotations

import pytest

from sagellm_backend.attention import (
    PagedAttentionBackend,
    PagedAttentionMetadataBuilder,
    get_attention_diagnostics,
    reset_attention_diagnostics,
)
from sagellm_backend.attention.testing import check_paged_ops

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")


def test_torch_ops_on_cuda() -> None:
    from sagellm_backend.attention import paged_torch

    results = check_paged_ops(paged_torch, "cuda")
    assert all(r.worst_ratio <= 1.0 for r in results)


def test_triton_ops_on_cuda() -> None:
    pytest.importorskip("triton")
    from sagellm_backend.attention.registry import impls_of

    triton_ops = next(i for i in impls_of("paged") if i.name == "triton").load_ops()
    results = check_paged_ops(triton_ops, "cuda", exhaustive=True)
    assert all(r.worst_ratio <= 1.0 for r in results)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_backend_dispatch_and_result_on_cuda(dtype) -> None:
    reset_attention_diagnostics()
    bs, hq, hkv, d = 16, 8, 2, 128
    backend = PagedAttentionBackend(block_size=bs, use_vllm_kernel=True)
    impl = backend.implementation_for(torch.device("cuda"), dtype, d, bs)
    cache = tuple(torch.zeros(backend.get_kv_cache_shape(num_blocks=8, block_size=bs, num_kv_heads=hkv, head_dim=d),
                              dtype=dtype, device="cuda") for _ in range(2))  # fmt: skip
    table = torch.tensor([[3, 5], [1, 0]], device="cuda")
    builder = PagedAttentionMetadataBuilder(bs, device=torch.device("cuda"))
    md = builder.build_prefill_metadata(seq_lens=[20, 7], block_tables=table)
    q = torch.randn(27, hq, d, device="cuda", dtype=dtype)
    k, v = torch.randn(27, hkv, d, device="cuda", dtype=dtype), torch.randn(27, hkv, d, device="cuda", dtype=dtype)
    out = backend.forward(query=q, key=k, value=v, attn_metadata=md, kv_cache=cache, scale=None)
    # Read before the CPU reference below, whose prefill on an empty cache takes the same dense path.
    dense_calls = get_attention_diagnostics()["paged:implementation=dense_runs"]["kv_cache_calls"]
    ref_cache = tuple(torch.zeros(c.shape) for c in cache)
    ref_md = PagedAttentionMetadataBuilder(bs).build_prefill_metadata(seq_lens=[20, 7], block_tables=table.cpu())
    ref = PagedAttentionBackend(bs).forward(
        q.float().cpu(), k.float().cpu(), v.float().cpu(), ref_md, kv_cache=ref_cache
    )
    assert torch.allclose(out.float().cpu(), ref, atol=3e-2, rtol=3e-2)
    assert torch.equal(cache[0].float().cpu(), ref_cache[0]) and torch.equal(cache[1].float().cpu(), ref_cache[1])
    qd = torch.randn(2, hq, d, device="cuda", dtype=dtype)
    kd, vd = torch.randn(2, hkv, d, device="cuda", dtype=dtype), torch.randn(2, hkv, d, device="cuda", dtype=dtype)
    out = backend.forward(
        qd, kd, vd, builder.build_decode_metadata(context_lens=[20, 7], block_tables=table), kv_cache=cache
    )
    ref_md = PagedAttentionMetadataBuilder(bs).build_decode_metadata(context_lens=[20, 7], block_tables=table.cpu())
    ref = PagedAttentionBackend(bs).forward(
        qd.float().cpu(), kd.float().cpu(), vd.float().cpu(), ref_md, kv_cache=ref_cache
    )
    assert torch.allclose(out.float().cpu(), ref, atol=3e-2, rtol=3e-2)
    try:
        from sagellm_backend.attention import paged_triton  # noqa: F401
    except ImportError:
        expected = "torch"
    else:
        expected = "triton"
    assert impl == expected
    diag = get_attention_diagnostics()
    assert diag[f"paged:implementation={impl}"]["kv_cache_calls"] == 1  # the decode
    assert dense_calls == 1  # the prefill on an empty cache
    reset_attention_diagnostics()
