"""The bad-input table: every public method, the bad inputs tried, the typed error each gets.

Each row is a test (tests/test_bad_inputs.py runs it on every provider it names and checks that
the provider's state is unchanged afterwards). ``python tests/bad_input_table.py`` renders
docs/BAD_INPUTS.md from these rows; a test keeps the two in step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sagellm_backend import (
    BackendProvider,
    BlockFreedError,
    CommGroupError,
    DeviceUnreachableError,
    DType,
    ForeignBlockError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidBlockError,
    InvalidDeviceError,
    KernelNotFoundError,
    KVBlock,
    ProviderNotFoundError,
    ResourceExhaustedError,
    StreamError,
    UnavailableError,
    UnsupportedDTypeError,
    UnsupportedOperationError,
    get_provider,
    register_provider,
)
from sagellm_backend.registry import resolve_provider_name


@dataclass
class Ctx:
    """What a row's call can use: the provider under test, live blocks, a pool, a foreign block."""

    p: BackendProvider
    a: KVBlock
    b: KVBlock
    small: KVBlock
    freed: KVBlock
    foreign: KVBlock
    pool: Any
    ids: list[int]
    extra: dict[str, Any] = field(default_factory=dict)

    def arr(self, values: list[float], dtype: str = "float32") -> Any:
        if self.p.dist_backend == "mock":
            import numpy as np

            return np.asarray(values, dtype=dtype)
        import torch

        return torch.tensor(values, dtype=getattr(torch, dtype), device=self.p.device)


@dataclass(frozen=True)
class Row:
    method: str
    bad_input: str
    call: Callable[[Ctx], Any]
    error: type[BaseException]
    providers: tuple[str, ...] = ("mock", "cpu")


def _ev_unrecorded(c: Ctx) -> Any:
    return c.p.create_event().elapsed_ms(c.p.create_event())


def _ev_on_closed_stream(c: Ctx) -> Any:
    s, ev = c.p.create_stream(), c.p.create_event()
    s.close()  # type: ignore[attr-defined]  # host streams (these rows' providers) can be closed
    with contextlib.suppress(InvalidArgumentError):  # the record refuses; the wait must not hang
        ev.record(s)
    return ev.synchronize()


class RaisingIndex:
    """An object whose ``__index__`` raises something other than ``TypeError``."""

    def __index__(self) -> int:
        raise ZeroDivisionError("__index__")

    def __repr__(self) -> str:
        return "RaisingIndex()"


class RaisingIter:
    """An iterable whose ``__iter__`` raises."""

    def __iter__(self) -> Any:
        raise ZeroDivisionError("__iter__")

    def __repr__(self) -> str:
        return "RaisingIter()"


def _torch_true() -> Any:
    import torch

    return torch.tensor(True)


def _closed_stream(c: Ctx) -> Any:
    s = c.p.create_stream()
    s.close()  # type: ignore[attr-defined]  # host streams (these rows' providers) can be closed
    return s


def _sync_after_failed_task(c: Ctx) -> Any:
    s = c.p.create_stream()
    s.submit(lambda: 1 / 0)
    return s.synchronize(timeout=10.0)


