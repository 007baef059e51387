"""Launch arguments of the paged-attention Triton kernels: dot settings, padded dims, the decode configuration and
split count, and the variant and fp8 arguments. Shared by decode (:mod:`.paged_triton`) and prefill
(:mod:`.paged_triton_prefill`).

Imported lazily (it imports torch and triton).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import torch

from ..errors import InvalidArgumentError, UnsupportedOperationError
from ..kernels.launch_math import cdiv, next_power_of_2
from .triton_tiles import LOG2E

__all__ = [
    "DecodeConfig",
    "decode_config",
    "decode_splits",
    "dot_mode",
    "fp8_args",
    "launch_dims",
    "pad_dim",
    "pdl_launch",
    "rope_args",
    "sm_count",
    "split_counts",
    "split_limit",
    "supports",
    "value_convert",
    "variant_args",
    "wave_slots",
]


def _interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter (``TRITON_INTERPRET``, read at every launch)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def dot_mode(dtype: torch.dtype) -> tuple[str, bool]:
    """``tl.dot`` settings: exact fp32 products for fp32 caches (no TF32); bf16 dots in fp32 under
    ``TRITON_INTERPRET=1``, whose bf16 ``tl.dot`` returns garbage (Triton 3.9).

    Args:
        dtype: Cache dtype.

    Returns:
        ``(input_precision, dots_in_fp32)``; ``"tf32"`` is ignored by fp16/bf16 dots.
    """
    f32 = dtype == torch.bfloat16 and _interpreting()
    return ("ieee" if dtype == torch.float32 or f32 else "tf32"), f32


#: The fp8 formats :func:`.triton_tiles.fp8_to_f16` converts (its ``FMT``).
_FP8_FMT = {torch.float8_e4m3fn: 1, torch.float8_e5m2: 2}


def value_convert(cfg: DecodeConfig, cache_dtype: torch.dtype, f16_dots: bool, device: torch.device) -> int:
    """The ``V_ASM`` constexpr of a decode launch: :func:`.triton_tiles.fp8_to_f16`'s ``FMT`` when ``cfg.fp8_v_asm``
    applies to this cache, else 0 (also under ``TRITON_INTERPRET=1``, which runs no inline assembly; the
    conversion it stands for gives the same values). ``fp8_v_asm=None`` takes it wherever it applies: fp16 dots
    on an NVIDIA GPU of compute capability 8.9 or later.

    Args:
        cfg: The launch's configuration.
        cache_dtype: The cache dtype.
        f16_dots: Whether the launch's dots run in fp16.
        device: The launch's device.

    Returns:
        0, 1 (e4m3) or 2 (e5m2).

    Raises:
        InvalidArgumentError: ``fp8_v_asm`` over an fp8 cache whose dots are not in fp16.
        UnsupportedOperationError: ``fp8_v_asm`` on a GPU that is not an NVIDIA one of compute capability 8.9 or
            later, which has the fp8 conversion instruction.
    """
    fmt = _FP8_FMT.get(cache_dtype, 0)
    if cfg.fp8_v_asm is False or not fmt:
        return 0
    if cfg.fp8_v_asm is None:
        return fmt if f16_dots and _nvidia_ptx(device, (8, 9)) else 0
    if not f16_dots:
        raise InvalidArgumentError(
            "DecodeConfig.fp8_v_asm converts fp8 value tiles to fp16, so it needs fp16 dots: an fp16 query, or a "
            "bf16 query with fp8_f16_dot=True; this launch's dots are not in fp16. Set fp8_f16_dot=True or "
            "fp8_v_asm=False."
        )
    if _interpreting():
        return 0
    cc = _capability(device)
    if cc < (8, 9) or torch.version.hip is not None:
        raise UnsupportedOperationError(
            f"DecodeConfig.fp8_v_asm needs an NVIDIA GPU of compute capability 8.9 or later (its fp8 conversion "
            f"instruction); {device} is {'a ROCm device' if torch.version.hip else 'compute capability'} "
            f"{cc[0]}.{cc[1]}. Set fp8_v_asm=False, or None to use it only where it applies."
        )
    return fmt


def pdl_launch(pdl: bool | None, device: torch.device) -> bool:
    """Whether a launch is a programmatic dependent launch (the ``PDL`` constexpr and Triton's ``launch_pdl``):
    its programs may be scheduled while the kernel before it on the stream finishes, and wait
    (``griddepcontrol.wait``) for that kernel's completion and memory before their first global access, so no
    value read or written differs from a plain launch; only the gap between the two kernels shrinks. None takes
    it wherever it applies: an NVIDIA GPU of compute capability 9.0 or later, outside ``TRITON_INTERPRET=1``.

    Args:
        pdl: The configuration's choice (``DecodeConfig.pdl``): True, False or None.
        device: The launch's device.

    Returns:
        Whether to launch with ``launch_pdl``.

    Raises:
        UnsupportedOperationError: ``pdl=True`` where it does not apply.
    """
    if pdl is False:
        return False
    applies = device.type == "cuda" and _nvidia_ptx(device, (9, 0))
    if pdl is None or applies:
        return applies
    where = "under TRITON_INTERPRET=1" if _interpreting() else f"on {device}"
    raise UnsupportedOperationError(
        f"DecodeConfig.pdl=True needs programmatic dependent launch, on an NVIDIA GPU of compute capability 9.0 or "
        f"later outside TRITON_INTERPRET=1; asked for {where}. Set pdl=False, or None to use it only where it "
        f"applies."
    )


def _nvidia_ptx(device: torch.device, cc: tuple[int, int]) -> bool:
    """Whether a launch on ``device`` runs compiled PTX of compute capability ``cc`` or later: outside
    ``TRITON_INTERPRET=1``, not on ROCm, and the device's capability at least ``cc``."""
    return not _interpreting() and torch.version.hip is None and _capability(device) >= cc


@functools.lru_cache(maxsize=16)
def _capability(device: torch.device) -> tuple[int, int]:
    major, minor = torch.cuda.get_device_capability(device)
    return int(major), int(minor)


def pad_dim(n: int, minimum: int = 16) -> int:
    """Next power of two ``>= max(n, minimum)`` (``tl.arange`` and ``tl.dot`` shapes).

    Args:
        n: Size.
        minimum: Smallest result.

    Returns:
        The padded size.
    """
    return max(minimum, int(next_power_of_2(n)))


@functools.lru_cache(maxsize=16)
def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).multi_processor_count)
    return 16


