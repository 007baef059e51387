"""Provider configuration and availability (defined in :mod:`sagellm_backend.core.config`)."""

from ..core.config import Availability, ProviderConfig, ProviderFactory, provider_factory

__all__ = ["Availability", "ProviderConfig", "ProviderFactory", "provider_factory"]
