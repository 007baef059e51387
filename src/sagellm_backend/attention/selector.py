"""Which attention backends exist, which can be selected here, and creating one by name.

The backends and what each implementation supports are the rows of :mod:`.registry`: ``sdpa`` (cache-less,
``supports_paged_attention=False``, the default for every provider) and ``paged`` (own KV-cache ops; Triton
kernels on CUDA, torch elsewhere).
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidArgumentError, InvalidArgumentTypeError, UnavailableError
from .base import AttentionBackend
from .registry import ATTENTION_BACKENDS, impls_of

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
ATTENTION_BACKEND_NAMES: tuple[str, ...] = tuple(b.name for b in ATTENTION_BACKENDS)
#: Name every provider gets when it asks for no name.
DEFAULT_ATTENTION_BACKEND = ATTENTION_BACKEND_NAMES[0]
#: Other accepted spellings.
ATTENTION_BACKEND_ALIASES: dict[str, str] = {a: b.name for b in ATTENTION_BACKENDS for a in b.aliases}


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


def _runs_on(backend: str, device_type: str | None) -> tuple[list[str], str | None]:
    """The implementations of ``backend`` installed here (and covering ``device_type``), and why none."""
    usable, reasons = [], []
    for impl in impls_of(backend):
        reason = impl.installed()
        if reason is None and device_type is not None and "*" not in impl.devices and device_type not in impl.devices:
            reason = f"runs on {list(impl.devices)}"
        if reason is None:
            usable.append(impl.name)
        else:
            reasons.append(f"{impl.name}: {reason}")
    if usable:
        return usable, None
    hint = " (pip install 'isagellm-backend[torch]')" if any("torch" in r for r in reasons) else ""
    return [], "; ".join(reasons) + hint


def get_attention_backend_availability() -> dict[str, dict[str, Any]]:
    """Every registered backend with whether it can be selected here, and why not.

    Nothing heavy is imported (module specs only; no CUDA initialisation).

    Returns:
        ``{name: {"registered", "selectable", "unavailable_reason", "supports_paged_attention",
        "implementations", "aliases"}}``; ``implementations`` are those installed here, by priority.
    """
    result: dict[str, dict[str, Any]] = {}
    for row in ATTENTION_BACKENDS:
        usable, reason = _runs_on(row.name, None)
        result[row.name] = {
            "registered": True,
            "selectable": bool(usable),
            "unavailable_reason": reason,
            "supports_paged_attention": row.supports_paged_attention,
            "implementations": usable,
            "aliases": sorted(row.aliases),
        }
    return result


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


def _check_device_type(device_type: object) -> str:
    if not isinstance(device_type, str):
        raise InvalidArgumentTypeError(f"device_type must be a str; got {type(device_type).__name__}.")
    if not device_type.strip():
        raise InvalidArgumentError("device_type must be a non-empty string such as 'cpu' or 'cuda'.")
    return device_type.strip().lower()


def supported_attention_backends(device_type: str) -> list[str]:
    """Names selectable for ``device_type``, the default first (empty without torch).

    Args:
        device_type: ``"cpu"``, ``"cuda"``, ``"npu"`` ...: a backend is listed when one of its installed
            implementations runs on that device type.

    Returns:
        The backend names.

    Raises:
        InvalidArgumentTypeError: ``device_type`` is not a str.
        InvalidArgumentError: ``device_type`` is empty.
    """
    dev = _check_device_type(device_type)
    return [n for n in ATTENTION_BACKEND_NAMES if _runs_on(n, dev)[0]]


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
        InvalidArgumentTypeError: ``name``/``device_type`` of the wrong type, or an option the backend does not take.
        InvalidArgumentError: Unknown name or empty device type.
        UnavailableError: The backend cannot run here (no torch).
    """
    dev = _check_device_type(device_type)
    key = DEFAULT_ATTENTION_BACKEND if name is None else _canonical(name)
    usable, reason = _runs_on(key, dev)
    if not usable:
        raise UnavailableError(f"attention backend {key!r} is not selectable on {device_type!r}: {reason}.")
    cls = next(b for b in ATTENTION_BACKENDS if b.name == key).load_class()
    backend: AttentionBackend = cls(**kw)
    return backend
