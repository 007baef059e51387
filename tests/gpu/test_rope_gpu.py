"""The Triton ``rotary_embedding`` on a real GPU: against Hugging Face's ``apply_rotary_pos_emb`` (float64) and the
torch kernel, captured in a CUDA graph and replayed with new positions, and bounds-safe on device positions."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gpu

EPS = {"float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}


@pytest.fixture(scope="module")
def cuda():
    from sagellm_backend import CUDABackendProvider

    p = CUDABackendProvider(0, kv_geometry={"num_layers": 1, "num_kv_heads": 1, "head_dim": 8})
    yield p
    p.close()


def _cache(max_pos: int, rot: int, dtype):
    import torch

    inv = 1.0 / (500000.0 ** (torch.arange(0, rot, 2, dtype=torch.float64) / rot))
    f = torch.outer(torch.arange(max_pos, dtype=torch.float64), inv)
    return torch.cat([f.cos(), f.sin()], -1).to(dtype=dtype, device="cuda")


def _hf(x, pos, cache, rot):
    import torch

    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    x64 = x.double().transpose(0, 1).unsqueeze(0)
    rows = cache.double()[pos]
    c, s = rows[:, : rot // 2], rows[:, rot // 2 :]
    cos, sin = torch.cat([c, c], -1).unsqueeze(0), torch.cat([s, s], -1).unsqueeze(0)
    r, _ = llama.apply_rotary_pos_emb(x64[..., :rot], x64[..., :rot], cos, sin)
    return torch.cat([r, x64[..., rot:]], -1).squeeze(0).transpose(0, 1)


def test_registered_kernel_is_triton(cuda) -> None:
    assert cuda.get_kernel("rotary_embedding").backend == "triton"


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize(("tokens", "hq", "hkv", "d", "rot"), [(1, 32, 8, 128, 128), (64, 32, 8, 128, 128),
                                                               (7, 12, 4, 64, 32), (300, 4, 1, 256, 256),
                                                               (5, 8, 2, 96, 48)])  # fmt: skip
def test_neox_matches_hugging_face(cuda, dtype, tokens, hq, hkv, d, rot) -> None:
    import torch

    dt = getattr(torch, dtype)
    rope = cuda.get_kernel("rotary_embedding")
    g = torch.Generator(device="cuda").manual_seed(0)
    pos = torch.randint(0, 8192, (tokens,), device="cuda", generator=g)
    cache = _cache(8192, rot, torch.float32)
    q = torch.randn(tokens, hq * d, device="cuda", generator=g).to(dt)
    k = torch.randn(tokens, hkv, d, device="cuda", generator=g).to(dt)
    want_q, want_k = _hf(q.view(tokens, hq, d), pos, cache, rot), _hf(k, pos, cache, rot)
    rope(pos, q, k, d, cache, True)
    for got, want in ((q.view(tokens, hq, d), want_q), (k, want_k)):
        err = (got.double() - want).abs() - EPS[dtype] * want.abs()
        assert float(err.max()) <= 1e-5, float(err.max())


@pytest.mark.parametrize("neox", [True, False])
def test_triton_equals_torch_kernel(cuda, neox) -> None:
    import torch

    from sagellm_backend.kernels import torch_ops

    rope = cuda.get_kernel("rotary_embedding")
    g = torch.Generator(device="cuda").manual_seed(1)
    pos = torch.randint(0, 4096, (64,), device="cuda", generator=g)
    cache = _cache(4096, 128, torch.bfloat16)
    q = torch.randn(64, 32, 128, device="cuda", generator=g).to(torch.bfloat16)
    k = torch.randn(64, 8, 128, device="cuda", generator=g).to(torch.bfloat16)
    q2, k2 = q.clone(), k.clone()
    rope(pos, q, k, 128, cache, neox)
    torch_ops.rotary_embedding(pos, q2, k2, 128, cache, neox)
    for a, b in ((q, q2), (k, k2)):
        assert float((a.float() - b.float()).abs().max()) <= 2.0**-7 * float(b.float().abs().max())


def test_graph_replay_with_new_positions_equals_eager(cuda) -> None:
    import torch

    rope = cuda.get_kernel("rotary_embedding")
    cache = _cache(8192, 128, torch.bfloat16)
    pos = torch.zeros(8, dtype=torch.int64, device="cuda")
    q = torch.zeros(8, 32 * 128, device="cuda", dtype=torch.bfloat16)
    k = torch.zeros(8, 8 * 128, device="cuda", dtype=torch.bfloat16)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        rope(pos, q, k, 128, cache, True)  # warm-up: compile outside the capture
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        rope(pos, q, k, 128, cache, True)
    g = torch.Generator(device="cuda").manual_seed(2)
    for _ in range(20):
        new_pos = torch.randint(0, 8192, (8,), device="cuda", generator=g)
        q0 = torch.randn(8, 32 * 128, device="cuda", generator=g).to(torch.bfloat16)
        k0 = torch.randn(8, 8 * 128, device="cuda", generator=g).to(torch.bfloat16)
        pos.copy_(new_pos)
        q.copy_(q0)
        k.copy_(k0)
        graph.replay()
        rope(new_pos, q0, k0, 128, cache, True)
        assert q.equal(q0) and k.equal(k0)


def test_device_positions_out_of_range_are_left_unrotated(cuda) -> None:
    import torch

    rope = cuda.get_kernel("rotary_embedding")
    cache = _cache(16, 64, torch.float32)
    q = torch.randn(4, 2, 64, device="cuda")
    q0 = q.clone()
    rope(torch.tensor([-5, 3, 16, 1 << 40], device="cuda"), q, None, 64, cache, True)
    torch.cuda.synchronize()
    assert q[[0, 2, 3]].equal(q0[[0, 2, 3]])
    assert not q[1].equal(q0[1])
