"""Block movers, one per storage kind: numpy host, torch host (memcpy engine), torch device, CUDA (Triton)."""

from .base import BlockMover

__all__ = ["BlockMover"]
