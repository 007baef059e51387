"""Block movers, one per storage kind (numpy host, torch host, torch device, CUDA row copier):
implementations of :class:`~sagellm_backend.kv.mover.BlockMover`."""
