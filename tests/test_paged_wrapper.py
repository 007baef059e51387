"""PagedAttentionWrapper on CPU: plan/run against PagedAttentionBackend.forward and a float64 reference over a
multi-step decode flow with changing lengths, tables, slots and padding; hostile plans; the forward fast path."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sagellm_backend.errors import (
    BackendError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidBlockError,
    InvalidDeviceError,
    UnsupportedDTypeError,
)

torch = pytest.importorskip("torch")

from decode_step_model import Dims, decode_step, make_weights, rope_torch, step_batch  # noqa: E402
from sagellm_backend.attention import (  # noqa: E402
    AttentionMetadata,
    PagedAttentionBackend,
    PagedAttentionMetadataBuilder,
    PagedAttentionWrapper,
    get_attention_diagnostics,
    reset_attention_diagnostics,
)
from sagellm_backend.attention.reference import reference_paged_decode  # noqa: E402


def _kernels() -> dict[str, Any]:
    from sagellm_backend import get_provider

    p = get_provider("cpu")
    ks = {n: p.get_kernel(n) for n in ("linear", "rmsnorm", "add_rmsnorm", "silu_mul")}
    ks["rope"] = rope_torch
    return ks


def _wrapper(d: Dims, **kw: Any) -> PagedAttentionWrapper:
    return PagedAttentionWrapper(
        d.heads, d.kv_heads, d.head_dim, block_size=d.block_size, max_batch=d.max_batch,
        max_blocks_per_seq=d.max_blocks, device="cpu", **kw,
    )  # fmt: skip


def _caches(d: Dims, dtype: Any, seed: int) -> list[tuple[Any, Any]]:
    g = torch.Generator().manual_seed(seed)
    shape = (d.num_blocks, d.block_size, d.kv_heads, d.head_dim)
    return [
        (torch.randn(shape, generator=g).to(dtype), torch.randn(shape, generator=g).to(dtype)) for _ in range(d.layers)
    ]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_decode_flow_plan_run_equals_forward_and_float64_reference(dtype: str) -> None:
    dt = getattr(torch, dtype)
    d = Dims()
    rng = random.Random(3)
    weights, kernels = make_weights(d, dt, "cpu"), _kernels()
    caches_w, caches_f = _caches(d, dt, 1), _caches(d, dt, 1)
    wrapper, backend = _wrapper(d), PagedAttentionBackend(d.block_size)
    builder = PagedAttentionMetadataBuilder(d.block_size)
    owned: list[list[int]] = [[] for _ in range(4)]
    lens = [rng.randrange(0, 12) for _ in range(4)]
    for step in range(6):
        n = rng.randint(1, 4)
        ctx, tables, slots = (x[:n] for x in step_batch(rng, d, owned, lens))
        padded = rng.randint(n, d.max_batch)
        wrapper.plan(ctx, tables, slots, batch_size=padded)
        md = builder.build_decode_metadata(ctx, tables)
        assert md.slot_mapping is not None and md.slot_mapping.tolist() == slots
        x = torch.randn(padded, d.hidden, generator=torch.Generator().manual_seed(step)).to(dt)
        attn_out: dict[int, Any] = {}

        def run(i: int, q: Any, k: Any, v: Any, cache: Any, seen: dict[int, Any] = attn_out) -> Any:
            seen[i] = (q.clone(), wrapper.run(q, k, v, cache))
            return seen[i][1]

        def fwd(i: int, q: Any, k: Any, v: Any, cache: Any, n: int = n, md: Any = md) -> Any:
            out = torch.zeros_like(q)
            out[:n] = backend.forward(q[:n], k[:n], v[:n], md, kv_cache=cache)
            return out

        got = decode_step(x, wrapper.positions, weights, caches_w, kernels, run, d)
        pos = torch.tensor(ctx + [0] * (padded - n))
        want = decode_step(x, pos, weights, caches_f, kernels, fwd, d)
        assert torch.equal(got[:n], want[:n]), step
        for (kw, vw), (kf, vf) in zip(caches_w, caches_f):
            assert torch.equal(kw, kf) and torch.equal(vw, vf)
        for i, (q, out) in attn_out.items():  # attention itself against float64, padding rows exactly zero
            ref = reference_paged_decode(
                q[:n], *caches_w[i], torch.tensor(tables), torch.tensor(ctx) + 1, d.head_dim**-0.5
            )
            tol = 1e-5 if dt == torch.float32 else 2e-2
            assert float((out[:n].double() - ref).abs().max()) <= tol
            assert not out[n:].any()
        for i in range(n):
            lens[i] += 1


def test_positions_and_padding_buffers() -> None:
    d = Dims()
    w = _wrapper(d)
    w.plan([5, 0], [[3, 4, 9], [7, 1, 1]], [4 * 4 + 1, 7 * 4], batch_size=4)
    assert w.batch_size == 4
    assert w.positions.tolist() == [5, 0, 0, 0]
    assert w.key_lens.tolist() == [6, 1, 0, 0]
    assert w.slot_mapping.tolist() == [17, 28, -1, -1]
    assert w.block_tables.shape == (4, d.max_blocks) and w.block_tables[2:].abs().sum() == 0
    assert w.block_tables[0, :3].tolist() == [3, 4, 9] and not w.block_tables[0, 3:].any()


def test_run_writes_only_real_slots_and_padding_is_zero() -> None:
    d = Dims()
    w = _wrapper(d)
    kc, vc = _caches(d, torch.float32, 0)[0]
    before = kc.clone()
    w.plan([2], [[5]], [5 * 4 + 2], batch_size=3)
    q, k = torch.randn(3, d.heads, d.head_dim), torch.randn(3, d.kv_heads, d.head_dim)
    out = w.run(q, k, k, (kc, vc))
    assert torch.equal(kc[5, 2], k[0]) and torch.equal(vc[5, 2], k[0])
    changed = (kc != before).any(dim=(2, 3)).nonzero().tolist()
    assert changed == [[5, 2]]
    assert not out[1:].any() and out[0].abs().sum() > 0


def _snapshot(w: PagedAttentionWrapper) -> tuple[Any, ...]:
    return (w.batch_size, w.block_tables.clone(), w.key_lens.clone(), w.slot_mapping.clone(), w.positions.clone())


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return a[0] == b[0] and all(torch.equal(x, y) for x, y in zip(a[1:], b[1:]))


HOSTILE: list[tuple[str, tuple[Any, Any, Any], dict[str, Any], type[BackendError]]] = [
    ("float lens", ([1.5], [[0]], [1]), {}, InvalidArgumentTypeError),
    ("bool table", ([1], [[True]], [1]), {}, InvalidArgumentTypeError),
    ("string", ("ab", [[0]], [1]), {}, InvalidArgumentTypeError),
    ("ragged", ([1, 1], [[0], [1, 2]], [1, 5]), {}, InvalidArgumentError),
    ("rows", ([1, 1], [[0]], [1, 5]), {}, InvalidArgumentError),
    ("too many", ([0] * 7, [[0]] * 7, [0] * 7), {}, InvalidArgumentError),
    ("too wide", ([0], [[0] * 9], [0]), {}, InvalidBlockError),
    ("batch below n", ([0, 0], [[0], [1]], [0, 4]), {"batch_size": 1}, InvalidArgumentError),
    ("batch above max", ([0], [[0]], [0]), {"batch_size": 7}, InvalidArgumentError),
    ("batch bool", ([0], [[0]], [0]), {"batch_size": True}, InvalidArgumentTypeError),
    ("negative len", ([-1], [[0]], [0]), {}, InvalidBlockError),
    ("table short", ([4], [[0]], [4]), {}, InvalidBlockError),
    ("negative id", ([1], [[-2]], [-1]), {}, InvalidBlockError),
    ("id past cache", ([1], [[40]], [-1]), {}, InvalidBlockError),
    ("wrong slot", ([1], [[3]], [0]), {}, InvalidArgumentError),
    ("slot past cache", ([1], [[3]], [160]), {}, InvalidArgumentError),
    ("trusted str", ([1], [[3]], [13]), {"trusted": "yes"}, InvalidArgumentTypeError),
    ("tensor float", (torch.tensor([1.0]), [[3]], [13]), {}, InvalidArgumentTypeError),
    ("2-D lens", ([[1]], [[3]], [13]), {}, InvalidArgumentError),
]


@pytest.mark.parametrize("name,args,kw,err", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_plan_raises_typed_and_leaves_buffers(name: str, args: Any, kw: Any, err: type) -> None:
    w = _wrapper(Dims(), num_blocks=40)
    w.plan([2, 9], [[1, 2, 3], [4, 5, 6]], [6, 25], batch_size=3)
    snap = _snapshot(w)
    with pytest.raises(err):
        w.plan(*args, **kw)
    assert _same(snap, _snapshot(w))


ints = st.integers(-50, 200)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(ints, max_size=8),
    st.lists(st.lists(ints, min_size=0, max_size=10), max_size=8),
    st.lists(ints, max_size=8),
    st.one_of(st.none(), st.integers(-2, 9)),
)
def test_fuzzed_plan_either_plans_correctly_or_raises_typed(lens: Any, table: Any, slots: Any, bsz: Any) -> None:
    d = Dims()
    w = _wrapper(d, num_blocks=d.num_blocks)
    w.plan([3], [[7]], [31])
    snap = _snapshot(w)
    try:
        w.plan(lens, table, slots, batch_size=bsz)
    except BackendError:
        assert _same(snap, _snapshot(w))
        return
    n = len(lens)
    assert w.batch_size == (n if bsz is None else bsz)
    for i, c in enumerate(lens):  # what was accepted is a valid step
        assert 0 <= c < len(table[i]) * d.block_size
        used = table[i][: c // d.block_size + 1]
        assert all(0 <= b < d.num_blocks for b in used)
        assert slots[i] < 0 or slots[i] == used[-1] * d.block_size + c % d.block_size
    assert w.key_lens[:n].tolist() == [c + 1 for c in lens] and not w.key_lens[n:].any()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(1, 6), st.integers(0, 99)), max_size=6))
def test_every_plan_rewrites_every_buffer_element(steps: list[tuple[int, int, int, int]]) -> None:
    """Successive plans of any batch, padding and table width: the persistent buffers hold exactly the last
    step (tables, key lengths, slots, positions; padding rows zero, slot -1), nothing stale of an earlier one."""
    import numpy as np

    d = Dims()
    w = _wrapper(d, num_blocks=d.num_blocks)
    for n, pad, width, seed in steps:
        width = min(width, w.max_blocks_per_seq)
        rng = np.random.default_rng(seed)
        table = rng.integers(0, d.num_blocks, (n, width)).astype(np.int32)
        lens = rng.integers(0, width * d.block_size, n).astype(np.int32)
        slots = table[np.arange(n), lens // d.block_size].astype(np.int64) * d.block_size + lens % d.block_size
        b = min(n + pad, w.max_batch)
        w.plan(lens, table, slots, batch_size=b)
        bt = w.block_tables.numpy()
        assert (bt[:n, :width] == table).all() and not bt[:n, width:].any() and not bt[n:].any()
        assert w.key_lens.tolist() == [*(lens + 1).tolist(), *[0] * (b - n)]
        assert w.slot_mapping.tolist() == [*slots.tolist(), *[-1] * (b - n)]
        assert w.positions.tolist() == [*lens.tolist(), *[0] * (b - n)]


@pytest.mark.parametrize("kind", ["list", "numpy", "torch"])
def test_unused_table_entries_may_hold_anything_but_used_ones_must_be_ids(kind: str) -> None:
    """Columns past a row's last used block are ignored whatever they hold (-1 padding, stale ids past the cache),
    with the cache size known or not; a used entry outside the cache is refused either way."""
    import numpy as np

    d = Dims()
    bs, nb = d.block_size, d.num_blocks
    conv = {"list": lambda x: x, "numpy": np.asarray, "torch": torch.tensor}[kind]
    lens = [bs - 1, 2 * bs + 1]  # row 0 uses column 0, row 1 columns 0..2
    table = [[1, -1, nb + 5, -7], [2, 3, 4, -1]]
    slots = [1 * bs + (bs - 1), 4 * bs + 1]
    for known in (nb, None):
        w = _wrapper(d, num_blocks=known)
        w.plan(conv(lens), conv(table), conv(slots))
        assert w.block_tables[:2, :4].tolist() == table and w.key_lens[:2].tolist() == [bs, 2 * bs + 2]
        bad = [row[:] for row in table]
        bad[1][2] = nb  # a used entry one past the cache (its slot by that table)
        bad_slots = [slots[0], nb * bs + 1]
        if known is None:  # checked when the cache arrives: run refuses it
            w.plan(conv(lens), conv(bad), conv(bad_slots))
            q = torch.zeros(2, d.heads, d.head_dim)
            kv = torch.zeros(2, d.kv_heads, d.head_dim)
            with pytest.raises(InvalidArgumentError, match=f"uses block id {nb} but the cache has {nb} blocks"):
                w.run(q, kv, kv, _caches(d, torch.float32, 0)[0])
            continue
        snap = _snapshot(w)
        with pytest.raises(InvalidBlockError, match=r"block_tables\[1\]\[2\]"):
            w.plan(conv(lens), conv(bad), conv(bad_slots))
        assert _same(snap, _snapshot(w))


def test_device_tensor_inputs_and_numpy_are_accepted() -> None:
    import numpy as np

    w = _wrapper(Dims())
    w.plan(np.array([1, 4]), np.array([[2, 0], [3, 5]], dtype=np.int32), torch.tensor([9, 20]))
    assert w.slot_mapping.tolist() == [9, 20] and w.key_lens.tolist() == [2, 5]


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"])
@pytest.mark.parametrize("trusted", [False, True])
def test_numpy_inputs_of_any_integer_dtype_and_strides_plan_like_lists(dtype: str, trusted: bool) -> None:
    import numpy as np

    lens, table, slots = [5, 0, 2], [[3, 4, 9], [7, 1, 1], [2, 6, 8]], [4 * 4 + 1, 7 * 4, 2 * 4 + 2]
    want = _wrapper(Dims())
    want.plan(lens, table, slots, batch_size=4, trusted=trusted)
    rev = np.array(table[::-1], dtype=dtype)[::-1]  # negative row stride
    wide = np.zeros((3, 6), dtype=dtype)
    wide[:, ::2] = table
    packed = np.zeros((3, 3), dtype=[("tag", "i1"), ("v", dtype)])  # a field: strides not a multiple of its size
    packed["v"] = table
    packed_lens = np.zeros(3, dtype=[("tag", "i1"), ("v", dtype)])
    packed_lens["v"] = lens
    for t, ctx in ((np.array(table, dtype=dtype), np.array(lens, dtype=dtype)[::-1][::-1]), (rev, lens),
                   (wide[:, ::2], lens), (packed["v"], packed_lens["v"])):  # fmt: skip
        got = _wrapper(Dims())
        got.plan(ctx, t, np.array(slots, dtype=np.int64), batch_size=4, trusted=trusted)
        for name in ("block_tables", "key_lens", "slot_mapping", "positions"):
            assert torch.equal(getattr(got, name), getattr(want, name)), (name, t.strides)


@pytest.mark.parametrize(
    "dtype,top", [("int8", 127), ("uint8", 255), ("int16", 32767), ("uint16", 2000), ("uint64", 300)]
)  # fmt: skip
@pytest.mark.parametrize("block_size", [1, 128, 256])
@pytest.mark.parametrize("trusted", [False, True])
def test_narrow_and_unsigned_tensor_inputs_plan_like_int64_at_the_top_of_their_range(
    dtype: str, top: int, block_size: int, trusted: bool
) -> None:
    tdt = getattr(torch, dtype)
    width = top // block_size + 1
    table = torch.arange(width)[None].to(tdt)
    slot = (top // block_size) * block_size + top % block_size
    kw: dict[str, Any] = {"block_size": block_size, "max_batch": 2, "max_blocks_per_seq": width, "device": "cpu"}
    want = PagedAttentionWrapper(4, 2, 8, **kw)
    want.plan(torch.tensor([top]), table.to(torch.int64), torch.tensor([slot]), batch_size=2, trusted=trusted)
    got = PagedAttentionWrapper(4, 2, 8, **kw)
    got.plan(torch.tensor([top], dtype=tdt), table, torch.tensor([slot]), batch_size=2, trusted=trusted)
    assert want.key_lens.tolist() == [top + 1, 0]
    for name in ("block_tables", "key_lens", "slot_mapping", "positions"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name


def test_run_layout_memo_follows_the_block_count_and_numpy_inputs_are_typed_errors() -> None:
    w = PagedAttentionWrapper(2, 1, 4, block_size=4, max_batch=1, max_blocks_per_seq=2, device="cpu", num_blocks=4)
    w.plan([5], [[2, 3]], [13])
    q, k = torch.randn(1, 2, 4), torch.randn(1, 1, 4)
    pages = [torch.randn(16) for _ in range(2)]
    one = tuple(p.as_strided((1, 4, 1, 4), (0, 4, 4, 1)) for p in pages)  # one block: any block stride
    with pytest.raises(InvalidArgumentError, match="1 blocks"):
        w.run(q, k, k, one)
    aliased = tuple(p.as_strided((4, 4, 1, 4), (0, 4, 4, 1)) for p in pages)  # the same strides, 4 blocks in one
    with pytest.raises(InvalidArgumentError, match="head-major"):
        w.run(q, k, k, aliased)
    with pytest.raises(InvalidArgumentTypeError, match="run takes tensors"):
        w.run(q.numpy(), k.numpy(), k.numpy(), tuple(p.numpy() for p in aliased))  # type: ignore[arg-type]


def test_trusted_plan_clamps_ids_and_run_cannot_write_outside() -> None:
    d = Dims()
    w = _wrapper(d)
    kc, vc = _caches(d, torch.float32, 0)[0]
    before = kc.clone()
    w.plan([1, 1], [[99, 0], [-5, 0]], [-1, -7], trusted=True)  # no value checks
    out = w.run(torch.randn(2, d.heads, d.head_dim), torch.randn(2, d.kv_heads, d.head_dim),
                torch.randn(2, d.kv_heads, d.head_dim), (kc, vc))  # fmt: skip
    assert torch.equal(kc, before) and torch.isfinite(out).all()
    assert int(w.block_tables.min()) >= 0 and int(w.block_tables.max()) < d.num_blocks


def test_run_rejects_shapes_and_other_caches() -> None:
    d = Dims()
    w = _wrapper(d)
    kc, vc = _caches(d, torch.float32, 0)[0]
    w.plan([1], [[39]], [157])
    q, k = torch.randn(1, d.heads, d.head_dim), torch.randn(1, d.kv_heads, d.head_dim)
    with pytest.raises(InvalidArgumentError, match="run expects"):
        w.run(torch.randn(2, d.heads, d.head_dim), k, k, (kc, vc))
    small = (kc[:20], vc[:20])
    with pytest.raises(InvalidArgumentError, match="block id 39"):
        w.run(q, k, k, small)
    with pytest.raises(UnsupportedDTypeError):
        w.run(q, k.double(), k, (kc, vc))
    with pytest.raises(UnsupportedDTypeError):
        w.run(q, k, k, (kc, vc), out=torch.empty(1, d.heads, d.head_dim, dtype=torch.float16))
    w.run(q, k, k, (kc, vc))  # learns 40 blocks
    with pytest.raises(InvalidArgumentError, match="num_blocks=40"):
        w.run(q, k, k, small)


@pytest.mark.parametrize("bad", ["query", "key", "value", "cache pair", "cache three", "cache item"])
def test_run_refuses_inputs_that_are_not_tensors_typed_and_writes_nothing(bad: str) -> None:
    d = Dims()
    w = _wrapper(d)
    kc, vc = _caches(d, torch.float32, 0)[0]
    w.plan([1], [[39]], [157])
    args: list[Any] = [torch.randn(1, d.heads, d.head_dim)] + [torch.randn(1, d.kv_heads, d.head_dim)] * 2
    cache: Any = (kc, vc)
    if bad in ("query", "key", "value"):
        args[["query", "key", "value"].index(bad)] = args[0].tolist()
    else:
        cache = {"cache pair": kc, "cache three": (kc, vc, vc), "cache item": (kc, vc.tolist())}[bad]
    before = kc.clone(), vc.clone()
    with pytest.raises(InvalidArgumentTypeError, match="run takes tensors"):
        w.run(*args, cache)
    assert torch.equal(kc, before[0]) and torch.equal(vc, before[1])


@pytest.mark.parametrize(
    "kw,err",
    [({"num_heads": 3}, InvalidArgumentError), ({"block_size": 0}, InvalidArgumentError),
     ({"scale": float("nan")}, InvalidArgumentError), ({"scale": "1"}, InvalidArgumentTypeError),
     ({"device": 3}, InvalidArgumentTypeError), ({"max_batch": 2.0}, InvalidArgumentTypeError)],
)  # fmt: skip
def test_constructor_rejects_bad_arguments(kw: dict[str, Any], err: type) -> None:
    args: dict[str, Any] = {"num_heads": 4, "num_kv_heads": 2, "head_size": 16, "block_size": 4, "max_batch": 2,
                            "max_blocks_per_seq": 2, "device": "cpu"}  # fmt: skip
    args.update(kw)
    with pytest.raises(err):
        PagedAttentionWrapper(**args)


def _decode_case(seed: int) -> tuple[Dims, AttentionMetadata, Any, Any, tuple[Any, Any]]:
    """A two-sequence decode step (3 and 6 cached tokens) on fp32 caches: ``(dims, metadata, q, k, (K, V))``."""
    d = Dims()
    md = PagedAttentionMetadataBuilder(d.block_size).build_decode_metadata([3, 6], [[2, 0], [1, 4]])
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, d.heads, d.head_dim, generator=g), torch.randn(2, d.kv_heads, d.head_dim, generator=g)
    return d, md, q, k, _caches(d, torch.float32, 5)[0]


def test_forward_fast_path_counts_calls_and_follows_changed_arguments() -> None:
    d, md, q, k, cache = _decode_case(0)
    backend = PagedAttentionBackend(d.block_size)
    reset_attention_diagnostics()
    first = backend.forward(q, k, k, md, kv_cache=cache)
    assert md.step_fast_paths.get((id(backend), "ready")) is not None
    again = backend.forward(q, k, k, md, kv_cache=cache)  # fast path
    assert torch.equal(first, again)
    assert get_attention_diagnostics()["paged:implementation=torch"]["decode_calls"] == 2
    half = backend.forward(q, k, k, md, kv_cache=cache, scale=0.5 * d.head_dim**-0.5)  # another scale: rechecked
    ref = reference_paged_decode(q, *cache, md.block_tables, torch.tensor([4, 7]), 0.5 * d.head_dim**-0.5)
    assert float((half.double() - ref).abs().max()) < 1e-5
    with pytest.raises(InvalidArgumentTypeError):
        backend.forward(q, k, k, md, kv_cache=cache, scale=True)
    with pytest.raises(InvalidArgumentError):
        backend.forward(q[:1], k[:1], k[:1], md, kv_cache=cache)
    md.context_lens[0] = 99  # mutated metadata is checked again
    with pytest.raises(InvalidBlockError):
        backend.forward(q, k, k, md, kv_cache=cache)


def test_a_failed_decode_leaves_no_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A decode that raises records nothing: the next call on the same metadata with another scale is checked
    and computed with its own scale (it used to reuse the failed call's)."""
    from sagellm_backend.attention import paged

    d, md, q, k, cache = _decode_case(1)
    backend = PagedAttentionBackend(d.block_size)
    real = paged.decode_step

    def fail_once(*args: Any, **kw: Any) -> Any:
        monkeypatch.setattr(paged, "decode_step", real)
        raise RuntimeError("injected launch failure")

    monkeypatch.setattr(paged, "decode_step", fail_once)
    with pytest.raises(RuntimeError):
        backend.forward(q, k, k, md, kv_cache=cache, scale=0.05)
    assert not md.step_fast_paths
    got = backend.forward(q, k, k, md, kv_cache=cache)  # default scale D ** -0.5
    ref = reference_paged_decode(q, *cache, md.block_tables, torch.tensor([4, 7]), d.head_dim**-0.5)
    assert float((got.double() - ref).abs().max()) < 1e-5


