"""The Kunlun provider (defined in :mod:`sagellm_backend.vendors.kunlun`)."""

from ..vendors.kunlun import KUNLUN, KunlunBackendProvider, create_kunlun_backend, detect_kunlun

__all__ = ["KUNLUN", "KunlunBackendProvider", "create_kunlun_backend", "detect_kunlun"]
