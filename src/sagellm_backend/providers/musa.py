"""The MUSA provider (defined in :mod:`sagellm_backend.vendors.musa`)."""

from ..vendors.musa import MUSA, MusaBackendProvider, create_musa_backend, detect_musa

__all__ = ["MUSA", "MusaBackendProvider", "create_musa_backend", "detect_musa"]
