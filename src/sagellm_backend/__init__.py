"""sagellm-backend: the hardware abstraction layer of the sageLLM inference stack.

One API, :class:`BackendProvider`, over CPU, NVIDIA CUDA, AMD ROCm (Instinct GPUs, Hygon DCUs),
Huawei Ascend, Baidu Kunlun, Moore Threads MUSA and a hardware-free Mock. Importing this package
imports neither torch nor any vendor SDK; providers import them when they are detected or created.

Quick start::

    from sagellm_backend import MockBackendProvider, DType

    backend = MockBackendProvider(supported_dtypes=[DType.FP16, DType.BF16], has_collective=True)
    print(backend.capability().supported_dtypes)
    block = backend.kv_block_alloc(128, DType.FP16)

    from sagellm_backend import get_provider
    best = get_provider()            # cuda > rocm > ascend > kunlun > musa > cpu, or $SAGELLM_BACKEND
"""

from __future__ import annotations

import warnings
from typing import Any

from . import providers
from ._version import __version__
from .api import BackendProvider, CommGroup, Communicator, Event, Graph, KVBlock, Stream
from .comm.mock_world import MockWorld
from .compat import DEPRECATED
from .device import Device, format_device_str, normalize_device, parse_device_str
from .errors import (
    BackendError,
    BlockFreedError,
    CollectiveError,
    CommGroupError,
    CommTimeoutError,
    DeviceUnreachableError,
    ForeignBlockError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidBlockError,
    InvalidDeviceError,
    KernelNotFoundError,
    KVTransferError,
    ProviderNotFoundError,
    ResourceExhaustedError,
    StreamError,
    StreamTimeoutError,
    UnavailableError,
    UnsupportedDTypeError,
    UnsupportedOperationError,
)
from .kernels import KernelRegistry, global_kernels, register_kernel
from .kv.geometry import DEFAULT_KV_GEOMETRY, KVGeometry
from .kv.pool import KVCachePool, PoolStats, SwappedBlocks
from .protocol import (
    CapabilityDescriptor,
    CollectiveOp,
    CommBackendType,
    DType,
    ErrorCode,
    KernelKind,
    KVLayout,
    ReduceOp,
    coerce_dtype,
    dtype_bits,
)
from .providers import *  # noqa: F403  (the built-in providers, their factories, their config)
from .registry import (
    available_providers,
    get_provider,
    list_providers,
    provider_registry,
    refresh_providers,
    register_provider,
)

__all__: list[str] = [
    "DEFAULT_KV_GEOMETRY",
    "BackendError",
    "BackendProvider",
    "BlockFreedError",
    "CapabilityDescriptor",
    "CollectiveError",
    "CollectiveOp",
    "CommBackendType",
    "CommGroup",
    "CommGroupError",
    "CommTimeoutError",
    "Communicator",
    "DType",
    "Device",
    "DeviceUnreachableError",
    "ErrorCode",
    "Event",
    "ForeignBlockError",
    "Graph",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "InvalidBlockError",
    "InvalidDeviceError",
    "KVBlock",
    "KVCachePool",
    "KVGeometry",
    "KVLayout",
    "KVTransferError",
    "KernelKind",
    "KernelNotFoundError",
    "KernelRegistry",
    "MockWorld",
    "PoolStats",
    "ProviderNotFoundError",
    "ReduceOp",
    "ResourceExhaustedError",
    "Stream",
    "StreamError",
    "StreamTimeoutError",
    "SwappedBlocks",
    "UnavailableError",
    "UnsupportedDTypeError",
    "UnsupportedOperationError",
    "__version__",
    "available_providers",
    "coerce_dtype",
    "dtype_bits",
    "format_device_str",
    "get_provider",
    "global_kernels",
    "list_providers",
    "normalize_device",
    "parse_device_str",
    "provider_registry",
    "refresh_providers",
    "register_kernel",
    "register_provider",
]
__all__ += providers.__all__


def __getattr__(name: str) -> Any:
    if name in DEPRECATED:
        target, new = DEPRECATED[name]
        warnings.warn(
            f"sagellm_backend.{name} is deprecated; use sagellm_backend.{new} (same object).",
            FutureWarning,
            stacklevel=2,
        )
        return target
    raise AttributeError(f"module 'sagellm_backend' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, *DEPRECATED])
