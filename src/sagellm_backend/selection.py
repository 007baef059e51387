"""Choosing an implementation: the highest-priority candidate that supports the request, or a typed error.

Candidates declare what they support as data and answer :meth:`Candidate.why_not` for a request: ``None`` when
they can serve it, else one sentence saying what they support instead. :func:`select` ranks them by priority
(ties by name) and returns the first that fits; when none does, the error lists every candidate with its reason,
so it names what would work. A forced name (an environment variable, an option) must fit or it is an error:
a forced choice is never replaced silently.

Used by the attention backends (:mod:`sagellm_backend.attention.registry`), the kernel registry
(:mod:`sagellm_backend.kernels.registry`) and ``auto`` kernel backends; nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar

from .errors import InvalidArgumentError, UnsupportedOperationError

__all__ = ["Candidate", "Priority", "explain", "rank", "select"]

#: A candidate's rank: an int, or a tuple of ints compared element by element (the kernel registry's
#: target place, priority and registration order). Higher is preferred; one selection uses one form.
Priority = int | tuple[int, ...]


class Candidate(Protocol):
    """What :func:`select` needs of a candidate."""

    @property
    def name(self) -> str:
        """The candidate's name (unique among the candidates of one selection)."""
        ...

    @property
    def priority(self) -> Priority:
        """Higher is preferred."""
        ...

    def why_not(self, request: object) -> str | None:
        """``None`` when the candidate serves ``request``, else why not (what it supports instead)."""
        ...


C = TypeVar("C", bound=Candidate)


def rank(candidates: Iterable[C]) -> list[C]:
    """The candidates by descending priority, ties by name.

    Args:
        candidates: The candidates.

    Returns:
        The sorted list.
    """
    by_name = sorted(candidates, key=lambda c: c.name)
    return sorted(by_name, key=lambda c: c.priority, reverse=True)  # stable: equal priorities stay by name


def explain(candidates: Iterable[C], request: object) -> dict[str, str | None]:
    """Every candidate's answer for ``request``, in rank order.

    Args:
        candidates: The candidates.
        request: What is asked for.

    Returns:
        ``{name: None if it fits else the reason}``.
    """
    return {c.name: c.why_not(request) for c in rank(candidates)}


def select(candidates: Iterable[C], request: object, *, what: str, forced: str | None = None, forced_by: str = "") -> C:
    """The highest-priority candidate that serves ``request``.

    Args:
        candidates: The candidates.
        request: What is asked for (its ``str`` appears in errors).
        what: What is being chosen, for messages (``"paged attention implementation"``).
        forced: Only this candidate may be chosen (``None``, ``""`` or ``"auto"``: any).
        forced_by: Where ``forced`` came from, for messages (``"SAGELLM_PAGED_ATTENTION_IMPL"``).

    Returns:
        The chosen candidate.

    Raises:
        InvalidArgumentError: ``forced`` names no candidate.
        UnsupportedOperationError: No candidate (or not the forced one) serves the request; the message lists
            each candidate's reason.
    """
    ranked = rank(candidates)
    origin = f" (set by {forced_by})" if forced_by else ""
    if forced not in (None, "", "auto"):
        chosen = [c for c in ranked if c.name == forced]
        if not chosen:
            raise InvalidArgumentError(
                f"unknown {what} {forced!r}{origin}; known: {[c.name for c in ranked]} or 'auto'."
            )
        reason = chosen[0].why_not(request)
        if reason is not None:
            others = [c.name for c in ranked if c.name != forced and c.why_not(request) is None]
            raise UnsupportedOperationError(
                f"{what} {forced!r}{origin} cannot serve {request}: {reason}"
                + (f"; these can: {others} (or 'auto')." if others else ".")
            )
        return chosen[0]
    reasons: list[str] = []
    for c in ranked:
        reason = c.why_not(request)
        if reason is None:
            return c
        reasons.append(f"{c.name}: {reason}")
    listed = "; ".join(reasons) or "none registered"
    raise UnsupportedOperationError(f"no {what} serves {request} ({listed}).")
