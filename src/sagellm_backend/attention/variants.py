"""The attention variants a backend is built with (vLLM's ``AttentionImpl`` names), checked once, and the keyword
options of the paged ops that carry them (:class:`PagedOptions`).

``sliding_window`` (tokens), ``logits_soft_cap`` (float) and ``alibi_slopes`` (``[num_heads]``); their meaning is
defined in :mod:`.reference`. The slopes are copied to each device once, so calls (and captured graphs) reuse
one device tensor.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from ..errors import InvalidArgumentError, InvalidArgumentTypeError

if TYPE_CHECKING:
    import torch

__all__ = ["AttentionVariants", "PagedOptions", "paged_options"]


class PagedOptions(TypedDict, total=False):
    """The keyword options of ``paged_decode`` and ``paged_prefill`` (the op interface of :mod:`.testing`; an op set
    takes those its row in :mod:`.registry` declares); absent or None: not used.

    Attributes:
        sliding_window: Keys per window (:mod:`.reference`).
        logits_soft_cap: Soft cap of the scaled scores.
        alibi_slopes: ``[Hq]`` ALiBi slopes (float32) on the query's device.
        k_scale: An fp8 cache's key scales, 1 or ``Hkv`` float32 elements: keys are read as ``stored * k_scale``.
        v_scale: Same for values.
    """

    sliding_window: int | None
    logits_soft_cap: float | None
    alibi_slopes: torch.Tensor | None
    k_scale: torch.Tensor | None
    v_scale: torch.Tensor | None


def paged_options(
    op: str, options: PagedOptions
) -> tuple[int | None, float | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """The options of one op call, in :class:`PagedOptions`' order (None where absent).

    Args:
        op: The op's name, for the message.
        options: The call's keyword options.

    Returns:
        ``(sliding_window, logits_soft_cap, alibi_slopes, k_scale, v_scale)``.

    Raises:
        InvalidArgumentTypeError: An option :class:`PagedOptions` does not name.
    """
    if not options.keys() <= PagedOptions.__optional_keys__:
        unknown = sorted(options.keys() - PagedOptions.__optional_keys__)
        raise InvalidArgumentTypeError(
            f"{op} does not take {unknown}; it accepts {', '.join(PagedOptions.__annotations__)}."
        )
    return (
        options.get("sliding_window"), options.get("logits_soft_cap"), options.get("alibi_slopes"),
        options.get("k_scale"), options.get("v_scale"),
    )  # fmt: skip


class AttentionVariants:
    """Checked variant options.

    Args:
        sliding_window: Keys each query sees (itself and the ``sliding_window - 1`` before it), or None.
        logits_soft_cap: ``cap`` of ``cap * tanh(score / cap)``, > 0; None or 0 (vLLM's "off") for none.
        alibi_slopes: ``[num_heads]`` finite slopes (a float tensor or a sequence of numbers), or None.

    Raises:
        InvalidArgumentTypeError: An option of the wrong type.
        InvalidArgumentError: A window < 1, a negative or non-finite cap, slopes not 1-D, empty or not finite.
    """

    def __init__(
        self, sliding_window: object = None, logits_soft_cap: object = None, alibi_slopes: object = None
    ) -> None:
        self.sliding_window = _window(sliding_window)
        self.logits_soft_cap = _cap(logits_soft_cap)
        self.alibi_slopes = None if alibi_slopes is None else _slopes(alibi_slopes)
        active = (("sliding_window", self.sliding_window), ("logits_soft_cap", self.logits_soft_cap))
        names = {n for n, v in active if v is not None}
        if self.alibi_slopes is not None:
            names.add("alibi_slopes")
        self.names: frozenset[str] = frozenset(names)
        self._on_device: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()
        self._frozen = True

    def __setattr__(self, name: str, value: object) -> None:
        """Refuse to change an option after construction (a backend's decode fast path and its bound launches keep
        the options they were made with): make a new ``AttentionVariants`` instead.

        Raises:
            AttributeError: After construction.
        """
        if getattr(self, "_frozen", False):
            raise AttributeError(
                f"AttentionVariants options are fixed once made; build a new AttentionVariants to change {name!r}."
            )
        object.__setattr__(self, name, value)

    def op_kwargs(self, num_heads: int, device: torch.device) -> dict[str, Any]:
        """The keyword arguments of the ops for this call (only the variants in use).

        Args:
            num_heads: Query heads of the call.
            device: The query's device.

        Returns:
            ``{"sliding_window": ..., "logits_soft_cap": ..., "alibi_slopes": float32 [Hq] on device}``.

        Raises:
            InvalidArgumentError: ``alibi_slopes`` has another length than ``num_heads``.
        """
        kw: dict[str, Any] = {}
        if self.sliding_window is not None:
            kw["sliding_window"] = self.sliding_window
        if self.logits_soft_cap is not None:
            kw["logits_soft_cap"] = self.logits_soft_cap
        if self.alibi_slopes is not None:
            if self.alibi_slopes.shape[0] != num_heads:
                raise InvalidArgumentError(
                    f"alibi_slopes has {self.alibi_slopes.shape[0]} entries but the query has {num_heads} heads; "
                    "give one slope per query head."
                )
            key = str(device)
            slopes = self._on_device.get(key)
            if slopes is None:
                with self._lock:
                    slopes = self._on_device.setdefault(key, self.alibi_slopes.to(device))
            kw["alibi_slopes"] = slopes
        return kw

    def __repr__(self) -> str:
        slopes = None if self.alibi_slopes is None else self.alibi_slopes.tolist()
        return (
            f"AttentionVariants(sliding_window={self.sliding_window}, logits_soft_cap={self.logits_soft_cap}, "
            f"alibi_slopes={slopes})"
        )


def _window(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentTypeError(f"sliding_window must be an int (tokens) or None; got {type(value).__name__}.")
    if value < 1:
        raise InvalidArgumentError(f"sliding_window must be >= 1 token (or None for no window); got {value}.")
    return value


def _cap(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgumentTypeError(f"logits_soft_cap must be a float or None; got {type(value).__name__}.")
    if not math.isfinite(value) or value < 0:
        raise InvalidArgumentError(f"logits_soft_cap must be a finite number >= 0 (0 or None: no cap); got {value}.")
    return float(value) if value > 0 else None


def _slopes(value: object) -> torch.Tensor:
    import torch

    if isinstance(value, torch.Tensor):
        if not value.dtype.is_floating_point:
            raise InvalidArgumentTypeError(f"alibi_slopes must be a float tensor; got dtype {value.dtype}.")
        t = value.detach().to(device="cpu", dtype=torch.float32, copy=True)  # the backend's own: fixed once made
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        if any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in value):
            raise InvalidArgumentTypeError(f"alibi_slopes must hold numbers; got {list(value)[:8]!r}.")
        t = torch.tensor([float(x) for x in value], dtype=torch.float32)
    else:
        raise InvalidArgumentTypeError(
            f"alibi_slopes must be a 1-D float tensor or a sequence of floats; got {type(value).__name__}."
        )
    if t.dim() != 1 or t.shape[0] == 0:
        raise InvalidArgumentError(f"alibi_slopes must be 1-D [num_heads] and non-empty; got shape {tuple(t.shape)}.")
    if not bool(torch.isfinite(t).all()):
        raise InvalidArgumentError("alibi_slopes must be finite.")
    return t.contiguous()
