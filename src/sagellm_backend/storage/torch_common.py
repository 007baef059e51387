"""Torch facts shared by the torch storages: dtype mapping and byte views.

torch is imported inside functions only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from ..errors import UnsupportedOperationError
from ..protocol import DType

if TYPE_CHECKING:
    import torch

__all__ = ["as_bytes", "storable_dtypes", "torch_dtype"]


def torch_dtype(dtype: DType) -> torch.dtype:
    """The torch storage dtype of a protocol dtype (int4 -> packed ``uint8``).

    Args:
        dtype: Protocol dtype.

    Returns:
        The torch dtype.

    Raises:
        UnsupportedOperationError: fp8 on a torch without ``float8_e4m3fn``.
    """
    import torch

    if dtype is DType.FP8:
        fp8 = getattr(torch, "float8_e4m3fn", None)
        if fp8 is None:
            raise UnsupportedOperationError(
                f"fp8 needs torch.float8_e4m3fn (torch >= 2.1); this torch is {torch.__version__}."
            )
        return cast("torch.dtype", fp8)
    table: dict[DType, torch.dtype] = {
        DType.FP32: torch.float32,
        DType.FP16: torch.float16,
        DType.BF16: torch.bfloat16,
        DType.INT8: torch.int8,
        DType.INT4: torch.uint8,
    }
    return table[dtype]


def storable_dtypes() -> list[DType]:
    """Protocol dtypes this torch can store (fp8 needs ``float8_e4m3fn``).

    Returns:
        The dtypes, protocol order.
    """
    import torch

    return [d for d in DType if d is not DType.FP8 or hasattr(torch, "float8_e4m3fn")]


def as_bytes(t: torch.Tensor) -> torch.Tensor:
    """A flat ``uint8`` view of a contiguous tensor.

    Args:
        t: The tensor.

    Returns:
        Its bytes as a tensor.
    """
    import torch

    return t.reshape(-1).view(torch.uint8)


def read_tensor(data: Any) -> bytes:
    """The bytes of a tensor on any device.

    Args:
        data: The tensor.

    Returns:
        Its bytes.
    """
    if data.device.type != "cpu":
        data = data.to("cpu")
    return bytes(as_bytes(data.contiguous()).numpy().tobytes())


def write_tensor(data: Any, buf: memoryview) -> None:
    """Overwrite a tensor's bytes (synchronously).

    Args:
        data: The tensor.
        buf: Exactly its bytes.
    """
    import torch

    as_bytes(data).copy_(torch.frombuffer(bytearray(buf), dtype=torch.uint8))
