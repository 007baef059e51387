"""Direct probes of what isagellm-core 0.5.4.26 calls on ``sagellm_backend``.

The engine stops at the first missing piece; these probes call every piece on its own, the way the
engine calls it (same arguments, same keyword names), so one run lists every gap at once. Each entry
names the engine code that makes the call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import _harness as h

Check = tuple[str, Callable[[], Any]]


def _provider(name: str | None = "cpu") -> Any:
    import sagellm_backend

    return sagellm_backend.get_provider(name) if name else sagellm_backend.get_provider()


def import_engine_attention() -> str:
    """``import sagellm_core.attention`` needs ``sagellm_backend.attention.AttentionMetadata`` at import time."""
    import sagellm_core.attention  # noqa: F401

    return "imports"


def core_cpu_plugin() -> str:
    """``plugin.builtin.CPUBackendPlugin.create_provider()`` builds ``providers.cpu.CPUBackendProvider()``."""
    from sagellm_core.plugin.builtin import CPUBackendPlugin

    provider = CPUBackendPlugin().create_provider()
    h.expect_equal("device_type", str(provider.capability().device_type), "cpu")
    stub = CPUBackendPlugin().capabilities_stub()
    return f"stub device_type={stub.device_type}"


def core_factory_create_backend() -> str:
    """``sagellm_core.factory.create_backend`` loads every 'sagellm.backends' entry point, unguarded."""
    from sagellm_core.config import BackendConfig
    from sagellm_core.factory import create_backend

    made = create_backend(BackendConfig(kind="cpu", device="cpu"))
    return type(made).__name__


def capability_cpu() -> str:
    """LE/MR read ``capability().device_type`` / ``device_name``; ``LLMEngine.capabilities()`` checks dtypes."""
    from sagellm_backend import DType

    for name in ("cpu", None):
        cap = _provider(name).capability()
        h.expect_equal(f"get_provider({name!r}).capability().device_type", str(cap.device_type), "cpu")
        if DType.FP32 not in cap.supported_dtypes and "fp32" not in cap.supported_dtypes:
            raise AssertionError(f"fp32 missing from supported_dtypes {cap.supported_dtypes}")
        if not cap.device_name:
            raise AssertionError("empty device_name")
    return f"device_name={cap.device_name!r}"


def capability_descriptor_keywords() -> str:
    """``CPUBackendPlugin.capabilities_stub`` builds a CapabilityDescriptor from plain strings."""
    from sagellm_backend import CapabilityDescriptor

    desc = CapabilityDescriptor(
        device_name="cpu",
        device_type="cpu",
        compute_capability=None,
        total_memory_bytes=0,
        supported_dtypes=["fp32", "fp16", "bf16"],
        supported_kernels=["linear", "attention", "norm", "embedding"],
        has_stream=False,
        has_event=False,
        has_collective=False,
        has_graph_exec=False,
    )
    return f"{type(desc).__module__}.{type(desc).__name__}"


def kernels_as_called() -> str:
    """MR.``_resolve_kernel_with_fallback`` + KL.``patch_model_with_kernels`` call signatures."""
    import torch
    import torch.nn.functional as F

    provider = _provider()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, generator=gen)
    w = torch.randn(5, 8, generator=gen)
    b = torch.randn(5, generator=gen)
    linear = provider.get_kernel("linear")
    torch.testing.assert_close(linear(x, w, b), F.linear(x, w, b))
    torch.testing.assert_close(linear(x, w, None), F.linear(x, w))
    torch.testing.assert_close(linear(x, w), F.linear(x, w))
    ids = torch.randint(0, 10, (2, 3), generator=gen)
    table = torch.randn(10, 8, generator=gen)
    torch.testing.assert_close(provider.get_kernel("embedding")(ids, table), F.embedding(ids, table))
    norm_w = torch.randn(8, generator=gen)
    eps = 1e-6
    ref = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * norm_w
    torch.testing.assert_close(provider.get_kernel("rmsnorm")(x, norm_w, eps), ref)
    torch.testing.assert_close(provider.get_kernel("silu")(x), F.silu(x))
    try:
        provider.get_kernel("no_such_kernel_interop")
    except KeyError:
        pass
    else:
        raise AssertionError("get_kernel('no_such_kernel_interop') did not raise KeyError")
    return "linear/embedding/rmsnorm/silu match torch; unknown name -> KeyError"


def attention_backend_binding() -> str:
    """MR.``start``: ``get_attention_backend()`` (no args), ``.name``, ``supports_paged_attention``."""
    from sagellm_backend.attention.base import AttentionBackend

    provider = _provider()
    ab = provider.get_attention_backend()
    if not isinstance(ab, AttentionBackend):
        raise AssertionError(f"{type(ab).__name__} is not a sagellm_backend.attention.base.AttentionBackend")
    if not ab.name or ab.name not in provider.get_supported_attention_backends():
        raise AssertionError(f"name {ab.name!r} not in {provider.get_supported_attention_backends()!r}")
    if getattr(ab, "supports_paged_attention", False):
        raise AssertionError("CPU attention backend reports supports_paged_attention=True (core's paged path breaks)")
    return f"name={ab.name!r}"


def attention_forward_prefill() -> str:
    """Spec 4.2 example: forward(q, k, v, AttentionMetadata.for_prefill([5])) equals causal SDPA."""
    import torch
    import torch.nn.functional as F

    from sagellm_backend.attention import AttentionMetadata

    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(5, 2, 8, generator=gen) for _ in range(3))
    md = AttentionMetadata.for_prefill([5], device="cpu")
    if not md.is_prefill:
        raise AssertionError("for_prefill(...).is_prefill is false")
    out = _provider().get_attention_backend().forward(q, k, v, md)
    ref = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True)
    torch.testing.assert_close(out.reshape(5, 2, 8), ref.transpose(0, 1))
    return "matches causal SDPA"


def attention_metadata_paths() -> str:
    """MR metadata builders and LE diagnostics (``get_info()`` summarises them without a guard)."""
    import torch

    from sagellm_backend import attention as att

    tables = torch.tensor([[3, 7]], dtype=torch.long)
    builder = att.PagedAttentionMetadataBuilder(block_size=4, device=torch.device("cpu"))
    pre = builder.build_prefill_metadata(seq_lens=[6], block_tables=tables, num_kv_heads=None, head_dim=None)
    h.expect_equal("prefill slot_mapping", [int(s) for s in pre.slot_mapping], [12, 13, 14, 15, 28, 29])
    dec = builder.build_decode_metadata(context_lens=[6], block_tables=tables, num_kv_heads=None, head_dim=None)
    h.expect_equal("decode slot_mapping", [int(s) for s in dec.slot_mapping], [30])
    md = att.AttentionMetadata.for_decode(
        [6], tables, device="cpu", slot_mapping=torch.tensor([30]), block_size=4, num_kv_heads=None, head_dim=None
    )
    if md.is_prefill:
        raise AssertionError("for_decode(...).is_prefill is true")
    if not isinstance(att.is_attention_backend_available("paged"), bool):
        raise AssertionError("is_attention_backend_available('paged') is not a bool")
    att.record_attention_call(
        backend_name="cpu",
        path_name="interop",
        is_prefill=True,
        query_shape=(5, 2, 8),
        key_shape=(5, 2, 8),
        value_shape=(5, 2, 8),
        has_kv_cache=False,
        has_block_tables=False,
        has_context_lens=False,
        num_seqs=1,
        query_tokens=5,
        max_context_len=5,
        max_blocks_per_seq=0,
    )
    diag = att.get_attention_diagnostics()
    if not isinstance(diag.get("_meta", {}).get("latest_call"), dict):
        raise AssertionError(f"get_attention_diagnostics()['_meta']['latest_call'] missing: {diag!r}")
    avail = att.get_attention_backend_availability()
    if not isinstance(avail, dict):
        raise AssertionError("get_attention_backend_availability() is not a dict")
    return f"builders ok, diagnostics keys={sorted(diag)[:4]}"


def fp8_numpy_helpers() -> str:
    """QH.``apply_fp8_quantization``: params, E4M3FN bits, torch decode (spec section 5)."""
    import numpy as np
    import torch

    from sagellm_backend.dtype_conversion import (
        _decode_fp8_e4m3_torch,
        compute_fp8_quantization_params_numpy,
        quantize_to_fp8_numpy,
    )

    w = np.random.default_rng(0).standard_normal((16, 32)).astype(np.float32)
    params = compute_fp8_quantization_params_numpy(w)
    scale = float(params.scale)
    if not np.isclose(scale, np.abs(w).max() / 448.0, rtol=1e-6):
        raise AssertionError(f"scale {scale} != amax/448 = {np.abs(w).max() / 448.0}")
    bits = np.asarray(quantize_to_fp8_numpy(w, params), dtype=np.uint8)
    want = (torch.from_numpy(w) / scale).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    mismatched = int((bits != want).sum())
    if mismatched:
        raise AssertionError(f"{mismatched} of {bits.size} codes differ from torch.float8_e4m3fn")
    codes = torch.arange(256, dtype=torch.uint8).reshape(16, 16)
    decoded = _decode_fp8_e4m3_torch(codes)
    torch.testing.assert_close(decoded, codes.view(torch.float8_e4m3fn).float(), equal_nan=True)
    return "bits and decode equal torch float8_e4m3fn"


def provider_device_hooks() -> str:
    """LE.``_resolve_target_device`` / ``_move_to_inference_device``; kv block contract; memory_stats."""
    import torch

    from sagellm_backend import DType

    provider = _provider()
    dev = provider.get_torch_device()
    h.expect_equal("str(get_torch_device())", str(dev), "cpu")
    moved = provider.to_device(torch.ones(3))
    h.expect_equal("to_device(t).device.type", moved.device.type, "cpu")
    if not isinstance(provider.memory_stats(), dict):
        raise AssertionError("memory_stats() is not a dict")
    blk = provider.kv_block_alloc(16, DType.FP32)
    h.expect_equal("kv block dtype", blk.dtype, DType.FP32)
    h.expect_equal("kv block num_tokens", blk.num_tokens, 16)
    provider.kv_block_free(blk)
    return f"get_torch_device()={dev!r}"


CHECKS: list[Check] = [
    ("surface: import sagellm_core.attention", import_engine_attention),
    ("surface: core CPUBackendPlugin.create_provider", core_cpu_plugin),
    ("surface: core factory.create_backend(cpu)", core_factory_create_backend),
    ("surface: capability() on cpu/auto", capability_cpu),
    ("surface: CapabilityDescriptor(str kwargs)", capability_descriptor_keywords),
    ("surface: kernels linear/embedding/rmsnorm/silu", kernels_as_called),
    ("surface: get_attention_backend()", attention_backend_binding),
    ("surface: attention forward prefill", attention_forward_prefill),
    ("surface: attention metadata/diagnostics", attention_metadata_paths),
    ("surface: fp8 dtype_conversion", fp8_numpy_helpers),
    ("surface: get_torch_device/to_device/kv_block", provider_device_hooks),
]
