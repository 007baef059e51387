"""Malformed arguments for every public method of the contract (issue 11, classes 5, 6 and 11).

The methods are enumerated from ``BackendProvider`` and ``KVCachePool`` with :mod:`inspect`, so a
method added to the contract is covered without touching this file. For each parameter hypothesis
draws its default, a well-formed value, or a value from a hostile catalogue (None, bools, floats
with nan/inf, huge and negative ints, strings with non-ASCII digits, bytes, mixed lists, numpy
arrays of the wrong dtype or shape, torch tensors, objects whose ``__index__``/``__len__``/
``__iter__``/``__float__`` raise, foreign and freed blocks, views of closed pools, alien streams).

Each call either succeeds (and then the provider's invariants hold: accounting equals its arenas
and blocks, every block reads back, pools agree with their reference counts, work it enqueued
completes) or raises a ``BackendError`` subclass, and then a snapshot of the provider (live blocks
and their bytes, memory figures, pools with reference counts and bytes, communicator, kernels, the
blocks of another provider it was handed) is exactly what it was before the call.
"""

from __future__ import annotations

import inspect
import math
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from props_support import BLOCK_TOKENS, KINDS, check_invariants, fill, make_provider, snapshot
from sagellm_backend import BackendError, DType, KernelKind, KVBlock, ReduceOp, StreamError
from sagellm_backend import errors as E
from sagellm_backend.api import BackendProvider
from sagellm_backend.api.streams import Event, Stream
from sagellm_backend.core.validate import check_timeout
from sagellm_backend.kv.pool import KVCachePool, SwappedBlocks

torch = pytest.importorskip("torch")


# --------------------------------------------------------------------------- what is called
def _public(cls: type) -> tuple[list[str], list[str]]:
    """Public methods and properties of ``cls`` (class attributes that are plain values excluded)."""
    methods, props = [], []
    for name in sorted(dir(cls)):
        if name.startswith("_"):
            continue
        attr = inspect.getattr_static(cls, name)
        if isinstance(attr, property):
            props.append(name)
        elif isinstance(attr, (classmethod, staticmethod)) or inspect.isfunction(attr):
            methods.append(name)
    return methods, props


PROVIDER_METHODS, PROVIDER_PROPS = _public(BackendProvider)
POOL_METHODS, POOL_PROPS = _public(KVCachePool)
#: The objects a provider hands out, by the class whose public methods are called on them.
SURFACES: dict[str, tuple[type, Callable[[Any], Any]]] = {
    "provider": (BackendProvider, lambda c: c.p),
    "pool": (KVCachePool, lambda c: c.pool),
    "stream": (Stream, lambda c: c.stream),
    "event": (Event, lambda c: c.event),
    "swap": (SwappedBlocks, lambda c: c.swapped),
}
CASES = [(s, m) for s, (cls, _) in SURFACES.items() for m in _public(cls)[0]]


def _params(cls: type, method: str) -> list[inspect.Parameter]:
    sig = inspect.signature(getattr(cls, method))
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [p for p in sig.parameters.values() if p.name not in ("self", "cls") and p.kind not in skip]


#: Methods with two or more parameters, where values combine (the sweep covers a lone one fully).
MIX_CASES = [(s, m) for s, m in CASES if len(_params(SURFACES[s][0], m)) >= 2]


# --------------------------------------------------------------------------- the world of one call
class Evil(Exception):
    """What the hostile objects raise: no typed error of the project, no builtin category."""


class EvilIndex:
    def __index__(self) -> int:
        raise Evil("__index__")

    def __int__(self) -> int:
        raise Evil("__int__")


class EvilSeq:
    def __len__(self) -> int:
        raise Evil("__len__")

    def __iter__(self) -> Any:
        raise Evil("__iter__")

    def __getitem__(self, i: int) -> Any:
        raise Evil("__getitem__")


class EvilIterOnly:
    """Iterable whose iteration fails half-way."""

    def __iter__(self) -> Any:
        yield 0
        raise Evil("__next__")


class EvilInt(int):
    """An int subclass whose conversions raise."""

    def __index__(self) -> int:
        raise Evil("__index__")

    def __int__(self) -> int:
        raise Evil("__int__")


class EvilFloat:
    def __float__(self) -> float:
        raise Evil("__float__")


