"""The Mock provider (defined in :mod:`sagellm_backend.vendors.mock`) and its parts."""

from ..comm.mock_world import MockWorld
from ..mock.faults import MockFaults
from ..mock.graphs import MockGraph
from ..vendors.mock import MockBackendProvider, create_mock_backend, create_mock_world

__all__ = ["MockBackendProvider", "MockFaults", "MockGraph", "MockWorld", "create_mock_backend", "create_mock_world"]
