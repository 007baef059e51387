"""Where a provider's bytes live and how they move: numpy host (Mock), torch host (CPU), torch
device (every accelerator, parameterised by its vendor spec)."""

from .base import DeviceFacts, Storage

__all__ = ["DeviceFacts", "Storage"]