class EvilHash:
    def __hash__(self) -> int:
        raise Evil("__hash__")

    def __eq__(self, other: object) -> bool:
        raise Evil("__eq__")


class EvilBool:
    def __bool__(self) -> bool:
        raise Evil("__bool__")


@dataclass
class Ctx:
    """A provider with blocks, pools, streams and swaps, and things of other providers."""

    p: Any
    other: Any
    a: KVBlock
    b: KVBlock
    small: KVBlock
    freed: KVBlock
    foreign: KVBlock
    view: KVBlock
    closed_view: KVBlock
    pool: KVCachePool
    pool2: KVCachePool
    closed_pool: KVCachePool
    alien_pool: KVCachePool
    ids: list[int]
    stream: Any
    closed_stream: Any
    alien_stream: Any
    swapped: SwappedBlocks
    released: SwappedBlocks
    alien_swapped: SwappedBlocks
    event: Event
    stream2: Any

    @property
    def pools(self) -> list[KVCachePool]:
        return [self.pool, self.pool2, self.closed_pool, *self.extra_pools]

    def arr(self, values: list[float], dtype: str = "float32") -> Any:
        if self.p.dist_backend == "mock":
            return np.asarray(values, dtype=dtype)
        return torch.tensor(values, dtype=getattr(torch, dtype))

    def __post_init__(self) -> None:
        self.extra_pools: list[KVCachePool] = []


def build(kind: str) -> Ctx:
    p, other = make_provider(kind), make_provider(kind)
    a = p.kv_block_alloc(BLOCK_TOKENS, DType.FP32)
    b = p.kv_block_alloc(BLOCK_TOKENS, DType.FP32)
    small = p.kv_block_alloc(1, DType.FP32)
    for i, blk in enumerate((a, b, small)):
        p.kv_block_write(blk, fill(blk.nbytes, i))
    freed = p.kv_block_alloc(BLOCK_TOKENS, DType.FP32)
    p.kv_block_free(freed)
    foreign = other.kv_block_alloc(BLOCK_TOKENS, DType.FP32)
    other.kv_block_write(foreign, fill(foreign.nbytes, 9))
    pool = p.create_kv_pool(8, block_size=BLOCK_TOKENS, dtype=DType.FP32)
    ids = pool.allocate(4)
    for i in ids:
        pool.write_block(i, fill(pool.block_nbytes, 10 + i))
    pool.fork([ids[2]])  # one shared block
    view = pool.block(ids[3])
    pool2 = p.create_kv_pool(4, block_size=BLOCK_TOKENS, dtype=DType.FP32)
    closed_pool = p.create_kv_pool(2, block_size=BLOCK_TOKENS, dtype=DType.FP32)
    closed_view = closed_pool.block(closed_pool.allocate(1)[0])
    closed_pool.close()
    alien_pool = other.create_kv_pool(4, block_size=BLOCK_TOKENS, dtype=DType.FP32)
    alien_swapped = alien_pool.swap_out(alien_pool.allocate(1))
    swapped = pool.swap_out(ids[:1])
    released = pool.swap_out(ids[1:2])
    released.release()
    closed_stream = p.create_stream()
    closed_stream.close()
    stream = p.create_stream()
    return Ctx(
        p,
        other,
        a,
        b,
        small,
        freed,
        foreign,
        view,
        closed_view,
        pool,
        pool2,
        closed_pool,
        alien_pool,
        ids,
        stream,
        closed_stream,
        other.create_stream(),
        swapped,
        released,
        alien_swapped,
        stream.record_event(),
        p.create_stream(),
    )


Value = Callable[[Ctx], Any]

