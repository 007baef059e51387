"""Sliding window, logits soft cap and ALiBi (vLLM's names) in the torch and Triton paged ops and the backend,
against the float64 reference; Triton runs under TRITON_INTERPRET=1 in a child process with tiny shapes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sagellm_backend
from sagellm_backend.errors import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    UnsupportedOperationError,
)

SRC = str(Path(sagellm_backend.__file__).resolve().parents[1])


@st.composite
def variant_cases(draw: Any, pow2_heads: bool, windowed: bool = False) -> dict[str, Any]:
    """One case of :func:`check_paged_variants`: geometry, lengths (prefill chunks over cached context) and variants."""
    hkv = draw(st.sampled_from([1, 2]))
    group = draw(st.sampled_from([1, 2, 3]))
    seq_lens = draw(st.lists(st.integers(1, 90), min_size=1, max_size=3))
    q_lens = [draw(st.integers(1, n)) for n in seq_lens]
    return {
        "head_dim": draw(st.sampled_from([16, 32] if pow2_heads else [8, 16, 24])),
        "block_size": draw(st.sampled_from([8, 16])),
        "num_heads": hkv * group,
        "num_kv_heads": hkv,
        "seq_lens": seq_lens,
        "q_lens": q_lens,
        "sliding_window": draw(st.integers(1, 70) if windowed else st.one_of(st.none(), st.integers(1, 70))),
        "logits_soft_cap": draw(st.one_of(st.none(), st.floats(0.5, 30.0))),
        "alibi": draw(st.booleans()),
        "seed": draw(st.integers(0, 1000)),
    }


# ---- float64 reference against a loop over positions ---------------------------------------------------------


def test_reference_matches_a_loop_over_positions() -> None:
    torch = pytest.importorskip("torch")
    from sagellm_backend.attention.reference import reference_paged_prefill

    g = torch.Generator().manual_seed(3)
    bs, n, hq, hkv, d, w, cap = 4, 11, 4, 2, 8, 5, 2.0
    kc, vc = torch.randn(4, bs, hkv, d, generator=g).double(), torch.randn(4, bs, hkv, d, generator=g).double()
    table = torch.tensor([[2, 0, 3]])
    q = torch.randn(n, hq, d, generator=g).double()
    slopes = torch.tensor([0.5, 0.25, 0.1, 0.0])
    got = reference_paged_prefill(
        q, kc, vc, table, torch.tensor([0, n]), torch.tensor([n]), 0.3,
        sliding_window=w, logits_soft_cap=cap, alibi_slopes=slopes,
    )  # fmt: skip
    keys = kc[table[0]].reshape(-1, hkv, d)
    vals = vc[table[0]].reshape(-1, hkv, d)
    for p in range(n):
        for h in range(hq):
            js = [j for j in range(n) if p - w < j <= p]
            sc = [
                cap * math.tanh(0.3 * float(q[p, h] @ keys[j, h // 2]) / cap) + float(slopes[h]) * (j - p) for j in js
            ]
            top = max(sc)
            wts = [math.exp(x - top) for x in sc]
            want = sum(wt * vals[j, h // 2] for wt, j in zip(wts, js)) / sum(wts)
            assert torch.allclose(got[p, h], want, atol=1e-12)


# ---- torch ops --------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=variant_cases(pow2_heads=False), dtype_name=st.sampled_from(["float64", "float32", "bfloat16"]))
def test_torch_ops_match_the_reference(case: dict[str, Any], dtype_name: str) -> None:
    torch = pytest.importorskip("torch")
    from sagellm_backend.attention import paged_torch
    from sagellm_backend.attention.testing import check_paged_variants

    results = check_paged_variants(paged_torch, "cpu", dtype=getattr(torch, dtype_name), window_tile=1, **case)
    assert [r.op for r in results] == ["paged_decode", "paged_prefill"]
    assert all(r.worst_ratio <= 1.0 for r in results)


def test_a_window_changes_the_result_and_poisoned_pages_would_show() -> None:
    torch = pytest.importorskip("torch")
    from sagellm_backend.attention import paged_torch
    from sagellm_backend.attention.testing import check_paged_variants

    common: dict[str, Any] = {"dtype": torch.float64, "head_dim": 8, "block_size": 4, "num_heads": 2,
                              "num_kv_heads": 1, "seq_lens": [60], "q_lens": [20], "seed": 5}  # fmt: skip

    class ReadsEverything:  # full attention: ignores the window, so it reads the NaN pages
        store_kv = staticmethod(paged_torch.store_kv)

        @staticmethod
        def paged_decode(*a: Any, **kw: Any) -> Any:
            kw.pop("sliding_window")
            return paged_torch.paged_decode(*a, **kw)

        @staticmethod
        def paged_prefill(*a: Any, **kw: Any) -> Any:
            kw.pop("sliding_window")
            return paged_torch.paged_prefill(*a, **kw)

    with pytest.raises(AssertionError, match="non-finite"):
        check_paged_variants(ReadsEverything, "cpu", sliding_window=8, window_tile=1, **common)
    assert all(r.worst_ratio <= 1 for r in check_paged_variants(paged_torch, "cpu", sliding_window=8, **common))


@pytest.mark.parametrize("op", ["paged_torch.paged_decode", "paged_torch.paged_prefill", "reference.decode",
                                "reference.prefill", "paged_triton_prefill.paged_prefill"])  # fmt: skip
def test_an_option_the_ops_do_not_name_is_refused(op: str) -> None:
    torch = pytest.importorskip("torch")
    from sagellm_backend.attention import paged_torch, reference

    kc = vc = torch.zeros(2, 4, 1, 8)
    q, table, lens, cu = torch.zeros(1, 1, 8), torch.tensor([[0]]), torch.tensor([3]), torch.tensor([0, 1])
    decode_args, prefill_args = (q, kc, vc, table, lens, 0.5), (q, kc, vc, table, cu, lens, 0.5)
    if op.startswith("paged_triton"):
        pytest.importorskip("triton")
        from sagellm_backend.attention import paged_triton_prefill

        fn: Any = paged_triton_prefill.paged_prefill
    else:
        names = {"decode": "reference_paged_decode", "prefill": "reference_paged_prefill"}
        module, name = op.split(".")
        fn = getattr(reference, names[name]) if module == "reference" else getattr(paged_torch, name)
    args = decode_args if op.endswith("decode") else prefill_args
    with pytest.raises(InvalidArgumentTypeError, match="sliding_windw"):
        fn(*args, sliding_windw=2)
    if not op.startswith("paged_triton"):  # launching Triton needs a GPU or the interpreter's child process
        assert torch.equal(fn(*args, sliding_window=None, k_scale=None), fn(*args))  # None: not used


# ---- the backend ----------------------------------------------------------------------------------------------


def _backend_case(torch: Any, backend: Any, seq_len: int, chunks: list[int], hq: int = 4, hkv: int = 2) -> Any:
    """Prefill ``seq_len`` tokens in ``chunks`` (chunked prefill) then decode 3 tokens, through ``backend``.

    Returns (outputs of every token in order, the caches, the block table)."""
    from sagellm_backend.attention import PagedAttentionMetadataBuilder

    g = torch.Generator().manual_seed(11)
    bs, d = backend.block_size, 16
    total = seq_len + 3
    nb = -(-total // bs)
    kc = torch.zeros(nb + 2, bs, hkv, d, dtype=torch.float64)
    vc = torch.zeros_like(kc)
    table = torch.randperm(nb + 2, generator=g)[:nb].view(1, nb)
    builder = PagedAttentionMetadataBuilder(bs)
    outs = []
    done = 0
    for n in [*chunks, 1, 1, 1]:
        q = torch.randn(n, hq, d, generator=g).double()
        k, v = torch.randn(n, hkv, d, generator=g).double(), torch.randn(n, hkv, d, generator=g).double()
        if done < seq_len:
            md = builder.build_prefill_metadata(seq_lens=[n], block_tables=table, cached_lens=[done])
        else:
            md = builder.build_decode_metadata(context_lens=[done], block_tables=table)
        outs.append((q, backend.forward(q, k, v, md, kv_cache=(kc, vc))))
        done += n
    return outs, (kc, vc), table


def test_backend_window_of_8_over_a_37_token_prefill_is_windowed() -> None:
    torch = pytest.importorskip("torch")
    from sagellm_backend.attention import PagedAttentionBackend
    from sagellm_backend.attention.reference import reference_paged_prefill

    backend = PagedAttentionBackend(block_size=4, sliding_window=8)
    [(q, out), *_], (kc, vc), table = _backend_case(torch, backend, 37, [37])
    lens, cu = torch.tensor([37]), torch.tensor([0, 37])
    windowed = reference_paged_prefill(q, kc, vc, table, cu, lens, 0.25, sliding_window=8)
    plain = reference_paged_prefill(q, kc, vc, table, cu, lens, 0.25)
    assert float((out - windowed).abs().max()) < 1e-12
    assert float((out - plain).abs().max()) > 0.1


@pytest.mark.parametrize(
    "variants",
    [
        {"sliding_window": 5},
        {"logits_soft_cap": 1.5},
        {"alibi_slopes": [0.5, 0.25, 0.125, 0.0625]},
        {"sliding_window": 9, "logits_soft_cap": 4.0, "alibi_slopes": (0.3, 0.2, 0.1, 0.05)},
    ],
)
def test_backend_chunked_prefill_and_decode_with_variants(variants: dict[str, Any]) -> None:
    torch = pytest.importorskip("torch")
    from sagellm_backend.attention import PagedAttentionBackend
    from sagellm_backend.attention.reference import reference_paged_prefill

    backend = PagedAttentionBackend(block_size=4, **variants)
    assert backend.variants.names == frozenset(variants)
    outs, (kc, vc), table = _backend_case(torch, backend, 30, [13, 17])
    ref_kw = dict(variants)
    if "alibi_slopes" in ref_kw:
        ref_kw["alibi_slopes"] = torch.tensor(ref_kw["alibi_slopes"])
    done = 0
    for q, out in outs:
        n = q.shape[0]
        ref = reference_paged_prefill(
            q, kc, vc, table, torch.tensor([0, n]), torch.tensor([done + n]), 0.25, **ref_kw
        )  # fmt: skip
        assert float((out - ref).abs().max()) < 1e-12
        done += n


def test_variant_options_are_checked() -> None:
    torch = pytest.importorskip("torch")
    from sagellm_backend.attention import PagedAttentionBackend

    for bad, err in [
        ({"sliding_window": 0}, InvalidArgumentError),
        ({"sliding_window": 8.0}, InvalidArgumentTypeError),
        ({"sliding_window": True}, InvalidArgumentTypeError),
        ({"logits_soft_cap": -1.0}, InvalidArgumentError),
        ({"logits_soft_cap": float("inf")}, InvalidArgumentError),
        ({"logits_soft_cap": "30"}, InvalidArgumentTypeError),
        ({"alibi_slopes": torch.ones(2, 2)}, InvalidArgumentError),
        ({"alibi_slopes": torch.ones(4, dtype=torch.int32)}, InvalidArgumentTypeError),
        ({"alibi_slopes": [0.1, float("nan")]}, InvalidArgumentError),
        ({"alibi_slopes": []}, InvalidArgumentError),
        ({"alibi_slopes": "0.1"}, InvalidArgumentTypeError),
    ]:
        with pytest.raises(err):
            PagedAttentionBackend(**bad)
    assert PagedAttentionBackend(logits_soft_cap=0.0).variants.names == frozenset()  # vLLM's "no cap"


def test_wrong_slope_count_and_variants_without_cache_raise_before_any_write() -> None:
    torch = pytest.importorskip("torch")
    from sagellm_backend.attention import AttentionMetadata, PagedAttentionBackend, PagedAttentionMetadataBuilder

    backend = PagedAttentionBackend(block_size=4, alibi_slopes=[0.1, 0.2, 0.3])
    kc, vc = torch.zeros(3, 4, 2, 8), torch.zeros(3, 4, 2, 8)
    md = PagedAttentionMetadataBuilder(4).build_prefill_metadata(seq_lens=[5], block_tables=torch.tensor([[0, 1]]))
    q, k = torch.randn(5, 4, 8), torch.randn(5, 2, 8)
    with pytest.raises(InvalidArgumentError, match="alibi_slopes has 3 entries but the query has 4 heads"):
        backend.forward(q, k, k, md, kv_cache=(kc, vc))
    assert not kc.any() and not vc.any()
    with pytest.raises(UnsupportedOperationError, match="need the paged path"):
        PagedAttentionBackend(sliding_window=4).forward(q, k, k, AttentionMetadata.for_prefill([5]))


def test_variants_choose_an_implementation_that_has_them(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from sagellm_backend.attention import PagedAttentionBackend, registry

    monkeypatch.delenv(registry.IMPL_ENV, raising=False)
    backend = PagedAttentionBackend(sliding_window=4096, logits_soft_cap=30.0)
    assert backend.implementation_for(torch.device("cuda"), torch.bfloat16, 128, 16) == "triton"
    assert backend.implementation_for(torch.device("cpu"), torch.bfloat16, 128, 16) == "torch"


# ---- Triton kernels, interpreted ------------------------------------------------------------------------------


def _interpreted_cases() -> list[dict[str, Any]]:
    """Run in the child: hypothesis draws the cases, each is checked; one verdict per op and case."""
    import torch

    from sagellm_backend.attention import paged_triton as pt
    from sagellm_backend.attention import paged_triton_prefill as pp
    from sagellm_backend.attention.testing import check_paged_variants

    class Ops:
        store_kv = staticmethod(pt.store_kv)

        @staticmethod
        def paged_decode(*a: Any, **kw: Any) -> Any:  # small tiles and forced splits: windows cross splits
            return pt.paged_decode(*a, cfg=pt.DecodeConfig(block_n=16, min_chunk=16), splits=3, **kw)

        @staticmethod
        def paged_prefill(*a: Any, **kw: Any) -> Any:
            return pp.paged_prefill(*a, cfg=pp.PrefillConfig(32, 16, 4, 1), **kw)

    verdicts: list[dict[str, Any]] = []

    @settings(max_examples=8, deadline=None, derandomize=True, database=None)
    @given(
        case=st.one_of(variant_cases(pow2_heads=True), variant_cases(pow2_heads=True, windowed=True)),
        dtype_name=st.sampled_from(["float32", "float16"]),
    )
    def run(case: dict[str, Any], dtype_name: str) -> None:
        try:
            for r in check_paged_variants(Ops, "cpu", dtype=getattr(torch, dtype_name), window_tile=16, **case):
                verdicts.append({"op": r.op, "case": str(r.case), "ratio": r.worst_ratio, "error": None})
        except Exception as e:  # recorded, asserted by the parent
            verdicts.append({"op": "?", "case": str(case), "ratio": None, "error": f"{type(e).__name__}: {e}"})

    @settings(max_examples=8, deadline=None, derandomize=True, database=None)
    @given(case=variant_cases(pow2_heads=True, windowed=True), dtype_name=st.sampled_from(["float32", "bfloat16"]))
    def run_windowed(case: dict[str, Any], dtype_name: str) -> None:
        run.hypothesis.inner_test(case, dtype_name)  # type: ignore[attr-defined]  # hypothesis's wrapped body

    run()
    run_windowed()
    return verdicts


def test_triton_kernels_interpreted_match_the_reference() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, __file__], capture_output=True, text=True, env=env, timeout=500, cwd=SRC)
    assert proc.returncode == 0, proc.stderr[-4000:]
    verdicts: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    errors = [v for v in verdicts if v["error"]]
    assert not errors, errors[:3]
    assert len(verdicts) >= 24 and {v["op"] for v in verdicts} == {"paged_decode", "paged_prefill"}
    assert all(v["ratio"] <= 1.0 for v in verdicts)
    assert sum("'sliding_window': None" not in v["case"] for v in verdicts) >= 12


if __name__ == "__main__":
    print(json.dumps(_interpreted_cases()))
