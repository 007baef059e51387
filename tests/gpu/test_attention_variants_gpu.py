"""Sliding window, soft cap and ALiBi in the Triton and torch paged ops on a CUDA GPU, against the float64
reference; a 4k sliding window over 32k tokens decodes within 1.3x the time of a 4k context. Marked `gpu`."""

from __future__ import annotations

from typing import Any

import pytest

from sagellm_backend.attention.testing import check_paged_variants

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")

VARIANTS: list[dict[str, Any]] = [
    {"sliding_window": 64},
    {"sliding_window": 1000},
    {"logits_soft_cap": 30.0},
    {"logits_soft_cap": 2.0, "alibi": True},
    {"alibi": True},
    {"sliding_window": 300, "logits_soft_cap": 50.0, "alibi": True},
]


def _ops(name: str) -> Any:
    from sagellm_backend.attention.registry import impls_of

    return next(i for i in impls_of("paged") if i.name == name).load_ops()


@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("variants", VARIANTS, ids=lambda v: "+".join(sorted(v)))
def test_variants_on_cuda_match_the_reference(impl: str, dtype: str, variants: dict[str, Any]) -> None:
    if impl == "triton":
        pytest.importorskip("triton")
    results = check_paged_variants(
        _ops(impl), "cuda", dtype=getattr(torch, dtype), head_dim=128, block_size=16, num_heads=8, num_kv_heads=2,
        seq_lens=[1, 17, 700, 2113], q_lens=[1, 17, 200, 513], **variants,
    )  # fmt: skip
    assert all(r.worst_ratio <= 1.0 for r in results), [(r.op, r.max_abs_err, r.worst_ratio) for r in results]


def test_backend_picks_triton_for_variants_on_cuda() -> None:
    pytest.importorskip("triton")
    from sagellm_backend.attention import PagedAttentionBackend

    backend = PagedAttentionBackend(sliding_window=4096, logits_soft_cap=30.0, alibi_slopes=[0.1] * 32)
    assert backend.implementation_for(torch.device("cuda"), torch.bfloat16, 128, 16) == "triton"


def test_sliding_window_decode_reads_only_the_window() -> None:
    """The bench row: 4 x 32k tokens with a 4k window vs the same 4k keys as a 4k context (same pages)."""
    pytest.importorskip("triton")
    from sagellm_backend.bench.paged_variants import bench_sliding_window

    row = bench_sliding_window("cuda")
    print(f"\n{row.case}: window {row.ours:.1f} us, 4k context {row.ceiling:.1f} us, 32k no window {row.naive:.1f} us")
    assert row.extra["max abs diff vs window as context x1e3"] < 20  # bf16 rounding of the same keys
    assert row.ours <= 1.3 * row.ceiling, row
    assert row.ours * 2 < row.naive, row  # an eighth of the keys: at least twice as fast as the whole context
