"""sagellm_backend.attention API: metadata, builder slots, diagnostics, selector, typed errors before any write."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sagellm_backend
from sagellm_backend.attention import (
    AttentionBackend,
    AttentionMetadata,
    PagedAttentionBackend,
    PagedAttentionMetadataBuilder,
    SDPAAttentionBackend,
    create_attention_backend,
    get_attention_backend_availability,
    get_attention_diagnostics,
    is_attention_backend_available,
    record_attention_call,
    reset_attention_diagnostics,
    supported_attention_backends,
)
from sagellm_backend.errors import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidBlockError,
    InvalidDeviceError,
    UnsupportedDTypeError,
    UnsupportedOperationError,
)

torch = pytest.importorskip("torch")
SRC = str(Path(sagellm_backend.__file__).resolve().parents[1])


def test_import_does_not_import_torch() -> None:
    code = (
        "import sys, sagellm_backend.attention as a; a.AttentionMetadata.for_prefill([3]); "
        "a.get_attention_backend_availability(); a.is_attention_backend_available('paged'); "
        "print(sorted(m for m in ('torch', 'triton') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---- metadata ------------------------------------------------------------------------------------------


def test_for_prefill_fields() -> None:
    bt = torch.tensor([[2, 0], [1, 3]])
    sm = torch.tensor([32, 33, 34, 16, 17])
    md = AttentionMetadata.for_prefill(
        [3, 2], device=torch.device("cpu"), block_tables=bt, slot_mapping=sm, block_size=16, num_kv_heads=2, head_dim=8
    )
    assert md.is_prefill and md.seq_lens == [3, 2] and md.num_seqs == 2
    assert md.block_tables is bt and md.slot_mapping is sm
    assert (md.num_tokens, md.num_prefill_tokens, md.num_decode_tokens, md.max_seq_len) == (5, 5, 0, 3)
    assert md.cached_lens == [0, 0] and md.context_lens is None and md.attn_type == "decoder"
    assert AttentionMetadata.for_prefill(seq_lens=[4], device="cpu").max_seq_len == 4
    chunked = AttentionMetadata.for_prefill([2, 1], cached_lens=[10, 0])
    assert chunked.max_seq_len == 12 and chunked.num_tokens == 3


def test_for_decode_fields() -> None:
    bt = torch.tensor([[0, 1], [2, 0]])
    sm = torch.tensor([19, 40])
    md = AttentionMetadata.for_decode(
        [19, 8], bt, device="cpu", slot_mapping=sm, block_size=16, num_kv_heads=None, head_dim=None
    )
    assert not md.is_prefill and md.seq_lens == [1, 1] and md.context_lens == [19, 8]
    assert md.slot_mapping is sm and md.block_tables is bt
    assert (md.num_tokens, md.num_prefill_tokens, md.num_decode_tokens, md.max_seq_len) == (2, 0, 2, 20)
    assert max(md.context_lens) == 19 and md.block_tables.shape[1] == 2


def test_metadata_converts_lists() -> None:
    md = AttentionMetadata.for_decode((3, 1), [[4], [5, 6]], slot_mapping=[67, 97])
    assert md.block_tables.tolist() == [[4, 0], [5, 6]] and md.block_tables.dtype == torch.int64
    assert md.slot_mapping.tolist() == [67, 97]
    assert AttentionMetadata.for_prefill(torch.tensor([2, 3])).seq_lens == [2, 3]


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: AttentionMetadata.for_prefill([1.5]), InvalidArgumentTypeError),
        (lambda: AttentionMetadata.for_prefill([True]), InvalidArgumentTypeError),
        (lambda: AttentionMetadata.for_prefill("12"), InvalidArgumentTypeError),
        (lambda: AttentionMetadata.for_prefill([-1]), InvalidArgumentError),
        (lambda: AttentionMetadata.for_prefill([2], device=3), InvalidArgumentTypeError),
        (lambda: AttentionMetadata.for_prefill([2], device=""), InvalidArgumentError),
        (lambda: AttentionMetadata.for_prefill([2], block_size=0), InvalidArgumentError),
        (lambda: AttentionMetadata.for_prefill([2], block_size=True), InvalidArgumentTypeError),
        (lambda: AttentionMetadata.for_prefill([2], head_dim=8.0), InvalidArgumentTypeError),
        (lambda: AttentionMetadata.for_prefill([2], attn_type="sliding"), InvalidArgumentError),
        (lambda: AttentionMetadata.for_prefill([2], cached_lens=[1, 2]), InvalidArgumentError),
        (lambda: AttentionMetadata.for_prefill([2], block_tables=torch.zeros(1, 2)), InvalidArgumentTypeError),
        (
            lambda: AttentionMetadata.for_prefill([2], block_tables=torch.zeros(2, dtype=torch.long)),
            InvalidArgumentError,
        ),
        (
            lambda: AttentionMetadata.for_prefill([2], block_tables=torch.zeros(2, 1, dtype=torch.long)),
            InvalidArgumentError,
        ),
        (
            lambda: AttentionMetadata.for_prefill([2], slot_mapping=torch.zeros(1, 2, dtype=torch.long)),
            InvalidArgumentError,
        ),
        (
            lambda: AttentionMetadata.for_prefill([2], slot_mapping=torch.zeros(2, dtype=torch.bool)),
            InvalidArgumentTypeError,
        ),
        (lambda: AttentionMetadata.for_prefill([2], num_tokens=-5), InvalidArgumentError),
        (lambda: AttentionMetadata.for_decode([3, 4], None, context_lens=None), TypeError),
        (lambda: AttentionMetadata(is_prefill=False, seq_lens=[1]), InvalidArgumentError),
        (lambda: AttentionMetadata(is_prefill=1, seq_lens=[1]), InvalidArgumentTypeError),
        (lambda: AttentionMetadata.for_decode([3], None, seq_lens=[2]), InvalidArgumentError),
        (lambda: AttentionMetadata.for_decode([3], None, context_lens_typo=1), TypeError),
        (lambda: AttentionMetadata.for_decode([3, 4], torch.zeros(3, 2, dtype=torch.long)), InvalidArgumentError),
    ],
)
def test_metadata_rejects(build, error) -> None:
    with pytest.raises(error):
        build()


# ---- builder -------------------------------------------------------------------------------------------


def test_builder_slots_hand_computed() -> None:
    b = PagedAttentionMetadataBuilder(block_size=4, device=torch.device("cpu"))
    bt = torch.tensor([[7, 2, 0], [5, 0, 0]])
    md = b.build_prefill_metadata(seq_lens=[6, 3], block_tables=bt, num_kv_heads=2, head_dim=8)
    # seq 0: positions 0..5 -> blocks 7,7,7,7,2,2 ; seq 1: positions 0..2 -> block 5
    assert md.slot_mapping.tolist() == [28, 29, 30, 31, 8, 9, 20, 21, 22]
    assert md.is_prefill and md.block_size == 4 and md.num_kv_heads == 2 and md.head_dim == 8
    dec = b.build_decode_metadata(context_lens=[6, 3], block_tables=bt)
    assert dec.slot_mapping.tolist() == [10, 23] and dec.context_lens == [6, 3] and not dec.is_prefill
    chunk = b.build_prefill_metadata(seq_lens=[2, 2], block_tables=bt, cached_lens=[3, 1])
    assert chunk.slot_mapping.tolist() == [31, 8, 21, 22] and chunk.cached_lens == [3, 1]
    ragged = b.build_decode_metadata(context_lens=[4], block_tables=[[1, 6]])
    assert ragged.slot_mapping.tolist() == [24]


@settings(max_examples=40, deadline=None)
@given(
    bs=st.sampled_from([1, 3, 16, 32]),
    lens=st.lists(st.tuples(st.integers(0, 70), st.integers(0, 40)), min_size=1, max_size=6),
    seed=st.integers(0, 2**16),
)
def test_builder_slots_match_per_token_reference(bs: int, lens: list[tuple[int, int]], seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    cached, new = [c for c, _ in lens], [n for _, n in lens]
    need = [-(-(c + n + 1) // bs) for c, n in lens]
    bt = torch.randint(0, 1000, (len(lens), max(need) + 1), generator=g)
    b = PagedAttentionMetadataBuilder(bs)
    pre = b.build_prefill_metadata(seq_lens=new, block_tables=bt, cached_lens=cached)
    expect = [int(bt[i, p // bs]) * bs + p % bs for i, (c, n) in enumerate(lens) for p in range(c, c + n)]
    assert pre.slot_mapping.tolist() == expect
    dec = b.build_decode_metadata(context_lens=[c + n for c, n in lens], block_tables=bt)
    assert dec.slot_mapping.tolist() == [int(bt[i, (c + n) // bs]) * bs + (c + n) % bs for i, (c, n) in enumerate(lens)]


def test_builder_rejects() -> None:
    b = PagedAttentionMetadataBuilder(block_size=4)
    with pytest.raises(InvalidBlockError, match="needs 3 blocks"):
        b.build_prefill_metadata(seq_lens=[9], block_tables=torch.tensor([[1, 2]]))
    with pytest.raises(InvalidBlockError, match="needs 2 blocks"):
        b.build_decode_metadata(context_lens=[4], block_tables=torch.tensor([[1]]))
    with pytest.raises(InvalidBlockError, match="negative"):
        b.build_prefill_metadata(seq_lens=[5], block_tables=torch.tensor([[1, -1]]))
    with pytest.raises(InvalidArgumentError, match="rows"):
        b.build_decode_metadata(context_lens=[1, 2], block_tables=torch.tensor([[1, 2]]))
    with pytest.raises(InvalidArgumentError):
        b.build_prefill_metadata(seq_lens=[1], block_tables=torch.tensor([[1]]), cached_lens=[0, 0])
    with pytest.raises(InvalidArgumentTypeError):
        b.build_prefill_metadata(seq_lens=[1], block_tables=torch.tensor([[1.0]]))
    with pytest.raises(InvalidArgumentError):
        PagedAttentionMetadataBuilder(block_size=0)
    with pytest.raises(InvalidArgumentTypeError):
        PagedAttentionMetadataBuilder(block_size="16")


# ---- diagnostics ---------------------------------------------------------------------------------------


def _call(**kw):
    base = {
        "backend_name": "paged", "path_name": "implementation=triton", "is_prefill": True, "query_shape": (5, 4, 8),
        "key_shape": (5, 2, 8), "value_shape": (5, 2, 8), "has_kv_cache": True, "has_block_tables": True,
        "has_context_lens": False, "num_seqs": 1, "query_tokens": 5, "max_context_len": 0, "max_blocks_per_seq": 1,
    }  # fmt: skip
    return {**base, **kw}


def test_diagnostics_format_and_counts() -> None:
    reset_attention_diagnostics()
    assert get_attention_diagnostics() == {"_meta": {"latest_call": None}}
    record_attention_call(**_call())
    record_attention_call(**_call(is_prefill=False, has_context_lens=True, query_shape=torch.Size([1, 4, 8])))
    record_attention_call(**_call(backend_name="sdpa", path_name="varlen", has_kv_cache=False, has_block_tables=False))
    d = get_attention_diagnostics()
    assert set(d) == {"_meta", "paged:implementation=triton", "sdpa:varlen"}
    assert d["paged:implementation=triton"] == {
        "total_calls": 2, "prefill_calls": 1, "decode_calls": 1, "block_table_calls": 2,
        "context_lens_calls": 1, "kv_cache_calls": 2,
    }  # fmt: skip
    assert d["sdpa:varlen"]["kv_cache_calls"] == 0 and d["sdpa:varlen"]["total_calls"] == 1
    latest = d["_meta"]["latest_call"]
    assert latest["backend_name"] == "sdpa" and latest["path_name"] == "varlen" and latest["query_shape"] == (5, 4, 8)
    for k in ("has_kv_cache", "has_block_tables", "has_context_lens", "num_seqs", "max_context_len"):
        assert k in latest
    d["sdpa:varlen"]["total_calls"] = 99  # a snapshot, not the live counters
    assert get_attention_diagnostics()["sdpa:varlen"]["total_calls"] == 1
    reset_attention_diagnostics()
    assert get_attention_diagnostics() == {"_meta": {"latest_call": None}}


def test_record_never_raises_and_is_thread_safe() -> None:
    reset_attention_diagnostics()

    class Weird:
        def __str__(self) -> str:
            raise RuntimeError("no str")

    record_attention_call(backend_name=Weird(), path_name="x")  # dropped, not raised
    record_attention_call(query_shape=object(), num_seqs="many")  # stored as given
    record_attention_call()

    def worker() -> None:
        for _ in range(500):
            record_attention_call(**_call())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert get_attention_diagnostics()["paged:implementation=triton"]["total_calls"] == 2000
    reset_attention_diagnostics()


# ---- selector ------------------------------------------------------------------------------------------


def test_availability_and_creation() -> None:
    avail = get_attention_backend_availability()
    assert set(avail) == {"sdpa", "paged"}
    for info in avail.values():
        assert {"registered", "selectable", "unavailable_reason"} <= set(info)
        assert info["registered"] and info["selectable"] and info["unavailable_reason"] is None
    assert is_attention_backend_available("paged") and is_attention_backend_available("SDPA")
    assert not is_attention_backend_available("flashinfer") and not is_attention_backend_available(None)
    for dev in ("cpu", "cuda", "npu"):
        names = supported_attention_backends(dev)
        assert names[0] == "sdpa" and "paged" in names
        default = create_attention_backend(None, dev)
        assert isinstance(default, AttentionBackend) and default.name in names
        assert default.supports_paged_attention is False
    paged = create_attention_backend("paged", "cpu", block_size=32, use_vllm_kernel=True)
    assert isinstance(paged, PagedAttentionBackend) and paged.block_size == 32 and paged.supports_paged_attention
    assert isinstance(create_attention_backend("default", "cpu"), SDPAAttentionBackend)
    with pytest.raises(InvalidArgumentError, match="unknown attention backend"):
        create_attention_backend("flashinfer", "cpu")
    with pytest.raises(InvalidArgumentTypeError):
        create_attention_backend(3, "cpu")
    with pytest.raises(InvalidArgumentTypeError):
        supported_attention_backends(None)


def test_unknown_options_are_refused_by_every_backend() -> None:
    # The engine's own call keeps working (isagellm-core 0.5).
    p = PagedAttentionBackend(block_size=16, use_vllm_kernel=True)
    assert p.use_vllm_kernel is True and p.block_size == 16
    with pytest.raises(
        InvalidArgumentTypeError, match=r"some_engine_flag.*accepts block_size, device, use_vllm_kernel"
    ):
        PagedAttentionBackend(block_size=16, use_vllm_kernel=True, some_engine_flag=1)
    with pytest.raises(InvalidArgumentTypeError, match="use_vllm_kernel must be a bool"):
        PagedAttentionBackend(use_vllm_kernel="yes")
    with pytest.raises(InvalidArgumentTypeError, match=r"SDPAAttentionBackend does not take \['block_size'\]"):
        SDPAAttentionBackend(block_size=16)
    with pytest.raises(InvalidArgumentTypeError, match="accepts device"):
        create_attention_backend("sdpa", "cpu", sliding_window=8)
    with pytest.raises(InvalidArgumentTypeError, match="PagedAttentionBackend does not take"):
        create_attention_backend("paged", "cpu", window=8)


def test_backend_interface() -> None:
    p = PagedAttentionBackend(block_size=16, use_vllm_kernel=True)
    assert p.name == "paged"
    assert p.get_kv_cache_shape(num_blocks=10, block_size=16, num_kv_heads=2, head_dim=64) == (10, 16, 2, 64)
    with pytest.raises(TypeError):
        p.get_kv_cache_shape(10, 16, 2, 64)  # keywords only
    with pytest.raises(InvalidArgumentError):
        p.get_kv_cache_shape(num_blocks=0, block_size=16, num_kv_heads=2, head_dim=64)
    with pytest.raises(InvalidArgumentTypeError):
        p.get_kv_cache_shape(num_blocks=10, block_size=16.0, num_kv_heads=2, head_dim=64)
    with pytest.raises(InvalidArgumentError):
        PagedAttentionBackend(block_size=-16)
    with pytest.raises(TypeError):
        AttentionBackend()  # abstract


# ---- typed errors of forward, and no write before them ---------------------------------------------------

BS, HQ, HKV, D, NB = 4, 4, 2, 8, 6


def _valid_call():
    g = torch.Generator().manual_seed(0)
    b = PagedAttentionMetadataBuilder(BS)
    md = b.build_prefill_metadata(seq_lens=[5, 3], block_tables=torch.tensor([[4, 1], [2, 0]]), num_kv_heads=HKV)
    q = torch.randn(8, HQ, D, generator=g)
    k, v = torch.randn(8, HKV, D, generator=g), torch.randn(8, HKV, D, generator=g)
    cache = (torch.randn(NB, BS, HKV, D, generator=g), torch.randn(NB, BS, HKV, D, generator=g))
    return {"query": q, "key": k, "value": v, "attn_metadata": md, "kv_cache": cache}


def _set_md(**fields):
    def change(call):
        for name, value in fields.items():
            setattr(call["attn_metadata"], name, value)

    return change


def _set(name, fn):
    def change(call):
        call[name] = fn(call)

    return change


BAD_CALLS = [
    ("query_2d", _set("query", lambda c: c["query"][:, 0]), InvalidArgumentError),
    ("kv_shapes_differ", _set("value", lambda c: c["value"][:, :1]), InvalidArgumentError),
    ("heads_not_multiple", _set("query", lambda c: torch.randn(8, 3, D)), InvalidArgumentError),
    ("query_tokens_differ", _set("query", lambda c: c["query"][:7]), InvalidArgumentError),
    ("qk_dtype_differ", _set("query", lambda c: c["query"].double()), UnsupportedDTypeError),
    ("int_dtype", _set("query", lambda c: c["query"].int()), UnsupportedDTypeError),
    ("all_int", lambda c: c.update({n: c[n].int() for n in ("query", "key", "value")}), UnsupportedDTypeError),
    ("query_not_tensor", _set("query", lambda c: c["query"].tolist()), InvalidArgumentTypeError),
    ("query_on_meta", _set("query", lambda c: c["query"].to("meta")), InvalidDeviceError),
    ("metadata_dict", _set("attn_metadata", lambda c: {"is_prefill": True}), InvalidArgumentTypeError),
    ("cache_single", _set("kv_cache", lambda c: c["kv_cache"][0]), InvalidArgumentTypeError),
    ("cache_triple", _set("kv_cache", lambda c: (*c["kv_cache"], c["kv_cache"][0])), InvalidArgumentTypeError),
    ("cache_dtype", _set("kv_cache", lambda c: (c["kv_cache"][0].half(), c["kv_cache"][1])), UnsupportedDTypeError),
    (
        "cache_heads",
        _set("kv_cache", lambda c: tuple(x.repeat(1, 1, 2, 1) for x in c["kv_cache"])),
        InvalidArgumentError,
    ),
    ("cache_shapes_differ", _set("kv_cache", lambda c: (c["kv_cache"][0], c["kv_cache"][1][:5])), InvalidArgumentError),
    (
        "cache_d_not_innermost",
        _set("kv_cache", lambda c: tuple(x.transpose(2, 3).contiguous().transpose(2, 3) for x in c["kv_cache"])),
        InvalidArgumentError,
    ),
    (
        "cache_blocks_overlap",
        _set("kv_cache", lambda c: tuple(x[:1].expand_as(x) for x in c["kv_cache"])),
        InvalidArgumentError,
    ),
    ("cache_on_meta", _set("kv_cache", lambda c: tuple(x.to("meta") for x in c["kv_cache"])), InvalidDeviceError),
    ("no_slot_mapping", _set_md(slot_mapping=None), InvalidArgumentError),
    ("slot_count", _set_md(slot_mapping=torch.arange(7)), InvalidArgumentError),
    ("slot_out_of_cache", _set_md(slot_mapping=torch.tensor([16, 17, 18, 19, 4, 8, 9, 24])), InvalidArgumentError),
    ("slot_wrong_position", _set_md(slot_mapping=torch.tensor([16, 17, 18, 19, 4, 8, 10, 9])), InvalidArgumentError),
    ("block_id_too_big", _set_md(block_tables=torch.tensor([[4, 6], [2, 0]])), InvalidBlockError),
    ("block_id_negative", _set_md(block_tables=torch.tensor([[-2, 1], [2, 0]])), InvalidBlockError),
    ("table_too_narrow", _set_md(block_tables=torch.tensor([[4], [2]])), InvalidBlockError),
    ("block_size_mismatch", _set_md(block_size=8), InvalidArgumentError),
    ("kv_heads_mismatch", _set_md(num_kv_heads=1), InvalidArgumentError),
    ("seq_lens_vs_tokens", _set_md(seq_lens=[4, 3]), InvalidArgumentError),
    (
        "padded_without_mask_fit",
        _set("attn_mask", lambda c: torch.ones(2, 1, 3, 3, dtype=torch.bool)),
        InvalidArgumentError,
    ),
    ("encoder_type", _set_md(attn_type="encoder"), UnsupportedOperationError),
    ("scale_str", _set("scale", lambda c: "0.5"), InvalidArgumentTypeError),
    ("scale_nan", _set("scale", lambda c: float("nan")), InvalidArgumentError),
    ("scale_negative", _set("scale", lambda c: -0.5), InvalidArgumentError),
    ("mask_int", _set("attn_mask", lambda c: torch.ones(2, 1, 4, 4, dtype=torch.int32)), InvalidArgumentTypeError),
    ("mask_3d", _set("attn_mask", lambda c: torch.ones(2, 4, 4, dtype=torch.bool)), InvalidArgumentError),
]


@pytest.mark.parametrize(("case", "change", "error"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_paged_call_raises_typed_error_and_writes_nothing(case, change, error) -> None:
    call = _valid_call()
    original = call["kv_cache"]
    change(call)
    passed = call["kv_cache"]
    passed = [x for x in passed if isinstance(x, torch.Tensor)] if isinstance(passed, (tuple, list)) else [passed]
    watched = [x for x in (*original, *passed) if x.device.type == "cpu"]
    snapshot = [x.clone() for x in watched]
    with pytest.raises(error):
        PagedAttentionBackend(BS).forward(**call)
    for now, was in zip(watched, snapshot):
        assert torch.equal(now, was)


def test_valid_call_writes_the_cache() -> None:
    call = _valid_call()
    PagedAttentionBackend(BS).forward(**call)
    k_cache = call["kv_cache"][0].reshape(NB * BS, HKV, D)
    assert torch.equal(k_cache[call["attn_metadata"].slot_mapping], call["key"])


def test_decode_errors() -> None:
    b = PagedAttentionMetadataBuilder(BS)
    md = b.build_decode_metadata(context_lens=[5, 3], block_tables=torch.tensor([[4, 1], [2, 0]]))
    cache = (torch.zeros(NB, BS, HKV, D), torch.zeros(NB, BS, HKV, D))
    q, k = torch.randn(3, HQ, D), torch.randn(3, HKV, D)
    with pytest.raises(InvalidArgumentError, match="one token per sequence"):
        PagedAttentionBackend(BS).forward(q, k, k, md, kv_cache=cache)
    assert not cache[0].any()


def test_sdpa_backend_errors() -> None:
    s = SDPAAttentionBackend()
    q, k = torch.randn(4, 2, 8), torch.randn(4, 2, 8)
    with pytest.raises(UnsupportedOperationError):
        s.forward(q, k, k, AttentionMetadata.for_prefill([4]), kv_cache=(k, k))
    with pytest.raises(InvalidArgumentError, match="cached"):
        s.forward(q, k, k, AttentionMetadata.for_prefill([4], cached_lens=[3]))
    with pytest.raises(InvalidArgumentError, match="seq_lens sum"):
        s.forward(q, k, k, AttentionMetadata.for_prefill([3]))
    with pytest.raises(InvalidArgumentError, match="does not fit"):
        s.forward(q, k, k, AttentionMetadata.for_prefill([4]), attn_mask=torch.ones(1, 1, 3, 3, dtype=torch.bool))
