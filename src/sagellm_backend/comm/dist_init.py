"""Joining a torch.distributed process group: explicitly or from torchrun's environment."""

from __future__ import annotations

import datetime
import os
from typing import TYPE_CHECKING, Any

from ..core.validate import check_timeout
from ..errors import CommGroupError, InvalidArgumentError, InvalidArgumentTypeError, UnavailableError
from ..protocol import CommBackendType, coerce_enum
from . import dist_util as du
from .args import check_consistency_flag, check_rank_value, env_int

if TYPE_CHECKING:
    from .torch_dist import TorchCommunicator

__all__ = ["join_process_group"]


def _rank_and_size(rank: object, world_size: object) -> tuple[int | None, int | None]:
    """The rank and world size from the arguments, else from ``RANK``/``WORLD_SIZE``, validated."""
    r = check_rank_value("rank", rank) if rank is not None else env_int("RANK", minimum=0)
    ws = check_rank_value("world_size", world_size) if world_size is not None else env_int("WORLD_SIZE", minimum=1)
    r_from = "rank" if rank is not None else "RANK (environment)"
    ws_from = "world_size" if world_size is not None else "WORLD_SIZE (environment)"
    if ws is not None and ws < 1:
        raise CommGroupError(f"{ws_from} must be >= 1; got {ws}.")
    if r is not None and r < 0:
        raise CommGroupError(f"{r_from} must be >= 0; got {r}.")
    if r is not None and ws is not None and r >= ws:
        raise CommGroupError(
            f"{r_from} {r} is outside a world of {ws} from {ws_from}: ranks are 0..{ws - 1}. Check the launch."
        )
    return r, ws


def _check_env_rendezvous() -> None:
    """``env://`` needs ``MASTER_ADDR`` and a valid ``MASTER_PORT``: say so before torch does."""
    if not os.environ.get("MASTER_ADDR", "").strip():
        raise CommGroupError(
            "init_method 'env://' needs MASTER_ADDR (the rank-0 host); set it, or launch with torchrun."
        )
    port = env_int("MASTER_PORT", minimum=1)
    if port is None or port > 65535:
        raise CommGroupError(
            f"init_method 'env://' needs MASTER_PORT, a TCP port in 1..65535; got "
            f"{os.environ.get('MASTER_PORT')!r}. Set it to a free port, or launch with torchrun."
        )


def join_process_group(
    self: TorchCommunicator,
    backend: str | None,
    *,
    init_method: str | None,
    rank: int | None,
    world_size: int | None,
    timeout: float,
    check_consistency: bool | None,
    blocking_wait: bool,
) -> None:
    """See :meth:`TorchCommunicator.init_process_group` (same arguments)."""
    dist = du.dist()
    check = check_consistency_flag(check_consistency)  # validated before anything changes
    name = coerce_enum(CommBackendType, self.default_backend if backend is None else backend, what="backend").value
    timeout = check_timeout("timeout", timeout)
    if init_method is not None:
        if not isinstance(init_method, str):
            raise InvalidArgumentTypeError(
                f"init_method must be a string such as 'tcp://host:port' or 'env://'; got {type(init_method).__name__}."
            )
        if "://" not in init_method:
            raise InvalidArgumentError(
                f"init_method {init_method!r} is not a URL; use 'tcp://host:port', 'file:///path' or 'env://'."
            )
    rank, world_size = _rank_and_size(rank, world_size)
    if dist.is_initialized():
        have = (dist.get_rank(), dist.get_world_size())
        if (rank is not None and rank != have[0]) or (world_size is not None and world_size != have[1]):
            raise CommGroupError(
                f"a process group already exists as rank {have[0]} of {have[1]}; asked for rank "
                f"{rank} of {world_size}. Call destroy_process_group() first to change it."
            )
        self.timeout_s = float(timeout)
        if check_consistency is not None:
            self.check_consistency = check
        return
    if init_method is None and os.environ.get("MASTER_ADDR"):
        init_method = "env://"
    missing = [n for n, v in (("rank", rank), ("world_size", world_size), ("init_method", init_method)) if v is None]
    if missing:
        raise CommGroupError(
            f"cannot create a process group: {', '.join(missing)} not given and not in the "
            "environment. Launch with torchrun (it sets RANK, WORLD_SIZE, MASTER_ADDR, "
            "MASTER_PORT) or pass init_method='tcp://host:port', rank=..., world_size=...."
        )
    assert rank is not None and world_size is not None and init_method is not None
    if init_method.startswith("env://"):
        _check_env_rendezvous()
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
    if check_consistency is not None:
        self.check_consistency = check
