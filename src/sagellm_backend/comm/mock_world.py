"""The in-process Mock world: N Mock providers in one process whose collectives (one thread per
rank) compute real results with numpy, behind the same :class:`Communicator` interface as
torch.distributed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..api.comm import CommGroup, Communicator
from ..core.validate import check_count, check_timeout
from ..errors import (
    CollectiveError,
    CommGroupError,
    CommTimeoutError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    UnsupportedOperationError,
)
from ..protocol import ReduceOp, coerce_enum
from .args import check_group_ranks, check_tag

__all__ = ["MockCommunicator", "MockWorld"]

_NP_REDUCE: dict[ReduceOp, Callable[..., Any]] = {
    ReduceOp.SUM: np.add,
    ReduceOp.PROD: np.multiply,
    ReduceOp.MAX: np.maximum,
    ReduceOp.MIN: np.minimum,
    ReduceOp.BAND: np.bitwise_and,
    ReduceOp.BOR: np.bitwise_or,
    ReduceOp.BXOR: np.bitwise_xor,
}


class MockWorld:
    """N mock ranks in one process, meeting at a barrier for each collective.

    Args:
        world_size: Number of ranks.
        timeout: Seconds a rank waits for the others before :class:`CommTimeoutError`.
    """

    def __init__(self, world_size: int, timeout: float = 30.0) -> None:
        self.world_size = check_count("world_size", world_size)
        self.timeout = check_timeout("timeout", timeout)
        self._barrier = threading.Barrier(world_size)
        self._slots: list[Any] = [None] * world_size
        self._mail: dict[tuple[int, int, int], list[np.ndarray]] = {}
        self._mail_cond = threading.Condition()

    def reset(self) -> None:
        """Repair the world after a timeout (every rank must have stopped waiting)."""
        self._barrier.reset()
        self._slots = [None] * self.world_size

    def _wait(self, rank: int, what: str) -> None:
        try:
            self._barrier.wait(self.timeout)
        except threading.BrokenBarrierError:
            raise CommTimeoutError(
                f"rank {rank}: {what} timed out after {self.timeout:.1f}s: not every one of the "
                f"{self.world_size} ranks arrived (a rank exited, hung, or skipped the call). "
                "Check that every rank calls the same collectives in the same order; once no rank "
                "waits any more, call provider.world.reset() (any rank's provider) before reusing the world.",
                rank=rank,
                timeout_s=self.timeout,
            ) from None

    def exchange(self, rank: int, payload: Any, what: str) -> list[Any]:
        """Deposit ``payload``, wait for every rank, and return all payloads by rank.

        Args:
            rank: The caller's rank.
            payload: What to share.
            what: Operation name for messages.

        Returns:
            Payloads of ranks 0..N-1.
        """
        self._slots[rank] = payload
        self._wait(rank, what)
        everyone = list(self._slots)
        self._wait(rank, what)
        return everyone

    def post(self, src: int, dst: int, tag: int, data: np.ndarray) -> None:
        """Deliver a point-to-point message.

        Args:
            src: Sender.
            dst: Receiver.
            tag: Tag.
            data: The message (a private copy).
        """
        with self._mail_cond:
            self._mail.setdefault((src, dst, tag), []).append(data)
            self._mail_cond.notify_all()

    def take(self, src: int, dst: int, tag: int, accept: Callable[[np.ndarray], None]) -> np.ndarray:
        """Wait for the oldest message from ``src`` to ``dst`` with ``tag``; remove it only if
        ``accept`` (which raises on a mismatch) takes it, so a wrong buffer loses no message.

        Args:
            src: Sender.
            dst: Receiver.
            tag: Tag.
            accept: Validates the message; raises to leave it queued.

        Returns:
            The message.
        """
        key = (src, dst, tag)
        with self._mail_cond:
            ok = self._mail_cond.wait_for(lambda: bool(self._mail.get(key)), self.timeout)
            if not ok:
                raise CommTimeoutError(
                    f"rank {dst}: recv from rank {src} (tag {tag}) timed out after "
                    f"{self.timeout:.1f}s; the sender never sent. Match every recv with a send.",
                )
            data = self._mail[key][0]
            accept(data)
            return self._mail[key].pop(0)


class MockCommunicator(Communicator):
    """Collectives of one rank of a :class:`MockWorld` (a world of one without it).

    Args:
        enabled: Whether collectives work (``has_collective``).
        world: The world to join.
        rank: This rank in ``world``.
    """

    backend = "mock"
    join_hint = "the mock joins a world at construction: use create_mock_world(n)"

    def __init__(self, enabled: bool, world: MockWorld | None = None, rank: int = 0) -> None:
        if world is not None:
            check_count("rank", rank, minimum=0)
            if rank >= world.world_size:
                raise InvalidArgumentError(f"rank {rank} is outside a world of {world.world_size}.")
        self.enabled = enabled
        self.world = world
        self._rank = rank if world is not None else 0

    @property
    def available(self) -> bool:
        return self.enabled

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self.world.world_size if self.world is not None else 1

    def destroy_process_group(self) -> None:
        """Nothing to leave: the world lives as long as its providers."""

    def new_group(self, ranks: Sequence[int], *, timeout: float | None = None) -> CommGroup:
        if timeout is not None:
            check_timeout("timeout", timeout)
        check_group_ranks(ranks, self.world_size)
        raise UnsupportedOperationError("the mock world has no sub-groups; use a torch provider (gloo) for groups.")

    def _no_group(self, group: CommGroup | None) -> None:
        if group is not None:
            raise UnsupportedOperationError("the mock world has no sub-groups; pass group=None.")

    def _require_world(self) -> MockWorld:
        if self.world is None:
            raise CommGroupError("point-to-point needs a world of 2+ ranks: use create_mock_world(n).")
        return self.world

    def _check_collective(self, tensor: object, what: str) -> np.ndarray:
        if not self.enabled:
            raise UnsupportedOperationError(f"{what}: collectives are off for this mock (has_collective=False).")
        if not isinstance(tensor, np.ndarray):
            raise InvalidArgumentTypeError(
                f"{what} on the mock provider takes a numpy array; got {type(tensor).__name__}. "
                "Wrap data with numpy.asarray()."
            )
        if what in ("all_reduce", "broadcast", "recv") and not tensor.flags.writeable:
            raise InvalidArgumentError(
                f"{what} writes its result into the array in place, but this array is read-only; pass a writeable copy."
            )
        return tensor

    def _gather_checked(self, tensor: np.ndarray, what: str, extra: Any = None) -> list[np.ndarray]:
        world = self._require_world()
        payloads = world.exchange(self._rank, (tensor.shape, tensor.dtype, extra, tensor.copy()), what)
        sig = [(p[0], p[1], p[2]) for p in payloads]
        if any(s != sig[0] for s in sig):
            detail = "; ".join(
                f"rank {r}: shape {s[0]} {s[1]}" + (f" {s[2]}" if s[2] else "") for r, s in enumerate(sig)
            )
            raise CollectiveError(
                f"{what}: ranks passed mismatched arguments ({detail}). Every rank must pass the "
                "same shape, dtype and op.",
            )
        return [p[3] for p in payloads]

    def all_reduce(self, tensor: Any, op: Any = "sum", *, group: CommGroup | None = None) -> Any:
        """Reduce a numpy array across the world's ranks, in place."""
        self._no_group(group)
        arr = self._check_collective(tensor, "all_reduce")
        rop = coerce_enum(ReduceOp, op, what="reduce op")
        if rop is ReduceOp.AVG and not np.issubdtype(arr.dtype, np.floating):
            raise InvalidArgumentError(f"all_reduce avg needs a float array; got {arr.dtype}.")
        if rop in (ReduceOp.BAND, ReduceOp.BOR, ReduceOp.BXOR) and not np.issubdtype(arr.dtype, np.integer):
            raise InvalidArgumentError(f"all_reduce {rop.value} needs an integer array; got {arr.dtype}.")
        if self.world is None:
            return arr
        parts = self._gather_checked(arr, "all_reduce", rop.value)
        if rop is ReduceOp.AVG:
            acc = parts[0].astype(np.float64)
            for p in parts[1:]:
                acc += p
            arr[...] = acc / len(parts)
        else:
            fn = _NP_REDUCE[rop]
            acc = parts[0].copy()
            for p in parts[1:]:
                fn(acc, p, out=acc)
            arr[...] = acc
        return arr

    def all_gather(self, tensor: Any, *, group: CommGroup | None = None, out: Any = None) -> Any:
        """Gather a numpy array from every rank."""
        self._no_group(group)
        arr = self._check_collective(tensor, "all_gather")
        if out is not None:  # checked before the exchange: a bad out changes nothing anywhere
            want = (self.world_size, *arr.shape)
            if not isinstance(out, np.ndarray):
                raise InvalidArgumentTypeError(f"out must be a numpy array; got {type(out).__name__}.")
            if out.shape != want or out.dtype != arr.dtype:
                raise InvalidArgumentError(
                    f"out must be a {want} {arr.dtype} numpy array; got {out.shape} {out.dtype}."
                )
            if not out.flags.writeable:
                raise InvalidArgumentError("all_gather writes into out, but out is read-only; pass a writeable array.")
        parts = [arr.copy()] if self.world is None else self._gather_checked(arr, "all_gather")
        if out is None:
            return np.stack(parts)
        np.stack(parts, out=out)
        return out

    def reduce_scatter(self, tensor: Any, op: Any = "sum", *, group: CommGroup | None = None) -> Any:
        """Reduce across ranks, then keep this rank's slice of dim 0."""
        self._no_group(group)
        arr = self._check_collective(tensor, "reduce_scatter")
        ws = self.world_size
        if arr.ndim == 0 or arr.shape[0] % ws:
            raise InvalidArgumentError(
                f"reduce_scatter needs dim 0 divisible by the world size {ws}; got shape {arr.shape}."
            )
        reduced = self.all_reduce(arr.copy(), op)
        n = arr.shape[0] // ws
        return reduced[self._rank * n : (self._rank + 1) * n].copy()

    def broadcast(self, tensor: Any, src: int = 0, *, group: CommGroup | None = None) -> Any:
        """Copy rank ``src``'s array into every rank's, in place."""
        self._no_group(group)
        arr = self._check_collective(tensor, "broadcast")
        self._check_rank(src, "src")
        if self.world is None:
            return arr
        parts = self._gather_checked(arr, "broadcast", ("src", src))
        arr[...] = parts[src]
        return arr

    def barrier(self, *, group: CommGroup | None = None) -> None:
        """Wait until every rank arrives."""
        self._no_group(group)
        if self.world is not None:
            self.world.exchange(self._rank, None, "barrier")

    def send(self, tensor: Any, dst: int, *, tag: int = 0, group: CommGroup | None = None) -> None:
        """Send a copy of ``tensor`` to rank ``dst``."""
        arr, dst, tag, world = self._point_to_point("send", tensor, dst, "dst", tag, group)
        world.post(self._rank, dst, tag, arr.copy())

    def recv(self, tensor: Any, src: int, *, tag: int = 0, group: CommGroup | None = None) -> Any:
        """Receive from rank ``src`` into ``tensor``."""
        arr, src, tag, world = self._point_to_point("recv", tensor, src, "src", tag, group)

        def accept(data: np.ndarray) -> None:
            if data.shape != arr.shape or data.dtype != arr.dtype:
                raise CollectiveError(
                    f"recv from rank {src}: the message is {data.shape} {data.dtype}, the buffer "
                    f"{arr.shape} {arr.dtype}. Match the receive buffer to what the peer sends; "
                    "the message stays queued."
                )

        data = world.take(src, self._rank, tag, accept)
        arr[...] = data
        return arr

    def _point_to_point(
        self, op: str, tensor: Any, peer: object, role: str, tag: object, group: CommGroup | None
    ) -> tuple[np.ndarray, int, int, MockWorld]:
        """Checked arguments of ``send``/``recv``: ``(array, peer rank, tag, world)``."""
        self._no_group(group)
        arr = self._check_collective(tensor, op)
        tag = check_tag(tag)
        rank = self._check_rank(peer, role, peer=True)
        return arr, rank, tag, self._require_world()

    def _check_rank(self, rank: object, what: str, *, peer: bool = False) -> int:
        r = check_count(what, rank, minimum=0)
        if r >= self.world_size:
            raise CommGroupError(f"{what} rank {r} is outside the world of {self.world_size}.")
        if peer and (self.world is None or r == self._rank):
            raise CommGroupError(
                f"{what} rank {r} is this rank: point-to-point needs another rank "
                "(use create_mock_world(n) with n >= 2)."
            )
        return r
