"""The attention-backend interface and the per-step metadata the engine hands to it.

Torch is imported only where a tensor has to be made or inspected, so importing this module is free.
"""

from __future__ import annotations

import inspect
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgumentError, InvalidArgumentTypeError

if TYPE_CHECKING:
    import torch

__all__ = [
    "ATTENTION_TYPES",
    "AttentionBackend",
    "AttentionMetadata",
    "check_device",
    "int_list",
    "int_tensor",
    "positive_int",
    "reject_unknown_options",
]

#: Values of :attr:`AttentionMetadata.attn_type`. ``decoder`` is causal; the encoder kinds attend both ways.
ATTENTION_TYPES: tuple[str, ...] = ("decoder", "encoder", "encoder_only", "encoder_decoder")


def positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is an ``int`` (not ``bool``) > 0.

    Args:
        name: Argument name for the message.
        value: The value to check.

    Returns:
        The value.

    Raises:
        InvalidArgumentTypeError: Not an int.
        InvalidArgumentError: Not positive.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentTypeError(f"{name} must be an int; got {type(value).__name__} ({value!r}).")
    if value <= 0:
        raise InvalidArgumentError(f"{name} must be > 0; got {value}.")
    return value


def int_list(name: str, value: object, *, minimum: int = 0) -> list[int]:
    """Read a list/tuple/range/numpy array/1-D tensor of ints, each ``>= minimum``, as ``list[int]``.

    Args:
        name: Argument name for the messages.
        value: The sequence.
        minimum: Smallest allowed element.

    Returns:
        The elements as Python ints.

    Raises:
        InvalidArgumentTypeError: Not a sequence of ints (floats and bools are refused).
        InvalidArgumentError: An element is below ``minimum``.
    """
    if isinstance(value, (str, bytes)) or not (isinstance(value, Sequence) or hasattr(value, "tolist")):
        raise InvalidArgumentTypeError(f"{name} must be a sequence of ints; got {type(value).__name__}.")
    dtype = getattr(value, "dtype", None)
    if dtype is not None and any(kind in str(dtype) for kind in ("float", "complex", "bool")):
        raise InvalidArgumentTypeError(f"{name} must hold integers; got an array of dtype {dtype}.")
    tolist = getattr(value, "tolist", None)
    raw = tolist() if tolist is not None else list(value)  # type: ignore[call-overload]  # a Sequence here
    try:
        if not isinstance(raw, list) or any(isinstance(x, bool) for x in raw):
            raise TypeError
        items = [operator.index(x) for x in raw]
    except TypeError:
        raise InvalidArgumentTypeError(f"{name} must be a flat sequence of ints; got {value!r}.") from None
    bad = [x for x in items if x < minimum]
    if bad:
        raise InvalidArgumentError(f"{name} entries must be >= {minimum}; got {bad[:4]} in {items[:16]}.")
    return items


