"""The CUDA provider on real GPUs. Marked `gpu` / `multi_gpu`: skipped where no NVIDIA GPU is
visible, with the reason. scripts/gpu_suite.sh runs these on the lent machines."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import sagellm_backend
from sagellm_backend import DType, UnsupportedDTypeError

pytestmark = pytest.mark.gpu
SRC = str(Path(sagellm_backend.__file__).resolve().parents[1])
GEO = {"num_layers": 2, "num_kv_heads": 4, "head_dim": 64}


@pytest.fixture
def cuda():
    from sagellm_backend import CUDABackendProvider

    p = CUDABackendProvider(0, kv_geometry=GEO)
    yield p
    p.close()


def test_import_and_discovery_do_not_initialise_cuda() -> None:
    code = (
        "import torch, sagellm_backend as s; a = torch.cuda.is_initialized(); s.list_providers(); "
        "s.registry.get_provider.__name__; print(a, torch.cuda.is_initialized())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": SRC}
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_capability_from_device(cuda) -> None:
    import torch

    cap = cuda.capability()
    major, minor = torch.cuda.get_device_capability(0)
    assert cap.device_name == torch.cuda.get_device_name(0) and cap.device_type == "cuda"
    assert cap.compute_capability == f"{major}.{minor}"
    assert cap.total_memory_bytes == torch.cuda.mem_get_info(0)[1]
    assert 0 < cap.available_memory_bytes <= cap.total_memory_bytes
    want = {DType.FP32, DType.FP16, DType.INT4}
    if (major, minor) >= (8, 0):
        want.add(DType.BF16)
    if (major, minor) >= (8, 9):
        want.add(DType.FP8)
    assert want <= set(cap.supported_dtypes)
    assert cap.has_graph_exec and cap.has_collective and "all_reduce" in cap.supported_collectives


def test_unsupported_dtype_message(cuda, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (7, 5))
    with pytest.raises(
        UnsupportedDTypeError, match=r"bf16 needs compute capability >= 8\.0; cuda:0 .* has 7\.5; use fp16"
    ):
        cuda.kv_block_alloc(4, DType.BF16)


def test_blocks_live_in_device_memory_and_stats_return(cuda) -> None:
    # Tensors of earlier tests freed by a collection during the test would move allocated_bytes: collect first,
    # and no collection until the end.
    gc.collect()
    gc.disable()
    try:
        _check_block_stats(cuda)
    finally:
        gc.enable()


def _check_block_stats(cuda: Any) -> None:
    import torch

    cuda.clear_cache()
    base = cuda.memory_stats()
    blocks = [cuda.kv_block_alloc(1024, DType.BF16) for _ in range(4)]
    assert all(b.data.is_cuda and b.data.device.index == 0 for b in blocks)
    during = cuda.memory_stats()
    assert during["allocated_bytes"] >= base["allocated_bytes"] + sum(b.nbytes for b in blocks)
    assert during["kv_allocated_bytes"] == base["kv_allocated_bytes"] + sum(b.nbytes for b in blocks)
    for b in blocks:
        cuda.kv_block_free(b)
    after = cuda.memory_stats()
    assert after["allocated_bytes"] == base["allocated_bytes"] and after["num_blocks"] == 0
    assert after["reserved_bytes"] >= after["allocated_bytes"]
    cuda.clear_cache()
    assert cuda.memory_stats()["reserved_bytes"] <= after["reserved_bytes"]
    assert torch.cuda.memory_allocated(0) == after["allocated_bytes"]


def test_stream_events_time_real_work_and_order_streams(cuda) -> None:
    import torch

    a = cuda.kv_block_alloc(4096, DType.FP16)
    b = cuda.kv_block_alloc(4096, DType.FP16)
    c = cuda.kv_block_alloc(4096, DType.FP16)
    a.data.normal_()
    b.data.zero_()
    c.data.zero_()
    s1, s2 = cuda.create_stream(), cuda.create_stream()
    assert s1 != s2 and s1.handle != s2.handle and "cuda:0" in repr(s1)
    torch.cuda.synchronize()
    start = s1.record_event()
    with s1:
        torch.cuda._sleep(50_000_000)  # ~25+ ms of GPU time before the copy
        cuda.kv_block_copy(a, b)
    ev = s1.record_event()
    s2.wait_event(ev)
    cuda.kv_block_copy(b, c, stream=s2)
    done = s2.record_event()
    assert not done.query()  # the host did not wait
    s2.synchronize()
    assert torch.equal(c.data, a.data), "s2 copied before s1's copy finished"
    assert ev.elapsed_ms(start) > 5.0


def test_migrate_pinned_host_and_back_bit_exact(cuda) -> None:
    import torch

    blk = cuda.kv_block_alloc(2048, DType.BF16)
    payload = os.urandom(blk.nbytes)
    cuda.kv_block_write(blk, payload)
    s = cuda.create_stream()
    cuda.kv_block_migrate(blk, "cpu", stream=s)
    s.synchronize()
    assert blk.device == "cpu" and blk.data.is_pinned()
    assert cuda.kv_block_read(blk) == payload
    assert cuda.memory_stats()["host_kv_allocated_bytes"] == blk.nbytes
    cuda.kv_block_migrate(blk, "cuda:0")
    torch.cuda.synchronize()
    assert blk.data.is_cuda and cuda.kv_block_read(blk) == payload


@pytest.mark.multi_gpu
def test_migrate_peer_bit_exact(cuda) -> None:
    import torch

    blk = cuda.kv_block_alloc(4096, DType.FP16)
    payload = os.urandom(blk.nbytes)
    cuda.kv_block_write(blk, payload)
    cuda.kv_block_migrate(blk, "cuda:1")
    torch.cuda.synchronize()
    assert blk.device == "cuda:1" and blk.data.device.index == 1 and cuda.kv_block_read(blk) == payload
    assert cuda.memory_stats()["cuda_1_kv_allocated_bytes"] == blk.nbytes
    cuda.kv_block_migrate(blk, 0)
    torch.cuda.synchronize()
    assert cuda.kv_block_read(blk) == payload


@pytest.mark.multi_gpu
def test_pool_migrate_blocks_between_gpus(cuda) -> None:
    import torch

    a = cuda.create_kv_pool(256, block_size=16, dtype=DType.BF16)
    b = cuda.create_kv_pool(256, block_size=16, dtype=DType.BF16, device="cuda:1")
    ids = a.allocate(100)
    data = [os.urandom(a.block_nbytes) for _ in ids]
    for i, d in zip(ids, data):
        a.write_block(i, d)
    moved = a.migrate_blocks(ids, b)
    torch.cuda.synchronize(0)
    torch.cuda.synchronize(1)
    assert [b.read_block(i) for i in moved] == data


def test_graph_capture_and_replay(cuda) -> None:
    import torch

    src = cuda.kv_block_alloc(256, DType.FP16)
    dst = cuda.kv_block_alloc(256, DType.FP16)
    src.data.normal_()
    dst.data.fill_(7)
    torch.cuda.synchronize()
    with cuda.capture_graph() as g:
        cuda.kv_block_copy(src, dst)
    torch.cuda.synchronize()
    assert bool((dst.data == 7).all()), "captured work ran during capture"
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(dst.data, src.data)
    src.data.normal_()
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(dst.data, src.data)


@pytest.mark.parametrize("dtype", [DType.BF16, DType.FP8, DType.INT4, DType.FP32])
@pytest.mark.parametrize("count", [1, 5, 333, 2048])
def test_batched_copy_bit_exact(cuda, dtype: DType, count: int) -> None:
    import numpy as np
    import torch

    pool = cuda.create_kv_pool(2 * count + 7, block_size=16, dtype=dtype)
    ids = pool.allocate(pool.num_blocks)
    rows = pool.arena.reshape(pool.num_blocks, -1).view(torch.uint8)
    rows.random_(0, 256)
    perm = np.random.default_rng(count).permutation(ids)
    src, dst = perm[:count].tolist(), perm[count : 2 * count].tolist()
    rows[dst] = 0xCD  # poison
    ref = rows.clone()
    ref[dst] = ref[src]
    pool.copy_blocks(src, dst)
    torch.cuda.synchronize()
    assert torch.equal(rows, ref)
    rows.random_(0, 256)
    ref = rows.clone()
    ref[dst] = ref[src]
    s = torch.tensor(src, dtype=torch.int32, device="cuda:0")
    d = torch.tensor(dst, dtype=torch.int32, device="cuda:0")
    pool.copy_blocks(s, d, validate=False)  # trusted path: device index tensors
    torch.cuda.synchronize()
    assert torch.equal(rows, ref)


def test_swap_out_in_8192_blocks_bit_exact(cuda) -> None:
    import torch

    from sagellm_backend import CUDABackendProvider
    from sagellm_backend.bench import BENCH_GEOMETRY

    p = CUDABackendProvider(0, kv_geometry=BENCH_GEOMETRY)
    pool = p.create_kv_pool(10000, block_size=16, dtype=DType.FP16)  # 64 KiB blocks
    pool.allocate(10000)
    rows = pool.arena.reshape(10000, -1).view(torch.uint8)
    rows.random_(0, 256)
    sel = torch.randperm(10000)[:8192].tolist()
    want = rows[sel].clone()
    s = p.create_stream()
    swapped = pool.swap_out(sel, stream=s)
    swapped.wait()
    assert swapped.data.is_pinned() and swapped.nbytes == 8192 * 65536
    rows[sel] = 0
    pool.swap_in(swapped, sel, stream=s)
    s.synchronize()
    assert torch.equal(rows[sel], want)
    pool.close()


NCCL_ABSENT_GAP = (
    "known gap: with NCCL an absent peer left the surviving rank hanging > 300 s on 2 x H200 "
    "(torch 2.11), with TORCH_NCCL_BLOCKING_WAIT=1 and with a host-side deadline alike; see "
    "docs/PERFORMANCE.md 'NCCL timeouts'"
)


@pytest.mark.multi_gpu
@pytest.mark.parametrize(
    "scenario",
    ["all", "mismatch", pytest.param("absent", marks=pytest.mark.xfail(reason=NCCL_ABSENT_GAP, strict=False))],
)
def test_nccl_collectives(scenario: str, tmp_path: Path) -> None:
    worker = str(Path(__file__).resolve().parents[1] / "dist_worker.py")
    env = {**os.environ, "PYTHONPATH": SRC, "DIST_WORKER_OUT": str(tmp_path), "NCCL_NVLS_ENABLE": "0"}
    import socket

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    timeout = "20" if scenario == "absent" else "120"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                worker,
                scenario,
                "--provider",
                "cuda",
                "--timeout",
                timeout,
                "--init-method",
                f"tcp://127.0.0.1:{port}",
                "--rank",
                str(r),
                "--world-size",
                "2",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for r in range(2)
    ]
    bound = 90 if scenario == "absent" else 300
    try:
        for pr in procs:
            out, err = pr.communicate(timeout=bound)
            assert pr.returncode == 0, out + err[-4000:]
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.kill()
    rows = [json.loads(f.read_text()) for f in sorted(tmp_path.glob("rank*.json"))]
    if scenario == "all":
        assert [r["rank"] for r in rows] == [0, 1] and all(r["ok"] for r in rows)
    elif scenario == "mismatch":
        assert all(all(e and "mismatched arguments" in e for e in r["errors"]) for r in rows)
    else:
        r0 = next(r for r in rows if r["rank"] == 0)
        assert r0["code"] == "comm_timeout" and r0["elapsed"] < 120, r0
