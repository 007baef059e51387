"""The decode fast path of ``PagedAttentionBackend.forward`` for backends with variants (window, soft cap, ALiBi)
and fp8 caches (CPU, torch ops): a step's later layers skip the checks yet give exactly what a checked call gives,
with each layer's own caches and scales; a call that differs (scale layout, backend options) is checked again;
an ``output`` over a scale is refused before anything is written."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    fp8 = opts.get("kv_cache_dtype", "auto")
    if fp8 != "auto":
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
def test_an_output_over_a_scale_is_refused_before_anything_is_written(
    which: str, monkeypatch: pytest.MonkeyPatch
) -> None:
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
    calls = _counting(monkeypatch)
    with pytest.raises(InvalidArgumentError, match=r"overlap|share"):
        backend.forward(y["q"], y["k"], y["v"], md, kv_cache=y["cache"], output=out, **y["sc"])
    assert not calls  # refused by the fast path's own check of the output
    assert all(torch.equal(a, b) for a, b in zip(before, (buf, *y["cache"])))


_CALL = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 10**6),
        "uint8": st.booleans(),
        "k_elems": st.sampled_from([1, HKV, 0]),  # 0: a 0-d scale
        "v_elems": st.sampled_from([1, HKV, 0]),
        "scale_dtype": st.sampled_from(["float32", "float32", "float32", "float64"]),
        "drop_scales": st.sampled_from([False, False, False, True]),
        "value_is_key": st.booleans(),
        "output": st.sampled_from(["none", "none", "buffer", "over k_scale"]),
        "softmax_scale": st.sampled_from([None, None, 0.1]),
    }
)


def _scale(g: Any, elems: int, dtype: Any) -> Any:
    t = torch.rand(max(elems, 1), generator=g, dtype=torch.float64) + 0.5
    return (t[0] if elems == 0 else t).to(dtype)


def _attempt(fn: Any, *args: Any, **kw: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args, **kw)
    except Exception as exc:  # the comparison below requires the same outcome, typed error included
        return type(exc).__name__, None


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    kv=st.sampled_from(["fp8_e4m3", "fp8_e5m2", "auto"]),
    window=st.sampled_from([None, 2]),
    calls=st.lists(_CALL, min_size=2, max_size=5),
)
def test_any_sequence_of_layer_calls_matches_checked_calls(kv: str, window: Any, calls: list[dict[str, Any]]) -> None:
    """A step's layers with arbitrary changes between them (uint8 or fp8 caches, per-tensor, per-head or 0-d scales,
    a float64 scale, missing scales (or scales for an unquantised cache), the key passed as value, an output buffer
    or one over a scale, another softmax scale): every call has the outcome a checked call on fresh metadata has
    (the same result bits and stored bytes, or the same error type with nothing written)."""
    opts: dict[str, Any] = {"kv_cache_dtype": kv}
    if window is not None:
        opts["sliding_window"] = window
    backend = PagedAttentionBackend(BS, **opts)
    md = PagedAttentionMetadataBuilder(BS).build_decode_metadata(CTX, TABLE)
    for c in calls:
        g = torch.Generator().manual_seed(c["seed"])
        x = _layer(c["seed"], opts, uint8=c["uint8"])
        sdt = getattr(torch, c["scale_dtype"])
        sc = {} if c["drop_scales"] else {
            "k_scale": _scale(g, c["k_elems"], sdt), "v_scale": _scale(g, c["v_elems"], sdt)
        }  # fmt: skip
        v = x["k"] if c["value_is_key"] else x["v"]
        bufs = []
        for _ in range(2):  # one for the checked call, one for the fast one: the same layout
            buf = torch.zeros(2 * HQ * D + HKV)
            s = dict(sc)
            if c["output"] == "over k_scale" and "k_scale" in s:
                n = s["k_scale"].numel()
                tail = buf[2 * HQ * D - n : 2 * HQ * D].view(s["k_scale"].shape)
                tail.copy_(s["k_scale"].float())
                s["k_scale"] = tail if s["k_scale"].dtype == torch.float32 else s["k_scale"]
            out = None if c["output"] == "none" else buf[: 2 * HQ * D].view(2, HQ, D)
            bufs.append((buf, s, out))
        fresh = PagedAttentionMetadataBuilder(BS).build_decode_metadata(CTX, TABLE)
        ref_cache = tuple(t.clone() for t in x["cache"])
        (rbuf, rs, rout), (fbuf, fs, fout) = bufs
        q, k, sm = x["q"], x["k"], c["softmax_scale"]
        want = _attempt(
            PagedAttentionBackend(BS, **opts).forward, q, k, v, fresh, kv_cache=ref_cache, scale=sm, output=rout, **rs
        )
        got = _attempt(backend.forward, q, k, v, md, kv_cache=x["cache"], scale=sm, output=fout, **fs)
        assert got[0] == want[0], (c, got[0], want[0])
        if want[0] == "ok":
            assert torch.equal(got[1], want[1])
        assert all(torch.equal(a, b) for a, b in zip(x["cache"], ref_cache))  # same bytes stored (or none)
        assert torch.equal(fbuf, rbuf)


@pytest.mark.parametrize("first_uint8", [False, True])
def test_a_layer_passing_the_other_cache_dtype_equals_a_checked_call(first_uint8: bool) -> None:
    """fp8 caches then their uint8 bits (or the reverse) on one step: the later layer is checked again and equals
    a checked call (it is not launched as the first layer's cache dtype)."""
    opts = OPTS[1]
    backend = PagedAttentionBackend(BS, **opts)
    md = PagedAttentionMetadataBuilder(BS).build_decode_metadata(CTX, TABLE)
    x, y = _layer(0, opts, uint8=first_uint8), _layer(1, opts, uint8=not first_uint8)
    ref, ref_cache = _checked_result(opts, y)
    backend.forward(x["q"], x["k"], x["v"], md, kv_cache=x["cache"], **x["sc"])
    got = backend.forward(y["q"], y["k"], y["v"], md, kv_cache=y["cache"], **y["sc"])
    assert torch.equal(got, ref) and all(torch.equal(a, b) for a, b in zip(y["cache"], ref_cache))


@pytest.mark.parametrize("bad", ["float64 k_scale", "float16 v_scale", "k_scale of 3", "scales dropped"])
def test_a_later_layer_the_checked_path_refuses_is_refused(bad: str) -> None:
    """After a recorded layer, a call whose scales the checked path refuses raises the same typed error, writes
    nothing and leaves the fast path for a good call."""
    opts = OPTS[1]
    backend = PagedAttentionBackend(BS, **opts)
    md = PagedAttentionMetadataBuilder(BS).build_decode_metadata(CTX, TABLE)
    x, y = _layer(0, opts), _layer(1, opts)
    backend.forward(x["q"], x["k"], x["v"], md, kv_cache=x["cache"], **x["sc"])
    sc = dict(y["sc"])
    if bad == "float64 k_scale":
        sc["k_scale"] = sc["k_scale"].double()
    elif bad == "float16 v_scale":
        sc["v_scale"] = sc["v_scale"].half()
    elif bad == "k_scale of 3":
        sc["k_scale"] = torch.ones(3)
    else:
        sc = {}
    fresh = PagedAttentionMetadataBuilder(BS).build_decode_metadata(CTX, TABLE)
    with pytest.raises(Exception) as checked:
        PagedAttentionBackend(BS, **opts).forward(y["q"], y["k"], y["v"], fresh, kv_cache=y["cache"], **sc)
    before = tuple(c.clone() for c in y["cache"])
    with pytest.raises(type(checked.value)):
        backend.forward(y["q"], y["k"], y["v"], md, kv_cache=y["cache"], **sc)
    assert all(torch.equal(a, b) for a, b in zip(y["cache"], before))
    ref, _ = _checked_result(opts, y)
    assert torch.equal(backend.forward(y["q"], y["k"], y["v"], md, kv_cache=y["cache"], **y["sc"]), ref)


@pytest.mark.parametrize("fast", [False, True])
def test_alibi_slopes_are_copied_so_the_callers_tensor_may_be_overwritten(fast: bool) -> None:
    """ALiBi slopes given as a CPU float32 view are copied when the backend is made: the caller's buffer may be
    overwritten afterwards, even as a call's ``output`` (checked, or a later layer's fast path), and the results keep
    the slopes given."""
    values = [0.5, 0.25, 0.125, 0.0625]
    buf = torch.zeros(2 * HQ * D + 8)
    slopes = buf[2 * HQ * D - HQ : 2 * HQ * D]
    slopes.copy_(torch.tensor(values))
    backend = PagedAttentionBackend(BS, alibi_slopes=slopes)
    md = PagedAttentionMetadataBuilder(BS).build_decode_metadata(CTX, TABLE)
    if fast:
        x = _layer(0, {})
        backend.forward(x["q"], x["k"], x["v"], md, kv_cache=x["cache"])
        assert md.step_fast_paths.get((id(backend), "ready")) is not None
    y = _layer(1, {})
    ref, _ = _checked_result({"alibi_slopes": values}, y)
    out = buf[: 2 * HQ * D].view(2, HQ, D)
    got = backend.forward(y["q"], y["k"], y["v"], md, kv_cache=y["cache"], output=out)
    assert got is out and torch.equal(got, ref)


def test_variant_options_are_fixed_once_made() -> None:
    backend = PagedAttentionBackend(BS, sliding_window=3)
    with pytest.raises(AttributeError, match="fixed"):
        backend.variants.sliding_window = 8  # type: ignore[misc]
    assert backend.variants.sliding_window == 3


def test_a_backend_whose_kv_cache_dtype_changed_views_uint8_caches_as_the_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = PagedAttentionBackend(BS, kv_cache_dtype="fp8_e4m3")
    md = PagedAttentionMetadataBuilder(BS).build_decode_metadata(CTX, TABLE)
    x = _layer(0, {"kv_cache_dtype": "fp8_e4m3"}, uint8=True)
    backend.forward(x["q"], x["k"], x["v"], md, kv_cache=x["cache"], **x["sc"])
    backend.kv_cache_dtype = "fp8_e5m2"
    y = _layer(1, {"kv_cache_dtype": "fp8_e5m2"}, uint8=True)
    ref, ref_cache = _checked_result({"kv_cache_dtype": "fp8_e5m2"}, y)
    calls = _counting(monkeypatch)
    got = backend.forward(y["q"], y["k"], y["v"], md, kv_cache=y["cache"], **y["sc"])
    assert torch.equal(got, ref) and len(calls) == 1
    assert all(torch.equal(a, b) for a, b in zip(y["cache"], ref_cache))
