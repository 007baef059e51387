"""Pages of 64 tokens on the GPU, where each 64-token tile of the decode lies in one page and its page number is read
once per tile (``ONE_PAGE`` in :func:`sagellm_backend.attention.triton_tiles.attend_tiles`): the compiled default
launches (bf16 and fp8 caches, token- and head-major pages, split and unsplit, with a sliding window, the fused
store) give the same bits as over the same bytes seen as 16-token pages, whose tiles span four pages. Marked `gpu`."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from sagellm_backend.attention import paged_triton as pt  # noqa: E402  # after the skips

HQ, HKV, D, NB = 32, 8, 128, 700
LENS = [1, 63, 64, 65, 700, 3000, 4999, 129]
CACHE = {"bf16": torch.bfloat16, "fp8_e4m3": torch.float8_e4m3fn}


def _quarters(table: torch.Tensor) -> torch.Tensor:
    """The block table of the same bytes seen as 16-token pages (each 64-token page is four)."""
    return torch.stack([4 * table + i for i in range(4)], dim=2).flatten(1)


def _head_major(cache: torch.Tensor) -> torch.Tensor:
    return cache.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)


def _step(kv: str, g: torch.Generator) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor,
                                                dict[str, Any]]:  # fmt: skip
    """Random 64-token-page caches, a block table over them, :data:`LENS`, a bf16 query and the fp8 scales."""
    caches = [torch.randn(NB, 64, HKV, D, generator=g).cuda().to(CACHE[kv]) for _ in range(2)]
    table = torch.randperm(NB, generator=g)[: len(LENS) * 79].view(len(LENS), 79).int().cuda()
    lens = torch.tensor(LENS, dtype=torch.int32, device="cuda")
    q = torch.randn(len(LENS), HQ, D, generator=g).cuda().bfloat16()
    sc = {} if kv == "bf16" else {"k_scale": torch.full((1,), 0.03, device="cuda"),
                                   "v_scale": torch.full((1,), 0.02, device="cuda")}  # fmt: skip
    return caches, table, lens, q, sc


@pytest.mark.parametrize("kv", list(CACHE))
@pytest.mark.parametrize("opts", [{}, {"splits": 1}, {"sliding_window": 1000}], ids=["default", "one split", "window"])
def test_decode_over_64_token_pages_equals_16_token_pages_bit_for_bit(kv: str, opts: dict[str, Any]) -> None:
    (kc, vc), table, lens, q, sc = _step(kv, torch.Generator().manual_seed(5))
    got = pt.paged_decode(q, kc, vc, table, lens, D**-0.5, **sc, **opts)
    as16 = pt.paged_decode(
        q, kc.view(4 * NB, 16, HKV, D), vc.view(4 * NB, 16, HKV, D), _quarters(table), lens, D**-0.5, **sc, **opts
    )
    head_major = pt.paged_decode(q, _head_major(kc), _head_major(vc), table, lens, D**-0.5, **sc, **opts)
    assert torch.equal(got, as16)
    assert torch.equal(got, head_major)
    assert got.isfinite().all()


@pytest.mark.parametrize("kv", list(CACHE))
def test_fused_store_and_decode_over_64_token_pages_equals_16_token_pages(kv: str) -> None:
    g = torch.Generator().manual_seed(6)
    base, table, lens, q, sc = _step(kv, g)
    caches = [[c.clone() for c in base] for _ in range(2)]
    pos = lens.long() - 1
    slots = table.long().gather(1, (pos // 64)[:, None])[:, 0] * 64 + pos % 64
    key, value = (torch.randn(len(LENS), HKV, D, generator=g).cuda().bfloat16() for _ in range(2))
    a = pt.paged_decode_store(q, key, value, *caches[0], table, lens, slots, D**-0.5, **sc)
    k16, v16 = (c.view(4 * NB, 16, HKV, D) for c in caches[1])
    b = pt.paged_decode_store(q, key, value, k16, v16, _quarters(table), lens, slots, D**-0.5, **sc)
    assert torch.equal(a, b)
    for x, y in zip(caches[0], caches[1]):
        assert torch.equal(x.view(torch.uint8), y.view(torch.uint8))
