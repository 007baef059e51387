"""Prefill on an empty cache on a CUDA GPU: the dense path (one SDPA batch, runs of equal lengths) and the paged
op it hands many runs to, against the Triton/torch paged prefill on the same cache and a float64 reference."""

from __future__ import annotations

import pytest

from sagellm_backend.attention import (
    PagedAttentionBackend,
    PagedAttentionMetadataBuilder,
    get_attention_diagnostics,
    reset_attention_diagnostics,
)
from sagellm_backend.attention.paged import select_paged_ops
from sagellm_backend.attention.reference import reference_paged_prefill

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")


def request_id(lens: list[int]) -> str:
    """Which path the lengths take: one batch, a few runs (dense), or many runs (the paged op)."""
    runs = sum(1 for i, n in enumerate(lens) if i == 0 or lens[i - 1] != n)
    return "batch" if runs == 1 else "runs" if runs <= 4 else "many"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize(
    "lens", [[256, 256, 256, 256], [100, 37, 37, 300], [5, 17, 33, 65, 129, 1, 64]], ids=["batch", "runs", "many"]
)
def test_dense_prefill_matches_paged_op_and_reference(dtype, lens) -> None:
    torch.manual_seed(0)
    bs, hq, hkv, d = 16, 32, 8, 128
    need = [-(-n // bs) for n in lens]
    n_blocks = sum(need) + 5
    perm = torch.randperm(n_blocks).tolist()
    table = torch.zeros(len(lens), max(need), dtype=torch.int32)
    at = 0
    for i, nb in enumerate(need):
        table[i, :nb] = torch.tensor(perm[at : at + nb])
        at += nb
    table = table.cuda()
    t = sum(lens)
    q = torch.randn(t, hq, d, device="cuda", dtype=dtype)
    k, v = (torch.randn(t, hkv, d, device="cuda", dtype=dtype) for _ in range(2))
    cache = tuple(torch.full((n_blocks, bs, hkv, d), float("nan"), device="cuda", dtype=dtype) for _ in range(2))
    md = PagedAttentionMetadataBuilder(bs, device=torch.device("cuda")).build_prefill_metadata(
        seq_lens=lens, block_tables=table
    )
    reset_attention_diagnostics()
    out = PagedAttentionBackend(bs).forward(q, k, v, md, kv_cache=cache)
    keys = [name for name in get_attention_diagnostics() if name.startswith("paged:")]
    ops, impl = select_paged_ops(torch.device("cuda"), dtype, d, bs)
    want = {"batch": "dense_batch", "runs": "dense_runs"}.get(request_id(lens), impl)
    assert keys == [f"paged:implementation={want}"], keys
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    key_lens = torch.tensor(lens, dtype=torch.int32, device="cuda")
    paged = ops.paged_prefill(q, cache[0], cache[1], table, cu, key_lens, d**-0.5)
    ref = reference_paged_prefill(q, cache[0], cache[1], table, cu, key_lens, d**-0.5)
    tol = {torch.float16: 1e-2, torch.bfloat16: 3e-2, torch.float32: 2e-3}[dtype]
    torch.testing.assert_close(out.double().cpu(), ref, atol=tol, rtol=tol)
    torch.testing.assert_close(out.float(), paged.float(), atol=2 * tol, rtol=2 * tol)
