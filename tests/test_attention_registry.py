"""Attention implementations declare what they support as data; the highest priority that fits is chosen."""

from __future__ import annotations

import dataclasses

import pytest

from sagellm_backend.attention import registry
from sagellm_backend.attention.registry import AttentionImpl, AttentionRequest, SizeRule, impls_of, select_impl
from sagellm_backend.errors import InvalidArgumentError, UnsupportedOperationError
from sagellm_backend.selection import explain, rank, select

torch = pytest.importorskip("torch")


@dataclasses.dataclass(frozen=True)
class _Cand:
    name: str
    priority: int
    ok: bool

    def why_not(self, request: object) -> str | None:
        return None if self.ok else f"cannot do {request}"


def test_select_by_priority_ties_by_name_and_forced() -> None:
    cands = [_Cand("b", 5, True), _Cand("a", 5, True), _Cand("z", 9, False), _Cand("c", 1, True)]
    assert [c.name for c in rank(cands)] == ["z", "a", "b", "c"]
    assert select(cands, "x", what="thing").name == "a"
    assert select(cands, "x", what="thing", forced="c").name == "c"
    assert select(cands, "x", what="thing", forced="auto").name == "a"
    assert explain(cands, "x") == {"z": "cannot do x", "a": None, "b": None, "c": None}
    msg = r"thing 'z' \(set by ENV\) cannot serve x: cannot do x; these can: \['a', 'b', 'c'\]"
    with pytest.raises(UnsupportedOperationError, match=msg):
        select(cands, "x", what="thing", forced="z", forced_by="ENV")
    with pytest.raises(InvalidArgumentError, match=r"unknown thing 'q'; known: \['z', 'a', 'b', 'c'\]"):
        select(cands, "x", what="thing", forced="q")
    with pytest.raises(UnsupportedOperationError, match=r"no thing serves x \(z: cannot do x\)"):
        select([_Cand("z", 9, False)], "x", what="thing")


def _req(**kw: object) -> AttentionRequest:
    base: dict[str, object] = {"device_type": "cuda", "dtype": "float16", "head_size": 128, "block_size": 16}
    base.update(kw)
    return AttentionRequest(**base)  # type: ignore[arg-type]  # test helper: keyword overrides


def test_paged_rows_choose_by_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(registry.IMPL_ENV, raising=False)
    assert select_impl("paged", _req()).name == "triton"
    assert select_impl("paged", _req(device_type="cpu")).name == "torch"
    assert select_impl("paged", _req(dtype="float64")).name == "torch"
    assert select_impl("paged", _req(head_size=80)).name == "torch"
    assert select_impl("paged", _req(block_size=4)).name == "torch"
    assert select_impl("sdpa", _req(block_size=None, device_type="npu")).name == "torch"
    monkeypatch.setenv(registry.IMPL_ENV, "triton")
    msg = r"'triton' \(set by SAGELLM_PAGED_ATTENTION_IMPL\) cannot .*head sizes powers of two 16..256, not 80; "
    with pytest.raises(UnsupportedOperationError, match=msg + r"these can: \['torch'\]"):
        select_impl("paged", _req(head_size=80))
    monkeypatch.setenv(registry.IMPL_ENV, "nope")
    with pytest.raises(InvalidArgumentError, match="SAGELLM_PAGED_ATTENTION_IMPL"):
        select_impl("paged", _req())
    monkeypatch.delenv(registry.IMPL_ENV)
    with pytest.raises(
        UnsupportedOperationError, match=r"kv_cache_dtype \['auto', 'fp8_e4m3', 'fp8_e5m2'\], not 'fp4'"
    ) as err:
        select_impl("paged", _req(kv_cache_dtype="fp4"))
    assert "triton:" in str(err.value) and "torch:" in str(err.value)
    with pytest.raises(UnsupportedOperationError, match="keeps no paged KV cache"):
        select_impl("sdpa", _req())