HOSTILE: dict[str, Value] = {
    "None": lambda c: None,
    "True": lambda c: True,
    "False": lambda c: False,
    "0": lambda c: 0,
    "-1": lambda c: -1,
    "-2**70": lambda c: -(2**70),
    "2**70": lambda c: 2**70,
    "2**63": lambda c: 2**63,
    "10**400": lambda c: 10**400,
    "range(2**62)": lambda c: range(2**62),
    "a generator of ids": lambda c: (i for i in c.ids[:2]),
    "1.0": lambda c: 1.0,
    "2.5": lambda c: 2.5,
    "-0.5": lambda c: -0.5,
    "nan": lambda c: math.nan,
    "inf": lambda c: math.inf,
    "-inf": lambda c: -math.inf,
    "1e308": lambda c: 1e308,
    "''": lambda c: "",
    "'x'": lambda c: "x",
    "'1'": lambda c: "1",
    "arabic 1": lambda c: "\u0661",
    "'mock:\u0661'": lambda c: "mock:\u0661",
    "'cpu:-1'": lambda c: "cpu:-1",
    "'cuda:0'": lambda c: "cuda:0",
    "'mock:7'": lambda c: "mock:7",
    "'sum'": lambda c: "sum",
    "'CPU'": lambda c: "CPU",
    "'cpu:0'": lambda c: "cpu:0",
    "'mock:+1'": lambda c: "mock:+1",
    "' mock:1'": lambda c: " mock:1",
    "'mock:01'": lambda c: "mock:01",
    "'\\x00'": lambda c: "\x00",
    "b''": lambda c: b"",
    "b'\\x00\\x01'": lambda c: b"\x00\x01",
    "bytearray(3)": lambda c: bytearray(3),
    "[]": lambda c: [],
    "[1, 'a', None]": lambda c: [1, "a", None],
    "[[1]]": lambda c: [[1]],
    "[1.5]": lambda c: [1.5],
    "[True]": lambda c: [True],
    "[0, 0]": lambda c: [0, 0],
    "[-1]": lambda c: [-1],
    "[2**70]": lambda c: [2**70],
    "(1, 2)": lambda c: (1, 2),
    "{1: 2}": lambda c: {1: 2},
    "{1}": lambda c: {1},
    "object()": lambda c: object(),
    "int (the type)": lambda c: int,
    "np.array([1.0])": lambda c: np.array([1.0]),
    "np.array([[1, 2]])": lambda c: np.array([[1, 2]]),
    "np.array(1)": lambda c: np.array(1),
    "np.array([], object)": lambda c: np.array([], dtype=object),
    "np.float64(nan)": lambda c: np.float64("nan"),
    "np.int64(-1)": lambda c: np.int64(-1),
    "np.uint64(2**64-1)": lambda c: np.uint64(2**64 - 1),
    "np.bool_(True)": lambda c: np.bool_(True),
    "np.array(['a'])": lambda c: np.array(["a"]),
    "np.zeros(3, complex64)": lambda c: np.zeros(3, dtype=np.complex64),
    "np.array([1, 2], int8)": lambda c: np.array([1, 2], dtype=np.int8),
    "np.zeros((2, 0))": lambda c: np.zeros((2, 0), dtype=np.float32),
    "read-only float32": lambda c: np.frombuffer(b"\x00" * 8, dtype=np.float32),
    "non-contiguous block-sized array": lambda c: np.zeros(c.a.nbytes * 2, dtype=np.uint8)[::2],
    "float32 array of block size": lambda c: np.ones(c.a.nbytes // 4, dtype=np.float32),
    "memoryview of block size": lambda c: memoryview(bytearray(c.a.nbytes)),
    "torch.tensor([1.0])": lambda c: torch.tensor([1.0]),
    "torch.tensor(1.5)": lambda c: torch.tensor(1.5),
    "torch.zeros(2, 2)": lambda c: torch.zeros(2, 2),
    "torch.tensor([1])": lambda c: torch.tensor([1]),
    "torch.tensor(True)": lambda c: torch.tensor(True),
    "torch.tensor([[0, 1]])": lambda c: torch.tensor([[0, 1]]),
    "torch.tensor([1.0]) requires_grad": lambda c: torch.tensor([1.0], requires_grad=True),
    "EvilIndex()": lambda c: EvilIndex(),
    "EvilSeq()": lambda c: EvilSeq(),
    "EvilIterOnly()": lambda c: EvilIterOnly(),
    "[EvilIndex()]": lambda c: [EvilIndex()],
    "[EvilHash()]": lambda c: [EvilHash()],
    "EvilFloat()": lambda c: EvilFloat(),
    "EvilInt(1)": lambda c: EvilInt(1),
    "[EvilInt(1)]": lambda c: [EvilInt(1)],
    "[nan]": lambda c: [math.nan],
    "np.int64(2**63-1)": lambda c: np.int64(2**63 - 1),
    "b'mock:1'": lambda c: b"mock:1",
    "EvilBool()": lambda c: EvilBool(),
    "a lambda that raises": lambda c: lambda *a, **k: 1 / 0,
    "DType.INT4": lambda c: DType.INT4,
    "ReduceOp.AVG": lambda c: ReduceOp.AVG,
    "KernelKind.MATMUL": lambda c: KernelKind.MATMUL,
    # the project's own objects, in the wrong place or in the wrong state
    "block a": lambda c: c.a,
    "1-token block": lambda c: c.small,
    "freed block": lambda c: c.freed,
    "foreign block": lambda c: c.foreign,
    "hand-built KVBlock": lambda c: KVBlock(1, BLOCK_TOKENS, DType.FP32, c.p.device),
    "pool view": lambda c: c.view,
    "closed pool's view": lambda c: c.closed_view,
    "[closed pool's view]": lambda c: [c.closed_view],
    "stream": lambda c: c.stream,
    "closed stream": lambda c: c.closed_stream,
    "another provider's stream": lambda c: c.alien_stream,
    "an event": lambda c: c.p.create_event(),
    "another provider's event": lambda c: c.alien_stream.record_event(),
    "pool": lambda c: c.pool,
    "closed pool": lambda c: c.closed_pool,
    "another provider's pool": lambda c: c.alien_pool,
    "released swap": lambda c: c.released,
    "another pool's swap": lambda c: c.alien_swapped,
    "the provider": lambda c: c.p,
    "the other provider": lambda c: c.other,
    "freed ids": lambda c: [c.pool.num_blocks - 1],
    "all ids twice": lambda c: c.ids + c.ids,
    "ids as float array": lambda c: np.asarray(c.ids, dtype=np.float64),
}


def _device_choices(c: Ctx) -> list[Any]:
    return [None, c.p.device, "cpu", "mock:1" if c.p.dist_backend == "mock" else "cpu"]


# Well-formed values: "method.param" first, then "param". Calls built from these succeed.
GOOD: dict[str, dict[str, Value]] = {
    "get_attention_backend.name": {"None": lambda c: None, "'sdpa'": lambda c: "sdpa"},
    "name": {"'props_kernel'": lambda c: "props_kernel", "'rmsnorm'": lambda c: "rmsnorm"},
    "impl": {"len": lambda c: len},
    "priority": {"3": lambda c: 3},
    "kind": {"None": lambda c: None, "KernelKind.ATTENTION": lambda c: KernelKind.ATTENTION},
    "tensor": {"float array": lambda c: c.arr([1.0, 2.0])},
    "num_tokens": {"1": lambda c: 1, "np.int64(2)": lambda c: np.int64(2)},
    "dtype": {"DType.FP32": lambda c: DType.FP32, "'fp16'": lambda c: "fp16"},
    "device": {
        "None": lambda c: None,
        "own device": lambda c: c.p.device,
        "cpu": lambda c: "cpu",
        "another device": lambda c: _device_choices(c)[3],
    },
    "target_device": {"own device": lambda c: c.p.device, "cpu": lambda c: "cpu"},
    "block": {"block b": lambda c: c.b, "pool view": lambda c: c.view},
    "kv_block_copy.src": {"block a": lambda c: c.a, "pool view": lambda c: c.view},
    "kv_block_copy.dst": {"block b": lambda c: c.b},
    "stream": {"None": lambda c: None, "stream": lambda c: c.stream},
    "kv_block_write.data": {
        "bytes": lambda c: fill(c.a.nbytes, 3),
        "bytearray": lambda c: bytearray(fill(c.a.nbytes, 4)),
        "uint8 array": lambda c: np.frombuffer(fill(c.a.nbytes, 5), dtype=np.uint8).copy(),
    },
    "write_block.data": {"bytes": lambda c: fill(c.pool.block_nbytes, 6)},
    "num_blocks": {"2": lambda c: 2, "None": lambda c: None},
    "block_size": {"2": lambda c: 2},
    "memory_fraction": {"None": lambda c: None, "1e-5": lambda c: 1e-5},
    "backend": {"None": lambda c: None},
    "init_method": {"None": lambda c: None},
    "rank": {"0": lambda c: 0, "None": lambda c: None},
    "world_size": {"1": lambda c: 1},
    "timeout": {"5.0": lambda c: 5.0},
    "check_consistency": {"True": lambda c: True},
    "blocking_wait": {"True": lambda c: True},
    "ranks": {"[0]": lambda c: [0]},
    "op": {"'sum'": lambda c: "sum", "ReduceOp.MAX": lambda c: ReduceOp.MAX},
    "group": {"None": lambda c: None},
    "out": {"None": lambda c: None},
    "broadcast.src": {"0": lambda c: 0},
    "send.dst": {"0": lambda c: 0},
    "recv.src": {"0": lambda c: 0},
    "tag": {"0": lambda c: 0},
    # pools
    "n": {"0": lambda c: 0, "2": lambda c: 2},
    "ids": {"two ids": lambda c: c.ids[:2], "ids array": lambda c: np.asarray(c.ids[:2])},
    "make_writable.ids": {"the shared id": lambda c: [c.ids[2]], "two ids": lambda c: c.ids[1:3]},
    "block_id": {"an id": lambda c: c.ids[0], "np.int64 id": lambda c: np.int64(c.ids[1])},
    "src_ids": {"[ids[0]]": lambda c: [c.ids[0]]},
    "copy_blocks.dst_ids": {"[ids[1]]": lambda c: [c.ids[1]]},
    "swap_in.dst_ids": {"None": lambda c: None, "[ids[3]]": lambda c: [c.ids[3]]},
    "validate": {"True": lambda c: True, "False": lambda c: False},
    "swapped": {"the swap": lambda c: c.swapped},
    "target": {"pool2": lambda c: c.pool2, "the pool itself": lambda c: c.pool},
    # streams, events, swaps
    "record_event.event": {"None": lambda c: None, "a new event": lambda c: c.p.create_event()},
    "wait_event.event": {"a recorded event": lambda c: c.event},
    "other": {"another stream": lambda c: c.stream2},
    "fn": {"a no-op": lambda c: lambda: None},
    "record.stream": {"None": lambda c: None, "stream": lambda c: c.stream},
    "start": {"a recorded event": lambda c: c.stream2.record_event()},
}


def _good(method: str, param: str) -> dict[str, Value]:
    return GOOD.get(f"{method}.{param}") or GOOD.get(param) or {}


def _choices(method: str, params: list[inspect.Parameter]) -> st.SearchStrategy[dict[str, tuple[str, str]]]:
    """Per parameter: ("default", ""), ("good", label) or ("bad", label)."""
    fields: dict[str, st.SearchStrategy[tuple[str, str]]] = {}
    bad = st.tuples(st.just("bad"), st.sampled_from(sorted(HOSTILE)))
    for p in params:
        options = [bad]
        good = _good(method, p.name)
        if good:
            options.append(st.tuples(st.just("good"), st.sampled_from(sorted(good))))
        if p.default is not inspect.Parameter.empty:
            options.append(st.just(("default", "")))
        fields[p.name] = st.one_of(*options)
    return st.fixed_dictionaries(fields)


def _resolve(c: Ctx, method: str, choice: tuple[str, str], param: str) -> Any:
    how, label = choice
    return HOSTILE[label](c) if how == "bad" else _good(method, param)[label](c)


def _call(target: Any, method: str, params: list[inspect.Parameter], c: Ctx, choice: dict[str, tuple[str, str]]) -> Any:
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for p in params:
        if choice[p.name][0] == "default":
            continue
        value = _resolve(c, method, choice[p.name], p.name)
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and len(args) == params.index(p):
            args.append(value)
        else:
            kwargs[p.name] = value
    result = getattr(target, method)(*args, **kwargs)
    if isinstance(result, AbstractContextManager):  # capture_graph: the work happens on entry
        with result:
            pass
    return result


def _drain(c: Ctx, method: str = "") -> None:
    """Work a call enqueued completes: a call that was accepted may not fail later on the stream
    (``submit`` runs the caller's function: its failure is the stream's to report)."""
    for s in (c.stream, c.stream2):
        try:
            s.synchronize(timeout=30.0)
        except StreamError:
            if method != "submit":
                raise


def _cleanup(c: Ctx) -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # a successful init_process_group (world of one)
        dist.destroy_process_group()
    c.p.close()
    c.other.close()


def _check_call(kind: str, target_of: Callable[[Ctx], Any], cls: type, method: str, choice: Any) -> None:
    params = _params(cls, method)
    c = build(kind)
    try:
        _drain(c)
        others = ((c.other, c.foreign),)
        before = snapshot(c.p, c.pools, others)
        try:
            result = _call(target_of(c), method, params, c, choice)
        except BackendError:
            _drain(c)
            after = snapshot(c.p, c.pools, others)
            assert after == before, f"{method} raised a typed error but changed the provider's state"
            return
        except Exception as exc:  # the property: nothing but typed errors escapes
            raise AssertionError(f"{method}({choice}) raised a raw {type(exc).__name__}: {exc}") from exc
        if isinstance(result, KVCachePool):
            c.extra_pools.append(result)
        if isinstance(result, SwappedBlocks):
            result.wait(timeout=30.0)
        _drain(c, method)
        check_invariants(c.p, c.pools)
    finally:
        _cleanup(c)


def _baseline(method: str, params: list[inspect.Parameter]) -> dict[str, tuple[str, str]]:
    """Every parameter well-formed (or at its default; None where it has neither)."""
    out: dict[str, tuple[str, str]] = {}
    for p in params:
        good = _good(method, p.name)
        if good:
            out[p.name] = ("good", sorted(good)[0])
        elif p.default is not inspect.Parameter.empty:
            out[p.name] = ("default", "")
        else:
            out[p.name] = ("bad", "None")
    return out


def _sweep(kind: str, target_of: Callable[[Ctx], Any], cls: type, method: str) -> None:
    """One hostile value at a time in each parameter, every value of the catalogue, the rest
    well-formed. A context is reused while calls fail (the snapshot proves them harmless)."""
    params = _params(cls, method)
    base = _baseline(method, params)
    failures: list[str] = []
    c: Ctx | None = None
    before: Any = None
    try:
        for p in params:
            for label in sorted(HOSTILE):
                choice = {**base, p.name: ("bad", label)}
                if c is None:
                    c = build(kind)
                    _drain(c)
                    before = snapshot(c.p, c.pools, ((c.other, c.foreign),))
                try:
                    result = _call(target_of(c), method, params, c, choice)
                except BackendError:
                    _drain(c)
                    if snapshot(c.p, c.pools, ((c.other, c.foreign),)) != before:
                        failures.append(f"{method}({p.name}={label}): typed error, but the state changed")
                        _cleanup(c)
                        c = None
                    continue
                except Exception as exc:
                    failures.append(f"{method}({p.name}={label}): raw {type(exc).__name__}: {exc}")
                    _cleanup(c)
                    c = None
                    continue
                try:  # accepted: the invariants hold, then start afresh
                    if isinstance(result, KVCachePool):
                        c.extra_pools.append(result)
                    if isinstance(result, SwappedBlocks):
                        result.wait(timeout=30.0)
                    _drain(c, method)
                    check_invariants(c.p, c.pools)
                except Exception as exc:
                    failures.append(f"{method}({p.name}={label}) succeeded, then {type(exc).__name__}: {exc}")
                _cleanup(c)
                c = None
    finally:
        if c is not None:
            _cleanup(c)
    assert not failures, "\n".join(failures)


def _budget(n_params: int) -> int:
    return min(80, 20 * n_params)


SETTINGS = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


@pytest.fixture(autouse=True)
def _no_rendezvous(monkeypatch: pytest.MonkeyPatch) -> None:
    """No call may find a real rendezvous: init_process_group can only succeed as a world of one."""
    for var in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "SAGELLM_BACKEND"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("surface", "method"), CASES, ids=[f"{s}.{m}" for s, m in CASES])
