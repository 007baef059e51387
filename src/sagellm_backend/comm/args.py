"""Argument checks shared by every communicator: ranks, rank lists, message tags, and the
``RANK``/``WORLD_SIZE``/``MASTER_PORT`` environment values torchrun sets."""

from __future__ import annotations

import os
import re

from ..core.validate import exact_int
from ..errors import CommGroupError, InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["MAX_TAG", "check_consistency_flag", "check_group_ranks", "check_rank_value", "check_tag", "env_int"]

MAX_TAG = (1 << 31) - 1
"""Largest message tag (torch.distributed passes tags as C ints)."""

_INT = re.compile(r"[+-]?[0-9]+")


def check_rank_value(name: str, value: object) -> int:
    """An integer rank-like argument (``rank``, ``world_size``, ``src``, ``dst``).

    Args:
        name: Argument name for the message.
        value: What the caller passed.

    Returns:
        The int (range checks are the caller's: they depend on the world).

    Raises:
        InvalidArgumentTypeError: not an exact integer (``True``, ``1.0`` and ``"1"`` are refused).
    """
    found = exact_int(value)
    if found is None:
        raise InvalidArgumentTypeError(f"{name} must be an int; got {type(value).__name__} {value!r}.")
    return found


def check_tag(tag: object) -> int:
    """A point-to-point message tag: an int in ``0 .. MAX_TAG``.

    Args:
        tag: What the caller passed.

    Returns:
        The tag.

    Raises:
        InvalidArgumentTypeError: not an exact integer.
        InvalidArgumentError: negative or above :data:`MAX_TAG`.
    """
    found = exact_int(tag)
    if found is None:
        raise InvalidArgumentTypeError(f"tag must be an int; got {type(tag).__name__} {tag!r}. Pass e.g. tag=0.")
    if not 0 <= found <= MAX_TAG:
        raise InvalidArgumentError(f"tag must be in 0..{MAX_TAG}; got {found}.")
    return found


def check_group_ranks(ranks: object, world_size: int) -> list[int]:
    """The member list of a new group: distinct exact ints, each a rank of the world.

    Args:
        ranks: What the caller passed.
        world_size: Ranks in the world.

    Returns:
        The ranks, ascending.

    Raises:
        InvalidArgumentTypeError: not a sequence (a str is refused), or a member is not an int.
        InvalidArgumentError: a rank is given twice.
        CommGroupError: empty, or a rank outside ``0 .. world_size - 1``.
    """

    # Made when raised, never kept in a local: a raised exception held by its own frame is a reference cycle
    # that keeps the caller's frames (and any process group they hold) alive until the next garbage collection.
    def bad_type() -> InvalidArgumentTypeError:
        return InvalidArgumentTypeError(
            f"ranks must be a sequence of ints (e.g. [0, 1]); got {type(ranks).__name__} {ranks!r}."
        )

    if isinstance(ranks, (str, bytes)) or not hasattr(ranks, "__iter__") or not hasattr(ranks, "__len__"):
        raise bad_type()
    try:
        items = list(ranks)  # an iterable with a length
    except Exception as exc:  # a 0-d array or tensor, or an __iter__ that raises
        raise bad_type() from exc
    members: list[int] = []
    for r in items:
        found = exact_int(r)
        if found is None:
            raise InvalidArgumentTypeError(f"ranks must be ints; got {type(r).__name__} {r!r} in {ranks!r}.")
        if found in members:
            raise InvalidArgumentError(f"rank {found} is given twice in {ranks!r}; list each member once.")
        members.append(found)
    if not members:
        raise CommGroupError("a group needs at least one rank; got an empty list.")
    bad = [r for r in members if not 0 <= r < world_size]
    if bad:
        raise CommGroupError(
            f"group ranks must be in 0..{world_size - 1} (the world has {world_size}); got {bad} in {list(members)}."
        )
    return sorted(members)


def env_int(name: str, *, minimum: int) -> int | None:
    """An integer environment variable (``RANK``, ``WORLD_SIZE``, ``MASTER_PORT``), or ``None`` when unset.

    Args:
        name: The variable.
        minimum: Smallest valid value.

    Returns:
        The value.

    Raises:
        CommGroupError: set to something other than a decimal integer (ASCII digits), or below
            ``minimum``; the message names the variable and its value.
    """
    value = os.environ.get(name)
    if value is None or not value.strip():
        return None
    if not _INT.fullmatch(value.strip()):
        raise CommGroupError(
            f"environment variable {name}={value!r} is not an integer. torchrun sets it; when launching by "
            f"hand, set {name} to a whole number or unset it and pass the value as an argument."
        )
    if len(value.strip().lstrip("+-").lstrip("0")) > 18:  # int() refuses 4,300+ digits with a bare ValueError
        raise CommGroupError(f"environment variable {name} has {len(value.strip())} characters: not a rank or port.")
    found = int(value.strip())
    if found < minimum:
        raise CommGroupError(f"environment variable {name}={value!r} must be >= {minimum}.")
    return found


CHECK_ENV = "SAGELLM_COMM_CHECK"
"""``0`` turns the consistency check of collectives off by default; ``1`` or unset keeps it on."""


def check_consistency_flag(value: object) -> bool:
    """Whether collectives exchange a fingerprint first: ``value`` when given, else :data:`CHECK_ENV`.

    Args:
        value: ``True``/``False`` as the caller passed it, or ``None`` for the default (on, unless
            ``SAGELLM_COMM_CHECK=0``).

    Returns:
        The flag.

    Raises:
        InvalidArgumentTypeError: ``value`` is neither a bool nor ``None``.
        InvalidArgumentError: ``SAGELLM_COMM_CHECK`` is set to something other than ``0`` or ``1``.
    """
    if value is not None:
        if not isinstance(value, bool):
            raise InvalidArgumentTypeError(
                f"check_consistency must be True, False or None (the default: on); got {type(value).__name__} "
                f"{value!r}."
            )
        return value
    env = os.environ.get(CHECK_ENV, "").strip()
    if env not in ("", "0", "1"):
        raise InvalidArgumentError(
            f"environment variable {CHECK_ENV}={env[:40]!r} must be '0' (consistency check off) or '1' (on, the "
            "default); unset it or set one of those."
        )
    return env != "0"
