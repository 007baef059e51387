"""The models of bench_decode_step.py: a Llama-shaped decoder stack on this project's pool and kernels, and
Hugging Face's ``LlamaModel`` with a ``StaticCache`` on the same weights.

Ours, per layer: ``add_rmsnorm`` -> ``linear`` (stacked QKV) -> ``rotary_embedding`` (in place on the q and k
views; inside the attention's ``run`` with ``cos_sin_cache=`` when the wrapper takes it) -> paged attention ->
``linear`` (o) -> ``add_rmsnorm`` -> ``linear`` (stacked gate/up) -> ``silu_mul`` -> ``linear`` (down); the final
norm is folded into the last layer's ``add_rmsnorm``. Every kernel comes from
``provider.get_kernel``; the KV cache is ``provider.create_kv_pool(...).kv_caches()``.

Attention goes through one object with ``begin_step(context_lens, tables, slots)`` (once per step, on the host)
and ``attend(layer, q, k, v)`` (per layer): :class:`WrapperAttention` over ``PagedAttentionWrapper`` when this
build has it (plan/run; CUDA-graph capturable), else :class:`BackendAttention` over
``PagedAttentionBackend.forward`` with metadata built once per step.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sagellm_backend.kv.geometry import KVGeometry
from sagellm_backend.protocol import DType


@dataclass(frozen=True)
class Shape:
    """The stack's geometry."""

    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    mlp: int
    layers: int
    dtype: torch.dtype
    block_size: int = 16
    theta: float = 500000.0
    eps: float = 1e-5
    kv_cache_dtype: str = "auto"  # or "fp8_e4m3" / "fp8_e5m2": the pool holds fp8, the attention dequantises

    @property
    def kv_fp8(self) -> torch.dtype | None:
        """The cache's fp8 dtype, or None for a cache in the model dtype."""
        from sagellm_backend.attention.kv_quant import fp8_dtype

        return None if self.kv_cache_dtype == "auto" else fp8_dtype(self.kv_cache_dtype)

    @property
    def weight_bytes(self) -> int:
        """Bytes of every weight a step reads (norms included)."""
        h, d = self.hidden, self.head_dim
        per_layer = (self.heads + 2 * self.kv_heads) * d * h + h * self.heads * d + 3 * h * self.mlp + 2 * h
        return (self.layers * per_layer + h) * torch.finfo(self.dtype).bits // 8

    def kv_bytes_per_token(self) -> int:
        """K and V bytes of one cached token over every layer."""
        bits = 8 if self.kv_fp8 is not None else torch.finfo(self.dtype).bits
        return self.layers * 2 * self.kv_heads * self.head_dim * bits // 8


def wrapper_class() -> tuple[Any, str]:
    """``(PagedAttentionWrapper, "")`` when this build has it, else ``(None, reason)``."""
    try:
        from sagellm_backend.attention import PagedAttentionWrapper
    except ImportError as exc:
        return None, f"sagellm_backend.attention.PagedAttentionWrapper is not in this build ({exc})"
    return PagedAttentionWrapper, ""


class BackendAttention:
    """Attention through ``PagedAttentionBackend.forward``, metadata built once per step (not capturable)."""

    capturable = False

    def __init__(
        self, shape: Shape, caches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device,
        scales: dict[str, torch.Tensor] | None = None,
    ) -> None:  # fmt: skip
        from sagellm_backend.attention import PagedAttentionBackend, PagedAttentionMetadataBuilder

        fp8 = {"kv_cache_dtype": shape.kv_cache_dtype} if shape.kv_fp8 is not None else {}
        self.backend = PagedAttentionBackend(shape.block_size, **fp8)
        self.scales = scales or {}
        self.builder = PagedAttentionMetadataBuilder(shape.block_size, device)
        self.caches, self.shape, self.device = caches, shape, device
        self.md: Any = None
        self.positions = torch.zeros(0, dtype=torch.int64, device=device)

    def begin_step(self, context_lens: np.ndarray, tables: np.ndarray, slots: np.ndarray) -> None:
        """Build the step's metadata and RoPE positions (``slots`` are recomputed by the builder)."""
        del slots
        self.md = self.builder.build_decode_metadata(
            context_lens.tolist(), torch.from_numpy(tables), self.shape.kv_heads, self.shape.head_dim
        )
        self.positions = torch.from_numpy(context_lens.astype(np.int64)).to(self.device)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """One layer's attention, ``[B, Hq, D]``."""
        out: torch.Tensor = self.backend.forward(q, k, v, self.md, kv_cache=self.caches[layer], **self.scales)
        return out


