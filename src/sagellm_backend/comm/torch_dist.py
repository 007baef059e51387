"""Collectives over ``torch.distributed`` (gloo, nccl, hccl ...): never a home-made transport.

A provider joins a process group explicitly (``init_method``, ``rank``, ``world_size``,
``timeout``) or from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``). The process group is process-wide, as in torch; providers share it.

Semantics (the same on every torch provider):

* ``all_reduce(t, op)`` reduces ``t`` in place and returns it; gloo has no ``avg``: it is a sum
  divided by the group size (floating dtypes only).
* ``all_gather(t)`` returns ``(group_size, *t.shape)``; row ``r`` is rank ``r``'s tensor.
* ``reduce_scatter(t, op)``: ``t.shape[0]`` divisible by the group size; returns this rank's rows.
* ``broadcast(t, src)`` in place; ``barrier()``; ``send(t, dst)`` / ``recv(t, src)``: each payload
  is preceded by a small header, so a receive buffer of the wrong shape or dtype raises
  :class:`CollectiveError` on the receiver instead of aborting it (:mod:`.p2p`).
* Without a process group, a world of one: collectives are the identity, ``send``/``recv`` raise
  :class:`CommGroupError`.
* On gloo, a peer that does not arrive within the timeout, or exits, raises
  :class:`CommTimeoutError`. NCCL absent-peer timeouts are a known gap (docs/PERFORMANCE.md).
* By default each collective first exchanges a fingerprint (op, dtype, shape) of every rank's
  arguments, so mismatched ranks get :class:`CollectiveError` on every rank instead of a crash
  (gloo aborts the process on mismatched sizes) or garbage. ``check_consistency=False`` in
  :meth:`init_process_group` (or ``SAGELLM_COMM_CHECK=0``) opts out of it, for callers that
  guarantee matching arguments; its cost is in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import datetime
import gc
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..api.comm import CommGroup, Communicator
from ..core.validate import check_instance, check_timeout
from ..errors import (
    BackendError,
    CommGroupError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidDeviceError,
)
from ..protocol import ReduceOp, coerce_enum
from . import dist_util as du
from . import p2p
from .args import check_consistency_flag, check_group_ranks, check_rank_value, check_tag
from .dist_init import join_process_group

if TYPE_CHECKING:
    import torch

__all__ = ["TorchCommunicator"]


def _default_group() -> None:
    """Stands in for ``weakref.ref(None)``: the default group's handle is ``None``."""
    return None


def _ref(group: Any) -> Callable[[], Any]:
    """A weak reference to a process group (``None``: the default group's handle); a strong one
    where this torch's ProcessGroup takes no weak references."""
    if group is None:
        return _default_group
    try:
        return weakref.ref(group)
    except TypeError:
        return lambda: group


