"""Compatibility module: the seed release's ``sagellm_backend.base`` import path.

The engine layer imports ``sagellm_backend.base.BackendProvider``; the contract itself lives in
:mod:`sagellm_backend.contract`.
"""

from __future__ import annotations

from .api import BackendProvider, Event, KVBlock, Stream
from .protocol import CapabilityDescriptor, DType, KernelKind

__all__ = ["BackendProvider", "CapabilityDescriptor", "DType", "Event", "KVBlock", "KernelKind", "Stream"]
