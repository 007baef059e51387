"""Collectives over ``torch.distributed`` (gloo, nccl, hccl ...): never a home-made transport.

A provider joins a process group explicitly (``init_method``, ``rank``, ``world_size``,
``timeout``) or from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``). The process group is process-wide, as in torch; providers share it.

Semantics (the same on every torch provider):

* ``all_reduce(t, op)`` reduces ``t`` in place and returns it. ``op`` is a protocol
  :class:`~sagellm_backend.protocol.ReduceOp` or its name: ``sum``, ``avg``, ``max``, ``min``,
  ``prod`` (and ``band``/``bor``/``bxor`` on integers). gloo has no ``avg``: it is a sum divided
  by the group size (floating dtypes only).
* ``all_gather(t)`` returns a new tensor of shape ``(group_size, *t.shape)``; row ``r`` is rank
  ``r``'s tensor.
* ``reduce_scatter(t, op)``: ``t.shape[0]`` divisible by the group size; returns this rank's
  ``t.shape[0] // group_size`` rows of the reduction.
* ``broadcast(t, src)`` in place; ``barrier()``; ``send(t, dst)`` / ``recv(t, src)``.
* Without a process group, a world of one: every collective is the identity (``all_gather``
  returns ``t[None]`` copied), ``send``/``recv`` raise :class:`CommGroupError`.
* On gloo, a peer that does not arrive within the group's timeout, or that exits, makes the call
  raise :class:`CommTimeoutError` (protocol ``comm_timeout``) instead of hanging (tested).
  **Known gap, NCCL:** with an absent peer the surviving rank hung past 300 s on 2 x H200
  (torch 2.11), both with ``TORCH_NCCL_BLOCKING_WAIT=1`` and with a host-side deadline on
  asynchronous works; the cause was not found within the session's GPU time. Errors NCCL does
  report (e.g. a broken communicator) are mapped to typed errors; mismatched arguments are caught
  by ``check_consistency``.
* ``check_consistency=True`` exchanges a 16-number fingerprint (op, dtype, shape) before each
  collective, so ranks that disagree get :class:`CollectiveError` naming every rank's arguments
  instead of a crash (gloo aborts the process on a size mismatch) or garbage. It costs one small
  extra collective per call; ``SAGELLM_COMM_CHECK=1`` turns it on globally.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import (
    BackendError,
    CollectiveError,
    CommGroupError,
    CommTimeoutError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidDeviceError,
    UnavailableError,
)
from .protocol import CommBackendType, ReduceOp, coerce_enum

if TYPE_CHECKING:
    import torch

__all__ = ["CommGroup", "TorchCommunicator"]

_TIMEOUT_MARKERS = ("timed out", "timeout", "deadline")
_PEER_LOST_MARKERS = (
    "connection closed",
    "connection reset",
    "broken pipe",
    "econnreset",
    "connection refused",
    "socket closed",
    "remote worker crash",
    "peer",
)
_DTYPE_CODES: dict[str, int] = {}
# op (member or its string value) -> member: a dict hit instead of an enum look-up per call
_REDUCE_LOOKUP: dict[object, ReduceOp] = {**{m: m for m in ReduceOp}, **{m.value: m for m in ReduceOp}}
_NATIVE_OPS: dict[ReduceOp, Any] = {}


def _gather_single() -> Any:
    """``dist.all_gather_single`` (torch >= 2.13), else ``all_gather_into_tensor`` (its old name,
    deprecated in 2.13)."""
    dist = _dist()
    return getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def _native_op(rop: ReduceOp) -> Any:
    if not _NATIVE_OPS:
        dist = _dist()
        _NATIVE_OPS.update(
            {
                ReduceOp.SUM: dist.ReduceOp.SUM,
                ReduceOp.PROD: dist.ReduceOp.PRODUCT,
                ReduceOp.MAX: dist.ReduceOp.MAX,
                ReduceOp.MIN: dist.ReduceOp.MIN,
                ReduceOp.BAND: dist.ReduceOp.BAND,
                ReduceOp.BOR: dist.ReduceOp.BOR,
                ReduceOp.BXOR: dist.ReduceOp.BXOR,
                ReduceOp.AVG: dist.ReduceOp.AVG,
            }
        )
    return _NATIVE_OPS[rop]


def _reduce_op(op: object) -> ReduceOp:
    try:
        found = _REDUCE_LOOKUP.get(op)  # type: ignore[call-overload]
    except TypeError:  # unhashable
        found = None
    return found if found is not None else coerce_enum(ReduceOp, op, what="reduce op")


@dataclass(frozen=True)
class CommGroup:
    """A sub-group of ranks (made with :meth:`TorchCommunicator.new_group` on every rank).

    Attributes:
        ranks: Global ranks in the group, ascending.
        handle: The torch ProcessGroup (``None`` for ranks outside it).
    """

    ranks: tuple[int, ...]
    handle: Any
    #: This process's rank within the group (-1 when it is not a member).
    group_rank: int = -1

    @property
    def size(self) -> int:
        """Number of ranks in the group."""
        return len(self.ranks)


_DIST: Any = None


def _dist() -> Any:
    global _DIST
    if _DIST is None:
        import torch.distributed as dist

        if not dist.is_available():
            raise UnavailableError(
                "torch.distributed is not available in this torch build; install a torch with "
                "distributed support (the default PyPI builds have it)."
            )
        _DIST = dist
    return _DIST


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    if not value.lstrip("-").isdigit():
        raise CommGroupError(f"environment variable {name}={value!r} is not an integer.")
    return int(value)


def _dtype_code(dtype: Any) -> int:
    key = str(dtype)
    if key not in _DTYPE_CODES:
        _DTYPE_CODES[key] = sum(ord(c) * 31**i for i, c in enumerate(key)) % (1 << 31)
    return _DTYPE_CODES[key]


class TorchCommunicator:
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
        self.check_consistency = os.environ.get("SAGELLM_COMM_CHECK", "") == "1"
        self._world_cache: tuple[Any, int, int] | None = None
        self._backend_names: dict[int, tuple[Any, str]] = {}

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
        """Join (or create) the default process group.

        Args:
            backend: ``"gloo"``, ``"nccl"``, ``"hccl"`` ... (default: the provider's).
            init_method: ``"tcp://host:port"``, ``"file:///path"`` or ``"env://"``; default
                ``env://`` when ``MASTER_ADDR`` is set (torchrun), else required.
            rank: This process's rank (default: ``RANK`` from the environment).
            world_size: Number of processes (default: ``WORLD_SIZE``).
            timeout: Seconds before a collective whose peers do not arrive raises
                :class:`CommTimeoutError`.
            check_consistency: Verify op/shape/dtype across ranks before each collective.
            blocking_wait: NCCL: set ``TORCH_NCCL_BLOCKING_WAIT=1`` (unless already set) so each
                collective returns only when done, like gloo's. NOTE: on 2 x H200 (torch 2.11)
                a rank whose peer never arrived still hung past 300 s in this mode; NCCL
                timeouts are a known gap (docs/PERFORMANCE.md, "NCCL timeouts").

        Raises:
            CommGroupError: missing rank/world size/init method, or a group already exists with
                other values.
            CommTimeoutError: the rendezvous did not complete within ``timeout``.
            UnavailableError: the backend is not built into this torch.
        """
        dist = _dist()
        name = coerce_enum(CommBackendType, backend or self.default_backend, what="backend").value
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise InvalidArgumentError(f"timeout must be a positive number of seconds; got {timeout!r}.")
        if check_consistency is not None:
            self.check_consistency = bool(check_consistency)
        rank = rank if rank is not None else _env_int("RANK")
        world_size = world_size if world_size is not None else _env_int("WORLD_SIZE")
        if dist.is_initialized():
            have = (dist.get_rank(), dist.get_world_size())
            if (rank is not None and rank != have[0]) or (world_size is not None and world_size != have[1]):
                raise CommGroupError(
                    f"a process group already exists as rank {have[0]} of {have[1]}; asked for rank "
                    f"{rank} of {world_size}. Call destroy_process_group() first to change it."
                )
            self.timeout_s = float(timeout)
            return
        if init_method is None and os.environ.get("MASTER_ADDR"):
            init_method = "env://"
        missing = [
            n for n, v in (("rank", rank), ("world_size", world_size), ("init_method", init_method)) if v is None
        ]
        if missing:
            raise CommGroupError(
                f"cannot create a process group: {', '.join(missing)} not given and not in the "
                "environment. Launch with torchrun (it sets RANK, WORLD_SIZE, MASTER_ADDR, "
                "MASTER_PORT) or pass init_method='tcp://host:port', rank=..., world_size=...."
            )
        assert rank is not None and world_size is not None
        if not 0 <= rank < world_size:
            raise CommGroupError(f"rank {rank} is outside a world of {world_size}.")
        if not dist.is_backend_available(name):
            raise UnavailableError(
                f"torch.distributed backend {name!r} is not available in this torch build "
                f"(torch {self._torch_version()}). Use 'gloo' on CPU, 'nccl' with a CUDA torch, "
                "'hccl' with torch_npu.",
            )
        if name == "nccl" and blocking_wait:
            os.environ.setdefault("TORCH_NCCL_BLOCKING_WAIT", "1")
        kwargs: dict[str, Any] = {}
        if name in ("nccl", "hccl") and self.device_index is not None:
            import torch

            kwargs["device_id"] = torch.device(self.device_type, self.device_index)
        try:
            dist.init_process_group(
                name,
                init_method=init_method,
                rank=rank,
                world_size=world_size,
                timeout=datetime.timedelta(seconds=float(timeout)),
                **kwargs,
            )
        except Exception as exc:
            raise self._map_error(exc, "init_process_group", float(timeout)) from exc
        self.timeout_s = float(timeout)

    @staticmethod
    def _torch_version() -> str:
        import torch

        return str(torch.__version__)

    @property
    def is_initialized(self) -> bool:
        """True when a process group exists in this process."""
        import torch.distributed as dist

        return bool(dist.is_available() and dist.is_initialized())

    def _world(self) -> tuple[int, int] | None:
        """(rank, world size) of the default group, cached while the same group lives."""
        dist = _DIST if _DIST is not None else _dist()
        world = dist.GroupMember.WORLD
        if world is None:
            return None
        cached = self._world_cache
        if cached is not None and cached[0] is world:
            return cached[1], cached[2]
        rank, size = int(dist.get_rank()), int(dist.get_world_size())
        self._world_cache = (world, rank, size)
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
        """Create a sub-group. Every rank of the default group must call this, with the same ranks.

        Args:
            ranks: Global ranks in the sub-group.
            timeout: Seconds (default: the default group's).

        Returns:
            The :class:`CommGroup`.
        """
        dist = _dist()
        if not self.is_initialized:
            raise CommGroupError("new_group needs a process group; call init_process_group() first.")
        rs = sorted({int(r) for r in ranks})
        bad = [r for r in rs if not 0 <= r < self.world_size]
        if not rs or bad:
            raise CommGroupError(f"new_group ranks must be in 0..{self.world_size - 1}; got {list(ranks)}.")
        t = timeout or self.timeout_s or 300.0
        try:
            handle = dist.new_group(rs, timeout=datetime.timedelta(seconds=t))
        except Exception as exc:
            raise self._map_error(exc, "new_group", t) from exc
        me = self.rank
        return CommGroup(tuple(rs), handle if me in rs else None, rs.index(me) if me in rs else -1)

    def destroy(self) -> None:
        """Destroy the default process group (no-op without one)."""
        if self.is_initialized:
            _dist().destroy_process_group()

    # ------------------------------------------------------------------ helpers
    def _group(self, group: CommGroup | None) -> tuple[Any, int, int]:
        """(torch group handle, group size, this rank within it)."""
        if group is None:
            w = self._world()
            return (None, 1, 0) if w is None else (None, w[1], w[0])
        if not isinstance(group, CommGroup):
            raise InvalidArgumentTypeError(f"group must be a CommGroup from new_group(); got {type(group).__name__}.")
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
        if hit is not None and hit[0] is handle:  # identity check: ids of dead groups get reused
            return hit[1]
        name = str(_dist().get_backend(handle)).lower()
        self._backend_names[id(handle)] = (handle, name)
        return name

    def _map_error(self, exc: BaseException, what: str, timeout: float | None) -> BackendError:
        if isinstance(exc, BackendError):
            return exc
        text = str(exc)
        low = text.lower()
        limit = f"{timeout:.1f}s" if timeout else "the group timeout"
        if any(m in low for m in _TIMEOUT_MARKERS):
            return CommTimeoutError(
                f"{what} timed out after {limit}: not every rank arrived. Check that all ranks run "
                f"the same collectives in the same order and that none has hung. ({text.strip()[:300]})",
                op=what,
            )
        if any(m in low for m in _PEER_LOST_MARKERS):
            return CommTimeoutError(
                f"{what} failed: a peer rank left (its connection closed) before the collective "
                f"finished. Check the logs of the other ranks. ({text.strip()[:300]})",
                op=what,
            )
        return CollectiveError(f"{what} failed: {text.strip()[:500]}", op=what)

    def _run(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BackendError:
            raise
        except Exception as exc:
            raise self._map_error(exc, what, self.timeout_s) from exc

    def _consistency(self, what: str, tensor: torch.Tensor, extra: int, handle: Any, size: int) -> None:
        import torch

        shape = list(tensor.shape)[:12]
        fp = [_dtype_code(what), _dtype_code(tensor.dtype), extra, tensor.dim(), *shape]
        fp += [0] * (16 - len(fp))
        mine = torch.tensor(fp, dtype=torch.int64, device=tensor.device)
        everyone = torch.empty(size * 16, dtype=torch.int64, device=tensor.device)
        self._run(what, _gather_single(), everyone, mine, group=handle)
        rows = everyone.view(size, 16).tolist()
        if any(r != rows[0] for r in rows):
            parts = []
            for r, row in enumerate(rows):
                nd = row[3]
                parts.append(f"rank {r}: shape {tuple(row[4 : 4 + nd])}, dtype #{row[1]}, op #{row[0]}/{row[2]}")
            raise CollectiveError(
                f"{what}: ranks passed mismatched arguments ({'; '.join(parts)}); this rank has "
                f"shape {tuple(tensor.shape)} {tensor.dtype}. Every rank must pass the same shape, "
                "dtype and op.",
                op=what,
            )

    # ------------------------------------------------------------------ collectives
    def all_reduce(self, tensor: Any, op: Any = "sum", *, group: CommGroup | None = None) -> Any:
        """Reduce in place across the group. See the module docstring.

        Args:
            tensor: Contiguous tensor on the provider's device.
            op: :class:`ReduceOp` or its name.
            group: Sub-group, or ``None`` for all ranks.

        Returns:
            ``tensor``.
        """
        t = self._check_tensor(tensor, "all_reduce")
        rop = _reduce_op(op)
        if rop is not ReduceOp.SUM:
            floating = t.is_floating_point() or t.is_complex()
            if rop is ReduceOp.AVG and not floating:
                raise InvalidArgumentError(f"all_reduce avg needs a floating tensor; got {t.dtype}. Use sum.")
            if rop in (ReduceOp.BAND, ReduceOp.BOR, ReduceOp.BXOR) and floating:
                raise InvalidArgumentError(f"all_reduce {rop.value} needs an integer tensor; got {t.dtype}.")
        if group is None and self._world() is None:
            return t
        dist = _dist()
        handle, size, _ = self._group(group)
        if self.check_consistency:
            self._consistency("all_reduce", t, list(ReduceOp).index(rop), handle, size)
        if rop is ReduceOp.AVG and self._backend_name(handle) != "nccl":
            self._run("all_reduce", dist.all_reduce, t, op=_native_op(ReduceOp.SUM), group=handle)
            t.div_(size)  # gloo has no AVG
            return t
        try:
            dist.all_reduce(t, op=_native_op(rop), group=handle)
        except Exception as exc:
            raise self._map_error(exc, "all_reduce", self.timeout_s) from exc
        return t

    def all_gather(self, tensor: Any, *, group: CommGroup | None = None, out: Any = None) -> Any:
        """Gather from every rank into a ``(group_size, *shape)`` tensor.

        Args:
            tensor: This rank's contribution.
            group: Sub-group, or ``None``.
            out: A contiguous ``(group_size, *shape)`` tensor of the same dtype and device to fill
                (saves the allocation on every call); default: a new tensor.

        Returns:
            The gathered tensor (``out`` when given), rank order along dim 0.
        """
        import torch

        t = self._check_tensor(tensor, "all_gather")
        if group is None and self._world() is None:
            if out is None:
                return t.clone().unsqueeze(0)
            self._check_out(out, (1, *t.shape), t)
            out[0].copy_(t)
            return out
        handle, size, _ = self._group(group)
        if self.check_consistency:
            self._consistency("all_gather", t, 0, handle, size)
        if out is None:
            out = torch.empty((size, *t.shape), dtype=t.dtype, device=t.device)
        else:
            self._check_out(out, (size, *t.shape), t)
        if t.dim() == 0:
            self._run("all_gather", _gather_single(), out, t.reshape(1), group=handle)
        elif self._backend_name(handle) == "gloo":  # gloo wants the concatenated (size*d0, ...) form
            self._run("all_gather", _gather_single(), out.view(size * t.shape[0], *t.shape[1:]), t, group=handle)
        else:  # NCCL/HCCL take the stacked (size, *shape) form as it is
            self._run("all_gather", _gather_single(), out, t, group=handle)
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
        """Reduce across ranks and return this rank's share of dim 0.

        Args:
            tensor: dim 0 divisible by the group size.
            op: Reduce op.
            group: Sub-group, or ``None``.

        Returns:
            New tensor of ``tensor.shape[0] // group_size`` rows.
        """
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
            if self.check_consistency:
                self._consistency("reduce_scatter", t, list(ReduceOp).index(rop), handle, size)
            dist = _dist()
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
        """Copy global rank ``src``'s tensor into every rank's, in place.

        Args:
            tensor: Same shape and dtype on every rank.
            src: Global source rank.
            group: Sub-group, or ``None``.

        Returns:
            ``tensor``.
        """
        t = self._check_tensor(tensor, "broadcast")
        self._check_rank(src, "src", group)
        if group is None and self._world() is None:
            return t
        handle, size, _ = self._group(group)
        if self.check_consistency:
            self._consistency("broadcast", t, int(src), handle, size)
        self._run("broadcast", _dist().broadcast, t, src=int(src), group=handle)
        return t

    def barrier(self, *, group: CommGroup | None = None) -> None:
        """Block until every rank of the group arrives.

        Args:
            group: Sub-group, or ``None``.
        """
        if group is None and self._world() is None:
            return
        handle, _, _ = self._group(group)
        kwargs: dict[str, Any] = {}
        if self._backend_name(handle) == "nccl" and self.device_index is not None:
            kwargs["device_ids"] = [self.device_index]
        self._run("barrier", _dist().barrier, group=handle, **kwargs)

    def send(self, tensor: Any, dst: int, *, tag: int = 0, group: CommGroup | None = None) -> None:
        """Send ``tensor`` to global rank ``dst`` (blocks until it is handed over).

        Args:
            tensor: Contiguous tensor.
            dst: Destination global rank.
            tag: Message tag (ignored by NCCL).
            group: Sub-group, or ``None``.
        """
        t = self._check_tensor(tensor, "send")
        self._check_rank(dst, "dst", group, peer=True)
        handle, _, _ = self._group(group)
        self._run("send", _dist().send, t, dst=int(dst), group=handle, tag=tag)

    def recv(self, tensor: Any, src: int, *, tag: int = 0, group: CommGroup | None = None) -> Any:
        """Receive from global rank ``src`` into ``tensor``.

        Args:
            tensor: Buffer of the sent shape and dtype.
            src: Source global rank.
            tag: Message tag.
            group: Sub-group, or ``None``.

        Returns:
            ``tensor``.
        """
        t = self._check_tensor(tensor, "recv")
        self._check_rank(src, "src", group, peer=True)
        handle, _, _ = self._group(group)
        self._run("recv", _dist().recv, t, src=int(src), group=handle, tag=tag)
        return t

    def _check_rank(self, rank: object, what: str, group: CommGroup | None, *, peer: bool = False) -> None:
        if isinstance(rank, bool) or not isinstance(rank, int):
            raise InvalidArgumentTypeError(f"{what} must be an int rank; got {rank!r}.")
        members = group.ranks if group is not None else tuple(range(self.world_size))
        if rank not in members:
            raise CommGroupError(f"{what} rank {rank} is not in the group {list(members)}.")
        if peer and rank == self.rank:
            raise CommGroupError(
                f"{what} rank {rank} is this rank: point-to-point needs another rank"
                + ("" if self.is_initialized else " (no process group: call init_process_group())")
                + "."
            )
