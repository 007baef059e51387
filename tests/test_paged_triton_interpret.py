"""The Triton paged-attention kernels under TRITON_INTERPRET=1 on CPU tensors, against a float64 reference.

The interpreter must be switched on before Triton is imported, so the checks run in one child process
(``python this_file.py``) that prints a JSON verdict per case; the tests below read it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import sagellm_backend

SRC = str(Path(sagellm_backend.__file__).resolve().parents[1])


def _cases() -> list[dict[str, Any]]:
    """Run every check in this (interpreting) process; one verdict per case."""
    import torch

    from sagellm_backend.attention import paged_triton as pt
    from sagellm_backend.attention import paged_triton_prefill as pp
    from sagellm_backend.attention import testing as chk
    from sagellm_backend.attention.reference import make_arena_caches, make_block_tables, reference_paged_decode

    class Ops:
        store_kv = staticmethod(pt.store_kv)
        paged_decode = staticmethod(pt.paged_decode)
        paged_prefill = staticmethod(pp.paged_prefill)

    verdicts: list[dict[str, Any]] = []

    def run(group: str, fn: Any) -> None:
        try:
            for r in fn():
                verdicts.append(
                    {"group": group, "op": r.op, "case": str(r.case), "ratio": r.worst_ratio, "error": None}
                )
        except Exception as e:  # recorded, asserted by the parent
            verdicts.append({"group": group, "op": "?", "case": "", "ratio": None, "error": f"{type(e).__name__}: {e}"})

    def split_decode() -> list[Any]:
        # Forced split counts, including splits that start past a sequence's end.
        g = torch.Generator().manual_seed(7)
        lens = [1, 40, 333, 129]
        _, kc, vc = make_arena_caches(70, 8, 2, 64, torch.float16, "cpu", generator=g)
        table = make_block_tables(lens, 8, 70, generator=g, pad_value=-1)
        q = torch.randn(4, 6, 64, generator=g).half()
        ref = reference_paged_decode(q, kc, vc, table, torch.tensor(lens), 0.125)
        out = []
        for splits in (1, 3, 11):
            cfg = pt.DecodeConfig(block_n=16, num_warps=4, num_stages=2)
            got = pt.paged_decode_with(q, kc, vc, table.int(), torch.tensor(lens), 0.125, cfg=cfg, splits=splits)
            err = float((got.double() - ref).abs().max())
            out.append(chk.OpCheckResult("paged_decode", {"splits": splits}, err, err / 1e-2))
        left = sum(int(c.abs().sum()) for c in pt._COUNTERS.values())  # every launch resets its counters
        out.append(chk.OpCheckResult("counters", {"nonzero": left}, float(left), float(left)))
        return out

    def long_spans() -> list[Any]:
        # A mixed batch whose launch holds long splits (fill 1: 6 rows x 2 KV heads > 16 slots / 2): only the spans
        # longer than 1.25 x the mean of the non-empty rows (241.4) split, into pieces of at least 0.5 x the mean.
        from sagellm_backend.attention.paged_workspace import DecodeWorkspace

        g = torch.Generator().manual_seed(5)
        lens = [5, 40, 333, 129, 0, 700]
        _, kc, vc = make_arena_caches(200, 8, 2, 64, torch.float16, "cpu", generator=g)
        table = make_block_tables(lens, 8, 200, generator=g, pad_value=-1)
        q = torch.randn(6, 6, 64, generator=g).half()
        out = []
        for window in (None, 300):
            cfg = pt.DecodeConfig(block_n=16, waves=1.0, min_chunk=16, long_splits=4)
            opts: dict[str, Any] = {} if window is None else {"sliding_window": window}
            grid, _, kw = pt.decode_launch_args(q, kc, vc, table.int(), torch.tensor(lens), 0.125, q, cfg=cfg, **opts)
            ws = DecodeWorkspace(
                torch.full((6 * 6 * 4 * 64,), float("nan")), torch.full((6 * 6 * 4,), float("nan")),
                torch.zeros(12, dtype=torch.int32),
            )  # fmt: skip
            got = pt.paged_decode_with(q, kc, vc, table.int(), torch.tensor(lens), 0.125, cfg=cfg, workspace=ws, **opts)
            ref = reference_paged_decode(q, kc, vc, table, torch.tensor(lens), 0.125, **opts)
            err = float((got.double() - ref).abs().max())
            written = (~ws.partial_lse.view(6, 6, 4).isnan()).sum(dim=2)[:, 0].tolist()  # splits per sequence
            case = {"window": window, "grid": grid, "long_rows": kw["LONG_ROWS"], "partials": written,
                    "counters": int(ws.counters.abs().sum())}  # fmt: skip
            out.append(chk.OpCheckResult("paged_decode", case, err, err / 1e-2))
        # 130 rows, more than the 128 the kernel reads: the mean comes from a strided sample of them.
        lens = [1 + i % 8 for i in range(130)]
        lens[77] = 600
        _, kc, vc = make_arena_caches(320, 8, 1, 16, torch.float32, "cpu", generator=g)
        table = make_block_tables(lens, 8, 320, generator=g, pad_value=-1)
        q = torch.randn(130, 2, 16, generator=g)
        cfg = pt.DecodeConfig(block_n=16, waves=1.0, min_chunk=16, long_splits=2)
        ws = DecodeWorkspace(
            torch.full((130 * 2 * 2 * 16,), float("nan")), torch.full((130 * 2 * 2,), float("nan")),
            torch.zeros(130, dtype=torch.int32),
        )  # fmt: skip
        got = pt.paged_decode_with(q, kc, vc, table.int(), torch.tensor(lens), 0.25, cfg=cfg, workspace=ws)
        err = float((got.double() - reference_paged_decode(q, kc, vc, table, torch.tensor(lens), 0.25)).abs().max())
        split = (~ws.partial_lse.view(130, 2, 2).isnan()).sum(dim=2)[:, 0]
        case = {"rows": 130, "split rows": split.nonzero().flatten().tolist(), "splits": int(split.max())}
        out.append(chk.OpCheckResult("paged_decode", case, err, err / 1e-4))
        return out

    def one_page() -> list[Any]:
        # 32-token pages with 32-token tiles (one page per tile: its number read once per tile) against the same
        # bytes seen as 16-token pages (each tile spans two, numbers read per token): the tiles and their order are
        # the same, so the results are too, bit for bit; head-major 32-token pages as well.
        g = torch.Generator().manual_seed(11)
        lens, nb, hkv, d = [1, 40, 64, 129], 24, 1, 32
        kc = torch.randn(nb, 32, hkv, d, generator=g).half()
        vc = torch.randn(nb, 32, hkv, d, generator=g).half()
        t32 = torch.randperm(nb, generator=g)[: 4 * 5].view(4, 5).int()
        t16 = torch.stack((2 * t32, 2 * t32 + 1), dim=2).view(4, 10)
        q = torch.randn(4, 2, d, generator=g).half()
        sl = torch.tensor(lens, dtype=torch.int32)
        cfg = pt.DecodeConfig(block_n=32, num_warps=4, num_stages=2)
        fp8 = torch.float8_e4m3fn
        k8, v8 = (c.clamp(-400, 400).to(fp8) for c in (kc, vc))
        one = {"k_scale": torch.full((1,), 0.5), "v_scale": torch.full((1,), 0.25)}

        def hnd(c: Any) -> Any:
            return c.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)

        out = []
        for name, (k, v), opts in (
            ("plain", (kc, vc), {}), ("splits 3", (kc, vc), {"splits": 3}), ("window 50", (kc, vc),
            {"sliding_window": 50, "splits": 2}), ("fp8", (k8, v8), one),
        ):  # fmt: skip
            got = pt.paged_decode(q, k, v, t32, sl, 0.2, cfg=cfg, **opts)
            same16 = pt.paged_decode(q, k.view(2 * nb, 16, hkv, d), v.view(2 * nb, 16, hkv, d), t16, sl, 0.2, cfg=cfg,
                                     **opts)  # fmt: skip
            head_major = pt.paged_decode(q, hnd(k), hnd(v), t32, sl, 0.2, cfg=cfg, **opts)
            variants = {n: o for n, o in opts.items() if n == "sliding_window"}
            deq = (k.float() * 0.5, v.float() * 0.25) if k.dtype == fp8 else (k, v)
            err = float((got.double() - reference_paged_decode(q, *deq, t32, sl, 0.2, **variants)).abs().max())
            differ = int((got != same16).sum()) + int((got != head_major).sum())
            out.append(chk.OpCheckResult("paged_decode", {"case": name, "differ": differ}, err, err / 1e-2))
        # The step's store and decode in one launch (the token at position len - 1 comes from key/value).
        key, value = torch.randn(4, hkv, d, generator=g).half(), torch.randn(4, hkv, d, generator=g).half()
        pos = sl.long() - 1
        slots = t32.long().gather(1, (pos // 32)[:, None])[:, 0] * 32 + pos % 32
        caches = [(kc.clone(), vc.clone()) for _ in range(2)]
        a = pt.paged_decode_store(q, key, value, *caches[0], t32, sl, slots, 0.2, cfg=cfg, splits=2)
        k16, v16 = (c.view(2 * nb, 16, hkv, d) for c in caches[1])
        b = pt.paged_decode_store(q, key, value, k16, v16, t16, sl, slots, 0.2, cfg=cfg, splits=2)
        ref = reference_paged_decode(q, *caches[0], t32, sl, 0.2)
        err = float((a.double() - ref).abs().max())
        differ = int((a != b).sum()) + int((caches[0][0] != caches[1][0]).sum() + (caches[0][1] != caches[1][1]).sum())
        out.append(chk.OpCheckResult("paged_decode_store", {"case": "store", "differ": differ}, err, err / 1e-2))
        return out

    t0 = time.perf_counter()
    run("grid", lambda: chk.check_paged_ops(Ops, "cpu", head_dims=(64, 256), long_context=False))
    f16 = (torch.float16,)
    odd: dict[str, Any] = {"head_dims": (80,), "block_sizes": (8,), "head_configs": ((12, 4), (3, 1))}
    run("odd", lambda: chk.check_paged_ops(Ops, "cpu", dtypes=f16, exhaustive=True, long_context=False, **odd))
    run("long", lambda: [
        chk.check_paged_decode(Ops, "cpu", dtype=dt, head_dim=128, block_size=16, num_heads=8, num_kv_heads=2,
                               seq_lens=[1100, 2113, 17])
        for dt in (torch.float32, torch.bfloat16)
    ])  # fmt: skip
    run("splits", split_decode)
    run("long spans", long_spans)
    run("one page", one_page)
    verdicts.append({"group": "time", "op": "", "case": "", "ratio": time.perf_counter() - t0, "error": None})
    return verdicts


@pytest.fixture(scope="module")
def verdicts() -> list[dict[str, Any]]:
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, __file__], capture_output=True, text=True, env=env, timeout=240, cwd=SRC
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    out: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def _group(verdicts: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    rows = [v for v in verdicts if v["group"] == name]
    assert rows, f"no results for {name}"
    bad = [v["error"] for v in rows if v["error"]]
    assert not bad, bad
    return rows


def test_grid_of_dtypes_head_dims_block_sizes_and_head_configs(verdicts: list[dict[str, Any]]) -> None:
    rows = _group(verdicts, "grid")
    # 3 dtypes x 2 head dims x 2 block sizes x (store, decode, 2 prefills)
    assert len(rows) == 48
    assert {r["op"] for r in rows} == {"store_kv", "paged_decode", "paged_prefill"}
    assert all(r["ratio"] <= 1.0 for r in rows)


def test_padded_head_dim_block_size_8_and_odd_group_sizes(verdicts: list[dict[str, Any]]) -> None:
    rows = _group(verdicts, "odd")
    assert len(rows) == 8 and all(r["ratio"] <= 1.0 for r in rows)


def test_long_context_decode_splits_by_default(verdicts: list[dict[str, Any]]) -> None:
    rows = _group(verdicts, "long")
    assert len(rows) == 2 and all(r["ratio"] <= 1.0 for r in rows)


def test_forced_split_counts_merge_exactly(verdicts: list[dict[str, Any]]) -> None:
    rows = _group(verdicts, "splits")
    assert [r["case"] for r in rows] == [
        str({"splits": 1}), str({"splits": 3}), str({"splits": 11}), str({"nonzero": 0}),
    ]  # fmt: skip
    assert all(r["ratio"] <= 1.0 for r in rows)


def test_long_spans_of_a_mixed_batch_split_and_the_rest_do_not(verdicts: list[dict[str, Any]]) -> None:
    rows = _group(verdicts, "long spans")
    assert all(r["ratio"] <= 1.0 for r in rows)

    # Partials written per sequence: one used split stores its result directly (none written). Lengths 5, 40, 333,
    # 129, 0, 700, mean 241.4: 700 -> 176-token pieces (4), 333 -> 128-token pieces (the floor, 3). Within a window
    # of 300 the mean of the windowed lengths is 154.8: 700's span (from the window's first tile, 300) and 333's
    # (301) are long, in 80-token pieces (a quarter of the span, above the 80-token floor) -> 4 each.
    def spans(window: int | None, partials: list[int]) -> str:
        return str({"window": window, "grid": (6, 2, 4), "long_rows": 8, "partials": partials, "counters": 0})

    assert [r["case"] for r in rows] == [
        spans(None, [0, 0, 3, 0, 0, 4]), spans(300, [0, 0, 4, 0, 0, 4]),
        str({"rows": 130, "split rows": [77], "splits": 2}),
    ]  # fmt: skip


def test_tiles_within_one_page_read_its_number_once_and_give_the_same_bits(verdicts: list[dict[str, Any]]) -> None:
    rows = _group(verdicts, "one page")
    assert [eval(r["case"])["case"] for r in rows] == ["plain", "splits 3", "window 50", "fp8", "store"]
    assert all(eval(r["case"])["differ"] == 0 for r in rows), rows
    assert all(r["ratio"] <= 1.0 for r in rows), rows


def test_supports_hook() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from sagellm_backend.attention.paged_triton import supports

    assert supports(head_dim=128, block_size=16, dtype=torch.bfloat16)
    assert supports(head_dim=80, block_size=8, dtype=torch.float32)
    assert not supports(head_dim=512, block_size=16, dtype=torch.float16)
    assert not supports(head_dim=128, block_size=16, dtype=torch.float64)
    assert not supports(head_dim=128, block_size=0, dtype=torch.float16)


@pytest.mark.parametrize("scale", [0.0, -0.1, float("nan")])
def test_non_positive_scale_is_rejected_before_launch(scale: float) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from sagellm_backend.attention.paged_triton import paged_decode
    from sagellm_backend.attention.paged_triton_prefill import paged_prefill
    from sagellm_backend.errors import InvalidArgumentError

    kc = torch.zeros(2, 16, 1, 64)
    q = torch.zeros(1, 2, 64)
    one = torch.ones(1, dtype=torch.int32)
    with pytest.raises(InvalidArgumentError, match="positive softmax scale"):
        paged_decode(q, kc, kc, one.view(1, 1), one, scale)
    with pytest.raises(InvalidArgumentError, match="positive softmax scale"):
        paged_prefill(q, kc, kc, one.view(1, 1), torch.tensor([0, 1]), one, scale)


def test_interpreted_checks_stay_fast(verdicts: list[dict[str, Any]]) -> None:
    (t,) = [v["ratio"] for v in verdicts if v["group"] == "time"]
    assert t < 60, f"interpreted checks took {t:.0f} s"


@settings(max_examples=200, deadline=None)
@given(
    batch=st.integers(1, 512),
    kv_heads=st.integers(1, 16),
    max_tokens=st.integers(1, 1 << 18),
    sms=st.integers(1, 200),
    block_n=st.sampled_from([16, 32, 64, 128]),
    min_chunk=st.sampled_from([64, 256, 1024]),
    waves=st.sampled_from([1.0, 2.0, 4.0]),
    long_splits=st.sampled_from([1, 4, 6]),
)
def test_decode_split_policy(
    batch: int, kv_heads: int, max_tokens: int, sms: int, block_n: int, min_chunk: int, waves: float, long_splits: int
) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    from sagellm_backend.attention.paged_triton import DecodeConfig, decode_splits
    from sagellm_backend.attention.triton_args import split_counts, split_limit

    cfg = DecodeConfig(block_n=block_n, waves=waves, min_chunk=min_chunk, long_splits=long_splits)
    splits, chunk = decode_splits(batch, kv_heads, max_tokens, sms, cfg)
    assert splits == split_limit(batch, kv_heads, max_tokens, sms, cfg)  # not rounded through the chunk
    assert chunk % block_n == 0 and chunk > 0
    assert splits * chunk >= max_tokens > (splits * chunk - block_n * splits)  # covers every token, tiles spread
    assert splits <= -(-max_tokens // block_n)  # never more splits than the span has tiles
    fill = split_counts(batch, kv_heads, max_tokens, sms, cfg)[0]
    most = max(1, max_tokens // max(min_chunk, block_n))
    assert splits == max(fill, min(long_splits, most))  # the long splits add to the grid, never remove
    if batch * kv_heads >= waves * sms:
        assert fill == 1
    if fill > 1:
        assert max_tokens // fill >= min_chunk  # no fill split shorter than min_chunk
        assert batch * kv_heads * fill <= waves * sms  # never a partial extra wave


@settings(max_examples=60, deadline=None)
@given(
    kv_heads=st.integers(1, 4),
    group=st.sampled_from([1, 4]),
    blocks=st.integers(1, 4096),
    max_batch=st.integers(1, 4),
    window=st.integers(1, 1 << 16),
    fp8=st.booleans(),
    dtype=st.sampled_from(["float16", "bfloat16", "float32"]),
)
@example(kv_heads=1, group=4, blocks=3091, max_batch=1, window=35673, fp8=False, dtype="float16")
def test_decode_workspace_serves_every_default_launch(
    kv_heads: int, group: int, blocks: int, max_batch: int, window: int, fp8: bool, dtype: str
) -> None:
    """``decode_workspace`` sized for a block-table width serves every default-configured decode launch of up to
    ``max_batch`` sequences over such tables, with or without a sliding window (a window shortens the span the
    splits cover, and a shorter span can round to more splits than the full one)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from sagellm_backend.attention.paged_triton import decode_launch_args
    from sagellm_backend.attention.paged_workspace import decode_workspace

    bs, d, hq, dt, cpu = 16, 16, kv_heads * group, getattr(torch, dtype), torch.device("cpu")
    ws = decode_workspace(max_batch, hq, kv_heads, d, blocks * bs, (dt,), cpu)
    cache = torch.empty(1, bs, kv_heads, d, dtype=dt)
    scales = {"k_scale": torch.ones(1), "v_scale": torch.ones(1)} if fp8 else {}
    for b in range(1, max_batch + 1):
        q = torch.empty(b, hq, d, dtype=dt)
        table = torch.zeros(b, blocks, dtype=torch.int32)
        lens = torch.ones(b, dtype=torch.int32)
        for win in (None, window):
            grid, _, kw = decode_launch_args(
                q, cache, cache, table, lens, 0.25, q, sliding_window=win, workspace=ws, **scales
            )
            assert grid[:2] == (b, kv_heads)
            if fp8 and dtype != "float32":  # the fp8 default: 64-token tiles, two deep, split or not
                assert (kw["BLOCK_N"], kw["num_stages"]) == (64, 2), grid