def test_each_hostile_value_in_each_parameter(kind: str, surface: str, method: str) -> None:
    cls, target_of = SURFACES[surface]
    _sweep(kind, target_of, cls, method)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("surface", "method"), MIX_CASES, ids=[f"{s}.{m}" for s, m in MIX_CASES])
def test_random_mixes_of_hostile_and_valid_arguments(kind: str, surface: str, method: str) -> None:
    cls, target_of = SURFACES[surface]
    params = _params(cls, method)

    @settings(max_examples=_budget(len(params)), **SETTINGS)  # type: ignore[arg-type]
    @given(choice=_choices(method, params))
    def run(choice: dict[str, tuple[str, str]]) -> None:
        _check_call(kind, target_of, cls, method, choice)

    run()


@pytest.mark.parametrize("kind", KINDS)
def test_every_public_property_reads_or_raises_typed(kind: str) -> None:
    c = build(kind)
    try:
        targets = [(target_of(c), _public(cls)[1]) for cls, target_of in SURFACES.values()]
        for target, names in [*targets, (c.closed_pool, POOL_PROPS), (c.closed_stream, _public(Stream)[1])]:
            for name in names:
                with suppress(BackendError):
                    getattr(target, name)
        assert "kv_block_alloc" in PROVIDER_METHODS and "swap_in" in POOL_METHODS  # the enumeration works
        assert len(PROVIDER_METHODS) >= 35 and len(POOL_METHODS) >= 14
    finally:
        _cleanup(c)


