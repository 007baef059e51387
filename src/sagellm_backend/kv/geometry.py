"""KV-cache geometry: how many bytes one token's keys and values take for a given model.

A block of ``T`` tokens is stored as one contiguous array of shape
``(kv_factor, num_layers, T, num_kv_heads, head_dim)`` (``kv_factor`` is 2 for K and V, 1 for
K-only / MLA-style latents). ``int4`` is packed two values per byte along ``head_dim`` (low nibble
first), so its storage shape ends in ``head_dim // 2`` bytes and ``head_dim`` must be even.

The default geometry is TinyLlama-1.1B's (the model in the seed README's example):
22 layers, 4 KV heads, head dim 64, K and V: 22,528 bytes per token in fp16, so
``kv_block_alloc(128, DType.FP16)`` allocates 2,883,584 bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from ..core.validate import check_count
from ..errors import InvalidArgumentError, InvalidArgumentTypeError
from ..protocol import DType, coerce_dtype, dtype_bits

__all__ = ["DEFAULT_KV_GEOMETRY", "KVGeometry"]


@dataclass(frozen=True)
class KVGeometry:
    """Shape of one token's KV entries across all layers.

    Attributes:
        num_layers: Transformer layers whose KV is cached.
        num_kv_heads: KV heads per layer (after GQA/MQA grouping, per tensor-parallel rank).
        head_dim: Elements per head.
        kv_factor: 2 for separate K and V, 1 for a single latent (MLA) or K-only cache.
    """

    num_layers: int = 22
    num_kv_heads: int = 4
    head_dim: int = 64
    kv_factor: int = 2

    def __post_init__(self) -> None:
        for name in ("num_layers", "num_kv_heads", "head_dim", "kv_factor"):  # 2.0 == 2 but is not an int
            object.__setattr__(self, name, check_count(f"KVGeometry.{name}", getattr(self, name)))
        if self.kv_factor not in (1, 2):
            raise InvalidArgumentError(
                f"KVGeometry.kv_factor must be 1 (latent/K only) or 2 (K and V); got {self.kv_factor!r}."
            )

    @property
    def elements_per_token(self) -> int:
        """Logical elements per token over all layers, K and V included."""
        return self.kv_factor * self.num_layers * self.num_kv_heads * self.head_dim

    def bytes_per_token(self, dtype: object) -> int:
        """Bytes one token takes in ``dtype``.

        Args:
            dtype: Element type.

        Returns:
            Bytes per token.

        Raises:
            InvalidArgumentError: ``int4`` with an odd ``head_dim`` (cannot pack two per byte).
        """
        bits = dtype_bits(dtype)
        if bits == 4 and self.head_dim % 2:
            raise InvalidArgumentError(
                f"int4 KV is packed two values per byte along head_dim, so head_dim must be even; "
                f"this geometry has head_dim={self.head_dim}. Use int8 or an even head_dim."
            )
        return self.elements_per_token * bits // 8

    def storage_shape(self, num_tokens: int, dtype: object) -> tuple[int, int, int, int, int]:
        """Storage shape of a block of ``num_tokens`` tokens (``int4``: packed bytes, last dim halved).

        Args:
            num_tokens: Tokens in the block.
            dtype: Element type.

        Returns:
            ``(kv_factor, num_layers, num_tokens, num_kv_heads, last_dim)``.
        """
        last = self.head_dim // 2 if coerce_dtype(dtype) is DType.INT4 else self.head_dim
        return (self.kv_factor, self.num_layers, num_tokens, self.num_kv_heads, last)

    def to_dict(self) -> dict[str, int]:
        """Return the geometry as a plain dict.

        Returns:
            ``{"num_layers": ..., "num_kv_heads": ..., "head_dim": ..., "kv_factor": ...}``.
        """
        return asdict(self)

    @classmethod
    def coerce(cls, value: object) -> KVGeometry:
        """Accept a :class:`KVGeometry`, a mapping of its fields, or ``None`` (the default).

        Args:
            value: The geometry in any accepted form.

        Returns:
            A :class:`KVGeometry`.

        Raises:
            InvalidArgumentTypeError: ``value`` is of another type.
            InvalidArgumentError: a mapping has unknown keys or bad values.
        """
        if value is None:
            return DEFAULT_KV_GEOMETRY
        if isinstance(value, KVGeometry):
            return value
        if isinstance(value, Mapping):
            allowed = {"num_layers", "num_kv_heads", "head_dim", "kv_factor"}
            unknown = set(value) - allowed
            if unknown:
                raise InvalidArgumentError(f"unknown KV geometry keys {sorted(unknown)}; allowed: {sorted(allowed)}.")
            return cls(**dict(value))
        raise InvalidArgumentTypeError(
            f"kv_geometry must be a KVGeometry or a dict of its fields; got {type(value).__name__}."
        )


DEFAULT_KV_GEOMETRY = KVGeometry()
