"""Which attention backends exist, which can be selected here, and creating one by name.

Both backends need torch only: ``sdpa`` (cache-less, ``supports_paged_attention=False``, the default for
every provider) and ``paged`` (own KV-cache ops; Triton kernels on CUDA when Triton imports, torch elsewhere).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from ..errors import InvalidArgumentError, InvalidArgumentTypeError, UnavailableError
from .base import AttentionBackend

__all__ = [
    "ATTENTION_BACKEND_ALIASES",
    "ATTENTION_BACKEND_NAMES",
    "DEFAULT_ATTENTION_BACKEND",
    "create_attention_backend",
    "get_attention_backend_availability",
    "is_attention_backend_available",
    "supported_attention_backends",
]

#: Registered backend names, default first.
ATTENTION_BACKEND_NAMES: tuple[str, ...] = ("sdpa", "paged")
#: Name every provider gets when it asks for no name.
DEFAULT_ATTENTION_BACKEND = "sdpa"
#: Other accepted spellings.
ATTENTION_BACKEND_ALIASES: dict[str, str] = {
    "default": "sdpa",
    "torch": "sdpa",
    "torch_sdpa": "sdpa",
    "paged_attention": "paged",
    "paged-attention": "paged",
}


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _canonical(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidArgumentTypeError(f"attention backend name must be a str; got {type(name).__name__}.")
    key = name.strip().lower()
    key = ATTENTION_BACKEND_ALIASES.get(key, key)
    if key not in ATTENTION_BACKEND_NAMES:
        raise InvalidArgumentError(
            f"unknown attention backend {name!r}; known: {list(ATTENTION_BACKEND_NAMES)} "
            f"(aliases {sorted(ATTENTION_BACKEND_ALIASES)})."
        )
    return key


def get_attention_backend_availability() -> dict[str, dict[str, Any]]:
    """Every registered backend with whether it can be selected here, and why not.

    Nothing heavy is imported (module specs only; no CUDA initialisation).

    Returns:
        ``{name: {"registered", "selectable", "unavailable_reason", "supports_paged_attention",
        "implementations", "aliases"}}``.
    """
    torch_ok = _has("torch")
    reason = None if torch_ok else "torch is not installed (pip install 'isagellm-backend[torch]')"
    aliases = {n: sorted(a for a, c in ATTENTION_BACKEND_ALIASES.items() if c == n) for n in ATTENTION_BACKEND_NAMES}
    return {
        "sdpa": {
            "registered": True,
            "selectable": torch_ok,
            "unavailable_reason": reason,
            "supports_paged_attention": False,
            "implementations": ["torch"],
            "aliases": aliases["sdpa"],
        },
        "paged": {
            "registered": True,
            "selectable": torch_ok,
            "unavailable_reason": reason,
            "supports_paged_attention": True,
            "implementations": ["torch", "triton"] if _has("triton") else ["torch"],
            "aliases": aliases["paged"],
        },
    }


def is_attention_backend_available(name: str) -> bool:
    """Whether ``name`` (or an alias) is registered and selectable here. Never raises.

    Args:
        name: Backend name.

    Returns:
        True if :func:`create_attention_backend` would succeed for it.
    """
    try:
        key = _canonical(name)
    except (InvalidArgumentError, InvalidArgumentTypeError):
        return False
    return bool(get_attention_backend_availability()[key]["selectable"])


def supported_attention_backends(device_type: str) -> list[str]:
    """Names selectable for ``device_type``, the default first (empty without torch).

    Args:
        device_type: ``"cpu"``, ``"cuda"``, ``"npu"`` ... (every torch device runs both backends).

    Returns:
        The backend names.

    Raises:
        InvalidArgumentTypeError: ``device_type`` is not a str.
        InvalidArgumentError: ``device_type`` is empty.
    """
    if not isinstance(device_type, str):
        raise InvalidArgumentTypeError(f"device_type must be a str; got {type(device_type).__name__}.")
    if not device_type.strip():
        raise InvalidArgumentError("device_type must be a non-empty string such as 'cpu' or 'cuda'.")
    avail = get_attention_backend_availability()
    return [n for n in ATTENTION_BACKEND_NAMES if avail[n]["selectable"]]


def create_attention_backend(name: str | None, device_type: str, **kw: Any) -> AttentionBackend:
    """Create the attention backend ``name`` (``None``: :data:`DEFAULT_ATTENTION_BACKEND`).

    Args:
        name: Backend name or alias, or None.
        device_type: The provider's device type.
        **kw: Constructor options (``block_size``, ``device`` ...); an option the backend does not take is an
            ``InvalidArgumentTypeError`` naming the ones it does.

    Returns:
        The backend.

    Raises:
        InvalidArgumentTypeError: ``name``/``device_type`` of the wrong type.
        InvalidArgumentError: Unknown name or empty device type.
        UnavailableError: The backend cannot run here (no torch).
    """
    supported = supported_attention_backends(device_type)
    key = DEFAULT_ATTENTION_BACKEND if name is None else _canonical(name)
    if key not in supported:
        raise UnavailableError(
            f"attention backend {key!r} is not selectable on {device_type!r}: "
            f"{get_attention_backend_availability()[key]['unavailable_reason']}."
        )
    if key == "paged":
        from .paged import PagedAttentionBackend

        return PagedAttentionBackend(**kw)
    from .sdpa import SDPAAttentionBackend

    return SDPAAttentionBackend(**kw)
