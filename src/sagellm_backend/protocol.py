"""sageLLM Protocol v0.1 types, defined here with the protocol's exact names and values.

The protocol package (``isagellm-protocol``, import name ``sagellm_protocol``) is proprietary and
ships bytecode for one Python version, so this project does not depend on it. Every enum here is a
``str``-mixin enum, exactly like the protocol's: a member compares equal, and hashes equal, to the
protocol member of the same name and value. A ``sagellm_protocol.DType.FP16`` can therefore be
passed anywhere this package expects a :class:`DType`, and it is found in
``capability().supported_dtypes``.

Enum members hash by *name* (the standard :class:`enum.Enum` hash). Do not override it: the
protocol's enums hash the same way, which is what makes cross-package set and dict look-ups work.
Use :func:`coerce_dtype` (or ``DType(value)``) to turn a plain string into a member.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any, TypeVar

from .errors import ErrorCode, InvalidArgumentError, InvalidArgumentTypeError

__all__ = [
    "DEVICE_TYPE_ASCEND",
    "DEVICE_TYPE_CPU",
    "DEVICE_TYPE_CUDA",
    "DEVICE_TYPE_NPU",
    "DEVICE_TYPE_ROCM",
    "DEVICE_TYPE_XPU",
    "CapabilityDescriptor",
    "CollectiveOp",
    "CommBackendType",
    "DType",
    "ErrorCode",
    "KVLayout",
    "KernelKind",
    "ReduceOp",
    "coerce_dtype",
    "coerce_enum",
    "dtype_bits",
]


class DType(str, Enum):
    """Element types of the protocol, in protocol order."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    FP8 = "fp8"
    INT8 = "int8"
    INT4 = "int4"


class KernelKind(str, Enum):
    """Kinds of compute kernel a backend can provide."""

    MATMUL = "matmul"
    ATTENTION = "attention"
    FUSION = "fusion"
    LAYERNORM = "layernorm"
    SOFTMAX = "softmax"


class CollectiveOp(str, Enum):
    """Collective operations (protocol 0.5.x)."""

    ALL_REDUCE = "all_reduce"
    ALL_GATHER = "all_gather"
    REDUCE_SCATTER = "reduce_scatter"
    BROADCAST = "broadcast"
    REDUCE = "reduce"
    ALL_TO_ALL = "all_to_all"
    BARRIER = "barrier"
    SEND = "send"
    RECV = "recv"


class ReduceOp(str, Enum):
    """Reduction operators (protocol 0.5.x)."""

    SUM = "sum"
    MAX = "max"
    MIN = "min"
    PROD = "prod"
    BAND = "band"
    BOR = "bor"
    BXOR = "bxor"
    AVG = "avg"


class CommBackendType(str, Enum):
    """Communication backends (protocol 0.5.x)."""

    NCCL = "nccl"
    HCCL = "hccl"
    GLOO = "gloo"
    MPI = "mpi"
    CUSTOM = "custom"


class KVLayout(str, Enum):
    """Attention tensor layouts: batch, sequence, heads, dim in two orders."""

    BSHD = "bshd"
    BHSD = "bhsd"


DEVICE_TYPE_CPU = "cpu"
DEVICE_TYPE_CUDA = "cuda"
DEVICE_TYPE_NPU = "npu"
DEVICE_TYPE_ASCEND = "ascend"
DEVICE_TYPE_ROCM = "rocm"
DEVICE_TYPE_XPU = "xpu"

_DTYPE_BITS: dict[str, int] = {"fp32": 32, "fp16": 16, "bf16": 16, "fp8": 8, "int8": 8, "int4": 4}

_E = TypeVar("_E", bound=Enum)


def coerce_enum(enum_cls: type[_E], value: object, *, what: str) -> _E:
    """Turn ``value`` (a member, a foreign ``str`` enum of the same value, or a string) into a member.

    Args:
        enum_cls: The target enum class.
        value: What the caller passed.
        what: The argument's name, used in the error message.

    Returns:
        The member of ``enum_cls`` whose value equals ``value``.

    Raises:
        InvalidArgumentTypeError: ``value`` is not a string or string enum.
        InvalidArgumentError: no member has that value.
    """
    if isinstance(value, enum_cls):
        return value
    raw = value.value if isinstance(value, Enum) else value
    if not isinstance(raw, str):
        raise InvalidArgumentTypeError(
            f"{what} must be a {enum_cls.__name__} or its string value; "
            f"got {type(value).__name__} {value!r}. "
            f"Use one of: {', '.join(repr(m.value) for m in enum_cls)}."
        )
    try:
        return enum_cls(raw.lower())
    except ValueError:
        raise InvalidArgumentError(
            f"{what} {raw!r} is not a {enum_cls.__name__}. Use one of: {', '.join(repr(m.value) for m in enum_cls)}."
        ) from None


def coerce_dtype(value: object) -> DType:
    """Return the :class:`DType` for ``value`` (a member, a protocol member, or ``"fp16"`` etc.).

    Args:
        value: A dtype in any accepted spelling.

    Returns:
        The matching :class:`DType`.

    Raises:
        InvalidArgumentTypeError: ``value`` is not a string or string enum.
        InvalidArgumentError: unknown dtype name.
    """
    return coerce_enum(DType, value, what="dtype")


def dtype_bits(dtype: object) -> int:
    """Bits per element of a protocol dtype (``int4`` is 4, ``fp8`` is 8).

    Args:
        dtype: A :class:`DType` or its string value.

    Returns:
        The element width in bits.
    """
    return _DTYPE_BITS[coerce_dtype(dtype).value]


def _enum_list(values: list[Any]) -> list[Any]:
    return [v.value if isinstance(v, Enum) else v for v in values]


@dataclass
class CapabilityDescriptor:
    """What a backend can do, read from the hardware. Seventeen fields in protocol order.

    The first fourteen are protocol 0.1.x's; ``supported_collectives``, ``has_kv_block_copy`` and
    ``has_kv_block_migrate`` were added by 0.5.x before ``max_memory_mb``.
    """

    device_name: str | None = None
    device_type: str = "unknown"
    compute_capability: str | None = None
    total_memory_bytes: int | None = None
    available_memory_bytes: int | None = None
    supported_dtypes: list[DType] = field(default_factory=list)
    supported_kernels: list[KernelKind] = field(default_factory=list)
    has_stream: bool = False
    has_event: bool = False
    has_collective: bool = False
    has_graph_exec: bool = False
    supported_collectives: list[str] = field(default_factory=list)
    has_kv_block_copy: bool = False
    has_kv_block_migrate: bool = False
    max_memory_mb: int | None = None
    max_batch_size: int | None = None
    max_sequence_length: int | None = None

    def supports_dtype(self, dtype: object) -> bool:
        """Whether ``dtype`` (any accepted spelling, protocol enums included) is supported.

        Args:
            dtype: The dtype to look for.

        Returns:
            True when it is in ``supported_dtypes``.
        """
        return coerce_dtype(dtype) in self.supported_dtypes

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict, enums as their string values, fields in protocol order.

        Returns:
            The descriptor as a dict.
        """
        out = asdict(self)
        for f in fields(self):
            if isinstance(out[f.name], list):
                out[f.name] = _enum_list(out[f.name])
        return out