#: Streaming multiprocessors of a device (16 off CUDA): what :func:`decode_splits` fills.
sm_count = _sm_count


def launch_dims(
    op: str, query: torch.Tensor, k_cache: torch.Tensor, scale: float
) -> tuple[int, int, int, int, int, int]:
    """The dimensions a launch needs, once the softmax scale is checked.

    Args:
        op: The op's name, for the message.
        query: ``[N, Hq, D]``.
        k_cache: ``[num_blocks, block_size, Hkv, D]``.
        scale: Softmax scale.

    Returns:
        ``(N, Hq, D, block_size, Hkv, Hq // Hkv)``.

    Raises:
        InvalidArgumentError: ``scale`` is not positive.
    """
    if not scale > 0:
        raise InvalidArgumentError(f"{op} needs a positive softmax scale; got {scale!r}.")
    n, hq, d = query.shape
    bs, hkv = k_cache.shape[1], k_cache.shape[2]
    return n, hq, d, bs, hkv, hq // hkv


def variant_args(
    query: torch.Tensor, sliding_window: int | None, logits_soft_cap: float | None, alibi_slopes: torch.Tensor | None
) -> dict[str, object]:
    """The variant arguments of a decode or prefill launch (:func:`attend_tiles`).

    Args:
        query: The query (a stand-in pointer when there are no slopes).
        sliding_window: Keys per window, or None.
        logits_soft_cap: Soft cap, or None.
        alibi_slopes: ``[Hq]`` slopes on the query's device, or None.

    Returns:
        Keyword arguments ``window, softcap2, slopes_ptr, WINDOW, SOFTCAP, ALIBI``.
    """
    return {
        "window": 0 if sliding_window is None else sliding_window,
        "softcap2": 1.0 if logits_soft_cap is None else logits_soft_cap * LOG2E,
        "slopes_ptr": query if alibi_slopes is None else alibi_slopes,
        "WINDOW": sliding_window is not None,
        "SOFTCAP": logits_soft_cap is not None,
        "ALIBI": alibi_slopes is not None,
    }