def test_a_new_implementation_is_one_row(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(registry.IMPL_ENV, raising=False)
    torch_row = next(i for i in impls_of("paged") if i.name == "torch")
    row = dataclasses.replace(torch_row, name="mine", priority=99, devices=("cpu",), head_sizes=SizeRule(64, 64))
    monkeypatch.setattr(registry, "ATTENTION_IMPLS", (*registry.ATTENTION_IMPLS, row))
    registry._select.cache_clear()
    try:
        assert select_impl("paged", _req(device_type="cpu", head_size=64)).name == "mine"
        assert select_impl("paged", _req(device_type="cpu", head_size=32)).name == "torch"
        assert any(d["implementation"] == "mine" for d in registry.describe_attention_impls())
    finally:
        registry._select.cache_clear()


def test_broken_ops_module_is_a_reason_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(registry.IMPL_ENV, raising=False)
    broken = AttentionImpl(
        backend="paged", name="broken", priority=99, devices=("*",), dtypes=("float32",), kv_cache_dtypes=("auto",),
        head_sizes=SizeRule(), block_sizes=SizeRule(), variants=(), ops=(".no_such_ops_module",),
    )  # fmt: skip
    monkeypatch.setattr(registry, "ATTENTION_IMPLS", (*registry.ATTENTION_IMPLS, broken))
    registry._select.cache_clear()
    try:
        assert broken.why_not(_req(device_type="cpu", dtype="float32")).startswith("its ops do not import")  # type: ignore[union-attr]  # a reason is expected
        assert select_impl("paged", _req(device_type="cpu", dtype="float32")).name == "torch"
    finally:
        registry._select.cache_clear()


def test_describe_lists_every_row_with_its_support() -> None:
    rows = registry.describe_attention_impls()
    assert [(r["backend"], r["implementation"]) for r in rows] == [
        ("sdpa", "torch"), ("paged", "triton"), ("paged", "torch"),
    ]  # fmt: skip
    triton_row = rows[1]
    assert triton_row["devices"] == ["cuda"] and triton_row["head_sizes"] == "powers of two 16..256"
    assert triton_row["block_sizes"] == "powers of two >= 8" and rows[2]["head_sizes"] == "any"
    assert rows[0]["block_sizes"] is None


def test_kernel_auto_backend_uses_the_same_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    from sagellm_backend.kernels import base

    assert base.resolve_backend("auto") == ("triton" if torch.cuda.is_available() else "torch")
    assert base.resolve_backend("numpy") == "numpy"
    rows = [dataclasses.replace(r, missing=(lambda: "gone") if r.name != "numpy" else r.missing) for r in base._AUTO]
    monkeypatch.setattr(base, "_AUTO", tuple(rows))
    assert base.resolve_backend("auto") == "numpy"
    monkeypatch.setattr(base, "_AUTO", tuple(dataclasses.replace(r, missing=lambda: "gone") for r in rows))
    with pytest.raises(UnsupportedOperationError, match=r"no kernel backend serves auto \(triton: gone; torch: gone"):
        base.resolve_backend("auto")


def test_fp8_caches_on_triton_need_compute_capability_8_9(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("triton")
    monkeypatch.delenv(registry.IMPL_ENV, raising=False)
    fp8 = _req(kv_cache_dtype="fp8_e4m3")
    try:
        for found, want in (((9, 0), "triton"), ((8, 9), "triton"), ((8, 0), "torch"), (None, "torch")):
            monkeypatch.setattr(registry, "_cuda_capability", lambda index, found=found: found)
            registry._select.cache_clear()
            assert select_impl("paged", fp8).name == want, found
            assert select_impl("paged", _req()).name == "triton"  # bf16/fp16 caches need no capability
        monkeypatch.setenv(registry.IMPL_ENV, "triton")
        with pytest.raises(UnsupportedOperationError, match=r"compute capability >= 8.9 \(found none\)"):
            select_impl("paged", fp8)
        monkeypatch.delenv(registry.IMPL_ENV)
        cards = {0: (9, 0), 1: (8, 0)}  # a host with two kinds of GPU: the rule follows the tensors' card
        monkeypatch.setattr(registry, "_cuda_capability", lambda index: cards[index])
        registry._select.cache_clear()
        assert select_impl("paged", _req(kv_cache_dtype="fp8_e4m3", device_index=0)).name == "triton"
        assert select_impl("paged", _req(kv_cache_dtype="fp8_e4m3", device_index=1)).name == "torch"
    finally:
        registry._select.cache_clear()
