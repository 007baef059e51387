"""The Ascend provider (defined in :mod:`sagellm_backend.vendors.ascend`)."""

from ..vendors.ascend import ASCEND, AscendBackendProvider, ascend_native_dtypes, create_ascend_backend, detect_ascend

__all__ = ["ASCEND", "AscendBackendProvider", "ascend_native_dtypes", "create_ascend_backend", "detect_ascend"]
