"""bench/bench_decode_step.py in its tiny CPU configuration (what CI runs), and the per-step metadata it feeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sagellm_backend
from sagellm_backend import get_provider
from sagellm_backend.attention import PagedAttentionMetadataBuilder
from sagellm_backend.kv.geometry import KVGeometry
from sagellm_backend.protocol import DType

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "bench_decode_step.py"
SRC = str(Path(sagellm_backend.__file__).resolve().parents[1])
IMPLS = {"floor", "ours eager", "ours eager, allocating", "ours graphed", "hf eager", "hf compiled"}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("decode_step")
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("TRITON_INTERPRET", None)
    cmd = [sys.executable, str(BENCH), "--device", "cpu", "--quick", "--json", str(out / "r.json")]
    proc = subprocess.run([*cmd, "--plot", str(out / "r.png")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads((out / "r.json").read_text())
    data["_stdout"], data["_png"] = proc.stdout, (out / "r.png").read_bytes()
    return data


def test_every_case_has_every_row_with_consistent_figures(report: dict) -> None:
    cases = {r["case"] for r in report["rows"]}
    assert len(cases) == 2
    for case in cases:
        rows = {r["impl"]: r for r in report["rows"] if r["case"] == case}
        assert set(rows) == IMPLS
        floor = rows["floor"]["tokens_per_s"]
        assert floor > 0 and rows["floor"]["status"] == "ok"
        for impl in ("ours eager", "ours eager, allocating", "hf eager"):
            r = rows[impl]
            assert r["status"] == "ok" and r["tokens_per_s"] > 0
            assert r["pct_floor"] == pytest.approx(100 * r["tokens_per_s"] / floor)
        assert rows["ours eager"]["attend_us"] > 0
        assert rows["ours graphed"]["status"] == "unavailable" and "CUDA" in rows["ours graphed"]["note"]
        assert rows["hf compiled"]["status"] == "skipped"
    mixed = [r for r in report["rows"] if r["mixed"] and r["impl"] == "hf eager"]
    assert mixed and all("padded" in r["note"] for r in mixed)


def test_ours_matches_hugging_face_on_one_step(report: dict) -> None:
    c = report["correctness"]
    assert c["dtype"] == "float32" and c["batch"] >= 2 and c["context"] > 16  # more than one block per sequence
    assert 0 <= c["max_rel_err"] < 1e-5, c
    assert c["reuse_equals_allocating"] is True  # in place and into kept buffers: the same bits, the input kept


def test_table_printed_and_png_drawn(report: dict) -> None:
    head = "| batch x context | floor | ours eager | ours eager, allocating | ours graphed | hf eager | hf compiled |"
    assert head in report["_stdout"]
    assert "max rel err" in report["_stdout"]
    assert report["_png"][:8] == b"\x89PNG\r\n\x1a\n" and len(report["_png"]) > 5000
    assert report["copy_rate_gbps"] > 0 and report["elapsed_s"] > 0


def test_step_metadata_changes_every_step_and_matches_the_builder() -> None:
    sys.path.insert(0, str(BENCH.parent))
    try:
        from bench_decode_step import QUICK, Case
    finally:
        sys.path.remove(str(BENCH.parent))
    p = get_provider("cpu", kv_geometry=KVGeometry(num_layers=1, num_kv_heads=1, head_dim=4))
    try:
        pool = p.create_kv_pool(64, block_size=QUICK.block_size, dtype=DType.FP32)
        case = Case("t", 3, 40, True, pool, QUICK, width=8, max_steps=4, seed=0)
        builder = PagedAttentionMetadataBuilder(QUICK.block_size)
        previous = None
        for step in range(4):
            lens, tables, slots = case.meta(step)
            md = builder.build_decode_metadata(lens.tolist(), torch.from_numpy(tables.astype(np.int64)))
            assert md.slot_mapping.tolist() == slots.tolist()
            assert sorted(lens - step) == sorted(case.lens)
            if previous is not None:
                assert not np.array_equal(previous[0], lens) and not np.array_equal(previous[2], slots)
                assert not np.array_equal(previous[1], tables)
            previous = (lens, tables, slots)
        used = set(case.tables[case.tables > 0].tolist())
        assert used <= set(case.ids) and len(set(case.ids)) == len(case.ids)
    finally:
        p.close()


def test_bf16_step_agrees_with_hugging_face_past_the_first_blocks() -> None:
    """bf16 weights and KV, context 300: HF keeps its rotary frequencies in fp32 and both stacks agree."""
    sys.path.insert(0, str(BENCH.parent))
    try:
        from bench_decode_step import correctness
        from decode_stack import HFStack, OurStack, Shape
    finally:
        sys.path.remove(str(BENCH.parent))
    shape = Shape(hidden=64, heads=4, kv_heads=2, head_dim=16, mlp=96, layers=2, dtype=torch.bfloat16)
    p = get_provider("cpu", kv_geometry=OurStack.geometry(shape))
    try:
        ours = OurStack(p, shape, num_blocks=64, max_pos=400)
        hf = HFStack(ours)
        assert hf.model.rotary_emb.inv_freq.dtype == torch.float32
        assert hf.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
        result = correctness(ours, hf, ours.pool, width=24, batch=2, ctx=300)
        assert result["dtype"] == "bfloat16" and result["max_rel_err"] < 3e-2, result
    finally:
        p.close()


@pytest.mark.parametrize("kv", ["fp8_e4m3", "fp8_e5m2"])
def test_fp8_cache_step_agrees_with_hugging_face_on_the_values_it_holds(kv: str) -> None:
    """``--kv-cache-dtype fp8``: our pool holds fp8 (half the KV bytes per token in the floor), the attention gets
    the scales, and one step over cached values an fp8 cache holds exactly agrees with HF over the same values in
    bf16 (the step's own new K/V are quantised in ours only), while a bf16 cache's step would hold other bytes."""
    sys.path.insert(0, str(BENCH.parent))
    try:
        from bench_decode_step import correctness
        from decode_stack import HFStack, OurStack, Shape
    finally:
        sys.path.remove(str(BENCH.parent))
    base = Shape(hidden=64, heads=4, kv_heads=2, head_dim=16, mlp=96, layers=2, dtype=torch.bfloat16)
    shape = Shape(**{**base.__dict__, "kv_cache_dtype": kv})
    assert shape.kv_bytes_per_token() * 2 == base.kv_bytes_per_token()
    p = get_provider("cpu", kv_geometry=OurStack.geometry(shape))
    try:
        ours = OurStack(p, shape, num_blocks=64, max_pos=400)
        assert ours.caches[0][0].dtype == shape.kv_fp8 and set(ours.kv_scales) == {"k_scale", "v_scale"}
        assert bool(torch.isfinite(ours.caches[1][1].float()).all()) and float(ours.caches[1][1].float().std()) > 0.5
        result = correctness(ours, HFStack(ours), ours.pool, width=24, batch=2, ctx=300)
        assert result["max_rel_err"] < 5e-2, result
    finally:
        p.close()


def test_experiment_configurations_reach_the_launch_and_the_workspace(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--decode-config`` and ``--long-splits`` change the default where the launch and the
    workspace's sizing both look it up, so a configuration with more splits gets a workspace that holds them."""
    pytest.importorskip("triton")
    from sagellm_backend.attention import paged_triton, triton_args

    for mod in (paged_triton, triton_args):  # restored after the test
        monkeypatch.setattr(mod, "decode_config", triton_args.decode_config)
    sys.path.insert(0, str(BENCH.parent))
    try:
        from bench_decode_step import use_decode_config, use_long_splits
    finally:
        sys.path.remove(str(BENCH.parent))
    fp8_default = triton_args.decode_config(128, torch.bfloat16, 4, kv_fp8=True)
    use_decode_config("32/4/1/2")
    use_long_splits(6)
    for mod in (paged_triton, triton_args):
        cfg = mod.decode_config(128, torch.bfloat16, 4)
        assert (cfg.block_n, cfg.num_warps, cfg.num_stages, cfg.merge_width, cfg.long_splits) == (32, 4, 1, 2, 6)
        fp8 = mod.decode_config(128, torch.bfloat16, 4, kv_fp8=True)
        assert fp8.long_splits == 6 and fp8.block_n == fp8_default.block_n
    small = triton_args.split_limit(64, 8, 8192, 132, triton_args.DecodeConfig())
    assert triton_args.split_limit(64, 8, 8192, 132, triton_args.decode_config(128, torch.bfloat16, 4)) == 6 > small
