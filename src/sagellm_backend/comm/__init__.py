"""Communicators: torch.distributed (:mod:`.torch_dist`) and the in-process Mock world
(:mod:`.mock_world`), both behind :class:`~sagellm_backend.api.comm.Communicator`."""
