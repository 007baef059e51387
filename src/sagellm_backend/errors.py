"""Typed errors and the protocol's :class:`ErrorCode` (re-exported by :mod:`~sagellm_backend.protocol`),
which every error carries.

Each class also derives from the built-in exception Python users expect for that failure
(``ValueError`` for bad values, ``TypeError`` for wrong types, ``MemoryError`` for exhaustion,
``TimeoutError`` for timeouts, ``KeyError`` for missing kernels, ``NotImplementedError`` for
operations a backend cannot do), so ``except ValueError`` keeps working.

Messages follow one rule: what was wrong, what was found, and how to fix it. Every operation
that raises one of these leaves the provider's state as it was before the call.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, ClassVar

__all__ = [
    "BackendError",
    "BlockFreedError",
    "CollectiveError",
    "CommGroupError",
    "CommTimeoutError",
    "DeviceUnreachableError",
    "ErrorCode",
    "ForeignBlockError",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "InvalidBlockError",
    "InvalidDeviceError",
    "KVTransferError",
    "KernelNotFoundError",
    "ProviderNotFoundError",
    "ResourceExhaustedError",
    "StreamError",
    "StreamTimeoutError",
    "UnavailableError",
    "UnsupportedDTypeError",
    "UnsupportedOperationError",
]


class ErrorCode(str, Enum):
    """Protocol error codes: the nine of 0.1.x, then those 0.5.x added that a backend uses."""

    INVALID_ARGUMENT = "invalid_argument"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    UNAVAILABLE = "unavailable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    NOT_IMPLEMENTED = "not_implemented"
    KV_TRANSFER_FAILED = "kv_transfer_failed"
    COMM_TIMEOUT = "comm_timeout"
    COMM_GROUP_INVALID = "comm_group_invalid"
    DISTRIBUTED_RUNTIME_ERROR = "distributed_runtime_error"
    COMM_BACKEND_NOT_SUPPORTED = "comm_backend_not_supported"
    COMM_RANK_MISMATCH = "comm_rank_mismatch"
    COMM_GROUP_NOT_FOUND = "comm_group_not_found"
    COMM_COLLECTIVE_FAILED = "comm_collective_failed"
    COMM_P2P_FAILED = "comm_p2p_failed"
    OPERATOR_NOT_FOUND = "operator_not_found"
    OPERATOR_REGISTRATION_FAILED = "operator_registration_failed"


class BackendError(Exception):
    """Base of every error this package raises on purpose.

    Attributes:
        code: The protocol error code.
        details: Structured facts about the failure (e.g. requested and available bytes).
    """

    default_code: ClassVar[ErrorCode] = ErrorCode.DISTRIBUTED_RUNTIME_ERROR

    def __init_subclass__(cls, *, code: ErrorCode | None = None, **kwargs: Any) -> None:
        """Set the subclass's :attr:`default_code` from its ``code=`` class argument (else the parent's)."""
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.default_code = code

    def __init__(self, message: str, *, code: ErrorCode | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.code: ErrorCode = code if code is not None else self.default_code
        self.details: dict[str, Any] = details

    def __str__(self) -> str:  # KeyError would otherwise add quotes around the message
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"code", "message", "type", "details"}`` for logs and wire transport.

        Returns:
            A JSON-ready dict.
        """
        return {
            "code": self.code.value,
            "type": type(self).__name__,
            "message": self.message,
            "details": {k: repr(v) for k, v in self.details.items()},
        }


class InvalidArgumentError(BackendError, ValueError, code=ErrorCode.INVALID_ARGUMENT):
    """An argument has the right type but a bad value (negative size, unknown name ...)."""


class InvalidArgumentTypeError(BackendError, TypeError, code=ErrorCode.INVALID_ARGUMENT):
    """An argument has the wrong type (a float where a DType belongs, a list for a tensor ...)."""


class UnsupportedDTypeError(InvalidArgumentError):
    """A valid protocol dtype that this backend or device cannot hold or compute with."""


class InvalidDeviceError(InvalidArgumentError):
    """A device string or index that is malformed or names no device of this machine."""


class DeviceUnreachableError(InvalidArgumentError):
    """A real device that this provider cannot move data to (e.g. ``cuda:0`` from the CPU provider)."""


class InvalidBlockError(InvalidArgumentError):
    """A KV block that this call cannot use."""


class BlockFreedError(InvalidBlockError):
    """The block was already freed (double free, or use after free)."""


class ForeignBlockError(InvalidBlockError):
    """The block belongs to another provider instance."""


class ProviderNotFoundError(InvalidArgumentError):
    """No provider is registered under that name."""


class ResourceExhaustedError(BackendError, MemoryError, code=ErrorCode.RESOURCE_EXHAUSTED):
    """Not enough memory (or free blocks) for the request; nothing was allocated."""


class UnavailableError(BackendError, RuntimeError, code=ErrorCode.UNAVAILABLE):
    """The backend or its hardware/SDK is not available on this machine."""


class UnsupportedOperationError(BackendError, NotImplementedError, code=ErrorCode.NOT_IMPLEMENTED):
    """The operation cannot work on this backend or hardware (e.g. graph capture on CPU)."""


class KVTransferError(BackendError, RuntimeError, code=ErrorCode.KV_TRANSFER_FAILED):
    """Moving KV data failed; the source block is intact."""


class StreamError(KVTransferError):
    """Work enqueued on a stream failed, or was skipped because earlier work on it failed.

    Raised by every wait on work enqueued after the failure (``Stream.synchronize``,
    ``Event.synchronize``, ``Event.elapsed_ms``, ``SwappedBlocks.wait``), chained ``from`` the
    original exception. A :class:`KVTransferError` because the work streams carry is moving KV
    data: an engine that handles failed transfers handles this too.
    """


class StreamTimeoutError(BackendError, TimeoutError, code=ErrorCode.DEADLINE_EXCEEDED):
    """A wait on a stream or event did not finish within its ``timeout``; the work is still queued."""


class CommTimeoutError(BackendError, TimeoutError, code=ErrorCode.COMM_TIMEOUT):
    """A collective's peers did not arrive (or left) within the group's timeout."""


class CommGroupError(BackendError, RuntimeError, code=ErrorCode.COMM_GROUP_INVALID):
    """No process group is set up, or the group/rank arguments do not fit it."""


class CollectiveError(BackendError, RuntimeError, code=ErrorCode.COMM_COLLECTIVE_FAILED):
    """A collective failed: mismatched shapes/dtypes across ranks, a backend error ..."""


class KernelNotFoundError(BackendError, KeyError, code=ErrorCode.OPERATOR_NOT_FOUND):
    """No kernel is registered under that name for this provider."""