# --------------------------------------------------------------------------- what the properties found
# Each case below failed before its fix (found by the sweep or the mixes above); kept explicit so a
# change to the catalogue cannot lose it.
@pytest.mark.parametrize("kind", KINDS)
def test_found_ids_from_objects_that_raise_are_typed(kind: str) -> None:
    c = build(kind)
    try:
        before = snapshot(c.p, c.pools)
        for bad in ([EvilIndex()], EvilSeq(), EvilIterOnly(), range(2**62), [torch.tensor(True)]):
            for call in (
                lambda b=bad: c.pool.free(b),
                lambda b=bad: c.pool.fork(b),
                lambda b=bad: c.pool.make_writable(b),
                lambda b=bad: c.pool.swap_out(b),
                lambda b=bad: c.pool.copy_blocks(b, [c.ids[1]]),
                lambda b=bad: c.pool.copy_blocks([c.ids[0]], b, validate=False),
            ):
                with pytest.raises((E.InvalidArgumentTypeError, E.InvalidArgumentError)):
                    call()
        for flag in (np.array([True, False]), torch.tensor([1, 0]), EvilSeq(), 1):
            with pytest.raises(E.InvalidArgumentTypeError):
                c.pool.copy_blocks([c.ids[0]], [c.ids[1]], validate=flag)
        assert snapshot(c.p, c.pools) == before
    finally:
        _cleanup(c)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("count", [EvilIndex(), torch.tensor(True), np.bool_(True), torch.tensor([2])])