ROWS: list[Row] = [
    # kv_block_alloc
    Row("kv_block_alloc", "num_tokens=0", lambda c: c.p.kv_block_alloc(0, DType.FP16), InvalidArgumentError),
    Row("kv_block_alloc", "num_tokens=-1", lambda c: c.p.kv_block_alloc(-1, DType.FP16), InvalidArgumentError),
    Row(
        "kv_block_alloc",
        "num_tokens=10**12 (absurdly large)",
        lambda c: c.p.kv_block_alloc(10**12, DType.FP16),
        ResourceExhaustedError,
    ),
    Row("kv_block_alloc", "num_tokens=1.5", lambda c: c.p.kv_block_alloc(1.5, DType.FP16), InvalidArgumentTypeError),
    Row(
        "kv_block_alloc", "num_tokens='128'", lambda c: c.p.kv_block_alloc("128", DType.FP16), InvalidArgumentTypeError
    ),
    Row("kv_block_alloc", "num_tokens=True", lambda c: c.p.kv_block_alloc(True, DType.FP16), InvalidArgumentTypeError),
    Row("kv_block_alloc", "num_tokens=None", lambda c: c.p.kv_block_alloc(None, DType.FP16), InvalidArgumentTypeError),
    Row("kv_block_alloc", "dtype='fp64' (not a DType)", lambda c: c.p.kv_block_alloc(4, "fp64"), InvalidArgumentError),
    Row("kv_block_alloc", "dtype=3.14", lambda c: c.p.kv_block_alloc(4, 3.14), InvalidArgumentTypeError),
    Row("kv_block_alloc", "dtype=None", lambda c: c.p.kv_block_alloc(4, None), InvalidArgumentTypeError),
    Row(
        "kv_block_alloc",
        "dtype the device lacks (Mock built with fp16 only, bf16)",
        lambda c: c.extra["fp16_only"].kv_block_alloc(4, DType.BF16),
        UnsupportedDTypeError,
        ("mock",),
    ),
    Row(
        "kv_block_alloc", "device='gpu'", lambda c: c.p.kv_block_alloc(4, DType.FP16, device="gpu"), InvalidDeviceError
    ),
    Row("kv_block_alloc", "device=''", lambda c: c.p.kv_block_alloc(4, DType.FP16, device=""), InvalidDeviceError),
    Row(
        "kv_block_alloc",
        "device='cuda:99'",
        lambda c: c.p.kv_block_alloc(4, DType.FP16, device="cuda:99"),
        DeviceUnreachableError,
    ),
    Row(
        "kv_block_alloc",
        "over max_memory_mb (Mock, 1 MiB limit)",
        lambda c: c.extra["tiny"].kv_block_alloc(1 << 14, DType.FP32),
        ResourceExhaustedError,
        ("mock",),
    ),
    # kv_block_free
    Row("kv_block_free", "a freed block (double free)", lambda c: c.p.kv_block_free(c.freed), BlockFreedError),
    Row(
        "kv_block_free",
        "a block of another provider instance",
        lambda c: c.p.kv_block_free(c.foreign),
        ForeignBlockError,
    ),
    Row(
        "kv_block_free",
        "a KVBlock built by hand",
        lambda c: c.p.kv_block_free(KVBlock(1, 4, DType.FP16, "cpu")),
        ForeignBlockError,
    ),
    Row("kv_block_free", "'block' (not a KVBlock)", lambda c: c.p.kv_block_free("block"), InvalidArgumentTypeError),
    # kv_block_copy
    Row(
        "kv_block_copy", "blocks of different num_tokens", lambda c: c.p.kv_block_copy(c.a, c.small), InvalidBlockError
    ),
    Row(
        "kv_block_copy",
        "blocks of different dtype",
        lambda c: c.p.kv_block_copy(c.a, c.extra["fp32"]),
        InvalidBlockError,
    ),
    Row("kv_block_copy", "a freed source", lambda c: c.p.kv_block_copy(c.freed, c.b), BlockFreedError),
    Row("kv_block_copy", "a freed destination", lambda c: c.p.kv_block_copy(c.a, c.freed), BlockFreedError),
    Row("kv_block_copy", "a foreign destination", lambda c: c.p.kv_block_copy(c.a, c.foreign), ForeignBlockError),
    Row("kv_block_copy", "None as source", lambda c: c.p.kv_block_copy(None, c.b), InvalidArgumentTypeError),
    Row(
        "kv_block_copy",
        "stream of another provider",
        lambda c: c.p.kv_block_copy(c.a, c.b, stream=c.extra["alien_stream"]),
        InvalidArgumentError,
    ),
    # kv_block_migrate
    Row("kv_block_migrate", "target 'cuda:99'", lambda c: c.p.kv_block_migrate(c.a, "cuda:99"), DeviceUnreachableError),
    Row(
        "kv_block_migrate",
        "target 'npu:0' (unreachable)",
        lambda c: c.p.kv_block_migrate(c.a, "npu:0"),
        DeviceUnreachableError,
    ),
    Row("kv_block_migrate", "target 'gpu'", lambda c: c.p.kv_block_migrate(c.a, "gpu"), InvalidDeviceError),
    Row("kv_block_migrate", "target ''", lambda c: c.p.kv_block_migrate(c.a, ""), InvalidDeviceError),
    Row(
        "kv_block_migrate",
        "target 'mock:' + '9' * 5000 (past int()'s digit limit)",
        lambda c: c.p.kv_block_migrate(c.a, "mock:" + "9" * 5000),
        InvalidDeviceError,
    ),
    Row("kv_block_migrate", "target None", lambda c: c.p.kv_block_migrate(c.a, None), InvalidArgumentTypeError),
    Row("kv_block_migrate", "target 3.5", lambda c: c.p.kv_block_migrate(c.a, 3.5), InvalidArgumentTypeError),
    Row(
        "kv_block_migrate",
        "target 'mock:99' (no such device)",
        lambda c: c.p.kv_block_migrate(c.a, "mock:99"),
        InvalidDeviceError,
        ("mock",),
    ),
    Row("kv_block_migrate", "a freed block", lambda c: c.p.kv_block_migrate(c.freed, "cpu"), BlockFreedError),
    Row("kv_block_migrate", "a foreign block", lambda c: c.p.kv_block_migrate(c.foreign, "cpu"), ForeignBlockError),
    # kv_block_read / kv_block_write
    Row("kv_block_read", "a freed block", lambda c: c.p.kv_block_read(c.freed), BlockFreedError),
    Row(
        "kv_block_write",
        "data one byte short",
        lambda c: c.p.kv_block_write(c.a, b"\0" * (c.a.nbytes - 1)),
        InvalidArgumentError,
    ),
    Row("kv_block_write", "data=12 (not bytes-like)", lambda c: c.p.kv_block_write(c.a, 12), InvalidArgumentTypeError),
    # collectives
    Row(
        "all_reduce",
        "a Python list instead of a tensor",
        lambda c: c.p.all_reduce([1.0, 2.0]),
        InvalidArgumentTypeError,
    ),
    Row(
        "all_reduce",
        "op='median' (unknown reduce op)",
        lambda c: c.p.all_reduce(c.arr([1.0]), "median"),
        InvalidArgumentError,
    ),
    Row("all_reduce", "op=3 (not a ReduceOp)", lambda c: c.p.all_reduce(c.arr([1.0]), 3), InvalidArgumentTypeError),
    Row(
        "all_reduce",
        "op='avg' on an integer tensor",
        lambda c: c.p.all_reduce(c.arr([1.0], "int32"), "avg"),
        InvalidArgumentError,
    ),
    Row(
        "all_reduce",
        "op='bxor' on a float tensor",
        lambda c: c.p.all_reduce(c.arr([1.0]), "bxor"),
        InvalidArgumentError,
    ),
    Row("all_gather", "a tuple instead of a tensor", lambda c: c.p.all_gather((1.0,)), InvalidArgumentTypeError),
    Row("broadcast", "src=5 in a world of 1", lambda c: c.p.broadcast(c.arr([1.0]), src=5), CommGroupError),
    Row("broadcast", "src='0'", lambda c: c.p.broadcast(c.arr([1.0]), src="0"), InvalidArgumentTypeError),
    Row("send", "dst = this rank", lambda c: c.p.send(c.arr([1.0]), 0), CommGroupError),
    Row(
        "reduce_scatter",
        "dim 0 not divisible by the world size (0-d tensor)",
        lambda c: c.p.reduce_scatter(c.arr([1.0]).reshape(())),
        InvalidArgumentError,
    ),
    Row("send", "tag='x'", lambda c: c.p.send(c.arr([1.0]), 1, tag="x"), InvalidArgumentTypeError),
    Row("recv", "tag=-1", lambda c: c.p.recv(c.arr([1.0]), 1, tag=-1), InvalidArgumentError),
    Row("recv", "tag=True", lambda c: c.p.recv(c.arr([1.0]), 1, tag=True), InvalidArgumentTypeError),
    Row("broadcast", "src=1.0", lambda c: c.p.broadcast(c.arr([1.0]), src=1.0), InvalidArgumentTypeError),
    Row(
        "all_gather",
        "a read-only out array",
        lambda c: c.p.all_gather(c.arr([1.0]), out=c.extra["read_only"]),
        InvalidArgumentError,
        ("mock",),
    ),
    Row("new_group", "ranks=5 (not a sequence)", lambda c: c.p.new_group(5), InvalidArgumentTypeError),
    Row("new_group", "ranks='01' (a str)", lambda c: c.p.new_group("01"), InvalidArgumentTypeError),
    Row("new_group", "ranks=[0.5]", lambda c: c.p.new_group([0.5]), InvalidArgumentTypeError),
    Row("new_group", "ranks=[0, 0] (duplicate)", lambda c: c.p.new_group([0, 0]), InvalidArgumentError),
    Row("new_group", "timeout=nan", lambda c: c.p.new_group([0], timeout=float("nan")), InvalidArgumentError),
    Row("new_group", "timeout='5'", lambda c: c.p.new_group([0], timeout="5"), InvalidArgumentTypeError),
    Row(
        "init_process_group",
        "timeout=inf",
        lambda c: c.p.init_process_group(rank=0, world_size=1, timeout=float("inf")),
        InvalidArgumentError,
        ("cpu",),
    ),
    Row(
        "init_process_group",
        "rank='0'",
        lambda c: c.p.init_process_group(init_method="tcp://127.0.0.1:1", rank="0", world_size=1),
        InvalidArgumentTypeError,
        ("cpu",),
    ),
    Row(
        "init_process_group",
        "rank=2 in a world of 2",
        lambda c: c.p.init_process_group(init_method="tcp://127.0.0.1:1", rank=2, world_size=2),
        CommGroupError,
        ("cpu",),
    ),
    Row(
        "init_process_group",
        "world_size=0",
        lambda c: c.p.init_process_group(init_method="tcp://127.0.0.1:1", rank=0, world_size=0),
        CommGroupError,
        ("cpu",),
    ),
    Row(
        "init_process_group",
        "init_method=5",
        lambda c: c.p.init_process_group(init_method=5, rank=0, world_size=1),
        InvalidArgumentTypeError,
        ("cpu",),
    ),
    # pools
    Row("create_kv_pool", "num_blocks=0", lambda c: c.p.create_kv_pool(0), InvalidArgumentError),
    Row(
        "create_kv_pool",
        "num_blocks and memory_fraction both",
        lambda c: c.p.create_kv_pool(4, memory_fraction=0.1),
        InvalidArgumentError,
    ),
    Row(
        "create_kv_pool", "memory_fraction=1.5", lambda c: c.p.create_kv_pool(memory_fraction=1.5), InvalidArgumentError
    ),
    Row("create_kv_pool", "block_size=-1", lambda c: c.p.create_kv_pool(4, block_size=-1), InvalidArgumentError),
    Row("create_kv_pool", "dtype='x'", lambda c: c.p.create_kv_pool(4, dtype="x"), InvalidArgumentError),
    Row(
        "create_kv_pool",
        "num_blocks=10**9 (too large)",
        lambda c: c.p.create_kv_pool(10**9, block_size=1024),
        ResourceExhaustedError,
    ),
    Row("pool.allocate", "n=-1", lambda c: c.pool.allocate(-1), InvalidArgumentError),
    Row("pool.allocate", "n=1.5", lambda c: c.pool.allocate(1.5), InvalidArgumentTypeError),
    Row(
        "pool.allocate",
        "more blocks than are free",
        lambda c: c.pool.allocate(c.pool.num_blocks),
        ResourceExhaustedError,
    ),
    Row("pool.free", "an id that is free", lambda c: c.pool.free([c.pool.num_blocks - 1]), BlockFreedError),
    Row("pool.free", "an id out of range", lambda c: c.pool.free([10**6]), InvalidArgumentError),
    Row("pool.free", "ids=['x']", lambda c: c.pool.free(["x"]), InvalidArgumentTypeError),
    Row("pool.free", "ids=7 (not a sequence)", lambda c: c.pool.free(7), InvalidArgumentTypeError),
    Row("pool.free", "the same id twice (one reference)", lambda c: c.pool.free([c.ids[0], c.ids[0]]), BlockFreedError),
    Row("pool.fork", "a free id", lambda c: c.pool.fork([c.pool.num_blocks - 1]), BlockFreedError),
    Row(
        "pool.copy_blocks",
        "src and dst of different length",
        lambda c: c.pool.copy_blocks(c.ids[:2], c.ids[2:3]),
        InvalidArgumentError,
    ),
    Row(
        "pool.copy_blocks",
        "duplicate dst ids",
        lambda c: c.pool.copy_blocks(c.ids[:2], [c.ids[2]] * 2),
        InvalidArgumentError,
    ),
    Row(
        "pool.copy_blocks",
        "src and dst overlap",
        lambda c: c.pool.copy_blocks(c.ids[:2], c.ids[1:3]),
        InvalidArgumentError,
    ),
    Row(
        "pool.copy_blocks",
        "a free dst id",
        lambda c: c.pool.copy_blocks(c.ids[:1], [c.pool.num_blocks - 1]),
        BlockFreedError,
    ),
    Row(
        "pool.make_writable",
        "duplicate ids",
        lambda c: c.pool.make_writable([c.ids[0], c.ids[0]]),
        InvalidArgumentError,
    ),
    Row("pool.swap_in", "not a SwappedBlocks", lambda c: c.pool.swap_in(c.ids), InvalidArgumentTypeError),
    # found by the property tests (tests/test_properties_*.py)
    Row(
        "kv_block_alloc",
        "num_tokens=torch.tensor(True) (a bool tensor; operator.index takes it)",
        lambda c: c.p.kv_block_alloc(_torch_true(), DType.FP16),
        InvalidArgumentTypeError,
    ),
    Row(
        "kv_block_alloc",
        "num_tokens whose __index__ raises",
        lambda c: c.p.kv_block_alloc(RaisingIndex(), DType.FP16),
        InvalidArgumentTypeError,
    ),
    Row(
        "kv_block_alloc",
        "num_tokens=10**400 (beyond float)",
        lambda c: c.p.kv_block_alloc(10**400, DType.FP16),
        ResourceExhaustedError,
    ),
    Row(
        "kv_block_read", "a view of a closed pool", lambda c: c.p.kv_block_read(c.extra["closed_view"]), BlockFreedError
    ),
    Row("to_device", "a str (not a tensor)", lambda c: c.p.to_device("x"), InvalidArgumentTypeError),
    Row(
        "kernel_candidates", "name=['x'] (unhashable)", lambda c: c.p.kernel_candidates(["x"]), InvalidArgumentTypeError
    ),
    Row(
        "all_reduce",
        "op=memoryview (hashing it raises)",
        lambda c: c.p.all_reduce(c.arr([1.0]), memoryview(bytearray(2))),
        InvalidArgumentTypeError,
    ),
    Row(
        "broadcast",
        "group='' (not a CommGroup)",
        lambda c: c.p.broadcast(c.arr([1.0]), 0, group=""),
        InvalidArgumentTypeError,
        ("cpu",),
    ),
    Row(
        "broadcast",
        "group='' (the Mock has no groups)",
        lambda c: c.p.broadcast(c.arr([1.0]), 0, group=""),
        UnsupportedOperationError,
        ("mock",),
    ),
    Row(
        "new_group",
        "ranks=np.array(1) (0-d, not iterable)",
        lambda c: c.p.new_group(c.arr([1.0], "int64").reshape(())),
        InvalidArgumentTypeError,
    ),
    Row(
        "init_process_group",
        "backend=a numpy array (never truth-tested)",
        lambda c: c.p.init_process_group(c.extra["int_array"], rank=0, world_size=1),
        InvalidArgumentTypeError,
        ("cpu",),
    ),
    Row("pool.free", "ids=RaisingIter()", lambda c: c.pool.free(RaisingIter()), InvalidArgumentTypeError),
    Row("pool.free", "ids=[RaisingIndex()]", lambda c: c.pool.free([RaisingIndex()]), InvalidArgumentTypeError),
    Row("pool.free", "ids=range(2**62) (more than memory)", lambda c: c.pool.free(range(2**62)), InvalidArgumentError),
    Row(
        "pool.free",
        "the reference a KVBlock view holds",
        lambda c: c.pool.free([c.ids[3], c.ids[3]]),
        BlockFreedError,
    ),
    Row(
        "pool.make_writable",
        "a block shared only by KVBlock views",
        lambda c: c.pool.make_writable([c.ids[2]]),
        BlockFreedError,
    ),
    Row(
        "pool.copy_blocks",
        "validate=a numpy array (never truth-tested)",
        lambda c: c.pool.copy_blocks(c.ids[:1], c.ids[1:2], validate=c.extra["int_array"]),
        InvalidArgumentTypeError,
    ),
    Row(
        "pool.swap_in",
        "a closed stream (refused before allocating)",
        lambda c: c.pool.swap_in(c.extra["swapped"], stream=_closed_stream(c)),
        InvalidArgumentError,
    ),
    Row(
        "pool.migrate_blocks",
        "a closed stream (refused before allocating)",
        lambda c: c.pool.migrate_blocks(c.ids[:1], c.pool, stream=_closed_stream(c)),
        InvalidArgumentError,
    ),
    Row(
        "Stream.record_event",
        "event='ev' (not an Event)",
        lambda c: c.p.create_stream().record_event("ev"),
        InvalidArgumentTypeError,
    ),
    Row("Stream.wait_stream", "other=None", lambda c: c.p.create_stream().wait_stream(None), InvalidArgumentTypeError),
    Row(
        "Stream.wait_stream",
        "a stream of another provider",
        lambda c: c.p.create_stream().wait_stream(c.extra["alien_stream"]),
        InvalidArgumentError,
    ),
    Row(
        "Stream.synchronize",
        "timeout=10**400 (an int beyond float)",
        lambda c: c.p.create_stream().synchronize(timeout=10**400),
        InvalidArgumentError,
    ),
    # streams, events, kernels, registry
    Row("Event.elapsed_ms", "events never recorded", _ev_unrecorded, InvalidArgumentError),
    Row(
        "Stream.wait_event",
        "'event' (not an Event)",
        lambda c: c.p.create_stream().wait_event("event"),
        InvalidArgumentTypeError,
    ),
    Row("Stream.submit", "42 (not callable)", lambda c: c.p.create_stream().submit(42), InvalidArgumentTypeError),
    Row(
        "Stream.synchronize",
        "timeout=nan",
        lambda c: c.p.create_stream().synchronize(timeout=float("nan")),
        InvalidArgumentError,
    ),
    Row(
        "Stream.synchronize",
        "timeout='1' (a str)",
        lambda c: c.p.create_stream().synchronize(timeout="1"),
        InvalidArgumentTypeError,
    ),
    Row("Stream.synchronize", "after a task raised ZeroDivisionError", _sync_after_failed_task, StreamError),
    Row(
        "Event.synchronize",
        "timeout=inf",
        lambda c: c.p.create_stream().record_event().synchronize(timeout=float("inf")),
        InvalidArgumentError,
    ),
    Row("Event.synchronize", "recorded on a closed stream", _ev_on_closed_stream, StreamError),
    Row(
        "Event.elapsed_ms",
        "timeout=True",
        lambda c: c.p.create_event().elapsed_ms(c.p.create_event(), timeout=True),
        InvalidArgumentTypeError,
    ),
    Row("SwappedBlocks.wait", "timeout=0", lambda c: c.pool.swap_out(c.ids[:1]).wait(timeout=0), InvalidArgumentError),
    Row("register_kernel", "impl=42 (not callable)", lambda c: c.p.register_kernel("k", 42), InvalidArgumentTypeError),
    Row("register_kernel", "name=''", lambda c: c.p.register_kernel("", len), InvalidArgumentError),
    Row("get_kernel", "a name never registered", lambda c: c.p.get_kernel("nope"), KernelNotFoundError),
    Row("get_provider", "name='tpu'", lambda c: get_provider("tpu"), ProviderNotFoundError),
    Row("get_provider", "name=3", lambda c: get_provider(3), InvalidArgumentTypeError),
    Row("get_provider", "name='ascend' without torch_npu", lambda c: get_provider("ascend"), UnavailableError),
    Row("create_*_backend", "config='cpu' (a str)", lambda c: get_provider("mock", "cpu"), InvalidArgumentTypeError),
    Row(
        "get_provider",
        "an unknown option (bogus=1)",
        lambda c: get_provider("mock", None, bogus=1),
        InvalidArgumentTypeError,
    ),
    Row(
        "get_provider",
        "a config dict with an unknown key",
        lambda c: get_provider("mock", {"max_memory": 8}),
        InvalidArgumentTypeError,
    ),
    Row(
        "get_provider",
        "device_id for the one-device cpu provider",
        lambda c: get_provider("cpu", None, device_id=0),
        InvalidArgumentTypeError,
        ("cpu",),
    ),
    Row("resolve_provider_name", "name=None", lambda c: resolve_provider_name(None), InvalidArgumentTypeError),
    Row(
        "register_provider",
        "aliases=['cpu'] (a built-in name)",
        lambda c: register_provider("bad-input-row", get_provider, aliases=["cpu"]),
        InvalidArgumentError,
    ),
    Row(
        "register_provider",
        "aliases=[123]",
        lambda c: register_provider("bad-input-row", get_provider, aliases=[123]),
        InvalidArgumentTypeError,
    ),
    Row(
        "register_provider",
        "aliases='x' (a str, not a list)",
        lambda c: register_provider("bad-input-row", get_provider, aliases="x"),
        InvalidArgumentTypeError,
    ),
    Row(
        "register_provider",
        "factory='a..b:c' (malformed path)",
        lambda c: register_provider("bad-input-row", "a..b:c"),
        InvalidArgumentError,
    ),
    Row("register_provider", "name=3", lambda c: register_provider(3, get_provider), InvalidArgumentTypeError),
]


def builtin_base(cls: type[BaseException]) -> str:
    for base in (MemoryError, TimeoutError, KeyError, NotImplementedError, TypeError, ValueError, RuntimeError):
        if issubclass(cls, base):
            return base.__name__
    return "-"


def render() -> str:
    out = [
        "# Bad-input table",
        "",
        "Every public method, the bad inputs tried, and the typed error each gets. Each row is a test",
        "(`tests/test_bad_inputs.py`) run on the providers listed, which also checks that the provider's",
        "state is unchanged afterwards (memory accounting, peak figures, live blocks and their bytes, pool",
        "occupancy). Generated from `tests/bad_input_table.py`:",
        "`python tests/bad_input_table.py > docs/BAD_INPUTS.md`.",
        "",
        "| method | bad input | error | code | also a | providers |",
        "|---|---|---|---|---|---|",
    ]
    from sagellm_backend.errors import BackendError

    for r in ROWS:
        code = r.error.default_code.value if issubclass(r.error, BackendError) else "-"
        out.append(
            f"| `{r.method}` | {r.bad_input} | `{r.error.__name__}` | `{code}` | "
            f"`{builtin_base(r.error)}` | {', '.join(r.providers)} |"
        )
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
