"""The seed release's ``sagellm_backend.capability`` module: the protocol's capability types."""

from .protocol import CapabilityDescriptor, DType, KernelKind

__all__ = ["CapabilityDescriptor", "DType", "KernelKind"]