def test_found_counts_ranks_and_tags_accept_exact_integers_only(kind: str, count: object) -> None:
    # torch.tensor(True) and one-element tensors pass operator.index(): they were taken as 1 and 2
    c = build(kind)
    try:
        before = snapshot(c.p, c.pools)
        for call in (
            lambda: c.p.kv_block_alloc(count, DType.FP32),
            lambda: c.p.create_kv_pool(2, block_size=count),
            lambda: c.p.broadcast(c.arr([1.0]), src=count),
            lambda: c.p.send(c.arr([1.0]), count),
            lambda: c.p.recv(c.arr([1.0]), 1, tag=count),
            lambda: c.p.new_group([count]),
        ):
            with pytest.raises(E.InvalidArgumentTypeError):
                call()
        assert snapshot(c.p, c.pools) == before
        assert c.p.kv_block_alloc(np.int64(2), DType.FP32).num_tokens == 2  # numpy and 0-d integers still work
        assert c.p.kv_block_alloc(torch.tensor(3), DType.FP32).num_tokens == 3
        # an int subclass is its int value, whatever its __int__ / __index__ do (they raised through)
        assert type(c.p.kv_block_alloc(EvilInt(2), DType.FP32).num_tokens) is int
        assert c.pool.read_block(EvilInt(c.ids[0])) == c.pool.read_block(c.ids[0])
    finally:
        _cleanup(c)


