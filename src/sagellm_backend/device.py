"""The one device normaliser: every device-like argument in this package passes through it.

Accepted spellings: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"npu:0"``, ``"xpu:0"``, ``"mock:0"``,
a :class:`Device`, a ``torch.device`` (read by duck typing, so torch is never imported here), or a
bare ``int`` ordinal when the caller says which device type it means.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidArgumentTypeError, InvalidDeviceError

__all__ = ["KNOWN_DEVICE_TYPES", "Device", "format_device_str", "normalize_device", "parse_device_str"]

#: Device types this package knows. ``cuda`` also covers AMD GPUs and Hygon DCUs (ROCm builds of
#: torch serve them through torch.cuda); ``npu`` is Ascend (torch_npu); ``musa`` is Moore Threads
#: (torch_musa); ``xpu`` is the protocol's name for XPU-class accelerators; ``mock`` is the
#: hardware-free Mock provider's device.
KNOWN_DEVICE_TYPES: tuple[str, ...] = ("cpu", "cuda", "npu", "musa", "xpu", "mock")

_ROCM_HINT = "cuda (ROCm builds of torch serve AMD GPUs and Hygon DCUs through torch.cuda)"

_HINTS = {
    "gpu": "cuda",
    "nvidia": "cuda",
    "ascend": "npu",
    "hccl": "npu",
    "kunlun": "cuda (Kunlun's XPyTorch exposes its XPUs through torch.cuda)",
    "rocm": _ROCM_HINT,
    "hip": _ROCM_HINT,
    "amd": _ROCM_HINT,
    "dcu": _ROCM_HINT,
    "hygon": _ROCM_HINT,
    "haiguang": _ROCM_HINT,
    "mthreads": "musa",
    "host": "cpu",
}


@dataclass(frozen=True, order=True)
class Device:
    """A device: its type and ordinal. ``str(Device("cuda", 1)) == "cuda:1"``.

    Attributes:
        type: One of :data:`KNOWN_DEVICE_TYPES`.
        index: The ordinal, or ``None`` for "the current one" (and always ``None`` for ``cpu``).
    """

    type: str
    index: int | None = None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def with_index(self, index: int) -> Device:
        """Return this device with ``index`` filled in (cpu stays index-less).

        Args:
            index: The ordinal to use where this device has none.

        Returns:
            The resolved device.
        """
        if self.type == "cpu" or self.index is not None:
            return self
        return Device(self.type, index)


#: The most digits a device index may have: no machine has a billion devices, and Python refuses to convert
#: strings of more than 4,300 digits to an int.
_MAX_INDEX_DIGITS = 9


def _shown(value: object) -> str:
    """``repr(value)``, cut to 60 characters (a hostile string can be megabytes long; an int of more than
    4,300 digits has no repr at all)."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"<an int of {value.bit_length()} bits>"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...{text[-12:]} ({len(text)} characters)"


def _bad(value: object, why: str) -> InvalidDeviceError:
    return InvalidDeviceError(
        f"device {_shown(value)} is not a valid device: {why}. "
        f"Expected 'cpu' or '<type>[:<index>]' with type one of {', '.join(KNOWN_DEVICE_TYPES)} "
        "(e.g. 'cuda:0'), a torch.device, or an int ordinal.",
        device=value,
    )


def normalize_device(value: object, *, default_type: str | None = None) -> Device:
    """Normalise any device-like value to a :class:`Device`.

    Args:
        value: ``"cuda:1"``, ``"cpu"``, a :class:`Device`, a ``torch.device``, or an ``int``.
        default_type: The device type an ``int`` ordinal refers to (the provider's own type).

    Returns:
        The normalised device. ``cpu`` never carries an index.

    Raises:
        InvalidArgumentTypeError: ``value`` is of a type that cannot name a device (``None``,
            ``float`` ...), or an ``int`` is given without ``default_type``.
        InvalidDeviceError: the string is malformed, names an unknown type, or has a negative index or one of
            more than nine digits.
    """
    if isinstance(value, Device):
        return value
    if isinstance(value, bool):
        raise InvalidArgumentTypeError(
            f"device must be a string, int or torch.device; got bool {value!r}. Pass e.g. 'cuda:0' or 0."
        )
    if isinstance(value, int):
        if default_type is None:
            raise InvalidArgumentTypeError(
                f"device ordinal {_shown(value)} is ambiguous here: no device type is implied. "
                "Pass a string such as 'cuda:0'."
            )
        if value < 0:
            raise _bad(value, "the ordinal is negative")
        if value >= 10**_MAX_INDEX_DIGITS:
            raise _bad(value, f"the ordinal has more than {_MAX_INDEX_DIGITS} digits")
        return Device(default_type, None if default_type == "cpu" else value)
    if not isinstance(value, str):
        dev_type = getattr(value, "type", None)
        if isinstance(dev_type, str) and type(value).__name__ == "device":  # torch.device
            index = getattr(value, "index", None)
            return normalize_device(dev_type if index is None else f"{dev_type}:{index}")
        raise InvalidArgumentTypeError(
            f"device must be a string, int or torch.device; got {type(value).__name__} {value!r}. "
            "Pass e.g. 'cpu' or 'cuda:0'."
        )
    text = value.strip().lower()
    if not text:
        raise _bad(value, "it is empty")
    dev_type, sep, index_text = text.partition(":")
    if dev_type not in KNOWN_DEVICE_TYPES:
        hint = _HINTS.get(dev_type)
        raise _bad(value, f"unknown device type {_shown(dev_type)}" + (f"; did you mean {hint}?" if hint else ""))
    if not sep:
        return Device(dev_type, None)
    if not (index_text.isascii() and index_text.isdigit()):
        raise _bad(value, f"the index {_shown(index_text)} is not a non-negative integer")
    if len(index_text.lstrip("0")) > _MAX_INDEX_DIGITS:
        raise _bad(value, f"the index has {len(index_text)} digits; device ordinals have at most {_MAX_INDEX_DIGITS}")
    index = int(index_text)
    if dev_type == "cpu":
        if index != 0:
            raise _bad(value, "the host has one cpu device; use 'cpu'")
        return Device("cpu", None)
    return Device(dev_type, index)


def parse_device_str(device: str) -> tuple[str, int | None]:
    """Split a protocol device string into type and index: ``"cuda:1"`` -> ``("cuda", 1)``.

    Args:
        device: A device string such as ``"cpu"``, ``"cuda:0"`` or ``"npu:3"``.

    Returns:
        ``(device_type, index)``; index is ``None`` where the string has none.

    Raises:
        InvalidArgumentError: the string is malformed.
    """
    dev = normalize_device(device)
    return dev.type, dev.index


def format_device_str(device_type: str, index: int | None = None) -> str:
    """Join a device type and index into a protocol device string.

    Args:
        device_type: ``"cpu"``, ``"cuda"``, ``"npu"`` ...
        index: Device ordinal, or ``None``.

    Returns:
        ``"cuda:1"`` style string (``"cpu"`` for the host).
    """
    return str(Device(device_type, index))