def test_register_cap_reaches_the_launch_only_when_set() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from sagellm_backend.attention.paged_triton import DecodeConfig, decode_launch_args

    q = torch.empty(2, 8, 16, dtype=torch.float16)
    cache = torch.empty(4, 16, 2, 16, dtype=torch.float16)
    table, lens = torch.zeros(2, 4, dtype=torch.int32), torch.ones(2, dtype=torch.int32)
    kw = decode_launch_args(q, cache, cache, table, lens, 0.25, q, cfg=DecodeConfig(maxnreg=128))[2]
    assert kw["maxnreg"] == 128
    assert "maxnreg" not in decode_launch_args(q, cache, cache, table, lens, 0.25, q)[2]


@pytest.mark.parametrize(
    ("head_dim", "group", "capped"), [(128, 1, True), (128, 4, True), (128, 8, True), (64, 8, True), (128, 16, False)]
)
def test_fp8_register_cap_and_waves_only_for_query_tiles_that_do_not_spill(
    head_dim: int, group: int, capped: bool
) -> None:
    """The 96-register cap (five programs per SM, one wave of five) is the fp8 default only where sm_90 ptxas spills
    nothing under it (groups up to 8; bench/kernel_resources.py); larger groups keep the compiler's registers and
    four waves, and 16-bit caches never take it."""
    torch = pytest.importorskip("torch")
    from sagellm_backend.attention import triton_args as ta

    cfg = ta.decode_config(head_dim, torch.bfloat16, group, kv_fp8=True)
    assert (cfg.maxnreg, cfg.waves) == ((ta.FP8_MAXNREG, ta.FP8_WAVES) if capped else (None, 4.0))
    assert cfg.fp8_f16_dot and cfg.block_n == 64
    plain = ta.decode_config(head_dim, torch.bfloat16, group)
    assert (plain.maxnreg, plain.waves) == (None, 4.0)
    b, hkv = 4, 8  # the split count follows the waves: 5 x 132 SMs / 32 programs = 20 splits at 4 x 32k
    assert ta.split_limit(b, hkv, 32768, 132, cfg) == (20 if capped else 16)