def test_backends_sharing_metadata_keep_their_own_fast_paths() -> None:
    """Two backends (a windowed one and a plain one, as alternating layer types use) on one step's metadata: each
    keeps its own fast path and result; neither reuses the other's."""
    d, md, q, k, cache = _decode_case(2)
    plain, windowed = PagedAttentionBackend(d.block_size), PagedAttentionBackend(d.block_size, sliding_window=2)
    lens, scale = torch.tensor([4, 7]), d.head_dim**-0.5
    plain.forward(q, k, k, md, kv_cache=cache)  # stores the new token (every later call stores the same values)
    want_plain = reference_paged_decode(q, *cache, md.block_tables, lens, scale)
    want_window = reference_paged_decode(q, *cache, md.block_tables, lens, scale, sliding_window=2)
    for _ in range(3):
        assert float((plain.forward(q, k, k, md, kv_cache=cache).double() - want_plain).abs().max()) < 1e-5
        assert float((windowed.forward(q, k, k, md, kv_cache=cache).double() - want_window).abs().max()) < 1e-5
        assert md.step_fast_paths.get((id(plain), "ready")) is not None  # kept while the other backend ran


VARIANTS: dict[str, dict[str, Any]] = {
    "none": {},
    "window": {"sliding_window": 3},
    "softcap": {"logits_soft_cap": 2.5},
    "alibi": {"alibi_slopes": [0.5, 0.25, 0.125, 0.0625]},
    "all": {"sliding_window": 6, "logits_soft_cap": 4.0, "alibi_slopes": [0.3, -0.1, 0.2, 0.05]},
}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    variant=st.sampled_from(sorted(VARIANTS)),
    kv_dtype=st.sampled_from(["auto", "fp8_e4m3", "fp8_e5m2", "fp8"]),
    per_head=st.booleans(),
    as_uint8=st.booleans(),
    dtype=st.sampled_from(["float32", "bfloat16"]),
    seed=st.integers(0, 2**16),
)
def test_wrapper_with_variants_and_fp8_equals_forward_and_float64_reference(
    variant: str, kv_dtype: str, per_head: bool, as_uint8: bool, dtype: str, seed: int
) -> None:
    dt = getattr(torch, dtype)
    d = Dims()
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    opts = VARIANTS[variant]
    fp8 = kv_dtype != "auto"
    cdt = {"auto": dt, "fp8": torch.float8_e4m3fn, "fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
    shape = (d.num_blocks, d.block_size, d.kv_heads, d.head_dim)
    init = [(torch.randn(shape, generator=g) * 2).to(cdt[kv_dtype]) for _ in range(2)]
    cache_w = (init[0].clone(), init[1].clone())
    cache_f = (init[0].clone(), init[1].clone())
    if fp8 and as_uint8:  # uint8 bits are read as the fp8 format
        cache_w = (cache_w[0].view(torch.uint8), cache_w[1].view(torch.uint8))
    scales: dict[str, Any] = {}
    if fp8:
        n = d.kv_heads if per_head else 1
        scales = {name: torch.rand(n, generator=g) * 0.02 + 0.01 for name in ("k_scale", "v_scale")}
    wrapper = _wrapper(d, kv_cache_dtype=kv_dtype, **opts)
    backend = PagedAttentionBackend(d.block_size, kv_cache_dtype=kv_dtype, **opts)
    builder = PagedAttentionMetadataBuilder(d.block_size)
    owned: list[list[int]] = [[] for _ in range(4)]
    lens = [rng.randrange(0, 20) for _ in range(4)]
    for _ in range(3):
        n = rng.randint(1, 4)
        ctx, tables, slots = (x[:n] for x in step_batch(rng, d, owned, lens))
        padded = rng.randint(n, d.max_batch)
        wrapper.plan(ctx, tables, slots, batch_size=padded)
        q = torch.randn(padded, d.heads, d.head_dim, generator=g).to(dt)
        k, v = (torch.randn(padded, d.kv_heads, d.head_dim, generator=g).to(dt) for _ in range(2))
        out = wrapper.run(q, k, v, cache_w, **scales)
        md = builder.build_decode_metadata(ctx, tables)
        want = backend.forward(q[:n], k[:n], v[:n], md, kv_cache=cache_f, **scales)
        assert torch.equal(out[:n], want) and not out[n:].any()
        kf, vf = (c.view(cdt[kv_dtype]) for c in cache_w)
        assert torch.equal(kf.view(torch.uint8), cache_f[0].view(torch.uint8))
        assert torch.equal(vf.view(torch.uint8), cache_f[1].view(torch.uint8))
        slopes = opts.get("alibi_slopes")
        ref = reference_paged_decode(
            q[:n], kf, vf, torch.tensor(tables), torch.tensor(ctx) + 1, d.head_dim**-0.5,
            sliding_window=opts.get("sliding_window"), logits_soft_cap=opts.get("logits_soft_cap"),
            alibi_slopes=None if slopes is None else torch.tensor(slopes), **scales,
        )  # fmt: skip
        tol = 1e-5 if dt == torch.float32 else 3e-2
        assert float((out[:n].double() - ref).abs().max()) <= tol
        for i in range(n):
            lens[i] += 1


def test_wrapper_variant_and_scale_errors_are_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    from sagellm_backend.errors import InvalidDeviceError, UnsupportedOperationError

    d = Dims()
    with pytest.raises(InvalidArgumentError, match="alibi_slopes"):
        _wrapper(d, alibi_slopes=[0.1, 0.2])  # 2 slopes for 4 heads
    with pytest.raises(InvalidArgumentError):
        _wrapper(d, sliding_window=0)
    with pytest.raises(InvalidArgumentTypeError):
        _wrapper(d, logits_soft_cap="1")
    with pytest.raises(InvalidArgumentError, match="kv_cache_dtype"):
        _wrapper(d, kv_cache_dtype="int8")
    with pytest.raises(TypeError):
        _wrapper(d, window=4)  # not an option: Python refuses unknown keywords
    w8 = _wrapper(d, kv_cache_dtype="fp8_e4m3", sliding_window=4)
    w8.plan([1], [[3]], [13])
    q, k = torch.randn(1, d.heads, d.head_dim), torch.randn(1, d.kv_heads, d.head_dim)
    shape = (d.num_blocks, d.block_size, d.kv_heads, d.head_dim)
    c8 = (torch.zeros(shape, dtype=torch.float8_e4m3fn), torch.zeros(shape, dtype=torch.float8_e4m3fn))
    one = torch.ones(1)
    before = c8[0].view(torch.uint8).clone()
    with pytest.raises(InvalidArgumentTypeError, match="needs k_scale and v_scale"):
        w8.run(q, k, k, c8)
    with pytest.raises(InvalidArgumentTypeError, match="needs k_scale and v_scale"):
        w8.run(q, k, k, c8, k_scale=one)
    with pytest.raises(UnsupportedDTypeError):
        w8.run(q, k, k, c8, k_scale=one.double(), v_scale=one)
    with pytest.raises(InvalidArgumentError, match="elements"):
        w8.run(q, k, k, c8, k_scale=torch.ones(3), v_scale=one)
    with pytest.raises(UnsupportedDTypeError, match="kv_cache_dtype='fp8_e4m3'"):
        w8.run(q, k, k, (c8[0].float(), c8[1].float()), k_scale=one, v_scale=one)
    with pytest.raises(UnsupportedDTypeError):
        w8.run(q, k, k, (c8[0], c8[1].view(torch.float8_e5m2)), k_scale=one, v_scale=one)
    with pytest.raises(InvalidDeviceError):
        w8.run(q, k, k, c8, k_scale=one.to("meta"), v_scale=one)
    assert torch.equal(c8[0].view(torch.uint8), before)  # every refused call left the cache alone
    w = _wrapper(d)
    w.plan([1], [[3]], [13])
    cache = (torch.zeros(shape), torch.zeros(shape))
    with pytest.raises(InvalidArgumentTypeError, match="apply to fp8"):
        w.run(q, k, k, cache, k_scale=one, v_scale=one)
    with pytest.raises(UnsupportedDTypeError):
        w.run(q, k, k, (c8[0], c8[1]))
    w.run(q, k, k, cache)
    assert torch.isfinite(w8.run(q, k, k, c8, k_scale=one, v_scale=one)).all()
    monkeypatch.setenv("SAGELLM_PAGED_ATTENTION_IMPL", "triton")  # Triton serves CUDA only: the registry refuses
    forced = _wrapper(d, sliding_window=4)
    forced.plan([1], [[3]], [13])
    with pytest.raises(UnsupportedOperationError, match="runs on"):
        forced.run(q, k, k, cache)


def test_run_refuses_an_out_sharing_memory_with_its_tensors() -> None:
    """The torch path (CPU): an ``out`` that is the query, a view over the key's buffer or the value cache's memory is
    refused before the store; the cache is unchanged and a separate buffer then works."""
    d = Dims()
    w = _wrapper(d)
    w.plan([3, 5], [[0, 1], [2, 3]], [3, 2 * d.block_size + 5])
    kc, vc = _caches(d, torch.float32, 7)[0]
    g = torch.Generator().manual_seed(8)
    q = torch.randn(2, d.heads, d.head_dim, generator=g)
    kbuf = torch.randn(2, d.heads, d.head_dim, generator=g)
    k = kbuf[:, : d.kv_heads]
    before = (kc.clone(), vc.clone())
    for o in (q, kbuf, vc.view(-1)[: q.numel()].view(q.shape)):
        with pytest.raises(InvalidArgumentError, match="share no memory"):
            w.run(q, k, k, (kc, vc), out=o)
        assert torch.equal(kc, before[0]) and torch.equal(vc, before[1])
    out = torch.empty_like(q)
    assert w.run(q, k, k, (kc, vc), out=out) is out
    assert torch.equal(out, w.run(q, k, k, (kc, vc)))


def test_run_refuses_outs_it_cannot_write_before_the_store() -> None:
    """Not a tensor, strided (an expanded view: elements sharing memory), requiring grad, or laid over the wrapper's
    own plan buffers (which the decode reads): each a typed error before the store; the plan and the cache stay."""
    d = Dims(max_blocks=64)  # a plan buffer larger than the output, so that one can lie over it
    w = _wrapper(d)
    w.plan([3, 5], [[0, 1], [2, 3]], [3, 2 * d.block_size + 5])
    kc, vc = _caches(d, torch.float32, 7)[0]
    g = torch.Generator().manual_seed(8)
    q, k = torch.randn(2, d.heads, d.head_dim, generator=g), torch.randn(2, d.kv_heads, d.head_dim, generator=g)
    w.run(q, k, k, (kc, vc))  # the cache's block count is learnt: the next refusals come after that
    storage = w.block_tables.untyped_storage()
    over_plan = torch.empty(0).set_(storage, (w.block_tables.data_ptr() - storage.data_ptr()) // 4, q.shape)
    bad: list[tuple[Any, type]] = [
        ([[0.0]], InvalidArgumentTypeError),
        (torch.zeros(1, d.heads, d.head_dim).expand(2, -1, -1), InvalidArgumentError),
        (torch.empty_like(q).requires_grad_(), InvalidArgumentError),
        (over_plan, InvalidArgumentError),
    ]
    plan, before = w.block_tables.clone(), (kc.clone(), vc.clone())
    for out, err in bad:
        with pytest.raises(err):
            w.run(q, k, k, (kc, vc), out=out)
        assert torch.equal(w.block_tables, plan) and torch.equal(kc, before[0]) and torch.equal(vc, before[1])


def test_a_refused_run_changes_nothing() -> None:
    """A run refused for its dtype leaves the wrapper as it was: it has not learnt the refused call's block count,
    so a valid run on a cache of another size works."""
    d = Dims()
    w = _wrapper(d)  # num_blocks learnt from the first accepted run
    w.plan([3, 5], [[0, 1], [2, 3]], [3, 2 * d.block_size + 5])
    small = tuple(torch.zeros(5, d.block_size, d.kv_heads, d.head_dim, dtype=torch.int32) for _ in range(2))
    qi = torch.zeros(2, d.heads, d.head_dim, dtype=torch.int32)
    ki = torch.zeros(2, d.kv_heads, d.head_dim, dtype=torch.int32)
    with pytest.raises(UnsupportedDTypeError):
        w.run(qi, ki, ki, small)
    g = torch.Generator().manual_seed(4)
    cache = _caches(d, torch.float32, 6)[0]
    q, k = torch.randn(2, d.heads, d.head_dim, generator=g), torch.randn(2, d.kv_heads, d.head_dim, generator=g)
    got = w.run(q, k, k, cache)
    want = reference_paged_decode(q, *cache, torch.tensor([[0, 1], [2, 3]]), torch.tensor([4, 6]), d.head_dim**-0.5)
    assert float((got.double() - want).abs().max()) < 1e-5


def test_read_only_numpy_inputs_plan_without_a_warning() -> None:
    """Read-only arrays (``np.frombuffer`` over bytes from another process, say) are valid inputs: torch warns
    once per process on viewing one, so the check runs in a fresh interpreter with warnings as errors."""
    import subprocess
    import sys

    code = """
import numpy as np
from sagellm_backend.attention import PagedAttentionWrapper
def wrapper():
    return PagedAttentionWrapper(4, 2, 16, block_size=4, max_batch=6, max_blocks_per_seq=8, device="cpu")
lens, table, slots = [5, 0, 2], [[3, 4, 9], [7, 1, 1], [2, 6, 8]], [17, 28, 10]
want = wrapper()
want.plan(lens, table, slots, batch_size=4)
for dtype in ("int32", "int64"):
    ro = [np.frombuffer(np.array(v, dtype=dtype).tobytes(), dtype=dtype) for v in (lens, table, slots)]
    ro[1] = ro[1].reshape(3, 3)
    assert not ro[1].flags.writeable
    got = wrapper()
    got.plan(*ro, batch_size=4)
    for name in ("block_tables", "key_lens", "slot_mapping", "positions"):
        assert getattr(got, name).tolist() == getattr(want, name).tolist(), (dtype, name)
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_run_with_rope_equals_rotating_first_and_refuses_bad_caches() -> None:
    """``run(..., cos_sin_cache=)`` on the torch path rotates copies of q and k to the planned positions (inputs kept)
    and equals ``rotary_embedding`` then ``run``; bad RoPE arguments raise typed errors before anything changes."""
    from sagellm_backend.kernels import torch_ops

    d = Dims()
    g = torch.Generator().manual_seed(8)
    ctx, table = [3, 9], [[0, 1, 2], [3, 4, 5]]
    slots = [table[i][c // d.block_size] * d.block_size + c % d.block_size for i, c in enumerate(ctx)]
    for neox, rot in ((True, 16), (False, 16), (True, 8)):
        cs = torch.randn(d.max_pos, rot, generator=g)
        w1, w2 = _wrapper(d), _wrapper(d)
        for w in (w1, w2):
            w.plan(ctx, table, slots, batch_size=3)
        c1 = _caches(d, torch.float32, 1)[0]
        c2 = (c1[0].clone(), c1[1].clone())
        q = torch.randn(3, d.heads, d.head_dim, generator=g)
        k, v = (torch.randn(3, d.kv_heads, d.head_dim, generator=g) for _ in range(2))
        q0, k0 = q.clone(), k.clone()
        got = w1.run(q, k, v, c1, cos_sin_cache=cs, is_neox=neox)
        assert torch.equal(q, q0) and torch.equal(k, k0)
        torch_ops.rotate_in_place(w2.positions, [q, k], d.head_dim, cs, neox)
        want = w2.run(q, k, v, c2)
        assert torch.equal(got, want) and all(torch.equal(a, b) for a, b in zip(c1, c2))
    cache = _caches(d, torch.float32, 2)[0]
    before = [t.clone() for t in cache]
    q = torch.randn(3, d.heads, d.head_dim, generator=g)
    k = torch.randn(3, d.kv_heads, d.head_dim, generator=g)
    cs = torch.randn(d.max_pos, d.head_dim, generator=g)
    bad: list[tuple[dict[str, Any], type]] = [
        ({"cos_sin_cache": cs.numpy()}, InvalidArgumentTypeError),
        ({"is_neox": False}, InvalidArgumentTypeError),  # a style without a cache
        ({"cos_sin_cache": cs, "is_neox": 1}, InvalidArgumentTypeError),
        ({"cos_sin_cache": cs[:, :7]}, InvalidArgumentError),  # odd rotary dim
        ({"cos_sin_cache": torch.randn(4, 2 * d.head_dim)}, InvalidArgumentError),  # wider than a head
        ({"cos_sin_cache": cs[0]}, InvalidArgumentError),
        ({"cos_sin_cache": cs.t().contiguous().t()}, InvalidArgumentError),  # strided last dimension
        ({"cos_sin_cache": cs.to(torch.int32)}, UnsupportedDTypeError),
        ({"cos_sin_cache": cs.to("meta")}, InvalidDeviceError),
    ]
    for kw, err in bad:
        with pytest.raises(err):
            w1.run(q, k, k, cache, **kw)
    assert all(torch.equal(a, b) for a, b in zip(cache, before))