def rope_args(query: torch.Tensor, rope: tuple[torch.Tensor, bool] | None) -> dict[str, object]:
    """The RoPE arguments of a decode launch that rotates the query and the new key (:func:`rope_factors`).

    Args:
        query: The query (a stand-in pointer without RoPE).
        rope: ``(cos_sin_cache [max_position, rot_dim], is_neox)`` or None.

    Returns:
        Keyword arguments ``cs_ptr, s_cs, max_pos, ROPE, HALF``.
    """
    if rope is None:
        return {"cs_ptr": query, "s_cs": 0, "max_pos": 0, "ROPE": 0, "HALF": 1}
    cs, is_neox = rope
    return {"cs_ptr": cs, "s_cs": cs.stride(0), "max_pos": cs.shape[0], "ROPE": 1 if is_neox else 2,
            "HALF": cs.shape[1] // 2}  # fmt: skip


def fp8_args(query: torch.Tensor, k_scale: torch.Tensor | None, v_scale: torch.Tensor | None) -> dict[str, object]:
    """The fp8-cache arguments of a decode or prefill launch.

    Args:
        query: The query (a stand-in pointer when the cache is not fp8).
        k_scale: 1 or ``Hkv`` float32 key scales of an fp8 cache, or None.
        v_scale: Same for values.

    Returns:
        Keyword arguments ``ks_ptr, vs_ptr, ks_stride, vs_stride, KV_FP8``.
    """
    if k_scale is None or v_scale is None:
        return {"ks_ptr": query, "vs_ptr": query, "ks_stride": 0, "vs_stride": 0, "KV_FP8": False}
    strides = {  # a single scale is read by every head
        "ks_stride": k_scale.stride(0) if k_scale.numel() > 1 else 0,
        "vs_stride": v_scale.stride(0) if v_scale.numel() > 1 else 0,
    }
    return {"ks_ptr": k_scale, "vs_ptr": v_scale, **strides, "KV_FP8": True}


def supports(*, head_dim: int, block_size: int, dtype: torch.dtype) -> bool:
    """Whether these kernels take caches of this geometry and dtype (head dims are padded to a power of
    two >= 16 inside the kernels; beyond 256 the per-program tiles no longer fit in registers).

    Args:
        head_dim: D.
        block_size: Tokens per cache block.
        dtype: Query/cache dtype.

    Returns:
        True for fp16/bf16/fp32, ``1 <= head_dim <= 256`` and ``block_size >= 1``.
    """
    return dtype in (torch.float16, torch.bfloat16, torch.float32) and 1 <= head_dim <= 256 and block_size >= 1


@dataclass(frozen=True)
class DecodeConfig:
    """Decode launch parameters.

    Attributes:
        block_n: Key tokens per tile.
        num_warps: Warps per program.
        num_stages: Software-pipeline depth of the tile loop.
        waves: Split while ``B * Hkv * splits`` stays within ``waves`` x the SM count (no partial wave).
        min_chunk: Fewest key tokens per split of the longest span a launch may see (bounds the split count).
        chunk_floor: Fewest key tokens a split takes of one sequence's span (None: one tile). Each sequence's
            span is spread over the launch's ``n`` splits in whole tiles in the kernel, from its own length:
            ``chunk = max(chunk_floor, ceil(tiles / n) * block_n)`` tokens per split, so a short context in a launch
            sized for a long one still keeps ``min(n, ceil(span / chunk))`` splits busy.
        fp8_f16_dot: With an fp8 cache and a bf16 query, run the dots in fp16 (the query scaled by a power of
            two into fp16's range) instead of converting the cache to bf16.
        early_v: Load each value tile before the key tile's dot instead of after its softmax.
        split_stages: Pipeline depth when the launch splits the context (None: ``num_stages``).
        maxnreg: Registers per thread the compiler may use (None: its choice); fewer registers let more programs
            share a multiprocessor, at the price of spills.
        fp8_v_asm: With an fp8 cache and fp16 dots (an fp16 query, or ``fp8_f16_dot`` with a bf16 one), convert
            each value tile to fp16 as loaded, by inline assembly (:func:`.triton_tiles.fp8_to_f16`), before it is
            laid out for the dot; the results are the same (both conversions are exact). None: wherever it
            applies (:func:`value_convert`).
        merge_width: Splits the merging program reads per step of its loop (unrolled, so their loads overlap).
        pdl: Launch as a programmatic dependent launch (:func:`pdl_launch`): True, False, or None wherever it
            applies.
        long_splits: Splits a long span of a mixed batch may use where filling the device needs fewer (1: off,
            the default: where lengths are equal such a launch is slower, docs/PERFORMANCE.md). A launch then holds
            ``max(fill, long_splits)`` splits (:func:`split_limit`); in the kernel a span longer than ``long_ratio``
            x the launch's mean span uses them, in pieces of at least ``long_piece`` x that mean per fill split,
            and any other span keeps the fill count (:func:`.triton_kernels.long_spans`).
        long_ratio: How much longer than the mean a span must be to use the long splits.
        long_piece: The fewest tokens per split of a long span, as a fraction of the mean span per fill split.
    """

    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 2
    waves: float = 4.0
    min_chunk: int = 512
    chunk_floor: int | None = None
    fp8_f16_dot: bool = False
    early_v: bool = False
    split_stages: int | None = None
    maxnreg: int | None = None
    fp8_v_asm: bool | None = False
    merge_width: int = 8
    pdl: bool | None = False
    long_splits: int = 1
    long_ratio: float = 1.25
    long_piece: float = 0.5

    def __post_init__(self) -> None:
        if self.merge_width < 1 or (self.chunk_floor is not None and self.chunk_floor < 1):
            raise InvalidArgumentError(
                f"DecodeConfig needs merge_width >= 1 and chunk_floor None or >= 1; got merge_width="
                f"{self.merge_width}, chunk_floor={self.chunk_floor}."
            )
        if self.long_splits < 1 or not self.long_ratio >= 1.0 or not 0.0 < self.long_piece <= 1.0:
            raise InvalidArgumentError(
                f"DecodeConfig needs long_splits >= 1, long_ratio >= 1 and 0 < long_piece <= 1; got long_splits="
                f"{self.long_splits}, long_ratio={self.long_ratio}, long_piece={self.long_piece}."
            )

    def stages(self, n_split: int) -> int:
        """The pipeline depth of a launch with ``n_split`` context splits.

        Args:
            n_split: Splits of the launch.

        Returns:
            ``split_stages`` when the launch splits and it is set, else ``num_stages``.
        """
        return self.split_stages if n_split > 1 and self.split_stages is not None else self.num_stages

    def floor_tokens(self) -> int:
        """The kernel's ``chunk_floor`` argument: :attr:`chunk_floor` rounded up to whole tiles.

        Returns:
            A positive multiple of :attr:`block_n`.
        """
        return cdiv(self.chunk_floor or self.block_n, self.block_n) * self.block_n


#: Registers per thread of the fp8 decode launches with at most :data:`FP8_CAP_GROUP` query heads per KV head (sm_90
#: ptxas, D 64 or 128: 96 spill nothing, plain or as a step launches it, and fit five 4-warp programs per SM, against
#: four at the compiler's 100-107; with 16 heads per KV head the split launch would spill, so it keeps its choice).
FP8_MAXNREG = 96
#: The largest query-head group :data:`FP8_MAXNREG` applies to.
FP8_CAP_GROUP = 8
#: Programs per SM a split fp8 decode launch under the cap fills (one wave of five on an H100).
FP8_WAVES = 5.0


def decode_config(head_dim: int, dtype: torch.dtype, group: int, *, kv_fp8: bool = False) -> DecodeConfig:
    """Default decode configuration for a head dim, dtype and query-head group size.

    Over an fp8 cache with a 16-bit query: 64-token tiles, two pipeline stages, the dots in fp16 (bf16 queries
    scaled into fp16's range), the value tiles converted as loaded wherever that applies, and, for groups of up
    to :data:`FP8_CAP_GROUP` query heads, at most :data:`FP8_MAXNREG` registers per thread, so five programs share a
    multiprocessor and a split launch fills five per SM in one wave (docs/PERFORMANCE.md has the sweeps this comes
    from; measured on an H100 with D 128 and groups of 4).

    Args:
        head_dim: D.
        dtype: Query dtype.
        group: Query heads per KV head.
        kv_fp8: Whether the cache holds fp8.

    Returns:
        The configuration.
    """
    wide = pad_dim(head_dim) * pad_dim(group) * (2 if dtype == torch.float32 else 1)
    if kv_fp8 and dtype in (torch.float16, torch.bfloat16) and wide <= 16 * 128:
        capped = group <= FP8_CAP_GROUP
        return DecodeConfig(
            block_n=64, num_warps=4, num_stages=2, fp8_f16_dot=True, fp8_v_asm=None,
            maxnreg=FP8_MAXNREG if capped else None, waves=FP8_WAVES if capped else DecodeConfig.waves,
        )  # fmt: skip
    block_n = 64 if wide <= 16 * 128 else 32
    warps = 4 if wide <= 16 * 256 else 8
    return DecodeConfig(block_n=block_n, num_warps=warps, num_stages=2)


def wave_slots(sm_count: int, cfg: DecodeConfig) -> int:
    """Programs a launch runs at once: ``cfg.waves`` x the SM count (what the fill count of :func:`split_counts`
    fills, and what the kernel divides among the rows of a launch with long splits).

    Args:
        sm_count: Streaming multiprocessors (or equivalent) of the device.
        cfg: Launch configuration.

    Returns:
        The program count, >= 1.
    """
    return max(1, math.floor(cfg.waves * sm_count))


def split_counts(batch: int, kv_heads: int, max_tokens: int, sm_count: int, cfg: DecodeConfig) -> tuple[int, int]:
    """The fill count and the launch's split count. The fill count is the splits that fill the device with ``batch``
    spans of ``max_tokens``: while ``batch * kv_heads * splits`` stays within :func:`wave_slots`, and no split
    shorter than ``cfg.min_chunk``. The launch's count is that, or ``cfg.long_splits`` where it is more (bounded
    the same way by ``cfg.min_chunk``). The split count never decreases as ``max_tokens`` grows, so the count of
    the longest span bounds every shorter one's: what a workspace must hold.

    Args:
        batch: Sequences.
        kv_heads: KV heads.
        max_tokens: Upper bound of any sequence's length.
        sm_count: Streaming multiprocessors (or equivalent) of the device.
        cfg: Launch configuration.

    Returns:
        ``(fill, splits)``, both >= 1; ``splits > fill`` only with long splits.
    """
    most = max(1, max_tokens // max(cfg.min_chunk, cfg.block_n))
    fill = min(max(1, wave_slots(sm_count, cfg) // max(1, batch * kv_heads)), most)
    return fill, max(fill, min(cfg.long_splits, most))


def split_limit(batch: int, kv_heads: int, max_tokens: int, sm_count: int, cfg: DecodeConfig) -> int:
    """The split count :func:`decode_splits` returns (:func:`split_counts`' second value).

    Args:
        batch: Sequences.
        kv_heads: KV heads.
        max_tokens: Upper bound of any sequence's length.
        sm_count: Streaming multiprocessors (or equivalent) of the device.
        cfg: Launch configuration.

    Returns:
        The split count, >= 1.
    """
    return split_counts(batch, kv_heads, max_tokens, sm_count, cfg)[1]


def decode_splits(batch: int, kv_heads: int, max_tokens: int, sm_count: int, cfg: DecodeConfig) -> tuple[int, int]:
    """Number of context splits and tokens per split for decode.

    Args:
        batch: Sequences.
        kv_heads: KV heads.
        max_tokens: Upper bound of any sequence's length (block-table width x block size).
        sm_count: Streaming multiprocessors (or equivalent) of the device.
        cfg: Launch configuration.

    Returns:
        ``(splits, chunk)``: ``splits`` is :func:`split_limit` (no more than a span of ``max_tokens`` has tiles);
        ``chunk``, a multiple of ``cfg.block_n``, is the most tokens a split takes of such a span
        (``splits * chunk >= max_tokens``). The kernel spreads each sequence's own span over the splits the same
        way, in whole tiles (:attr:`DecodeConfig.chunk_floor`): the split count is not rounded through ``chunk``,
        so a short span still finds a split per tile (a 1k context in a launch sized for 8k: 16 one-tile splits
        where 15 would give it 8 of two tiles).
    """
    splits = split_limit(batch, kv_heads, max_tokens, sm_count, cfg)
    tiles = cdiv(max(max_tokens, 1), cfg.block_n)
    return splits, cdiv(tiles, splits) * cfg.block_n
