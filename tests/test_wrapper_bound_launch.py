"""The wrapper's bound launch (``triton_launch.bind``) on CPU: the Triton dispatcher and the compiled kernel are
replaced by recorders, so the test sees exactly what would reach the GPU launcher. After the first call of a
(batch, strides, dtypes, aliasing) signature, later calls skip the dispatcher and pass the same argument list
the dispatcher path builds for the new tensors; another batch, another alignment or another aliasing pattern
is not served by a stale binding."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from launch_rig import use_stand_in_driver  # noqa: E402
from sagellm_backend.errors import InvalidArgumentError  # noqa: E402


class _Compiled:
    function = "fn"
    packed_metadata = "meta"

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def run(self, *args: Any) -> None:
        self.calls.append(args)


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Any:
    from sagellm_backend.attention import paged_triton as pt

    monkeypatch.setattr(pt, "FUSED_DECODE", True)  # bound launches serve the fused decode (the default)
    compiled = _Compiled()
    dispatched: list[dict[str, Any]] = []

    def dispatcher(*args: Any, grid: Any, warmup: bool, **kw: Any) -> _Compiled:
        dispatched.append({"grid": grid, "args": args, "kw": kw})
        return compiled

    monkeypatch.setattr(pt.decode_kernel, "run", dispatcher, raising=False)
    use_stand_in_driver(monkeypatch)
    return pt, compiled, dispatched


def _wrapper(pt: Any, batch: int, **opts: Any) -> Any:
    from sagellm_backend.attention import PagedAttentionWrapper
    from sagellm_backend.attention.paged_workspace import DecodeWorkspace

    w = PagedAttentionWrapper(8, 2, 16, block_size=4, max_batch=4, max_blocks_per_seq=8, device="cpu", **opts)
    w._ops[torch.float16] = (pt, "triton", pt.decode_config(16, torch.float16, 4))  # steer onto the Triton path
    counters = torch.zeros(8, dtype=torch.int32)
    w._workspace = DecodeWorkspace(torch.empty(4 * 8 * 16 * 16), torch.empty(4 * 8 * 16), counters)
    w.plan(list(range(batch)), [[b, 9] for b in range(batch)], [4 * b + b for b in range(batch)])
    return w


def _tensors(batch: int, seed: int) -> tuple[Any, ...]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, 8, 16, generator=g).half()
    k, v = (torch.randn(batch, 2, 16, generator=g).half() for _ in range(2))
    kc, vc = (torch.randn(40, 4, 2, 16, generator=g).half() for _ in range(2))
    return q, k, v, (kc, vc), torch.empty_like(q)


def _bound_wrapper(rig: Any) -> Any:
    """A batch-2 wrapper whose decode launch is bound: dispatched once, then served by its binding."""
    pt, compiled, dispatched = rig
    w = _wrapper(pt, 2)
    for seed in (0, 1):
        q, k, v, cache, out = _tensors(2, seed)
        w.run(q, k, v, cache, out=out)
    assert len(dispatched) == 1 and len(compiled.calls) == 1  # bound by now
    return w


def _expected(pt: Any, w: Any, q: Any, k: Any, v: Any, cache: Any, out: Any, **sc: Any) -> list[Any]:
    grid, args, kw = pt.decode_launch_args(
        q, cache[0], cache[1], w.block_tables, w.key_lens, w.scale, out, cfg=w._ops[torch.float16][2],
        workspace=w._workspace, new=(k, v, w.slot_mapping), **w._variant_kw, **sc,
    )  # fmt: skip
    names = pt.decode_kernel.arg_names[len(args) :]
    return [grid, *args, *(kw[n] for n in names)]


def _same(got: tuple[Any, ...], want: list[Any]) -> bool:
    grid, full = want[0], want[1:]
    if tuple(got[:3]) != (*grid, 1, 1)[:3] or got[3] != 7 or got[4:6] != ("fn", "meta"):
        return False
    rest = got[9:]
    return len(rest) == len(full) and all(
        _same_tensor(a, b) if isinstance(b, torch.Tensor) else (type(a) is type(b) and a == b)
        for a, b in zip(rest, full)
    )


def _same_tensor(a: Any, b: Any) -> bool:
    """The same memory seen the same way (scales arrive as fresh flat views of the caller's tensors); a bound launch
    passes the compiled launcher each pointer as an int, which is all it reads of a tensor (its dtype is in the
    compiled kernel, its shape and strides in other arguments)."""
    if type(a) is int:
        return a == b.data_ptr()
    return (
        isinstance(a, torch.Tensor) and a.data_ptr() == b.data_ptr() and a.dtype == b.dtype
        and a.shape == b.shape and a.stride() == b.stride()
    )  # fmt: skip


@pytest.mark.parametrize("opts", [{}, {"sliding_window": 5, "logits_soft_cap": 2.0, "alibi_slopes": [0.1] * 8}])
def test_bound_launch_passes_what_the_dispatcher_path_builds(rig: Any, opts: dict[str, Any]) -> None:
    pt, compiled, dispatched = rig
    w = _wrapper(pt, 3, **opts)
    q, k, v, cache, out = _tensors(3, 0)
    assert w.run(q, k, v, cache, out=out) is out
    assert len(dispatched) == 1 and not compiled.calls  # first call: through Triton's dispatcher
    for seed in (1, 2):
        q, k, v, cache, out = _tensors(3, seed)
        assert w.run(q, k, v, cache, out=out) is out
        assert len(dispatched) == 1  # bound: no dispatcher
        assert _same(compiled.calls[-1], _expected(pt, w, q, k, v, cache, out))
    fresh = w.run(q, k, v, cache)  # out allocated by run: the same binding (contiguous strides)
    assert _same(compiled.calls[-1], _expected(pt, w, q, k, v, cache, fresh)) and len(dispatched) == 1


def test_another_batch_alignment_or_aliasing_is_not_served_by_a_stale_binding(rig: Any) -> None:
    pt, compiled, dispatched = rig
    w = _wrapper(pt, 3)
    seen = [0, 0]

    def run(q: Any, k: Any, v: Any, cache: Any, out: Any) -> str:
        """One run; which path launched and whether it launched exactly the expected arguments."""
        w.run(q, k, v, cache, out=out)
        want = _expected(pt, w, q, k, v, cache, out)
        if len(dispatched) > seen[0]:
            got, path = _dispatched_launch(pt, dispatched[-1]), "dispatcher"
        else:
            got, path = compiled.calls[-1], "direct"
        seen[:] = [len(dispatched), len(compiled.calls)]
        assert _same(got, want), path
        return path

    t = _tensors(3, 0)
    assert run(*t[:3], *t[3:]) == "dispatcher"
    q, k, v, cache, out = _tensors(3, 1)
    assert run(q, k, k, cache, out) == "direct"  # key is value: the distinct tensors' binding, both roles right
    q, k, v, cache, out = _tensors(3, 2)
    assert run(q, k, k, cache, out) == "direct"
    assert run(q, k, v, cache, out) == "direct"  # back to distinct tensors
    w.plan([0, 1], [[0, 9], [1, 9]], [0, 5], batch_size=2)  # another batch: another grid
    q, k, v, cache, out = _tensors(2, 3)
    assert run(q, k, v, cache, out) == "direct" and compiled.calls[-1][0] == 2  # same kernel, the new grid
    assert run(q, k, v, cache, out) == "direct"
    odd = torch.empty(2 * 8 * 16 + 1, dtype=torch.float16)[1:].view(2, 8, 16)  # 2-byte aligned data pointer
    odd.copy_(q)
    assert run(odd, k, v, cache, out) == "dispatcher"  # Triton specialises it anew
    assert run(odd, k, v, cache, out) == "direct"
    assert len(w._fused) == 2  # batch 3 (also serving key is value), batch 2: the misaligned query never bound


def test_a_head_major_cache_is_not_served_by_the_token_major_binding(rig: Any) -> None:
    pt, compiled, dispatched = rig
    w = _bound_wrapper(rig)
    q, k, v, nhd, out = _tensors(2, 5)
    hnd = tuple(c.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3) for c in nhd)
    n = len(dispatched)
    w.run(q, k, v, hnd, out=out)
    assert len(dispatched) == n + 1  # a new layout: through the dispatcher, with the head-major strides
    assert _same(_dispatched_launch(pt, dispatched[-1]), _expected(pt, w, q, k, v, hnd, out))
    for cache in (hnd, nhd, hnd):  # then each layout served by its own binding
        w.run(q, k, v, cache, out=out)
        assert len(dispatched) == n + 1 and _same(compiled.calls[-1], _expected(pt, w, q, k, v, cache, out))


def test_fp8_scales_are_live_arguments(rig: Any) -> None:
    pt, compiled, dispatched = rig
    w = _wrapper(pt, 2, kv_cache_dtype="fp8_e5m2")
    for seed in (0, 1):
        q, k, v, (kc, vc), out = _tensors(2, seed)
        cache = (kc.to(torch.float8_e5m2), vc.to(torch.float8_e5m2))
        sc = {"k_scale": torch.rand(2) + 0.5, "v_scale": torch.rand(1) + 0.5}
        w.run(q, k, v, cache, out=out, **sc)
    assert len(dispatched) == 1
    assert _same(compiled.calls[-1], _expected(pt, w, q, k, v, cache, out, **sc))


def test_forward_fast_path_binds_the_fused_launch(rig: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """PagedAttentionBackend.forward on the Triton ops (steered there with CPU tensors): the checked call and the
    next layers' fast calls launch the same fused decode with the same plan; from the third call on it is bound."""
    from sagellm_backend.attention import PagedAttentionBackend, PagedAttentionMetadataBuilder, paged
    from sagellm_backend.attention.registry import impls_of

    pt, compiled, dispatched = rig
    ops = impls_of("paged")[0].load_ops()
    assert impls_of("paged")[0].name == "triton" and ops.paged_decode_store is pt.paged_decode_store
    monkeypatch.setattr(paged, "select_paged_ops", lambda *a, **kw: (ops, "triton"))
    backend = PagedAttentionBackend(4)
    md = PagedAttentionMetadataBuilder(4).build_decode_metadata([3, 6], [[2, 0], [1, 4]])
    launched = []
    for seed in range(4):
        q, k, v, cache, _ = _tensors(2, seed)
        out = backend.forward(q, k, v, md, kv_cache=cache)
        f = md.step_fast_paths.get((id(backend), "ready"))
        assert f is not None and f.launcher is not None
        plan = f.plan
        grid, args, kw = pt.decode_launch_args(
            q, cache[0], cache[1], plan.block_tables, plan.key_lens, f.scale, out,
            new=(k, v, plan.slot_mapping),
        )  # fmt: skip
        want = [grid, *args, *(kw[n] for n in pt.decode_kernel.arg_names[len(args) :])]
        launched.append((len(dispatched), len(compiled.calls)))
        if seed:  # the first call went through the dispatcher (nothing compiled yet)
            assert _same(compiled.calls[-1], want), seed
    assert launched == [(1, 0), (1, 1), (1, 2), (1, 3)]
    assert len(f.launcher) == 1


def test_run_refuses_an_out_sharing_memory_before_any_launch(rig: Any) -> None:
    """An ``out`` that shares memory with the query, key, value or a cache is refused by the fused launch path,
    bound or not (an unaligned buffer is never bound), before anything is dispatched or launched; a separate buffer
    then runs."""
    _pt, compiled, dispatched = rig
    w = _bound_wrapper(rig)
    q, k, v, cache, out = _tensors(2, 5)
    kbuf = torch.zeros(2, 8, 16).half()
    kbuf[:, :2] = k  # the keys as a view of a query-shaped buffer
    k = kbuf[:, :2]
    qbuf = torch.zeros(2 * 8 * 16 + 8).half()
    for _ in range(2):  # bind this layout (the keys strided)
        assert w.run(q, k, v, cache, out=out) is out
    d0, c0 = len(dispatched), len(compiled.calls)
    assert w.run(q, k, v, cache, out=torch.empty_like(out)) is not out
    assert (len(dispatched), len(compiled.calls)) == (d0, c0 + 1)  # served by the binding
    launches = d0 + c0 + 1
    before = [c.clone() for c in cache]
    bad = {
        "the query": q,
        "the key's buffer": kbuf,
        "the value cache": cache[1].view(-1)[: 2 * 8 * 16].view(2, 8, 16),
        "unaligned, over the query": qbuf[1 : 1 + 2 * 8 * 16].view(2, 8, 16),
    }
    for name, o in bad.items():
        query = qbuf[: 2 * 8 * 16].view(2, 8, 16) if name.startswith("unaligned") else q
        n = (len(dispatched), len(compiled.calls))
        with pytest.raises(InvalidArgumentError, match="share no memory"):
            w.run(query, k, v, cache, out=o)
        assert (len(dispatched), len(compiled.calls)) == n, name
        assert all(torch.equal(a, b) for a, b in zip(cache, before)), name
    assert len(dispatched) + len(compiled.calls) == launches  # nothing launched since
    assert w.run(q, k, v, cache, out=out) is out


def test_run_refuses_an_out_over_the_plan_buffers_in_the_bound_launch(rig: Any) -> None:
    """The decode reads the wrapper's plan (block tables, key lengths, slots) while it writes ``out``: an ``out`` laid
    over that buffer is refused by the bound launch's span check, nothing launched and the plan unchanged."""
    from sagellm_backend.attention import PagedAttentionWrapper
    from sagellm_backend.attention.paged_workspace import DecodeWorkspace

    pt, compiled, dispatched = rig
    w = PagedAttentionWrapper(8, 2, 16, block_size=4, max_batch=4, max_blocks_per_seq=64, device="cpu")
    w._ops[torch.float16] = (pt, "triton", pt.decode_config(16, torch.float16, 4))
    counters = torch.zeros(8, dtype=torch.int32)
    w._workspace = DecodeWorkspace(torch.empty(4 * 8 * 16 * 16), torch.empty(4 * 8 * 16), counters)
    w.plan([0, 1], [[0, 9], [1, 9]], [0, 5])
    for seed in (0, 1):
        q, k, v, cache, out = _tensors(2, seed)
        w.run(q, k, v, cache, out=out)
    over = torch.empty(0, dtype=torch.float16).set_(w.block_tables.untyped_storage(), 0, (2, 8, 16))
    plan, n = w.block_tables.clone(), len(dispatched) + len(compiled.calls)
    with pytest.raises(InvalidArgumentError, match=r"overlaps the (block tables|key lengths|slot mapping)"):
        w.run(q, k, v, cache, out=over)
    assert len(dispatched) + len(compiled.calls) == n and torch.equal(w.block_tables, plan)


def test_a_refused_first_run_learns_no_cache(rig: Any) -> None:
    """Before its first run a wrapper has not learnt the caches' block count; a first run refused for an overlapping
    ``out`` leaves it so (a cache of another size still works after)."""
    pt, _compiled, dispatched = rig
    w = _wrapper(pt, 2)
    q, k, v, cache, out = _tensors(2, 6)
    with pytest.raises(InvalidArgumentError, match="share no memory"):
        w.run(q, k, v, cache, out=q)
    assert not dispatched and w._num_blocks is None
    big = tuple(torch.cat([c, c]) for c in cache)
    assert w.run(q, k, v, big, out=out) is out and w._num_blocks == 80


def test_forward_output_is_the_launch_output_and_shares_the_binding(rig: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``forward(..., output=)`` on the fast path launches the bound decode with the caller's buffer as its output
    (no allocation), under the same binding as calls without it; the checked first call writes into it too."""
    from sagellm_backend.attention import PagedAttentionBackend, PagedAttentionMetadataBuilder, paged
    from sagellm_backend.attention.registry import impls_of

    pt, compiled, dispatched = rig
    ops = impls_of("paged")[0].load_ops()
    monkeypatch.setattr(paged, "select_paged_ops", lambda *a, **kw: (ops, "triton"))
    backend = PagedAttentionBackend(4)
    md = PagedAttentionMetadataBuilder(4).build_decode_metadata([3, 6], [[2, 0], [1, 4]])
    for seed in range(5):
        q, k, v, cache, buf = _tensors(2, seed)
        with_output = seed != 2  # one call between allocates
        got = backend.forward(q, k, v, md, kv_cache=cache, output=buf if with_output else None)
        assert (got is buf) == with_output, seed
        if seed == 0:  # the checked call's launch (through the dispatcher) took the buffer itself
            assert any(a is buf for a in dispatched[0]["args"])
        f = md.step_fast_paths[(id(backend), "ready")]
        grid, args, kw = pt.decode_launch_args(
            q, cache[0], cache[1], f.plan.block_tables, f.plan.key_lens, f.scale, got, new=(k, v, f.plan.slot_mapping)
        )
        if seed:
            assert _same(compiled.calls[-1], [grid, *args, *(kw[n] for n in pt.decode_kernel.arg_names[len(args) :])])
    assert len(dispatched) == 1 and len(compiled.calls) == 4 and len(f.launcher) == 1


def test_forward_binding_serves_the_next_steps(rig: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new step's metadata (new plan tensors: lengths, tables, slots) reuses the backend's binding: no second
    dispatch, and the launch carries the new step's plan tensors, not the first step's. A step whose block tables
    are wider gets a binding of its own (its launch arguments differ)."""
    from sagellm_backend.attention import PagedAttentionBackend, PagedAttentionMetadataBuilder, paged
    from sagellm_backend.attention.registry import impls_of

    pt, compiled, dispatched = rig
    ops = impls_of("paged")[0].load_ops()
    monkeypatch.setattr(paged, "select_paged_ops", lambda *a, **kw: (ops, "triton"))
    backend = PagedAttentionBackend(4)
    builder = PagedAttentionMetadataBuilder(4)
    steps = [([3, 6], [[2, 0], [1, 4]]), ([4, 7], [[2, 3], [1, 4]]), ([5, 1], [[2, 3], [0, 5]])]
    steps.append(([5, 9], [[2, 3, 0], [1, 4, 5]]))
    for i, (ctx, table) in enumerate(steps):
        md = builder.build_decode_metadata(ctx, table)
        for layer in range(3):
            q, k, v, cache, _ = _tensors(2, 10 * i + layer)
            out = backend.forward(q, k, v, md, kv_cache=cache)
        f = md.step_fast_paths[(id(backend), "ready")]
        plan = f.plan
        grid, args, kw = pt.decode_launch_args(
            q, cache[0], cache[1], plan.block_tables, plan.key_lens, f.scale, out, new=(k, v, plan.slot_mapping)
        )
        assert _same(compiled.calls[-1], [grid, *args, *(kw[n] for n in pt.decode_kernel.arg_names[len(args) :])])
    assert len(dispatched) <= 2  # the wider step may specialise differently
    assert len(compiled.calls) + len(dispatched) == 12  # every layer of every step launched once
    assert len(backend._launcher) == 2


def test_launch_hooks_send_bound_launches_through_the_dispatcher(rig: Any) -> None:
    import triton

    pt, compiled, dispatched = rig
    w = _bound_wrapper(rig)
    hook = triton.knobs.runtime.launch_enter_hook

    def seen(*args: Any) -> None:
        return None

    hook.add(seen)
    try:
        q, k, v, cache, out = _tensors(2, 5)
        w.run(q, k, v, cache, out=out)
    finally:
        hook.remove(seen)
    assert len(dispatched) == 2 and len(compiled.calls) == 1  # a hook sees every launch: Triton's own path
    d = dispatched[-1]
    assert _same(_dispatched_launch(pt, d), _expected(pt, w, q, k, v, cache, out))
    assert {"num_warps", "num_stages"} <= set(d["kw"])  # the launch options travel too
    q, k, v, cache, out = _tensors(2, 6)
    w.run(q, k, v, cache, out=out)  # hook gone: bound again
    assert len(dispatched) == 2 and _same(compiled.calls[-1], _expected(pt, w, q, k, v, cache, out))


def test_launcher_binding_tells_geometries_with_equal_strides_apart(rig: Any) -> None:
    """Caches that are views of an arena (one block stride) with another block size, or queries that are views with
    another head count, have the same strides: the launcher must not serve one with the other's binding (the block
    size and head group are compile-time constants of the kernel)."""
    pt, compiled, _ = rig
    from sagellm_backend.attention.paged_launcher import FusedDecodeLauncher

    launcher = FusedDecodeLauncher()
    g = torch.Generator().manual_seed(3)
    arena = torch.randn(40, 8 * 2 * 16 * 2, generator=g).half()  # every block 512 elements apart, any block size
    table = torch.tensor([[1, 2, 3], [4, 5, 6]], dtype=torch.int32)
    lens = torch.tensor([5, 9], dtype=torch.int32)
    slots = torch.tensor([-1, -1])
    wide_q = torch.randn(2, 16, 16, generator=g).half()
    for bs, hq in ((4, 8), (8, 8), (4, 4)):
        kc = arena[:, : bs * 2 * 16].view(40, bs, 2, 16)
        vc = arena[:, 256 : 256 + bs * 2 * 16].view(40, bs, 2, 16)
        q = wide_q[:, :hq]  # the same strides for 8 and 4 heads
        k, v = (torch.randn(2, 2, 16, generator=g).half() for _ in range(2))
        out = torch.empty(2, hq, 16, dtype=torch.float16)
        for _ in range(2):  # the second call of each geometry goes through its binding
            launcher(q, k, v, kc, vc, out, table, lens, slots, 0.25)
        grid, args, kw = pt.decode_launch_args(q, kc, vc, table, lens, 0.25, out, new=(k, v, slots))
        assert _same(compiled.calls[-1], [grid, *args, *(kw[n] for n in pt.decode_kernel.arg_names[len(args) :])])
    assert len(launcher) == 3


def test_launcher_binding_tells_key_value_and_value_cache_dtypes_apart(rig: Any) -> None:
    """Without ``fixed`` the launcher vouches for nothing: a call whose new key/value or value cache has another
    dtype than the bound call's (the kernel is compiled for each pointer's element type) goes through Triton's
    dispatcher, and the call that matches a binding again is served by it."""
    _, compiled, dispatched = rig
    from sagellm_backend.attention.paged_launcher import FusedDecodeLauncher

    launcher = FusedDecodeLauncher()
    g = torch.Generator().manual_seed(5)
    table = torch.tensor([[1, 2, 3], [4, 5, 6]], dtype=torch.int32)
    lens = torch.tensor([5, 9], dtype=torch.int32)
    slots = torch.tensor([-1, -1])
    q = torch.randn(2, 8, 16, generator=g).half()
    out = torch.empty_like(q)
    kc, vc = (torch.randn(40, 4, 2, 16, generator=g).half() for _ in range(2))
    k16, v16 = (torch.randn(2, 2, 16, generator=g).half() for _ in range(2))
    k32, v32 = k16.float(), v16.float()
    vc32 = vc.float()  # the same strides as ``vc``

    def launches(k: Any, v: Any, v_cache: Any) -> str:
        before = (len(dispatched), len(compiled.calls))
        launcher(q, k, v, kc, v_cache, out, table, lens, slots, 0.25)
        return "dispatcher" if len(dispatched) > before[0] else "direct"

    assert launches(k32, v32, vc) == "dispatcher"
    assert launches(k32, v32, vc) == "direct"
    assert launches(k16, v16, vc) == "dispatcher"  # fp16 key and value: another compiled kernel
    assert launches(k16, v32, vc) == "dispatcher"
    assert launches(k16, v16, vc32) == "dispatcher"  # fp32 value cache
    assert launches(k16, v16, vc) == "direct"  # bound
    assert len(launcher) == 4


@pytest.mark.parametrize(("max_batch", "width"), [(3, 7), (4, 8), (5, 3)])
def test_wrapper_plan_views_are_aligned_for_every_geometry(rig: Any, max_batch: int, width: int) -> None:
    """The plan buffers' views (block tables, key lengths, slots) start 16-byte aligned whatever the wrapper's
    ``max_batch x max_blocks_per_seq``, so its later runs are bound launches (a misaligned plan view is never
    bound: every run would pay Triton's dispatcher)."""
    from sagellm_backend.attention import PagedAttentionWrapper
    from sagellm_backend.attention.paged_workspace import DecodeWorkspace

    pt, compiled, dispatched = rig
    w = PagedAttentionWrapper(8, 2, 16, block_size=4, max_batch=max_batch, max_blocks_per_seq=width, device="cpu")
    w._ops[torch.float16] = (pt, "triton", pt.decode_config(16, torch.float16, 4))  # steer onto the Triton path
    w._workspace = DecodeWorkspace(
        torch.empty(4 * 8 * 16 * 16), torch.empty(4 * 8 * 16), torch.zeros(8, dtype=torch.int32)
    )
    w.plan([1, 2], [[0, 1], [2, 3]], [1, 10], batch_size=2)
    assert [t.data_ptr() % 16 for t in (w.block_tables, w.key_lens, w.slot_mapping)] == [0, 0, 0]
    assert w.key_lens.tolist() == [2, 3] and w.block_tables[:, :2].tolist() == [[0, 1], [2, 3]]
    for seed in (0, 1):
        q, k, v, cache, out = _tensors(2, seed)
        w.run(q, k, v, cache, out=out)
    assert len(dispatched) == 1 and len(compiled.calls) == 1  # the second run is bound
    assert _same(compiled.calls[-1], _expected(pt, w, q, k, v, cache, out))


def test_forward_fast_path_binding_tells_head_counts_and_block_sizes_apart(
    rig: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """forward's fast path looks its binding up by the step's layouts alone (``checked``): metadata of the same batch
    and table width, but queries with another head count or caches with another block size (arena views with the
    same strides), must get bindings of their own."""
    from sagellm_backend.attention import PagedAttentionBackend, PagedAttentionMetadataBuilder, paged
    from sagellm_backend.attention.registry import impls_of

    pt, compiled, _ = rig
    ops = impls_of("paged")[0].load_ops()
    monkeypatch.setattr(paged, "select_paged_ops", lambda *a, **kw: (ops, "triton"))
    g = torch.Generator().manual_seed(4)
    arena = torch.randn(40, 8 * 2 * 16 * 2, generator=g).half()
    wide_q = torch.randn(2, 16, 16, generator=g).half()
    backend = PagedAttentionBackend(4)
    for bs, hq in ((4, 8), (8, 8), (4, 4), (4, 8)):
        kc = arena[:, : bs * 2 * 16].view(40, bs, 2, 16)
        vc = arena[:, 256 : 256 + bs * 2 * 16].view(40, bs, 2, 16)
        md = PagedAttentionMetadataBuilder(bs).build_decode_metadata([3, 6], [[2, 0], [1, 4]])
        for _ in range(3):  # the checked call, then the fast path (bound from its second call on)
            q = wide_q[:, :hq].contiguous()
            k, v = (torch.randn(2, 2, 16, generator=g).half() for _ in range(2))
            out = backend.forward(q, k, v, md, kv_cache=(kc, vc))
        plan = md.step_fast_paths[(id(backend), "ready")].plan
        grid, args, kw = pt.decode_launch_args(
            q, kc, vc, plan.block_tables, plan.key_lens, 16**-0.5, out, new=(k, v, plan.slot_mapping)
        )
        assert _same(compiled.calls[-1], [grid, *args, *(kw[n] for n in pt.decode_kernel.arg_names[len(args) :])])
    assert len(backend._launcher) == 3  # the last geometry is the first's again: its binding serves


def test_direct_launches_off_send_bound_calls_through_the_dispatcher(rig: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``SAGELLM_TRITON_DIRECT_LAUNCH=0`` (``triton_launch.DIRECT``) turns bound launches off, also for a binding made
    while they were on."""
    from sagellm_backend.kernels import triton_launch as tl

    _, compiled, dispatched = rig
    w = _bound_wrapper(rig)
    monkeypatch.setattr(tl, "DIRECT", False)
    q, k, v, cache, out = _tensors(2, 2)
    w.run(q, k, v, cache, out=out)
    assert len(dispatched) == 2 and len(compiled.calls) == 1


@pytest.mark.parametrize(
    "opts",
    [
        {"sliding_window": 5, "logits_soft_cap": 2.0, "alibi_slopes": [0.1] * 8},
        {"kv_cache_dtype": "fp8_e5m2"},
        {"kv_cache_dtype": "fp8_e4m3", "sliding_window": 3},
        {"kv_cache_dtype": "fp8_e4m3", "scales": "0-d"},
    ],
)
def test_forward_fast_path_binds_variant_and_fp8_launches(
    rig: Any, monkeypatch: pytest.MonkeyPatch, opts: dict[str, Any]
) -> None:
    """A backend with variants or an fp8 cache keeps a fast path too: the later layers' calls launch the bound fused
    decode with the variants' arguments and each call's own scales (live arguments: new values every layer), the
    arguments the dispatcher path builds; one dispatch in all."""
    from sagellm_backend.attention import PagedAttentionBackend, PagedAttentionMetadataBuilder, paged, triton_args
    from sagellm_backend.attention.kv_quant import fp8_dtype
    from sagellm_backend.attention.registry import impls_of

    pt, compiled, dispatched = rig
    ops = impls_of("paged")[0].load_ops()
    monkeypatch.setattr(paged, "select_paged_ops", lambda *a, **kw: (ops, "triton"))
    monkeypatch.setattr(triton_args, "_capability", lambda device: (9, 0))  # as on an H100
    opts = dict(opts)
    zero_d = opts.pop("scales", None) == "0-d"  # scalar tensors, which the launch takes as 1-element views
    backend = PagedAttentionBackend(4, **opts)
    md = PagedAttentionMetadataBuilder(4).build_decode_metadata([3, 6], [[2, 0], [1, 4]])
    fp8 = opts.get("kv_cache_dtype")
    for seed in range(4):
        q, k, v, (kc, vc), _ = _tensors(2, seed)
        sc: dict[str, Any] = {}
        if fp8 is not None:
            kc, vc = kc.to(fp8_dtype(fp8)), vc.to(fp8_dtype(fp8))
            sc = {"k_scale": torch.rand(2) + 0.5, "v_scale": torch.rand(1) + 0.5}  # per KV head, per tensor
            if zero_d:
                sc = {n: t[0].clone() for n, t in sc.items()}
        out = backend.forward(q, k, v, md, kv_cache=(kc, vc), **sc)
        sc = {n: t.reshape(-1) for n, t in sc.items()}
        f = md.step_fast_paths[(id(backend), "ready")]
        assert f.launcher is not None
        plan = f.plan
        grid, args, kw = pt.decode_launch_args(
            q, kc, vc, plan.block_tables, plan.key_lens, f.scale, out, new=(k, v, plan.slot_mapping),
            **backend.variants.op_kwargs(8, q.device), **sc,
        )  # fmt: skip
        if seed:
            assert _same(compiled.calls[-1], [grid, *args, *(kw[n] for n in pt.decode_kernel.arg_names[len(args) :])])
    assert len(dispatched) == 1 and len(compiled.calls) == 3


def test_forward_fast_path_follows_a_change_of_scale_layout(rig: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Layers alternating per-KV-head and per-tensor key and value scales on one step: each launch carries its own
    scales' layout (stride 1 or 0), never the recorded layer's."""
    from sagellm_backend.attention import PagedAttentionBackend, PagedAttentionMetadataBuilder, paged, triton_args
    from sagellm_backend.attention.registry import impls_of

    pt, compiled, dispatched = rig
    ops = impls_of("paged")[0].load_ops()
    monkeypatch.setattr(paged, "select_paged_ops", lambda *a, **kw: (ops, "triton"))
    monkeypatch.setattr(triton_args, "_capability", lambda device: (9, 0))
    backend = PagedAttentionBackend(4, kv_cache_dtype="fp8_e4m3")
    md = PagedAttentionMetadataBuilder(4).build_decode_metadata([3, 6], [[2, 0], [1, 4]])
    # (k_scale, v_scale) elements per layer: 2 per KV head, 1 per tensor; from one layer to the next the same,
    # only v_scale's, only k_scale's or both change
    layouts = [(2, 1), (2, 1), (2, 2), (2, 2), (1, 2), (1, 1), (2, 1)]
    for seed, (nk, nv) in enumerate(layouts):
        q, k, v, (kc, vc), _ = _tensors(2, seed)
        kc, vc = kc.to(torch.float8_e4m3fn), vc.to(torch.float8_e4m3fn)
        sc = {"k_scale": torch.rand(nk) + 0.5, "v_scale": torch.rand(nv) + 0.5}
        n = len(dispatched)
        out = backend.forward(q, k, v, md, kv_cache=(kc, vc), **sc)
        plan = md.step_fast_paths[(id(backend), "ready")].plan
        grid, args, kw = pt.decode_launch_args(
            q, kc, vc, plan.block_tables, plan.key_lens, q.shape[-1] ** -0.5, out, new=(k, v, plan.slot_mapping), **sc
        )
        names = pt.decode_kernel.arg_names[len(args) :]
        assert _same(_last_launch(pt, dispatched, compiled, n), [grid, *args, *(kw[m] for m in names)]), seed


def test_forward_fast_path_launches_replaced_variants_not_the_bound_ones(
    rig: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backend whose variants are replaced between steps (another window, cap, slopes): the next steps' launches
    carry the new options, not a binding made with the old ones."""
    from sagellm_backend.attention import PagedAttentionBackend, PagedAttentionMetadataBuilder, paged
    from sagellm_backend.attention.registry import impls_of
    from sagellm_backend.attention.variants import AttentionVariants

    pt, compiled, dispatched = rig
    ops = impls_of("paged")[0].load_ops()
    monkeypatch.setattr(paged, "select_paged_ops", lambda *a, **kw: (ops, "triton"))
    backend = PagedAttentionBackend(4, sliding_window=5, logits_soft_cap=2.0, alibi_slopes=[0.1] * 8)
    builder = PagedAttentionMetadataBuilder(4)
    options = [(5, 2.0, 0.1), (3, 4.0, 0.2), (5, 2.0, 0.1)]
    for step, (window, cap, slope) in enumerate(options):
        backend.variants = AttentionVariants(window, cap, [slope] * 8)
        md = builder.build_decode_metadata([3, 6], [[2, 0], [1, 4]])
        for layer in range(3):
            q, k, v, cache, _ = _tensors(2, 10 * step + layer)
            n = len(dispatched)
            out = backend.forward(q, k, v, md, kv_cache=cache)
            plan = md.step_fast_paths[(id(backend), "ready")].plan
            grid, args, kw = pt.decode_launch_args(
                q, cache[0], cache[1], plan.block_tables, plan.key_lens, q.shape[-1] ** -0.5, out,
                new=(k, v, plan.slot_mapping), **backend.variants.op_kwargs(8, q.device),
            )  # fmt: skip
            names = pt.decode_kernel.arg_names[len(args) :]
            want = [grid, *args, *(kw[m] for m in names)]
            assert _same(_last_launch(pt, dispatched, compiled, n), want), (step, layer)


def _dispatched_launch(pt: Any, d: dict[str, Any]) -> tuple[Any, ...]:
    """A launch Triton's dispatcher made, as the compiled launcher would get it (grid, stand-in stream 7, function,
    metadata, the three launcher slots, then every kernel argument)."""
    names = pt.decode_kernel.arg_names[len(d["args"]) :]
    return (*(*d["grid"], 1, 1)[:3], 7, "fn", "meta", None, None, None, *d["args"], *(d["kw"][m] for m in names))


def _last_launch(pt: Any, dispatched: list[dict[str, Any]], compiled: Any, before: int) -> tuple[Any, ...]:
    """The last launch as the compiled launcher gets it: from Triton's dispatcher where it launched since
    ``before`` dispatches (a layout compiled anew), else the compiled launcher's last call."""
    if len(dispatched) > before:
        return _dispatched_launch(pt, dispatched[-1])
    return tuple(compiled.calls[-1])
