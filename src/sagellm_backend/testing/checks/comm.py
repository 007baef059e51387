"""Checks of communication: the provider's communicator and collectives in a world of one."""

from __future__ import annotations

from ...api import BackendProvider, Communicator
from ...errors import InvalidArgumentError, InvalidArgumentTypeError
from .base import CheckSkipped, expect, provider_check
from .support import as_floats, device_array

__all__: list[str] = []


@provider_check
def check_communicator(p: BackendProvider) -> None:
    """communicator is an api Communicator; rank/world_size and has_collective agree with it."""
    comm = p.communicator
    assert isinstance(comm, Communicator), f"communicator is a {type(comm).__name__}, not an api.comm.Communicator"
    assert p.communicator is comm, "communicator must be the same object on every access"
    assert isinstance(comm.backend, str) and comm.backend, f"communicator.backend: {comm.backend!r}"
    rank, size = p.rank, p.world_size
    assert (rank, size) == (comm.rank, comm.world_size), ((rank, size), (comm.rank, comm.world_size))
    assert isinstance(rank, int) and isinstance(size, int) and 0 <= rank < size, (rank, size)
    has = p.capability().has_collective
    assert has == comm.available, f"capability().has_collective={has} but communicator.available={comm.available}"


@provider_check
def check_collectives_world_of_one(p: BackendProvider) -> None:
    """Without peers, collectives are the documented identity; bad ops raise typed errors."""
    if not p.capability().has_collective:
        raise CheckSkipped("needs has_collective=True; provider reports False")
    if p.world_size != 1:
        raise CheckSkipped(f"needs a provider outside any multi-rank group; world_size is {p.world_size}")
    t = device_array(p, [1.0, 2.0, 3.0])
    out = p.all_reduce(t, "sum")
    assert out is t and as_floats(out) == [1.0, 2.0, 3.0]
    g = p.all_gather(t)
    assert tuple(g.shape) == (1, 3)
    expect(InvalidArgumentError, lambda: p.all_reduce(t, "median"), "unknown reduce op")
    expect(InvalidArgumentTypeError, lambda: p.all_reduce([1.0, 2.0], "sum"), "list instead of tensor")