def reject_unknown_options(fn: Callable[..., object], options: dict[str, object]) -> None:
    """Refuse options that ``fn`` would not honour (what its ``**options`` catch-all collected).

    Args:
        fn: The constructor or function taking the options; its named parameters are the accepted ones.
        options: The options it does not take; empty when all were known.

    Raises:
        InvalidArgumentTypeError: ``options`` is not empty; the message names them and the accepted ones.
    """
    if not options:
        return
    params = inspect.signature(fn).parameters.values()
    accepted = [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    owner = fn.__qualname__.removesuffix(".__init__")
    raise InvalidArgumentTypeError(
        f"{owner} does not take {sorted(options)}; it accepts {', '.join(accepted) or 'no options'}."
    )


def _optional_positive(name: str, value: object) -> int | None:
    return None if value is None else positive_int(name, value)


def check_device(device: object) -> None:
    """Accept a non-empty str or a ``torch.device`` (recognised without importing torch).

    Args:
        device: The device argument.

    Raises:
        InvalidArgumentTypeError: Neither a str nor a torch.device.
        InvalidArgumentError: An empty string.
    """
    if isinstance(device, str):
        if not device:
            raise InvalidArgumentError("device must be a non-empty string such as 'cpu' or 'cuda:0'.")
        return
    if type(device).__name__ != "device" or not type(device).__module__.startswith("torch"):
        raise InvalidArgumentTypeError(f"device must be a str or torch.device; got {type(device).__name__}.")


def int_tensor(name: str, value: object, ndim: int, device: object) -> torch.Tensor:
    """An integer tensor of rank ``ndim`` kept as given, or a (nested, ragged: zero-padded) sequence as int64.

    Args:
        name: Argument name for the messages.
        value: Tensor, list of ints (``ndim == 1``) or list of lists of ints (``ndim == 2``).
        ndim: Required rank.
        device: Where a converted sequence is placed.

    Returns:
        The tensor.

    Raises:
        InvalidArgumentTypeError: Not integers.
        InvalidArgumentError: Wrong rank.
    """
    import torch

    if isinstance(value, torch.Tensor):
        if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
            raise InvalidArgumentTypeError(f"{name} must be an integer tensor; got dtype {value.dtype}.")
        if value.dim() != ndim:
            raise InvalidArgumentError(f"{name} must be {ndim}-D; got shape {tuple(value.shape)}.")
        return value
    if ndim == 1:
        return torch.tensor(int_list(name, value, minimum=-(2**62)), dtype=torch.int64, device=str(device))
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidArgumentTypeError(f"{name} must be a 2-D integer tensor or a list of lists; got {value!r}.")
    rows = [int_list(f"{name}[{i}]", r, minimum=-(2**62)) for i, r in enumerate(value)]
    width = max((len(r) for r in rows), default=0)
    return torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.int64, device=str(device))


