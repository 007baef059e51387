"""FP8 KV pools on a CUDA GPU: float8 per-layer views, and copy / copy-on-write / swap / migrate (the Triton word
copies and pinned host buffers) moving fp8 bytes unchanged. Marked `gpu`."""

from __future__ import annotations

import pytest

from pool_checks import check_bytes_survive_moves

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")

GEOM = {"num_layers": 2, "num_kv_heads": 2, "head_dim": 64}


@pytest.fixture
def cuda():
    from sagellm_backend import CUDABackendProvider

    p = CUDABackendProvider(0, kv_geometry=GEOM)
    yield p
    p.close()


@pytest.mark.parametrize("name,torch_name", [("fp8_e4m3", "float8_e4m3fn"), ("fp8_e5m2", "float8_e5m2")])
def test_fp8_pool_on_cuda_moves_bytes_unchanged(cuda, name: str, torch_name: str) -> None:
    pool = cuda.create_kv_pool(32, block_size=16, dtype=name)
    k, v = pool.kv_caches(0)
    assert pool.kv_cache_dtype == name and k.dtype == getattr(torch, torch_name) == v.dtype and k.is_cuda
    data = check_bytes_survive_moves(pool, lambda: cuda.create_kv_pool(8, block_size=16, dtype=name), 5)
    first = next(iter(data))
    codes = k[first].view(torch.uint8).cpu()
    assert codes.numpy().tobytes() == data[first][: codes.numel()]  # layer 0's K leads the block
