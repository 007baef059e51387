"""Joining a process group with malformed arguments or environment, and Mock collectives with
hostile arguments: typed errors naming what was wrong, and nothing joined or changed. No process
group is ever created here (every case fails validation first)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from sagellm_backend import (
    CollectiveError,
    CommGroupError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    MockBackendProvider,
    create_mock_world,
)
from sagellm_backend.comm.dist_util import code_name, dtype_code

ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")


@pytest.fixture
def cpu_comm(monkeypatch: pytest.MonkeyPatch) -> Any:
    torch = pytest.importorskip("torch")
    for var in ENV:
        monkeypatch.delenv(var, raising=False)
    from sagellm_backend import CPUBackendProvider

    assert not torch.distributed.is_initialized()
    p = CPUBackendProvider()
    yield p
    assert not torch.distributed.is_initialized(), "a failed init_process_group created a group"
    p.close()


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"RANK": "x", "WORLD_SIZE": "2"}, ("RANK='x'",)),
        ({"RANK": "--1", "WORLD_SIZE": "2"}, ("RANK='--1'",)),
        ({"RANK": "\u00b2", "WORLD_SIZE": "2"}, ("RANK=",)),  # str.isdigit() is True for superscripts
        ({"RANK": "1.0", "WORLD_SIZE": "2"}, ("RANK='1.0'",)),
        ({"RANK": "-1", "WORLD_SIZE": "2"}, ("RANK", "-1")),
        ({"RANK": "2", "WORLD_SIZE": "2"}, ("RANK", "2")),
        ({"RANK": "0", "WORLD_SIZE": "0"}, ("WORLD_SIZE", "0")),
        ({"RANK": "0", "WORLD_SIZE": "-2"}, ("WORLD_SIZE", "-2")),
        ({"RANK": "0", "WORLD_SIZE": "two"}, ("WORLD_SIZE='two'",)),
        ({"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}, ("MASTER_PORT",)),
        ({"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "http"}, ("MASTER_PORT='http'",)),
        ({"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "70000"}, ("MASTER_PORT",)),
        ({"RANK": "9" * 5000, "WORLD_SIZE": "2"}, ("RANK", "5000 characters")),  # int() would raise ValueError
        ({"RANK": "0", "WORLD_SIZE": "+" + "1" * 19}, ("WORLD_SIZE",)),
        ({"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "h", "MASTER_PORT": "8" * 4400}, ("MASTER_PORT",)),
    ],
)
def test_malformed_environment_is_a_group_error_naming_the_variable(
    cpu_comm: Any, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], words: tuple[str, ...]
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(CommGroupError) as info:
        cpu_comm.init_process_group(timeout=5)
    for w in words:
        assert w in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "error", "word"),
    [
        ({"rank": "0", "world_size": 2}, InvalidArgumentTypeError, "rank"),
        ({"rank": 1.0, "world_size": 2}, InvalidArgumentTypeError, "rank"),
        ({"rank": True, "world_size": 2}, InvalidArgumentTypeError, "rank"),
        ({"rank": 0, "world_size": 2.0}, InvalidArgumentTypeError, "world_size"),
        ({"rank": -1, "world_size": 2}, CommGroupError, "-1"),
        ({"rank": 2, "world_size": 2}, CommGroupError, "outside"),
        ({"rank": 0, "world_size": 0}, CommGroupError, "world_size"),
        ({"rank": 0, "world_size": 1, "init_method": 5}, InvalidArgumentTypeError, "init_method"),
        ({"rank": 0, "world_size": 1, "init_method": "", "timeout": 5}, InvalidArgumentError, "init_method"),
        ({"rank": 0, "world_size": 1, "timeout": float("nan")}, InvalidArgumentError, "nan"),
        ({"rank": 0, "world_size": 1, "timeout": float("inf")}, InvalidArgumentError, "inf"),
        ({"rank": 0, "world_size": 1, "timeout": -3}, InvalidArgumentError, "timeout"),
        ({"rank": 0, "world_size": 1, "timeout": "30"}, InvalidArgumentTypeError, "timeout"),
        ({"rank": 0, "world_size": 1, "timeout": None}, InvalidArgumentTypeError, "timeout"),
        ({"rank": 0, "world_size": 1, "timeout": True}, InvalidArgumentTypeError, "timeout"),
        ({"rank": 0, "world_size": 1, "backend": "mpi2"}, InvalidArgumentError, "mpi2"),
        ({"rank": 0, "world_size": 1, "check_consistency": "no"}, InvalidArgumentTypeError, "check_consistency"),
        ({"rank": 0, "world_size": 1, "check_consistency": 0}, InvalidArgumentTypeError, "check_consistency"),
    ],
)
def test_bad_init_arguments_are_typed(cpu_comm: Any, kwargs: dict[str, Any], error: type[Exception], word: str) -> None:
    kwargs.setdefault("init_method", "tcp://127.0.0.1:1")  # never reached: validation comes first
    kwargs.setdefault("timeout", 5)
    with pytest.raises(error, match=word):
        cpu_comm.init_process_group(**kwargs)


def test_consistency_check_is_on_by_default_and_opting_out_is_explicit(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    from sagellm_backend import CPUBackendProvider, get_provider

    monkeypatch.delenv("SAGELLM_COMM_CHECK", raising=False)
    comm = CPUBackendProvider().communicator
    assert comm.check_consistency is None  # undecided until a group is joined or a collective runs
    assert comm._checking() is True and comm.check_consistency is True
    monkeypatch.setenv("SAGELLM_COMM_CHECK", "0")
    assert CPUBackendProvider().communicator._checking() is False
    monkeypatch.setenv("SAGELLM_COMM_CHECK", " 1 ")
    assert CPUBackendProvider().communicator._checking() is True
    for bad in ("yes", "false", "2", "x" * 10_000):
        monkeypatch.setenv("SAGELLM_COMM_CHECK", bad)
        provider = get_provider("cpu")  # a provider that never joins a group does not read the variable
        with pytest.raises(InvalidArgumentError, match=r"SAGELLM_COMM_CHECK=.* must be '0'") as info:
            provider.communicator._checking()  # what every collective asks first
        assert len(str(info.value)) < 300
        with pytest.raises(InvalidArgumentError, match=r"SAGELLM_COMM_CHECK=.* must be '0'"):
            provider.init_process_group(rank=0, world_size=1, init_method="tcp://127.0.0.1:1", timeout=5)
        import torch.distributed as dist

        assert not dist.is_initialized()  # refused before joining anything


def test_code_name_knows_dtypes_this_rank_never_used() -> None:
    torch = pytest.importorskip("torch")
    dtype_code(torch.float32)  # this rank's own use fills the table with one name only
    for dt in (torch.int32, torch.float8_e4m3fn, torch.complex64, torch.uint16):
        code = _fresh_code(dt)
        assert code_name(code) == str(dt)
        assert dtype_code(dt) == code  # the stand-in above computes what another rank sends


def _fresh_code(dtype: Any) -> int:
    """The code another rank would compute, without registering the name on this one."""
    key = str(dtype)
    return sum(ord(c) * 31**i for i, c in enumerate(key)) % (1 << 31)


def _run_world(n: int, fn: Any) -> list[Any]:
    ranks = create_mock_world(n, timeout=5.0, kv_geometry={"num_layers": 1, "num_kv_heads": 1, "head_dim": 8})
    with ThreadPoolExecutor(n) as ex:
        futures = [ex.submit(fn, p) for p in ranks]
        return [f.result(timeout=30) for f in futures]


def test_mock_collectives_refuse_read_only_and_bad_out_and_tags() -> None:
    def body(p: MockBackendProvider) -> str:
        ro = np.ones(3, dtype=np.float32)
        ro.flags.writeable = False
        out_ro = np.empty((2, 3), dtype=np.float32)
        out_ro.flags.writeable = False
        cases = [
            (lambda: p.all_reduce(ro), InvalidArgumentError, "read-only"),
            (lambda: p.broadcast(ro, 0), InvalidArgumentError, "read-only"),
            (lambda: p.all_gather(np.ones(3, np.float32), out=out_ro), InvalidArgumentError, "read-only"),
            (lambda: p.send(np.ones(1), 1 - p.rank, tag="x"), InvalidArgumentTypeError, "tag"),
            (lambda: p.send(np.ones(1), 1 - p.rank, tag=[1]), InvalidArgumentTypeError, "tag"),
            (lambda: p.recv(np.ones(1), 1 - p.rank, tag=-1), InvalidArgumentError, "tag"),
            (lambda: p.recv(np.ones(1), 1 - p.rank, tag=1.5), InvalidArgumentTypeError, "tag"),
            (lambda: p.new_group([0, 1], timeout=float("nan")), InvalidArgumentError, "nan"),
        ]
        for fn, error, word in cases:
            with pytest.raises(error, match=word):
                fn()
        # read-only input to a collective that does not write it works
        gathered = p.all_gather(ro)
        assert gathered.shape == (2, 3) and (gathered == 1).all()
        # a recv into a wrong buffer keeps the message
        if p.rank == 0:
            p.send(np.arange(4, dtype=np.int64), 1, tag=3)
        else:
            with pytest.raises(CollectiveError, match="int64"):
                p.recv(np.empty(2, dtype=np.int64), 0, tag=3)
            got = p.recv(np.empty(4, dtype=np.int64), 0, tag=3)
            assert got.tolist() == [0, 1, 2, 3]
        p.barrier()
        return "ok"

    assert _run_world(2, body) == ["ok", "ok"]


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), 0, -1, "5", None, True])
def test_mock_world_timeout_is_validated(timeout: Any) -> None:
    with pytest.raises((InvalidArgumentError, InvalidArgumentTypeError), match="timeout"):
        create_mock_world(2, timeout=timeout)