class TorchCommunicator(Communicator):
    """Collectives for one torch provider.

    Args:
        device_type: The provider's torch device type (``"cpu"``, ``"cuda"``, ``"npu"``).
        device_index: The provider's device ordinal (``None`` for cpu).
        default_backend: torch.distributed backend name (``"gloo"``, ``"nccl"``, ``"hccl"``).
    """

    def __init__(self, device_type: str, device_index: int | None, default_backend: str) -> None:
        self.device_type = device_type
        self.device_index = device_index
        self.default_backend = default_backend
        self.timeout_s: float | None = None
        self.check_consistency: bool | None = None  # None: SAGELLM_COMM_CHECK decides when a group is joined or used
        # Weak references (``_ref``): a process group this communicator kept alive would outlive
        # destroy_process_group() with its gloo threads running, and a gloo thread that releases
        # a tensor while the interpreter exits aborts the process (SIGABRT, "terminate called
        # without an active exception"). Dead references never match, so no stale entry is used.
        self._world_cache: tuple[Callable[[], Any], int, int] | None = None
        self._backend_names: dict[int, tuple[Callable[[], Any], str]] = {}

    @property
    def backend(self) -> str:  # type: ignore[override]  # a class attribute in the interface
        """The default torch.distributed backend."""
        return self.default_backend

    @property
    def available(self) -> bool:
        """Whether torch.distributed has this communicator's backend."""
        import torch.distributed as dist

        return bool(dist.is_available() and dist.is_backend_available(self.default_backend))

    def _checking(self) -> bool:
        """Whether this collective exchanges a fingerprint of its arguments first: ``check_consistency`` as given to
        :meth:`init_process_group` or set on the communicator, else ``SAGELLM_COMM_CHECK`` (default on), read at
        first use, so a provider that never runs a collective does not depend on the variable.

        Raises:
            InvalidArgumentError: ``SAGELLM_COMM_CHECK`` is neither ``0`` nor ``1``.
        """
        if self.check_consistency is None:
            self.check_consistency = check_consistency_flag(None)
        return self.check_consistency

    # ------------------------------------------------------------- group setup
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
        """Join (or create) the default process group."""
        check = check_consistency_flag(check_consistency)  # validated before anything changes
        self.timeout_s = join_process_group(
            self.default_backend if backend is None else backend,
            device_type=self.device_type,
            device_index=self.device_index,
            init_method=init_method,
            rank=rank,
            world_size=world_size,
            timeout=timeout,
            blocking_wait=blocking_wait,
        )
        if check_consistency is not None or self.check_consistency is None:
            self.check_consistency = check

    @property
    def _is_initialized(self) -> bool:
        """True when a process group exists in this process."""
        import torch.distributed as dist

        return bool(dist.is_available() and dist.is_initialized())

    def _world(self) -> tuple[int, int] | None:
        """(rank, world size) of the default group, cached while the same group lives."""
        dist = du.dist()
        world = dist.GroupMember.WORLD
        if world is None:
            return None
        cached = self._world_cache
        if cached is not None and cached[0]() is world:
            return cached[1], cached[2]
        rank, size = int(dist.get_rank()), int(dist.get_world_size())
        self._world_cache = (_ref(world), rank, size)
        self._backend_names.clear()
        return rank, size

    @property
    def rank(self) -> int:
        """This process's global rank (0 without a group)."""
        w = self._world()
        return 0 if w is None else w[0]

    @property
    def world_size(self) -> int:
        """Processes in the default group (1 without a group)."""
        w = self._world()
        return 1 if w is None else w[1]

    def new_group(self, ranks: Sequence[int], *, timeout: float | None = None) -> CommGroup:
        """Create a sub-group. Every rank of the default group must call this, with the same ranks."""
        dist = du.dist()
        t = check_timeout("timeout", timeout) if timeout is not None else (self.timeout_s or 300.0)
        if not self._is_initialized:
            check_group_ranks(ranks, 1 << 62)  # types first, whatever the world
            raise CommGroupError("new_group needs a process group; call init_process_group() first.")
        rs = check_group_ranks(ranks, self.world_size)
        try:
            handle = dist.new_group(rs, timeout=datetime.timedelta(seconds=t))
        except Exception as exc:
            raise self._map_error(exc, "new_group", t) from exc
        me = self.rank
        return CommGroup(tuple(rs), handle if me in rs else None, rs.index(me) if me in rs else -1)

    def destroy_process_group(self) -> None:
        """Destroy the default process group and its sub-groups (no-op without one).

        Their worker threads end here, before the interpreter exits, unless the caller still holds
        a :class:`CommGroup` from :meth:`new_group` (drop it first). Groups reachable only from
        garbage (reference cycles) are collected here for that reason.
        """
        self._world_cache = None
        self._backend_names.clear()
        if self._is_initialized:
            du.dist().destroy_process_group()
            gc.collect()

    # ------------------------------------------------------------------ helpers
    def _group(self, group: CommGroup | None) -> tuple[Any, int, int]:
        """(torch group handle, group size, this rank within it)."""
        if group is None:
            w = self._world()
            return (None, 1, 0) if w is None else (None, w[1], w[0])
        group = check_instance("group", group, CommGroup, "new_group")
        if group.handle is None:
            raise CommGroupError(f"rank {self.rank} is not in group {list(group.ranks)}; only members may call it.")
        return group.handle, len(group.ranks), group.group_rank

    def _check_tensor(self, tensor: object, what: str) -> torch.Tensor:
        import torch

        if not isinstance(tensor, torch.Tensor):
            raise InvalidArgumentTypeError(
                f"{what} takes a torch.Tensor; got {type(tensor).__name__}. Wrap data with "
                f"torch.as_tensor(..., device={self._device_str()!r})."
            )
        if self.device_type == "cpu":
            on_device = tensor.is_cpu
        elif self.device_type == "cuda":
            on_device = tensor.is_cuda and tensor.get_device() == self.device_index
        else:
            d = tensor.device
            on_device = d.type == self.device_type and (self.device_index is None or d.index == self.device_index)
        if not on_device:
            dev = tensor.device
            raise InvalidDeviceError(
                f"{what}: the tensor is on {dev} but this provider's collectives run on "
                f"{self._device_str()}; move it with tensor.to({self._device_str()!r}).",
            )
        if not tensor.is_contiguous():
            raise InvalidArgumentError(
                f"{what} needs a contiguous tensor (it works in place); call .contiguous() first."
            )
        return tensor

    def _device_str(self) -> str:
        return self.device_type if self.device_index is None else f"{self.device_type}:{self.device_index}"

    def _backend_name(self, handle: Any) -> str:
        self._world()  # clears this cache when the default group changes
        hit = self._backend_names.get(id(handle))
        if hit is not None and hit[0]() is handle:  # identity check: ids of dead groups get reused
            return hit[1]
        name = str(du.dist().get_backend(handle)).lower()
        self._backend_names[id(handle)] = (_ref(handle), name)
        return name

    def _map_error(self, exc: BaseException, what: str, timeout: float | None) -> BackendError:
        """The typed error for a torch.distributed failure (see :func:`dist_util.map_error`)."""
        return du.map_error(exc, what, timeout)

    def _run(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BackendError:
            raise
        except Exception as exc:
            raise self._map_error(exc, what, self.timeout_s) from exc

    def _consistency(self, what: str, tensor: torch.Tensor, extra: int, handle: Any, size: int) -> None:
        du.check_consistency(self._run, what, tensor, extra, handle, size)

    # ------------------------------------------------------------------ collectives
    def all_reduce(self, tensor: Any, op: Any = "sum", *, group: CommGroup | None = None) -> Any:
        """Reduce in place across the group. See the module docstring."""
        t = self._check_tensor(tensor, "all_reduce")
        rop = du.reduce_op(op)
        if rop is not ReduceOp.SUM:
            floating = t.is_floating_point() or t.is_complex()
            if rop is ReduceOp.AVG and not floating:
                raise InvalidArgumentError(f"all_reduce avg needs a floating tensor; got {t.dtype}. Use sum.")
            if rop in (ReduceOp.BAND, ReduceOp.BOR, ReduceOp.BXOR) and floating:
                raise InvalidArgumentError(f"all_reduce {rop.value} needs an integer tensor; got {t.dtype}.")
        if group is None and self._world() is None:
            return t
        dist = du.dist()
        handle, size, _ = self._group(group)
        if self._checking():
            self._consistency("all_reduce", t, list(ReduceOp).index(rop), handle, size)
        if rop is ReduceOp.AVG and self._backend_name(handle) != "nccl":
            import torch

            self._run("all_reduce", dist.all_reduce, t, op=du.native_op(ReduceOp.SUM), group=handle)
            with torch.no_grad():  # in place like the sum above, also on a leaf that requires grad
                t.div_(size)  # gloo has no AVG
            return t
        try:
            dist.all_reduce(t, op=du.native_op(rop), group=handle)
        except Exception as exc:
            raise self._map_error(exc, "all_reduce", self.timeout_s) from exc
        return t

    def all_gather(self, tensor: Any, *, group: CommGroup | None = None, out: Any = None) -> Any:
        """Gather from every rank into a ``(group_size, *shape)`` tensor."""
        import torch

        t = self._check_tensor(tensor, "all_gather")
        if group is None and self._world() is None:
            if out is None:
                return t.clone().unsqueeze(0)
            self._check_out(out, (1, *t.shape), t)
            out[0].copy_(t)
            return out
        handle, size, _ = self._group(group)
        if self._checking():
            self._consistency("all_gather", t, 0, handle, size)
        if out is None:
            out = torch.empty((size, *t.shape), dtype=t.dtype, device=t.device)
        else:
            self._check_out(out, (size, *t.shape), t)
        if t.dim() == 0:
            self._run("all_gather", du.gather_single(), out, t.reshape(1), group=handle)
        elif self._backend_name(handle) == "gloo":  # gloo wants the concatenated (size*d0, ...) form
            self._run("all_gather", du.gather_single(), out.view(size * t.shape[0], *t.shape[1:]), t, group=handle)
        else:  # NCCL/HCCL take the stacked (size, *shape) form as it is
            self._run("all_gather", du.gather_single(), out, t, group=handle)
        return out

    def _check_out(self, out: Any, shape: tuple[int, ...], like: Any) -> None:
        import torch

        if not isinstance(out, torch.Tensor):
            raise InvalidArgumentTypeError(f"out must be a torch.Tensor; got {type(out).__name__}.")
        if out.shape != shape or out.dtype is not like.dtype or out.get_device() != like.get_device():
            raise InvalidArgumentError(
                f"out must be a {shape} {like.dtype} tensor on {like.device}; got {tuple(out.shape)} "
                f"{out.dtype} on {out.device}."
            )
        if not out.is_contiguous():
            raise InvalidArgumentError("out must be contiguous; pass a tensor made with torch.empty(...).")

    def reduce_scatter(self, tensor: Any, op: Any = "sum", *, group: CommGroup | None = None) -> Any:
        """Reduce across ranks and return this rank's share of dim 0."""
        import torch

        t = self._check_tensor(tensor, "reduce_scatter")
        _, size, me = self._group(group)
        if t.dim() == 0 or t.shape[0] % size:
            raise InvalidArgumentError(
                f"reduce_scatter needs dim 0 divisible by the group size {size}; got shape {tuple(t.shape)}."
            )
        n = t.shape[0] // size
        if size == 1:
            return t.clone()
        handle = self._group(group)[0]
        rop = coerce_enum(ReduceOp, op, what="reduce op")
        if self._backend_name(handle) in ("nccl", "hccl") and rop is not ReduceOp.AVG:
            if self._checking():
                self._consistency("reduce_scatter", t, list(ReduceOp).index(rop), handle, size)
            dist = du.dist()
            native = {
                ReduceOp.SUM: dist.ReduceOp.SUM,
                ReduceOp.PROD: dist.ReduceOp.PRODUCT,
                ReduceOp.MAX: dist.ReduceOp.MAX,
                ReduceOp.MIN: dist.ReduceOp.MIN,
            }
            if rop not in native:
                raise InvalidArgumentError(f"reduce_scatter supports sum/prod/max/min/avg; got {rop.value}.")
            out = torch.empty((n, *t.shape[1:]), dtype=t.dtype, device=t.device)
            self._run("reduce_scatter", dist.reduce_scatter_tensor, out, t, op=native[rop], group=handle)
            return out
        # gloo has no reduce_scatter: reduce everything, keep our rows (documented).
        reduced = self.all_reduce(t.clone(), rop, group=group)
        return reduced[me * n : (me + 1) * n].clone()

    def broadcast(self, tensor: Any, src: int = 0, *, group: CommGroup | None = None) -> Any:
        """Copy global rank ``src``'s tensor into every rank's, in place."""
        t = self._check_tensor(tensor, "broadcast")
        src = self._check_rank(src, "src", group)
        if group is None and self._world() is None:
            return t
        handle, size, _ = self._group(group)
        if self._checking():
            self._consistency("broadcast", t, src, handle, size)
        self._run("broadcast", du.dist().broadcast, t, src=src, group=handle)
        return t

    def barrier(self, *, group: CommGroup | None = None) -> None:
        """Block until every rank of the group arrives."""
        if group is None and self._world() is None:
            return
        handle, _, _ = self._group(group)
        kwargs: dict[str, Any] = {}
        if self._backend_name(handle) == "nccl" and self.device_index is not None:
            kwargs["device_ids"] = [self.device_index]
        self._run("barrier", du.dist().barrier, group=handle, **kwargs)

    def send(self, tensor: Any, dst: int, *, tag: int = 0, group: CommGroup | None = None) -> None:
        """Send ``tensor`` to global rank ``dst`` (blocks until it is handed over), after a header
        describing it (see :mod:`.p2p`)."""
        t = self._check_tensor(tensor, "send")
        tag = check_tag(tag)
        d = self._check_rank(dst, "dst", group, peer=True)
        handle, _, _ = self._group(group)
        p2p.send(self._run, t, d, tag, handle)

    def recv(self, tensor: Any, src: int, *, tag: int = 0, group: CommGroup | None = None) -> Any:
        """Receive from global rank ``src`` into ``tensor``; a message of another shape or dtype
        raises :class:`~sagellm_backend.errors.CollectiveError` and leaves ``tensor`` unchanged."""
        t = self._check_tensor(tensor, "recv")
        tag = check_tag(tag)
        s = self._check_rank(src, "src", group, peer=True)
        handle, _, _ = self._group(group)
        return p2p.recv(self._run, t, s, tag, handle)

    def _check_rank(self, rank: object, what: str, group: CommGroup | None, *, peer: bool = False) -> int:
        rank = check_rank_value(what, rank)
        if group is not None:
            self._group(group)  # a CommGroup this rank belongs to, before its members are read
        members = group.ranks if group is not None else tuple(range(self.world_size))
        if rank not in members:
            raise CommGroupError(f"{what} rank {rank} is not in the group {list(members)}.")
        if peer and rank == self.rank:
            raise CommGroupError(
                f"{what} rank {rank} is this rank: point-to-point needs another rank"
                + ("" if self._is_initialized else " (no process group: call init_process_group())")
                + "."
            )
        return rank