@dataclass
class AttentionMetadata:
    """What one attention call needs to know about the batch; the same object serves every layer of a step.

    Build it with :meth:`for_prefill` or :meth:`for_decode` (or a :class:`PagedAttentionMetadataBuilder`).
    Derived counts left at ``-1`` are filled in from the lengths.

    Attributes:
        is_prefill: Prefill (packed prompt chunks) or decode (one new token per sequence).
        seq_lens: New tokens per sequence (decode: all 1).
        context_lens: Decode: tokens already cached per sequence (the new token is at that position).
        block_tables: ``[num_seqs, max_blocks]`` integer tensor of KV-cache block ids, or ``None``.
        slot_mapping: ``[num_tokens]`` integer tensor: the cache slot of each new token (negative = skip).
        block_size: Tokens per KV block, if known.
        num_kv_heads: KV heads, if known.
        head_dim: Head dimension, if known.
        max_seq_len: Longest sequence including cached tokens.
        num_tokens: New tokens in the batch (``sum(seq_lens)``).
        num_prefill_tokens: New prefill tokens.
        num_decode_tokens: New decode tokens.
        attn_type: One of :data:`ATTENTION_TYPES`.
        device: Device of the metadata's tensors (``torch.device`` or str).
        cached_lens: Prefill: tokens already cached per sequence before this chunk (chunked prefill); zeros.
    """

    is_prefill: bool
    seq_lens: list[int]
    context_lens: list[int] | None = None
    block_tables: torch.Tensor | None = None
    slot_mapping: torch.Tensor | None = None
    block_size: int | None = None
    num_kv_heads: int | None = None
    head_dim: int | None = None
    max_seq_len: int = -1
    num_tokens: int = -1
    num_prefill_tokens: int = -1
    num_decode_tokens: int = -1
    attn_type: str = "decoder"
    device: torch.device | str = "cpu"
    cached_lens: list[int] | None = None
    #: Validated paged plans of this step, under their memo keys (:mod:`.paged_plan`). Owned by the backends;
    #: engines do not touch it.
    step_plans: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    #: Each paged backend's decode fast path on this step: ``(id(backend), "ready")`` once a call succeeded,
    #: ``(id(backend), "pending")`` while its call runs. Owned by the backends; engines do not touch it.
    step_fast_paths: dict[tuple[int, str], Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.is_prefill, bool):
            raise InvalidArgumentTypeError(f"is_prefill must be a bool; got {type(self.is_prefill).__name__}.")
        check_device(self.device)
        self.seq_lens = int_list("seq_lens", self.seq_lens)
        n = len(self.seq_lens)
        if self.context_lens is not None:
            self.context_lens = int_list("context_lens", self.context_lens)
            if len(self.context_lens) != n:
                raise InvalidArgumentError(
                    f"context_lens has {len(self.context_lens)} entries but seq_lens has {n}; give one per sequence."
                )
        self.cached_lens = [0] * n if self.cached_lens is None else int_list("cached_lens", self.cached_lens)
        if len(self.cached_lens) != n:
            raise InvalidArgumentError(f"cached_lens has {len(self.cached_lens)} entries; expected {n} (one per seq).")
        if not self.is_prefill:
            if self.context_lens is None:
                raise InvalidArgumentError("decode metadata needs context_lens (tokens cached per sequence).")
            if any(x != 1 for x in self.seq_lens):
                raise InvalidArgumentError(f"decode has one new token per sequence; got seq_lens={self.seq_lens[:16]}.")
            if any(self.cached_lens):
                raise InvalidArgumentError("cached_lens is for prefill; decode uses context_lens.")
        if self.block_tables is not None:
            self.block_tables = int_tensor("block_tables", self.block_tables, 2, self.device)
            if self.block_tables.shape[0] != n:
                raise InvalidArgumentError(
                    f"block_tables has {self.block_tables.shape[0]} rows but there are {n} sequences."
                )
        if self.slot_mapping is not None:
            self.slot_mapping = int_tensor("slot_mapping", self.slot_mapping, 1, self.device)
        self.block_size = _optional_positive("block_size", self.block_size)
        self.num_kv_heads = _optional_positive("num_kv_heads", self.num_kv_heads)
        self.head_dim = _optional_positive("head_dim", self.head_dim)
        if not isinstance(self.attn_type, str) or self.attn_type not in ATTENTION_TYPES:
            raise InvalidArgumentError(f"attn_type must be one of {ATTENTION_TYPES}; got {self.attn_type!r}.")
        self._derive()

    def _derive(self) -> None:
        total = sum(self.seq_lens)
        if self.is_prefill:
            assert self.cached_lens is not None  # set in __post_init__
            longest = max((c + s for c, s in zip(self.cached_lens, self.seq_lens)), default=0)
        else:
            assert self.context_lens is not None  # checked in __post_init__
            longest = max(self.context_lens, default=-1) + 1
        derived = {
            "max_seq_len": longest,
            "num_tokens": total,
            "num_prefill_tokens": total if self.is_prefill else 0,
            "num_decode_tokens": 0 if self.is_prefill else total,
        }
        for name, value in derived.items():
            given = getattr(self, name)
            if isinstance(given, bool) or not isinstance(given, int):
                raise InvalidArgumentTypeError(f"{name} must be an int; got {type(given).__name__}.")
            if given == -1:
                setattr(self, name, value)
            elif given < 0:
                raise InvalidArgumentError(f"{name} must be >= 0 (or -1 to derive it); got {given}.")

    @property
    def num_seqs(self) -> int:
        """Number of sequences in the batch."""
        return len(self.seq_lens)

    @classmethod
    def for_prefill(cls, seq_lens: Sequence[int], device: torch.device | str = "cpu", **kw: Any) -> AttentionMetadata:
        """Metadata of a prefill step over packed sequences of ``seq_lens`` new tokens.

        Args:
            seq_lens: New tokens per sequence.
            device: Device of the metadata's tensors.
            **kw: Any other field (``block_tables``, ``slot_mapping``, ``block_size``, ``num_kv_heads``,
                ``head_dim``, ``cached_lens`` ...).

        Returns:
            Metadata with ``is_prefill=True``.

        Raises:
            InvalidArgumentTypeError: A field has the wrong type.
            InvalidArgumentError: A field has a bad value or the fields disagree.
        """
        kw.pop("is_prefill", None)
        return cls(is_prefill=True, seq_lens=seq_lens, device=device, **kw)  # type: ignore[arg-type]  # converted in __post_init__

    @classmethod
    def for_decode(
        cls,
        context_lens: Sequence[int],
        block_tables: torch.Tensor | Sequence[Sequence[int]] | None,
        device: torch.device | str = "cpu",
        **kw: Any,
    ) -> AttentionMetadata:
        """Metadata of a decode step: one new token per sequence, at position ``context_lens[i]``.

        Args:
            context_lens: Tokens already cached per sequence.
            block_tables: ``[num_seqs, max_blocks]`` block ids (tensor, or lists zero-padded to a tensor), or None.
            device: Device of the metadata's tensors.
            **kw: Any other field (``slot_mapping``, ``block_size``, ``num_kv_heads``, ``head_dim`` ...).

        Returns:
            Metadata with ``is_prefill=False`` and ``seq_lens == [1] * len(context_lens)``.

        Raises:
            InvalidArgumentTypeError: A field has the wrong type.
            InvalidArgumentError: A field has a bad value or the fields disagree.
        """
        kw.pop("is_prefill", None)
        lens = int_list("context_lens", context_lens)
        kw.setdefault("seq_lens", [1] * len(lens))
        return cls(is_prefill=False, context_lens=lens, block_tables=block_tables, device=device, **kw)  # type: ignore[arg-type]  # lists are converted in __post_init__


