"""Joining a torch.distributed process group: explicitly or from torchrun's environment."""

from __future__ import annotations

import datetime
import os
from typing import TYPE_CHECKING, Any

from ..core.validate import check_timeout
from ..errors import CommGroupError, UnavailableError
from ..protocol import CommBackendType, coerce_enum
from . import dist_util as du

if TYPE_CHECKING:
    from .torch_dist import TorchCommunicator

__all__ = ["join_process_group"]


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
    name = coerce_enum(CommBackendType, backend or self.default_backend, what="backend").value
    timeout = check_timeout("timeout", timeout)
    if check_consistency is not None:
        self.check_consistency = bool(check_consistency)
    rank = rank if rank is not None else du.env_int("RANK")
    world_size = world_size if world_size is not None else du.env_int("WORLD_SIZE")
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
    missing = [n for n, v in (("rank", rank), ("world_size", world_size), ("init_method", init_method)) if v is None]
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
