"""``PagedAttentionBackend.forward``'s decode fast path on the GPU (the bound fused Triton launch), for plain,
variant (window, soft cap, ALiBi) and fp8-cache backends: a step's later layers, which skip the checks, give the
same bits and store the same bytes as checked calls with the same inputs, each layer with its own caches and
scales; the next step's metadata reuses the bindings with its own lengths."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from sagellm_backend.attention import PagedAttentionBackend, PagedAttentionMetadataBuilder  # noqa: E402
from sagellm_backend.attention.kv_quant import fp8_dtype  # noqa: E402

HQ, HKV, D, BS, NB, B = 16, 4, 128, 16, 64, 3
OPTS: list[dict[str, Any]] = [
    {},
    {"sliding_window": 20, "logits_soft_cap": 30.0, "alibi_slopes": [2.0 ** -(h + 1) for h in range(HQ)]},
    {"kv_cache_dtype": "fp8_e4m3"},
    {"kv_cache_dtype": "fp8_e5m2", "sliding_window": 9},
]


def _layer(seed: int, opts: dict[str, Any]) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    x: dict[str, Any] = {
        "q": torch.randn(B, HQ, D, generator=g).cuda().bfloat16(),
        "k": torch.randn(B, HKV, D, generator=g).cuda().bfloat16(),
        "v": torch.randn(B, HKV, D, generator=g).cuda().bfloat16(),
        "sc": {},
    }
    caches = [torch.randn(NB, BS, HKV, D, generator=g).cuda().bfloat16() for _ in range(2)]
    fp8 = opts.get("kv_cache_dtype")
    if fp8 is not None:
        caches = [c.to(fp8_dtype(fp8)) for c in caches]
        x["sc"] = {"k_scale": (torch.rand(HKV, generator=g) + 0.5).cuda(), "v_scale": torch.rand(1).cuda() + 0.5}
    x["cache"] = tuple(caches)
    return x


@pytest.mark.parametrize("opts", OPTS, ids=["plain", "variants", "e4m3", "e5m2-window"])
def test_fast_layers_equal_checked_calls_bit_for_bit(opts: dict[str, Any]) -> None:
    backend = PagedAttentionBackend(BS, **opts)
    builder = PagedAttentionMetadataBuilder(BS, device="cuda")
    tables = torch.randperm(NB - 1)[: B * 8].view(B, 8).to(torch.int32)
    for step, ctx in enumerate(([17, 40, 100], [18, 41, 101], [64, 1, 120])):
        md = builder.build_decode_metadata(ctx, tables.cuda())
        for layer in range(3):
            x = _layer(100 * step + layer, opts)
            ref_cache = tuple(c.clone() for c in x["cache"])
            fresh = builder.build_decode_metadata(ctx, tables.cuda())  # new metadata: a checked call
            want = PagedAttentionBackend(BS, **opts).forward(
                x["q"], x["k"], x["v"], fresh, kv_cache=ref_cache, **x["sc"]
            )
            got = backend.forward(x["q"], x["k"], x["v"], md, kv_cache=x["cache"], **x["sc"])
            assert torch.equal(got, want), (step, layer)
            assert all(torch.equal(a.view(torch.uint8), b.view(torch.uint8)) for a, b in zip(x["cache"], ref_cache))
        assert md.step_fast_paths.get((id(backend), "ready")) is not None
    torch.cuda.synchronize()