@pytest.mark.parametrize("kind", KINDS)
def test_found_other_untyped_errors(kind: str) -> None:
    c = build(kind)
    try:
        before = snapshot(c.p, c.pools)
        with pytest.raises(E.InvalidArgumentTypeError):
            c.p.kernel_candidates(["rmsnorm"])  # was: unhashable TypeError
        with pytest.raises(E.InvalidArgumentTypeError):
            c.p.register_kernel(123, len)  # a type, not a value, error
        for bad_group in ("", 0, [0]):
            for call in (
                lambda g=bad_group: c.p.broadcast(c.arr([1.0]), 0, group=g),
                lambda g=bad_group: c.p.send(c.arr([1.0]), 1, group=g),
                lambda g=bad_group: c.p.recv(c.arr([1.0]), 1, group=g),
            ):
                with pytest.raises(E.BackendError):  # was: AttributeError 'str' has no 'ranks' (cpu)
                    call()
        with pytest.raises(E.InvalidArgumentTypeError):
            c.p.all_reduce(c.arr([1.0]), memoryview(bytearray(2)))  # was: ValueError from hash() (cpu)
        with pytest.raises(E.InvalidArgumentTypeError):
            c.p.all_reduce(c.arr([1.0]), [EvilHash()])
        for tensor in ("", None, EvilSeq(), torch.tensor([1.0], requires_grad=True) if kind == "mock" else object()):
            with pytest.raises(E.InvalidArgumentTypeError):  # was: AttributeError (cpu), RuntimeError (mock)
                c.p.to_device(tensor)
        with pytest.raises(E.ResourceExhaustedError):
            c.p.kv_block_alloc(10**400, DType.FP32)  # was: OverflowError formatting the size
        for bad_event in ("ev", 3, c.stream):
            with pytest.raises(E.InvalidArgumentTypeError):  # was: AttributeError
                c.stream.record_event(bad_event)
        for bad_stream in (None, "s", c.p.create_event()):
            with pytest.raises(E.InvalidArgumentTypeError):
                c.stream.wait_stream(bad_stream)
        with pytest.raises(E.InvalidArgumentError):
            c.stream.wait_stream(c.alien_stream)
        assert snapshot(c.p, c.pools) == before
    finally:
        _cleanup(c)