@pytest.mark.parametrize("interpret", ["0", "1"])
def test_fp8_value_conversion_reaches_the_launch_only_where_it_applies(
    interpret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from sagellm_backend.attention import triton_args
    from sagellm_backend.attention.paged_triton import DecodeConfig, decode_launch_args
    from sagellm_backend.errors import InvalidArgumentError, UnsupportedOperationError

    monkeypatch.setenv("TRITON_INTERPRET", interpret)
    cc = [(9, 0)]
    monkeypatch.setattr(triton_args, "_capability", lambda device: cc[0])  # the CPU tensors stand for an sm_90 GPU
    table, lens = torch.zeros(2, 4, dtype=torch.int32), torch.ones(2, dtype=torch.int32)
    sc = {"k_scale": torch.ones(1), "v_scale": torch.ones(1)}
    on, f16_on = DecodeConfig(fp8_v_asm=True), DecodeConfig(fp8_v_asm=True, fp8_f16_dot=True)

    def v_asm(qdt: Any, cdt: Any, cfg: Any) -> int:
        q = torch.empty(2, 8, 16, dtype=qdt)
        cache = torch.empty(4, 16, 2, 16, dtype=cdt)
        scales = sc if cdt in (torch.float8_e4m3fn, torch.float8_e5m2) else {}
        return int(decode_launch_args(q, cache, cache, table, lens, 0.25, q, cfg=cfg, **scales)[2]["V_ASM"])

    asm = interpret == "0"  # the interpreter runs no inline assembly: the plain conversion, same values
    assert v_asm(torch.float16, torch.float8_e4m3fn, on) == (1 if asm else 0)
    assert v_asm(torch.float16, torch.float8_e5m2, on) == (2 if asm else 0)
    assert v_asm(torch.bfloat16, torch.float8_e4m3fn, f16_on) == (1 if asm else 0)
    assert v_asm(torch.float16, torch.float8_e4m3fn, DecodeConfig()) == 0  # off unless asked for
    auto = DecodeConfig(fp8_v_asm=None)  # wherever it applies, never an error
    assert v_asm(torch.float16, torch.float8_e4m3fn, auto) == (1 if asm else 0)
    assert v_asm(torch.bfloat16, torch.float8_e5m2, None) == (2 if asm else 0)  # the fp8 default: fp16 dots
    assert v_asm(torch.bfloat16, torch.float8_e4m3fn, auto) == 0  # bf16 dots
    assert v_asm(torch.float32, torch.float8_e4m3fn, None) == 0
    assert v_asm(torch.float16, torch.float16, on) == 0  # no fp8 cache: nothing to convert
    for qdt, cfg in ((torch.bfloat16, on), (torch.float32, on), (torch.float32, f16_on)):  # dots not in fp16
        with pytest.raises(InvalidArgumentError, match="fp8_f16_dot=True"):
            v_asm(qdt, torch.float8_e4m3fn, cfg)
    cc[0] = (8, 0)  # no fp8 conversion instruction before sm_89
    if asm:
        with pytest.raises(UnsupportedOperationError, match=r"compute capability 8\.9"):
            v_asm(torch.float16, torch.float8_e4m3fn, on)
    else:
        assert v_asm(torch.float16, torch.float8_e4m3fn, on) == 0
    assert v_asm(torch.float16, torch.float8_e4m3fn, DecodeConfig()) == 0
    assert v_asm(torch.float16, torch.float8_e4m3fn, auto) == 0
    assert v_asm(torch.bfloat16, torch.float8_e4m3fn, None) == 0
    cc[0] = (9, 4)
    monkeypatch.setattr(torch.version, "hip", "6.2")  # a ROCm GPU: no PTX
    assert v_asm(torch.float16, torch.float8_e4m3fn, auto) == 0
    assert v_asm(torch.bfloat16, torch.float8_e4m3fn, None) == 0
    if asm:
        with pytest.raises(UnsupportedOperationError, match="ROCm"):
            v_asm(torch.float16, torch.float8_e4m3fn, on)


@pytest.mark.parametrize("bad", [{"merge_width": 0}, {"chunk_floor": 0}, {"chunk_floor": -64}])
def test_decode_config_rejects_a_merge_width_or_chunk_floor_below_one(bad: dict[str, int]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    from sagellm_backend.attention.paged_triton import DecodeConfig
    from sagellm_backend.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="merge_width >= 1 and chunk_floor None or >= 1"):
        DecodeConfig(**bad)
    assert DecodeConfig(block_n=64, chunk_floor=65).floor_tokens() == 128
    assert DecodeConfig(block_n=64).floor_tokens() == 64


@pytest.mark.parametrize(
    "fields",
    [{"long_splits": 0}, {"long_ratio": 0.9}, {"long_ratio": float("nan")}, {"long_piece": 0.0},
     {"long_piece": 1.5}, {"long_piece": float("nan")}],
)  # fmt: skip
def test_long_split_settings_out_of_range_are_rejected(fields: dict[str, Any]) -> None:
    pytest.importorskip("torch")
    from sagellm_backend.attention.triton_args import DecodeConfig
    from sagellm_backend.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="long_splits >= 1, long_ratio >= 1 and 0 < long_piece <= 1"):
        DecodeConfig(**fields)
    DecodeConfig(long_splits=6, long_ratio=1.0, long_piece=1.0)  # the bounds themselves are valid


if __name__ == "__main__":
    print(json.dumps(_cases()))