class AttentionBackend(ABC):
    """One attention implementation. ``forward`` maps packed ``q [T,Hq,D]``, ``k, v [T,Hkv,D]`` to ``[T,Hq,D]``."""

    @property
    @abstractmethod
    def name(self) -> str:
        """Non-empty backend name (e.g. ``"sdpa"``, ``"paged"``)."""

    @property
    def supports_paged_attention(self) -> bool:
        """Whether ``forward`` reads and writes a paged KV cache."""
        return False

    @abstractmethod
    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_metadata: AttentionMetadata, *,
        kv_cache: tuple[torch.Tensor, torch.Tensor] | None = None, scale: float | None = None,
        attn_mask: torch.Tensor | None = None, output: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """Attention of one layer for one step.

        Args:
            query: ``[T, Hq, D]``.
            key: ``[T, Hkv, D]`` (the new tokens' keys).
            value: ``[T, Hkv, D]``.
            attn_metadata: The step's metadata.
            kv_cache: ``(K, V)`` caches of :meth:`get_kv_cache_shape`, for paged backends.
            scale: Softmax scale (default ``D ** -0.5``).
            attn_mask: Optional HF-style mask ``[B, 1, q, kv]`` (bool: True = attend).
            output: Optional result buffer (vLLM's ``output``): contiguous ``[T, Hq, D]`` in the query's dtype and
                device, sharing no memory with the inputs or the caches.

        Returns:
            ``[T, Hq, D]`` in the query's dtype (``output`` when given).
        """

    def get_kv_cache_shape(
        self, *, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int
    ) -> tuple[int, ...]:
        """Shape of one layer's K (and of its V) cache.

        Args:
            num_blocks: Blocks in the cache.
            block_size: Tokens per block.
            num_kv_heads: KV heads.
            head_dim: Head dimension.

        Returns:
            ``(num_blocks, block_size, num_kv_heads, head_dim)``.

        Raises:
            InvalidArgumentTypeError: An argument is not an int.
            InvalidArgumentError: An argument is not positive.
        """
        return (
            positive_int("num_blocks", num_blocks),
            positive_int("block_size", block_size),
            positive_int("num_kv_heads", num_kv_heads),
            positive_int("head_dim", head_dim),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, supports_paged_attention={self.supports_paged_attention})"