def test_found_backend_argument_is_never_truth_tested() -> None:
    p = make_provider("cpu")
    with pytest.raises(E.InvalidArgumentTypeError):  # was: ValueError, ambiguous truth value
        p.init_process_group(np.array([1, 2]), rank=0, world_size=1)


@pytest.mark.parametrize("kind", KINDS)
def test_found_failed_swap_in_and_migrate_leave_the_pool_exactly_as_it_was(kind: str) -> None:
    # The rollback freed the fresh ids instead of undoing the allocation: the peak stayed raised and
    # the free list came back in another order (the next allocate returned other ids).
    c = build(kind)
    try:
        before = snapshot(c.p, c.pools)
        with pytest.raises(E.InvalidArgumentError):
            c.pool.swap_in(c.swapped, stream=c.closed_stream)
        with pytest.raises(E.InvalidArgumentError):
            c.pool.migrate_blocks(c.ids[:1], c.pool2, stream=c.closed_stream)
        assert snapshot(c.p, c.pools) == before
        if kind == "mock":  # a failure after the allocation, inside the copy
            for call in (lambda: c.pool.swap_in(c.swapped), lambda: c.pool.migrate_blocks(c.ids[:1], c.pool2)):
                c.p.faults.fail_transfers(1)
                with pytest.raises(E.KVTransferError):
                    call()
                assert snapshot(c.p, c.pools) == before
        expected_next = [i for i in range(c.pool.num_blocks) if c.pool.refcount(i) == 0][:1]
        assert c.pool.allocate(1) == expected_next
    finally:
        _cleanup(c)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", KINDS)
def test_found_huge_finite_timeouts_wait_instead_of_overflowing(kind: str) -> None:
    # threading's waits raise OverflowError above TIMEOUT_MAX; a pending wait with 1e308 did so
    c = build(kind)
    try:
        gate = threading.Event()
        c.stream.submit(gate.wait, 10.0)
        ev = c.stream.record_event()
        swapped = c.pool.swap_out(c.ids[:1], stream=c.stream)
        threading.Timer(0.2, gate.set).start()
        c.stream.synchronize(timeout=1e308)
        ev.synchronize(timeout=1e308)
        swapped.wait(timeout=1e308)
        assert c.stream2.record_event().elapsed_ms(c.stream2.record_event(), timeout=1e308) <= 0.0
        with pytest.raises(E.InvalidArgumentError):
            c.stream.synchronize(timeout=10**400)  # an int beyond float: not finite
        assert check_timeout("timeout", 1e308) == threading.TIMEOUT_MAX
    finally:
        _cleanup(c)
