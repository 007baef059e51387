"""The communication part of the contract: one :class:`Communicator` interface with the same
signatures for torch.distributed (:mod:`sagellm_backend.comm.torch_dist`) and the in-process Mock
world (:mod:`sagellm_backend.comm.mock_world`).

A provider exposes its communicator as ``provider.communicator``; the provider's collective
methods delegate to it unchanged, so ``provider.all_reduce(t, "sum", group=g)`` has one meaning
everywhere.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UnsupportedOperationError

__all__ = ["CommGroup", "Communicator", "NoCommunicator"]


@dataclass(frozen=True)
class CommGroup:
    """A sub-group of ranks (made with :meth:`Communicator.new_group` on every rank).

    Attributes:
        ranks: Global ranks in the group, ascending.
        handle: The backend's group object (``None`` for ranks outside it).
        group_rank: This process's rank within the group (-1 when it is not a member).
    """

    ranks: tuple[int, ...]
    handle: Any
    group_rank: int = -1

    @property
    def size(self) -> int:
        """Number of ranks in the group."""
        return len(self.ranks)


class Communicator(ABC):
    """Collectives between the ranks of a world. Every method may block until peers arrive;
    none waits longer than the world's timeout (then :class:`CommTimeoutError`)."""

    #: Name of the transport (``"gloo"``, ``"nccl"``, ``"mock"``, ``"none"``).
    backend: str = "none"

    @property
    def available(self) -> bool:
        """Whether collectives can run here (``capability().has_collective``)."""
        return True

    def init_process_group(
        self,
        backend: str | None = None,
        *,
        init_method: str | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        timeout: float = 300.0,
        check_consistency: bool | None = None,
        blocking_wait: bool = True,
    ) -> None:
        """Join the world (explicitly, or from torchrun's environment).

        Args:
            backend: Transport name (default: the provider's).
            init_method: ``tcp://``, ``file://`` or ``env://``.
            rank: This process's rank.
            world_size: Number of ranks.
            timeout: Seconds before a collective raises :class:`CommTimeoutError`.
            check_consistency: Verify shapes/dtypes/ops across ranks before each collective:
                ``None`` (default) is on unless ``SAGELLM_COMM_CHECK=0``; ``False`` opts out.
            blocking_wait: NCCL: make timeouts raise on the host.

        Raises:
            CommGroupError: missing rank/world size/init method, or another group exists.
            CommTimeoutError: the rendezvous did not complete within ``timeout``.
            UnavailableError: the backend is not built into this torch.
            UnsupportedOperationError: this communicator joins no process groups (the default).
        """
        raise UnsupportedOperationError(
            f"the {self.backend!r} communicator cannot join a process group: {self.join_hint}.",
        )

    #: Why :meth:`init_process_group` is refused, and what to do instead.
    join_hint: str = "use a torch provider (cpu/gloo, cuda/nccl)"

    @abstractmethod
    def destroy_process_group(self) -> None:
        """Leave the world."""

    @property
    @abstractmethod
    def rank(self) -> int:
        """This rank (0 without a world)."""

    @property
    @abstractmethod
    def world_size(self) -> int:
        """Ranks in the world (1 without a world)."""

    @abstractmethod
    def new_group(self, ranks: Sequence[int], *, timeout: float | None = None) -> CommGroup:
        """Create a sub-group; call on every rank.

        Args:
            ranks: Member ranks: a sequence of distinct ints.
            timeout: Seconds, finite and positive (default: the world's).

        Returns:
            The group.

        Raises:
            InvalidArgumentTypeError: ``ranks`` is not a sequence of ints, or ``timeout`` not a number.
            InvalidArgumentError: a rank given twice, or a non-finite or non-positive timeout.
            CommGroupError: no ranks, a rank outside the world, or no process group.
        """

    @abstractmethod
    def all_reduce(self, tensor: Any, op: Any = "sum", *, group: CommGroup | None = None) -> Any:
        """Reduce ``tensor`` across ranks in place.

        Args:
            tensor: The tensor.
            op: A :class:`ReduceOp` or its name.
            group: Sub-group (default: the world).

        Returns:
            ``tensor``, reduced.
        """

    @abstractmethod
    def all_gather(self, tensor: Any, *, group: CommGroup | None = None, out: Any = None) -> Any:
        """Gather ``tensor`` from every rank.

        Args:
            tensor: This rank's contribution.
            group: Sub-group.
            out: Optional output of shape ``(group_size, *tensor.shape)``.

        Returns:
            ``(group_size, *tensor.shape)``; row ``r`` is rank ``r``'s tensor.
        """

    @abstractmethod
    def reduce_scatter(self, tensor: Any, op: Any = "sum", *, group: CommGroup | None = None) -> Any:
        """Reduce across ranks, each keeping its ``1/group_size`` share of rows.

        Args:
            tensor: ``shape[0]`` divisible by the group size.
            op: Reduce op.
            group: Sub-group.

        Returns:
            This rank's rows of the reduction.
        """

    @abstractmethod
    def broadcast(self, tensor: Any, src: int = 0, *, group: CommGroup | None = None) -> Any:
        """Copy ``src``'s tensor to every rank, in place.

        Args:
            tensor: The tensor.
            src: Source rank.
            group: Sub-group.

        Returns:
            ``tensor``.
        """

    @abstractmethod
    def barrier(self, *, group: CommGroup | None = None) -> None:
        """Wait until every rank arrives.

        Args:
            group: Sub-group.
        """

    @abstractmethod
    def send(self, tensor: Any, dst: int, *, tag: int = 0, group: CommGroup | None = None) -> None:
        """Send ``tensor`` to rank ``dst``.

        Args:
            tensor: The data.
            dst: Destination rank.
            tag: Message tag, an int in ``0 .. 2**31 - 1``.
            group: Sub-group.

        Raises:
            InvalidArgumentTypeError: ``dst`` or ``tag`` is not an int.
            InvalidArgumentError: ``tag`` is out of range.
            CommGroupError: ``dst`` is this rank or outside the group.
        """

    @abstractmethod
    def recv(self, tensor: Any, src: int, *, tag: int = 0, group: CommGroup | None = None) -> Any:
        """Receive into ``tensor`` from rank ``src``.

        Args:
            tensor: Buffer of the sent shape and dtype.
            src: Source rank.
            tag: Message tag, an int in ``0 .. 2**31 - 1``.
            group: Sub-group.

        Returns:
            ``tensor``.

        Raises:
            CollectiveError: the message's shape or dtype differs from ``tensor``'s; ``tensor`` is
                unchanged and the next message between the two ranks is unaffected.
            InvalidArgumentTypeError: ``src`` or ``tag`` is not an int.
            CommGroupError: ``src`` is this rank or outside the group.
        """


