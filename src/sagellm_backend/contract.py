"""The contract (kept at its original import path): see :mod:`sagellm_backend.api`."""

from .api import BackendProvider, CommGroup, Communicator, Event, Graph, KVBlock, Stream, current_stream

__all__ = ["BackendProvider", "CommGroup", "Communicator", "Event", "Graph", "KVBlock", "Stream", "current_stream"]
