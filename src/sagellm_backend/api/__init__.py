"""The contract, split by concern: the provider (:mod:`.provider`), blocks (:mod:`.blocks`),
streams/events/graphs (:mod:`.streams`) and communication (:mod:`.comm`)."""

from .blocks import KVBlock
from .comm import CommGroup, Communicator, NoCommunicator
from .provider import BackendProvider
from .streams import Event, Graph, Stream, current_stream

__all__ = [
    "BackendProvider",
    "CommGroup",
    "Communicator",
    "Event",
    "Graph",
    "KVBlock",
    "NoCommunicator",
    "Stream",
    "current_stream",
]
