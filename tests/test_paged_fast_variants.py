"""The decode fast path of ``PagedAttentionBackend.forward`` for backends with variants (window, soft cap, ALiBi)
and fp8 caches (CPU, torch ops): a step's later layers skip the checks yet give exactly what a checked call gives,
with each layer's own caches and scales; a call that differs (scale layout, backend options) is checked again;
an ``output`` over a scale is refused before anything is written."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

from sagellm_backend.attention import (  # noqa: E402
    PagedAttentionBackend,
    PagedAttentionMetadataBuilder,
    paged,
)
from sagellm_backend.attention.kv_quant import fp8_dtype  # noqa: E402
from sagellm_backend.attention.variants import AttentionVariants  # noqa: E402
from sagellm_backend.errors import InvalidArgumentError  # noqa: E402

HQ, HKV, D, BS, NB = 4, 2, 16, 4, 12
CTX, TABLE = [3, 6], [[2, 0], [1, 4]]

OPTS = [
    {"sliding_window": 3, "logits_soft_cap": 2.0, "alibi_slopes": [0.5, 0.25, 0.125, 0.0625]},
    {"kv_cache_dtype": "fp8_e4m3"},
    {"kv_cache_dtype": "fp8_e5m2", "sliding_window": 2},
]


def _layer(seed: int, opts: dict[str, Any], uint8: bool = False, scale_dim: int = 1) -> dict[str, Any]:
    """One layer's inputs: q, k, v, caches (fp8, or their uint8 bits), scales (fresh values per layer)."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (
        torch.randn(2, HQ, D, generator=g),
        torch.randn(2, HKV, D, generator=g),
        torch.randn(2, HKV, D, generator=g),
    )
    kc, vc = torch.randn(NB, BS, HKV, D, generator=g), torch.randn(NB, BS, HKV, D, generator=g)
    sc: dict[str, Any] = {}
    fp8 = opts.get("kv_cache_dtype")
    if fp8 is not None:
        kc, vc = kc.to(fp8_dtype(fp8)), vc.to(fp8_dtype(fp8))
        if uint8:
            kc, vc = kc.view(torch.uint8), vc.view(torch.uint8)
        ks, vs = torch.rand(HKV, generator=g) + 0.5, torch.rand(1, generator=g) + 0.5
        if scale_dim == 0:
            ks, vs = ks[0].clone(), vs[0].clone()
        sc = {"k_scale": ks, "v_scale": vs}
    return {"q": q, "k": k, "v": v, "cache": (kc, vc), "sc": sc}


def _checked_result(opts: dict[str, Any], x: dict[str, Any]) -> Any:
    """The same call made by a fresh backend on fresh metadata (so checked), over copies of the caches."""
    md = PagedAttentionMetadataBuilder(BS).build_decode_metadata(CTX, TABLE)
    cache = tuple(c.clone() for c in x["cache"])
    out = PagedAttentionBackend(BS, **opts).forward(x["q"], x["k"], x["v"], md, kv_cache=cache, **x["sc"])
    return out, cache


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = paged.PagedAttentionBackend._checked_forward

    def counted(self: Any, *args: Any, **kw: Any) -> Any:
        calls.append(1)
        return real(self, *args, **kw)

    monkeypatch.setattr(paged.PagedAttentionBackend, "_checked_forward", counted)
    return calls


@pytest.mark.parametrize(
    ("opts", "uint8", "scale_dim"),
    [(OPTS[0], False, 1), *[(o, u, n) for o in OPTS[1:] for u in (False, True) for n in (1, 0)]],
)
def test_later_layers_skip_the_checks_and_equal_checked_calls(
    monkeypatch: pytest.MonkeyPatch, opts: dict[str, Any], uint8: bool, scale_dim: int
) -> None:
    backend = PagedAttentionBackend(BS, **opts)
    md = PagedAttentionMetadataBuilder(BS).build_decode_metadata(CTX, TABLE)
    layers = [_layer(seed, opts, uint8, scale_dim) for seed in range(4)]
    want = [_checked_result(opts, x) for x in layers]
    calls = _counting(monkeypatch)
    for x, (ref, ref_cache) in zip(layers, want):
        got = backend.forward(x["q"], x["k"], x["v"], md, kv_cache=x["cache"], **x["sc"])
        assert torch.equal(got, ref)
        assert all(torch.equal(a, b) for a, b in zip(x["cache"], ref_cache))  # the same bytes stored
    assert len(calls) == 1  # the first layer only


def test_another_scale_layout_or_missing_scales_are_checked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    opts = OPTS[1]
    backend = PagedAttentionBackend(BS, **opts)
    md = PagedAttentionMetadataBuilder(BS).build_decode_metadata(CTX, TABLE)
    first, per_tensor = _layer(0, opts), _layer(1, opts)
    per_tensor["sc"]["k_scale"] = per_tensor["sc"]["k_scale"][:1].clone()  # 1 element where the first had 2
    ref, _ = _checked_result(opts, per_tensor)
    calls = _counting(monkeypatch)
    backend.forward(first["q"], first["k"], first["v"], md, kv_cache=first["cache"], **first["sc"])
    got = backend.forward(per_tensor["q"], per_tensor["k"], per_tensor["v"], md, kv_cache=per_tensor["cache"],
                          **per_tensor["sc"])  # fmt: skip
    assert torch.equal(got, ref) and len(calls) == 2
    with pytest.raises(TypeError):  # no scales for an fp8 cache: the checked path says so
        backend.forward(per_tensor["q"], per_tensor["k"], per_tensor["v"], md, kv_cache=per_tensor["cache"])


def test_a_backend_whose_options_changed_is_checked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    opts = OPTS[0]
    backend = PagedAttentionBackend(BS, **opts)
    md = PagedAttentionMetadataBuilder(BS).build_decode_metadata(CTX, TABLE)
    x, y = _layer(0, opts), _layer(1, opts)
    ref, _ = _checked_result({}, y)
    calls = _counting(monkeypatch)
    backend.forward(x["q"], x["k"], x["v"], md, kv_cache=x["cache"])
    backend.variants = AttentionVariants(None, None, None)  # plain attention from now on
    got = backend.forward(y["q"], y["k"], y["v"], md, kv_cache=y["cache"])
    assert torch.equal(got, ref) and len(calls) == 2


@pytest.mark.parametrize("which", ["k_scale", "v_scale"])
def test_an_output_over_a_scale_is_refused_before_anything_is_written(which: str) -> None:
    opts = OPTS[1]
    backend = PagedAttentionBackend(BS, **opts)
    md = PagedAttentionMetadataBuilder(BS).build_decode_metadata(CTX, TABLE)
    x = _layer(0, opts)
    backend.forward(x["q"], x["k"], x["v"], md, kv_cache=x["cache"], **x["sc"])  # records the fast path
    y = _layer(1, opts)
    buf = torch.zeros(2 * HQ * D + 8)
    out = buf[: 2 * HQ * D].view(2, HQ, D)
    n = y["sc"][which].numel()
    y["sc"][which] = buf[2 * HQ * D - n : 2 * HQ * D]  # the scale is the output's last elements
    y["sc"][which].fill_(1.0)
    before = (buf.clone(), *(c.clone() for c in y["cache"]))
    with pytest.raises(InvalidArgumentError, match=r"overlap|share"):
        backend.forward(y["q"], y["k"], y["v"], md, kv_cache=y["cache"], output=out, **y["sc"])
    assert all(torch.equal(a, b) for a, b in zip(before, (buf, *y["cache"])))