class WrapperAttention:
    """Attention through ``PagedAttentionWrapper``: ``plan`` once per step, ``run`` per layer (capturable). With
    ``cos_sin`` (and a wrapper whose ``run`` takes ``cos_sin_cache``) the RoPE of q and k happens inside ``run``."""

    capturable = True

    def __init__(
        self, cls: Any, shape: Shape, caches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device,
        max_batch: int, max_blocks: int, trusted: bool = False, cos_sin: torch.Tensor | None = None,
        scales: dict[str, torch.Tensor] | None = None,
    ) -> None:  # fmt: skip
        fp8 = {"kv_cache_dtype": shape.kv_cache_dtype} if shape.kv_fp8 is not None else {}
        self.wrapper = cls(
            shape.heads, shape.kv_heads, shape.head_dim, block_size=shape.block_size, max_batch=max_batch,
            max_blocks_per_seq=max_blocks, device=device, **fp8,
        )  # fmt: skip
        self.caches, self.trusted = caches, trusted
        self.scales = scales or {}  # an fp8 cache's k_scale / v_scale (persistent: graph-safe)
        self.rope_kw: dict[str, Any] = {}
        if cos_sin is not None and _accepts(self.wrapper.run, "cos_sin_cache"):
            self.rope_kw = {"cos_sin_cache": cos_sin, "is_neox": True}

    @property
    def rope_inside(self) -> bool:
        """Whether ``attend`` applies RoPE to q and k itself."""
        return bool(self.rope_kw)

    @property
    def positions(self) -> torch.Tensor:
        """The wrapper's persistent RoPE positions."""
        pos: torch.Tensor = self.wrapper.positions
        return pos

    def begin_step(self, context_lens: np.ndarray, tables: np.ndarray, slots: np.ndarray) -> None:
        """``plan`` the step into the wrapper's persistent buffers."""
        self.wrapper.plan(context_lens, tables, slots, trusted=self.trusted)

    takes_out = True

    def attend(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One layer's attention, ``[B, Hq, D]`` (into ``out`` when given)."""
        res: torch.Tensor = self.wrapper.run(q, k, v, self.caches[layer], out=out, **self.rope_kw, **self.scales)
        return res


def cos_sin_cache(shape: Shape, max_pos: int, device: torch.device) -> torch.Tensor:
    """``[max_pos, head_dim]``: cos then sin of ``p * theta^(-2i/d)`` (Llama's default RoPE), fp32."""
    d = shape.head_dim
    inv = 1.0 / (shape.theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    f = torch.outer(torch.arange(max_pos, dtype=torch.float64), inv)
    return torch.cat([f.cos(), f.sin()], -1).to(device=device, dtype=torch.float32)


class OurStack:
    """The decoder stack on this project's provider: weights, pool, kernels.

    Args:
        provider: A torch provider whose ``kv_geometry`` matches ``shape``.
        shape: The geometry.
        num_blocks: Blocks in the KV pool.
        max_pos: Rows of the RoPE cache.
        seed: Weight seed.
    """

    def __init__(self, provider: Any, shape: Shape, num_blocks: int, max_pos: int, seed: int = 0) -> None:
        self.shape, self.provider = shape, provider
        dev = self.device = torch.device(provider.device)
        g = torch.Generator(device=dev).manual_seed(seed)
        h, d, dt = shape.hidden, shape.head_dim, shape.dtype

        def w(rows: int, cols: int) -> torch.Tensor:
            return (torch.randn(rows, cols, generator=g, device=dev) / math.sqrt(cols)).to(dt)

        def norm() -> torch.Tensor:
            return (1.0 + 0.1 * torch.randn(h, generator=g, device=dev)).to(dt)

        self.layers = [
            {
                "ln1": norm(), "qkv": w((shape.heads + 2 * shape.kv_heads) * d, h), "o": w(h, shape.heads * d),
                "ln2": norm(), "gate_up": w(2 * shape.mlp, h), "down": w(h, shape.mlp),
            }
            for _ in range(shape.layers)
        ]  # fmt: skip
        self.final_norm = norm()
        kv_dtype = {torch.bfloat16: DType.BF16, torch.float16: DType.FP16, torch.float32: DType.FP32}[dt]
        self.pool = provider.create_kv_pool(
            num_blocks, block_size=shape.block_size, dtype=DType.FP8 if shape.kv_fp8 is not None else kv_dtype
        )
        if shape.kv_fp8 is None:
            self.pool.arena.normal_(0.0, 1.0, generator=g)
        else:  # standard normal values, quantised in slices (no fp8 random kernel; no whole-arena temporary)
            flat = self.pool.arena.view(-1).view(torch.uint8).view(shape.kv_fp8)
            for i in range(0, flat.numel(), 1 << 26):
                part = flat[i : i + (1 << 26)]
                part.copy_(torch.randn(part.numel(), generator=g, device=dev).to(shape.kv_fp8))
        #: An fp8 cache's ``k_scale`` / ``v_scale`` (float32 device tensors; 1: the cached values are N(0, 1)).
        self.kv_scales: dict[str, torch.Tensor] = {}
        if shape.kv_fp8 is not None:
            self.kv_scales = {n: torch.ones(1, dtype=torch.float32, device=dev) for n in ("k_scale", "v_scale")}
        self.caches: list[tuple[torch.Tensor, torch.Tensor]] = self.pool.kv_caches()
        if shape.kv_fp8 is not None:  # the pool's fp8 views are e4m3; an e5m2 cache reads the same bytes as e5m2
            self.caches = [(k.view(shape.kv_fp8), v.view(shape.kv_fp8)) for k, v in self.caches]
        self.cos_sin = cos_sin_cache(shape, max_pos, dev)
        k = provider.get_kernel
        self.linear, self.rmsnorm, self.add_rmsnorm = k("linear"), k("rmsnorm"), k("add_rmsnorm")
        self.silu_mul, self.rope = k("silu_mul"), k("rotary_embedding")
        #: Whether this build's kernels take caller-owned results (``add_rmsnorm(inplace=)``, ``silu_mul(out=)``).
        self.inplace_norms = _accepts(self.add_rmsnorm.forward, "inplace")
        self.silu_out = _accepts(self.silu_mul.forward, "out")
        #: Whether :meth:`step` uses them (False: every kernel returns new tensors, a same-run baseline).
        self.reuse = True
        self._bufs: dict[tuple[int, bool], tuple[torch.Tensor | None, tuple[torch.Tensor, torch.Tensor] | None]] = {}

    @staticmethod
    def geometry(shape: Shape) -> KVGeometry:
        """The provider's KV geometry for ``shape``."""
        return KVGeometry(num_layers=shape.layers, num_kv_heads=shape.kv_heads, head_dim=shape.head_dim)

    def step(self, x: torch.Tensor, attn: Any) -> torch.Tensor:
        """One decode step of hidden states ``x [B, H]`` -> final-normed ``[B, H]`` (``attn.begin_step`` done).

        ``x`` is not written. Where this build's kernels take them, the residual adds after the first run in place
        (``add_rmsnorm(..., inplace=True)``) and ``silu_mul`` and the attention write into buffers kept per batch
        size, as an engine moving from vLLM runs its layers.
        """
        s = self.shape
        qd = s.heads * s.head_dim
        b = x.shape[0]
        residual = x
        h = self.rmsnorm(x, self.layers[0]["ln1"], s.eps)
        positions = attn.positions
        rope_inside = getattr(attn, "rope_inside", False)
        split = (s.heads, s.kv_heads, s.kv_heads)
        act, attn_out = self._buffers(b, attn) if self.reuse else (None, None)
        ip = {"inplace": True} if self.inplace_norms and self.reuse else {}
        for i, lw in enumerate(self.layers):
            q, k, v = self.linear(h, lw["qkv"]).view(b, -1, s.head_dim).split(split, 1)  # [B, H, D] views
            if not rope_inside:
                self.rope(positions, q, k, s.head_dim, self.cos_sin, True)
            if attn_out is None:
                a = self.linear(attn.attend(i, q, k, v).view(b, qd), lw["o"])
            else:  # the buffer's [B, Hq * D] view, made once
                attn.attend(i, q, k, v, out=attn_out[0])
                a = self.linear(attn_out[1], lw["o"])
            # the first sum is a new tensor (x stays the caller's); the next ones are added in place
            h, residual = self.add_rmsnorm(a, residual, lw["ln2"], s.eps, **(ip if i else {}))
            gu = self.linear(h, lw["gate_up"])
            m = self.linear(self.silu_mul(gu) if act is None else self.silu_mul(gu, out=act), lw["down"])
            nxt = self.layers[i + 1]["ln1"] if i + 1 < len(self.layers) else self.final_norm
            h, residual = self.add_rmsnorm(m, residual, nxt, s.eps, **ip)
        return h

    def _buffers(self, batch: int, attn: Any) -> tuple[torch.Tensor | None, tuple[torch.Tensor, torch.Tensor] | None]:
        """``(silu_mul out, (attention out [B, Hq, D], its [B, Hq * D] view))`` for ``batch`` rows, kept across steps
        (None where not taken)."""
        taken = bool(getattr(attn, "takes_out", False))
        found = self._bufs.get((batch, taken))
        if found is None:
            s, dev = self.shape, self.device
            act = torch.empty(batch, s.mlp, dtype=s.dtype, device=dev) if self.silu_out else None
            out = torch.empty(batch, s.heads, s.head_dim, dtype=s.dtype, device=dev) if taken else None
            found = self._bufs[(batch, taken)] = (act, None if out is None else (out, out.view(batch, -1)))
        return found

    def write_kv(self, layer: int, tables: np.ndarray, seq: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Store ``keys``/``values`` ``[n, Hkv, D]`` at positions ``0..n-1`` of sequence ``seq``."""
        n, bs = keys.shape[0], self.shape.block_size
        pos = torch.arange(n)
        blocks = torch.from_numpy(tables[seq].astype(np.int64))[pos // bs].to(self.device)
        offs = (pos % bs).to(self.device)
        k_cache, v_cache = self.caches[layer]
        if self.shape.kv_fp8 is not None:
            from sagellm_backend.attention.kv_quant import quantize

            keys = quantize(keys, self.kv_scales["k_scale"], self.shape.kv_fp8)
            values = quantize(values, self.kv_scales["v_scale"], self.shape.kv_fp8)
        k_cache[blocks, offs] = keys
        v_cache[blocks, offs] = values


def _accepts(fn: Any, name: str) -> bool:
    return name in inspect.signature(fn).parameters


class HFStack:
    """Hugging Face ``LlamaModel`` (SDPA) with our stack's weights copied in, decoding with a ``StaticCache``.

    Works with transformers 4.4x (``past_key_values=``, ``cache_position=``, ``rope_theta``) and 5.x
    (``cache=`` or ``past_key_values=``, ``rope_parameters``); the forward's signature decides.
    """

    def __init__(self, ours: OurStack) -> None:
        from transformers import LlamaConfig, LlamaModel

        s = ours.shape
        common = dict(
            hidden_size=s.hidden, intermediate_size=s.mlp, num_hidden_layers=s.layers, num_attention_heads=s.heads,
            num_key_value_heads=s.kv_heads, head_dim=s.head_dim, vocab_size=8, rms_norm_eps=s.eps,
            max_position_embeddings=ours.cos_sin.shape[0], attn_implementation="sdpa",
        )  # fmt: skip
        if getattr(LlamaConfig(), "rope_parameters", None) is not None:
            config = LlamaConfig(**common, rope_parameters={"rope_type": "default", "rope_theta": s.theta})
        else:
            config = LlamaConfig(**common, rope_theta=s.theta)
        self.config, self.shape = config, s
        # Built under the model dtype as default (what from_pretrained(dtype=...) does), not cast afterwards:
        # .to(bf16) would also round the rotary inv_freq buffer, which HF keeps in fp32.
        default = torch.get_default_dtype()
        torch.set_default_dtype(s.dtype)
        try:
            with torch.device(ours.device):
                model = LlamaModel(config).eval()
        finally:
            torch.set_default_dtype(default)
        qd, kd = s.heads * s.head_dim, s.kv_heads * s.head_dim
        with torch.no_grad():
            for layer, lw in zip(model.layers, ours.layers):
                att, mlp = layer.self_attn, layer.mlp
                att.q_proj.weight.copy_(lw["qkv"][:qd])
                att.k_proj.weight.copy_(lw["qkv"][qd : qd + kd])
                att.v_proj.weight.copy_(lw["qkv"][qd + kd :])
                att.o_proj.weight.copy_(lw["o"])
                mlp.gate_proj.weight.copy_(lw["gate_up"][: s.mlp])
                mlp.up_proj.weight.copy_(lw["gate_up"][s.mlp :])
                mlp.down_proj.weight.copy_(lw["down"])
                layer.input_layernorm.weight.copy_(lw["ln1"])
                layer.post_attention_layernorm.weight.copy_(lw["ln2"])
            model.norm.weight.copy_(ours.final_norm)
        self.model = model
        fwd = model.forward
        self.cache_arg = "past_key_values" if _accepts(fwd, "past_key_values") else "cache"
        self.pass_cache_position = _accepts(fwd, "cache_position")

    def new_cache(self, batch: int, max_len: int) -> Any:
        """A ``StaticCache`` for ``batch`` sequences of up to ``max_len`` tokens."""
        from transformers import StaticCache

        params = inspect.signature(StaticCache.__init__).parameters
        kw: dict[str, Any] = {"config": self.config, "max_cache_len": max_len}
        if "max_batch_size" in params:
            kw.update(max_batch_size=batch, device=self.model.device, dtype=self.shape.dtype)
        elif "batch_size" in params:
            kw.update(batch_size=batch, device=self.model.device, dtype=self.shape.dtype)
        return StaticCache(**kw)

    def fill(self, cache: Any, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Write ``[B, Hkv, n, D]`` keys/values at positions ``0..n-1`` of one layer."""
        pos = torch.arange(keys.shape[2], device=keys.device)
        cache.update(keys, values, layer, {"cache_position": pos})

    def step(self, module: Any, cache: Any, x: torch.Tensor, position: int) -> torch.Tensor:
        """One decode step of ``x [B, H]`` at ``position`` (every sequence: StaticCache shares one length)."""
        b = x.shape[0]
        kw: dict[str, Any] = {
            "inputs_embeds": x.view(b, 1, -1),
            "position_ids": torch.full((b, 1), position, dtype=torch.int64, device=x.device),
            "use_cache": True,
            self.cache_arg: cache,
        }
        if self.pass_cache_position:
            kw["cache_position"] = torch.tensor([position], dtype=torch.int64, device=x.device)
        out: torch.Tensor = module(**kw).last_hidden_state
        return out.view(b, -1)