class NoCommunicator(Communicator):
    """For providers without collectives: a world of one that refuses every collective."""

    def __init__(self, provider: str, reason: str) -> None:
        self._provider = provider
        self._reason = reason

    @property
    def available(self) -> bool:
        return False

    def _refuse(self, what: str) -> UnsupportedOperationError:
        return UnsupportedOperationError(
            f"{what} is not available on the {self._provider!r} provider: {self._reason}.",
            provider=self._provider,
        )

    def destroy_process_group(self) -> None:
        """Nothing to leave."""

    @property
    def rank(self) -> int:
        return 0

    @property
    def world_size(self) -> int:
        return 1

    def new_group(self, ranks: Sequence[int], *, timeout: float | None = None) -> CommGroup:
        raise self._refuse("new_group")

    def all_reduce(self, tensor: Any, op: Any = "sum", *, group: CommGroup | None = None) -> Any:
        raise self._refuse("all_reduce")

    def all_gather(self, tensor: Any, *, group: CommGroup | None = None, out: Any = None) -> Any:
        raise self._refuse("all_gather")

    def reduce_scatter(self, tensor: Any, op: Any = "sum", *, group: CommGroup | None = None) -> Any:
        raise self._refuse("reduce_scatter")

    def broadcast(self, tensor: Any, src: int = 0, *, group: CommGroup | None = None) -> Any:
        raise self._refuse("broadcast")

    def barrier(self, *, group: CommGroup | None = None) -> None:
        raise self._refuse("barrier")

    def send(self, tensor: Any, dst: int, *, tag: int = 0, group: CommGroup | None = None) -> None:
        raise self._refuse("send")

    def recv(self, tensor: Any, src: int, *, tag: int = 0, group: CommGroup | None = None) -> Any:
        raise self._refuse("recv")
