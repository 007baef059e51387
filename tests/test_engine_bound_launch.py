"""The engine kernels' bound launches (``triton_launch.BoundCache``) on CPU: Triton's dispatcher and the compiled
kernel are replaced by recorders and CPU tensors are steered onto the Triton path, so the test sees exactly what
would reach the GPU launcher. A bound call must pass the argument list the dispatcher path builds for its own
tensors; another shape, stride, eps, dtype, alignment or aliasing pattern must not be served by a stale binding."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from launch_rig import use_stand_in_driver  # noqa: E402


class _Compiled:
    """The compiled kernel of one signature: it knows the dtype of each tensor argument it was compiled for, as a
    real one does, and logs each tensor position's pointer (an int from a bound launch) with that dtype."""

    function = "fn"
    packed_metadata = "meta"

    def __init__(self, log: list[list[Any]], dtypes: list[Any]) -> None:
        self.log, self.dtypes = log, dtypes

    def run(self, *args: Any) -> None:
        rest = args[9:]  # grid x3, stream, function, metadata, 3 hooks, then the arguments
        assert len(rest) == len(self.dtypes)
        self.log.append(["bound", *(a if dt is None else _Ptr(a, dt) for a, dt in zip(rest, self.dtypes))])


class _Ptr:
    """A pointer argument as the compiled kernel receives it: an address (int, or a tensor's ``data_ptr()``) and
    the dtype the kernel was compiled for."""

    def __init__(self, a: Any, dtype: Any) -> None:
        self.passed, self.ptr, self.dtype = a, a if isinstance(a, int) else a.data_ptr(), dtype


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[list[Any]]]:
    from sagellm_backend.kernels import rope_triton, triton_ops

    log: list[list[Any]] = []
    for fn in (triton_ops._rmsnorm_kernel, triton_ops._silu_mul_kernel, rope_triton._rope_kernel):

        def dispatcher(*args: Any, grid: Any, warmup: bool, fn: Any = fn, **kw: Any) -> _Compiled:
            full = [*args, *(kw[n] for n in fn.arg_names[len(args) :])]
            log.append(["dispatch", *full])
            return _Compiled(log, [a.dtype if isinstance(a, torch.Tensor) else None for a in full])

        monkeypatch.setattr(fn, "run", dispatcher, raising=False)

    use_stand_in_driver(monkeypatch)
    monkeypatch.setattr(triton_ops, "INTERPRET", True)  # CPU tensors take the Triton path
    monkeypatch.setattr(triton_ops, "_ROPE_READY", {})  # RoPE fast paths found on the rig stay on it
    monkeypatch.setattr(triton_ops, "_FAST", {})  # so do the norms' and silu_mul's
    for cache in (triton_ops._NORMS, triton_ops._SILU_MUL, rope_triton._ROPE):
        monkeypatch.setattr(cache, "_bound", {})
    return triton_ops, log


def _canonical(args: list[Any], inputs: dict[str, Any]) -> list[Any]:
    """``args`` with each pointer argument (a tensor, or a :class:`_Ptr`) replaced by what the kernel receives of
    it: its address as (the input whose data it starts in, byte offset; else the n-th new address) and its dtype.
    Two calls that launch the same way on their own tensors have equal canonical lists."""
    new: dict[int, int] = {}
    out: list[Any] = []
    for a in args:
        if isinstance(a, torch.Tensor):
            a = _Ptr(a, a.dtype)
        if not isinstance(a, _Ptr):
            out.append(a)
            continue
        p = a.ptr
        role = next((name for name, t in inputs.items() if t.data_ptr() <= p < t.data_ptr() + t.nbytes), None)
        where = (f"new{new.setdefault(p, len(new))}", 0) if role is None else (role, p - inputs[role].data_ptr())
        out.append((*where, a.dtype))
    return out


def _bf16(*shape: int, seed: int) -> Any:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(torch.bfloat16)


def _layer_calls(ops: Any, seed: int, rows: int = 4) -> list[tuple[Callable[[], Any], dict[str, Any]]]:
    """One decode layer's engine-kernel calls on fresh tensors, each with its named inputs."""
    w = _bf16(64, seed=seed).abs() + 0.5
    x, r = _bf16(rows, 64, seed=seed + 1), _bf16(rows, 64, seed=seed + 2)
    gu = _bf16(rows, 128, seed=seed + 3)
    qkv = _bf16(rows, 6 * 16, seed=seed + 4)
    q, k = qkv[:, : 4 * 16], qkv[:, 4 * 16 : 5 * 16]
    pos = torch.arange(rows) * 3
    cs = torch.randn(32, 16)
    return [
        (lambda: ops.rmsnorm(x, w, 1e-5), {"x": x, "w": w}),
        (lambda: ops.add_rmsnorm(x, r, w, 1e-5), {"x": x, "r": r, "w": w}),
        (lambda: ops.silu_mul(gu), {"gu": gu}),
        (lambda: ops.rotary_embedding(pos, q, k, 16, cs, True), {"pos": pos, "q": q, "k": k, "cs": cs}),
    ]


def _run(log: list[list[Any]], call: Callable[[], Any]) -> tuple[str, list[Any]]:
    n = len(log)
    call()
    assert len(log) == n + 1, "one launch per call"
    return log[-1][0], log[-1][1:]


def test_later_calls_are_bound_and_launch_what_the_dispatcher_builds(rig: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from sagellm_backend.kernels import triton_launch as tl

    ops, log = rig
    first = [_canonical(_run(log, c)[1], i) for c, i in _layer_calls(ops, seed=0)]
    for seed in (10, 20):
        calls = _layer_calls(ops, seed=seed)
        for (call, inputs), want in zip(calls, first):
            kind, got = _run(log, call)
            assert kind == "bound"
            assert _canonical(got, inputs) == want
            # every pointer reaches the compiled launcher as an int: no data_ptr() call or driver query there
            assert all(type(a.passed) is int for a in got if isinstance(a, _Ptr))
        with monkeypatch.context() as m:  # the dispatcher path on the same tensors builds the same lists
            m.setattr(tl, "DIRECT", False)
            for (call, inputs), want in zip(calls, first):
                kind, got = _run(log, call)
                assert kind == "dispatch"
                assert _canonical(got, inputs) == want


def _more_calls(ops: Any, seed: int) -> list[tuple[Callable[[], Any], dict[str, Any]]]:
    """Layouts the decode layer does not use: in place and into caller buffers, a strided weight (copied per call),
    an fp32 weight (fp32 output), a separate ``up`` and ``up`` that is the gate, both RoPE styles on ``[T, H, D]``
    views with strided tokens, with and without a key, and a key that is the query."""
    w_all = _bf16(128, seed=seed)
    w = w_all[::2]
    x, r = _bf16(4, 64, seed=seed + 1), _bf16(4, 64, seed=seed + 2)
    g, u = _bf16(4, 64, seed=seed + 3), _bf16(4, 64, seed=seed + 4)
    qkv = _bf16(3, 6, 16, seed=seed + 5)
    q, k = qkv[:, :4], qkv[:, 4:5]
    flat = _bf16(3, 64, seed=seed + 6)
    pos = torch.tensor([0, 5, 31])
    cs = torch.randn(32, 16)
    rope = {"qkv": qkv, "pos": pos, "cs": cs}
    xi, ri = _bf16(4, 64, seed=seed + 7), _bf16(4, 64, seed=seed + 8)
    y, h = torch.empty(4, 64, dtype=torch.bfloat16), torch.empty(4, 32, dtype=torch.bfloat16)
    return [
        (lambda: ops.add_rmsnorm(xi, ri, w_all[:64], 1e-5, inplace=True), {"x": xi, "r": ri, "w": w_all}),
        (lambda: ops.rmsnorm(x, w_all[:64], 1e-5, out=y), {"x": x, "w": w_all, "y": y}),
        (lambda: ops.silu_mul(g, out=h), {"g": g, "h": h}),
        (lambda: ops.add_rmsnorm(x, r, w.float(), 1e-5), {"x": x, "r": r, "w": w_all}),
        (lambda: ops.silu_mul(g, u), {"g": g, "u": u}),
        (lambda: ops.silu_mul(g, g), {"g": g}),
        (lambda: ops.rotary_embedding(pos, q, None, 16, cs, False), rope),
        (lambda: ops.rotary_embedding(pos, q, k, 16, cs, False), rope),
        (lambda: ops.rotary_embedding(pos, q, k, 16, cs, True), rope),  # the other style on the same geometry
        (lambda: ops.rotary_embedding(pos, flat, flat, 16, cs, True), {"flat": flat, "pos": pos, "cs": cs}),
    ]


def test_more_layouts_launch_what_the_dispatcher_builds(rig: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from sagellm_backend.kernels import triton_launch as tl

    ops, log = rig
    first = [_canonical(_run(log, c)[1], i) for c, i in _more_calls(ops, seed=0)]
    for seed in (10, 20):
        calls = _more_calls(ops, seed=seed)
        for n, ((call, inputs), want) in enumerate(zip(calls, first)):
            kind, got = _run(log, call)
            assert kind == "bound" and _canonical(got, inputs) == want, n
            with monkeypatch.context() as m:
                m.setattr(tl, "DIRECT", False)
                kind, got = _run(log, call)
            assert kind == "dispatch" and _canonical(got, inputs) == want, n


def test_another_shape_stride_eps_alias_or_alignment_is_not_served_by_a_stale_binding(
    rig: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sagellm_backend.kernels import triton_launch as tl
    from sagellm_backend.kernels import triton_ops

    ops, log = rig
    w = _bf16(64, seed=0)
    x, r = _bf16(4, 64, seed=1), _bf16(4, 64, seed=2)
    assert _run(log, lambda: ops.add_rmsnorm(x, r, w, 1e-5))[0] == "dispatch"
    assert _run(log, lambda: ops.add_rmsnorm(r, x, w, 1e-5))[0] == "bound"
    wide = _bf16(4, 128, seed=3)
    flat = _bf16(4 * 64 + 8, seed=6)
    unaligned = flat[1 : 1 + 4 * 64].view(4, 64)  # 2 bytes past an aligned start
    assert unaligned.data_ptr() % 16 != 0
    x5, r5 = _bf16(5, 64, seed=4), _bf16(5, 64, seed=5)
    changed: list[tuple[Callable[[], Any], dict[str, Any], int]] = [  # the call, its inputs, new bindings
        (lambda: ops.add_rmsnorm(x5, r5, w, 1e-5), {"x": x5, "r": r5, "w": w}, 1),  # rows
        (lambda: ops.add_rmsnorm(x, r, w, 1e-6), {"x": x, "r": r, "w": w}, 1),  # eps
        (lambda: ops.add_rmsnorm(wide[:, :64], r, w, 1e-5), {"x": wide, "r": r, "w": w}, 1),  # row stride
        (lambda: ops.add_rmsnorm(x, x, w, 1e-5), {"x": x, "w": w}, 0),  # x is the residual: the first binding
        (lambda: ops.add_rmsnorm(unaligned, r, w, 1e-5), {"x": unaligned, "r": r, "w": w}, 0),  # never bound
        (lambda: ops.add_rmsnorm(unaligned, r, w, 1e-5), {"x": unaligned, "r": r, "w": w}, 0),
        (lambda: ops.add_rmsnorm(r, x, w, 1e-5), {"x": r, "r": x, "w": w}, 0),  # the first binding still serves
    ]
    for i, (call, inputs, grows) in enumerate(changed):
        before = len(triton_ops._NORMS)
        kind, got_args = _run(log, call)
        got = _canonical(got_args, inputs)
        assert len(triton_ops._NORMS) == before + grows, i
        if i == 4:  # the first unaligned launch is specialised anew: Triton's dispatcher, not a binding
            assert kind == "dispatch"
        with monkeypatch.context() as m:
            m.setattr(tl, "DIRECT", False)
            kind, want = _run(log, call)
        assert kind == "dispatch"
        assert got == _canonical(want, inputs), i
    n = len(log)
    ops.add_rmsnorm(x, r.float(), w.float(), 1e-5)  # mixed dtypes: the torch path, no launch
    assert len(log) == n


def test_the_cache_starts_over_at_its_limit(rig: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from sagellm_backend.kernels import triton_ops

    ops, _ = rig
    monkeypatch.setattr(triton_ops._SILU_MUL, "_limit", 2)
    for rows in (1, 2, 3):
        ops.silu_mul(_bf16(rows, 128, seed=rows))
        assert len(triton_ops._SILU_MUL) == (rows - 1) % 2 + 1


def test_rope_fast_path_still_checks_what_changes_between_calls(rig: Any) -> None:
    from sagellm_backend.errors import BackendError

    ops, log = rig
    cs = torch.randn(32, 16)
    qkv = _bf16(3, 6 * 16, seed=1)
    q, k = qkv[:, : 4 * 16], qkv[:, 4 * 16 : 5 * 16]
    for _ in range(2):  # the second call is served by the fast path
        assert _run(log, lambda: ops.rotary_embedding(torch.tensor([0, 5, 31]), q, k, 16, cs, True))[0] in (
            "dispatch",
            "bound",
        )
    before = qkv.clone()
    n = len(log)
    with pytest.raises(BackendError, match="outside the cos/sin cache"):  # host positions: values checked each call
        ops.rotary_embedding(torch.tensor([0, 32, 1]), q, k, 16, cs, True)
    with pytest.raises(BackendError):  # another head size is checked again
        ops.rotary_embedding(torch.tensor([0, 5, 31]), q, k, 12, cs, True)
    assert len(log) == n and torch.equal(qkv, before)  # nothing launched, nothing written
    strided = torch.zeros(3, 4, 16, 2, dtype=torch.bfloat16)[..., 0]  # last dim strided: the torch path
    strided.copy_(q.view(3, 4, 16))
    ops.rotary_embedding(torch.tensor([0, 5, 31]), strided, None, 16, cs, True)
    assert len(log) == n
    want = q.view(3, 4, 16).clone()
    from sagellm_backend.kernels import torch_ops

    torch_ops.rotary_embedding(torch.tensor([0, 5, 31]), want, None, 16, cs, True)
    assert torch.equal(strided, want)


def test_fast_paths_still_check_what_depends_on_the_pointers(rig: Any) -> None:
    """A call whose signature an earlier call passed with is launched without the layout checks, but overlaps and
    alignment depend on the tensors' addresses and are checked at every call."""
    from sagellm_backend.errors import InvalidArgumentError
    from sagellm_backend.kernels import triton_ops

    ops, log = rig
    w = _bf16(64, seed=0)
    buf = _bf16(8, 64, seed=1)
    x, r = buf[:4], buf[4:]  # apart: accepted, and now a fast path
    assert _run(log, lambda: ops.add_rmsnorm(x, r, w, 1e-5, inplace=True))[0] in ("dispatch", "bound")
    assert len(triton_ops._FAST) == 1
    assert _run(log, lambda: ops.add_rmsnorm(buf[4:], buf[:4], w, 1e-5, inplace=True))[0] == "bound"
    wide = _bf16(6, 64, seed=2)
    x2, r2 = wide[:4], wide[2:]  # the same layouts, overlapping by two rows
    before, n = wide.clone(), len(log)
    with pytest.raises(InvalidArgumentError, match="must not share memory"):
        ops.add_rmsnorm(x2, r2, w, 1e-5, inplace=True)
    with pytest.raises(InvalidArgumentError, match="weight must not share memory"):
        ops.add_rmsnorm(x2, _bf16(4, 64, seed=3), wide[0], 1e-5, inplace=True)
    gu = _bf16(4, 128, seed=4)
    assert _run(log, lambda: ops.silu_mul(gu, out=torch.empty(4, 64, dtype=torch.bfloat16)))[0] in ("dispatch", "bound")
    g, u = _bf16(4, 64, seed=9), _bf16(4, 64, seed=10)
    ops.silu_mul(g, u, out=torch.empty(4, 64, dtype=torch.bfloat16))  # two tensors, accepted
    big = _bf16(4 * 128, seed=5)
    before_big, n = big.clone(), len(log)
    with pytest.raises(InvalidArgumentError, match="out must be"):  # out is the gate, not the up projection
        ops.silu_mul(big[:256].view(4, 64), u, out=big[:256].view(4, 64))
    with pytest.raises(InvalidArgumentError, match="out must be"):  # the same layouts, out inside the input
        ops.silu_mul(big.view(4, 128), out=big[256:].view(4, 64))
    assert len(log) == n and torch.equal(wide, before) and torch.equal(big, before_big)  # nothing launched or written
    flat = _bf16(4 * 64 + 8, seed=7)
    unaligned = flat[1 : 1 + 4 * 64].view(4, 64)
    assert _run(log, lambda: ops.add_rmsnorm(unaligned, _bf16(4, 64, seed=8), w, 1e-5, inplace=True))[0] == "dispatch"


def test_fast_path_keys_tell_what_the_layout_does_not(rig: Any) -> None:
    """What a key holds besides layouts: the type of a flag (``inplace=1`` is refused, as on the checked path), an
    ``eps`` that is a tensor (never kept: its value is no part of a key), the result's dtype and shape, and an ``out``
    that overlaps either input of the two-tensor ``silu_mul`` or the input of ``rmsnorm``."""
    from sagellm_backend.errors import InvalidArgumentError, InvalidArgumentTypeError
    from sagellm_backend.kernels import triton_ops

    ops, log = rig
    w = _bf16(64, seed=0)
    x, r = _bf16(4, 64, seed=1), _bf16(4, 64, seed=2)
    for flag in (True, False):
        ops.add_rmsnorm(x, r, w, 1e-5, inplace=flag)
        ops.add_rmsnorm(x, r, w, 1e-5, inplace=flag)  # kept by now
        with pytest.raises(InvalidArgumentTypeError, match="inplace must be True or False"):
            ops.add_rmsnorm(x, r, w, 1e-5, inplace=int(flag))
    n = len(triton_ops._FAST)
    ops.rmsnorm(x, w, torch.tensor(1e-5))
    ops.rmsnorm(x, w, torch.tensor(0.5))
    assert len(triton_ops._FAST) == n and [a for a in log[-1] if isinstance(a, float)] == [0.5]
    w32 = _bf16(64, seed=3).float()
    for _ in range(3):  # checked, kept, fast: an fp32 result from a bf16 input and an fp32 weight
        assert ops.rmsnorm(x, w32, 1e-5).dtype == torch.float32
    gu = _bf16(4, 128, seed=4)
    for _ in range(3):
        assert ops.silu_mul(gu).shape == (4, 64)
    g, u = _bf16(4, 64, seed=5), _bf16(4, 64, seed=6)
    ops.silu_mul(g, u, out=torch.empty(4, 64, dtype=torch.bfloat16))
    ops.rmsnorm(x, w, 1e-5, out=torch.empty(4, 64, dtype=torch.bfloat16))
    big = _bf16(2 * 4 * 64, seed=7)
    g2, u2 = big[:256].view(4, 64), big[256:].view(4, 64)  # the kept layouts; out is the up projection
    before, m = big.clone(), len(log)
    with pytest.raises(InvalidArgumentError, match="out must be"):
        ops.silu_mul(g2, u2, out=big[256:].view(4, 64))
    with pytest.raises(InvalidArgumentError, match="out must be"):
        ops.rmsnorm(g2, w, 1e-5, out=big[:256].view(4, 64))
    assert len(log) == m and torch.equal(big, before)


def test_the_rig_leaves_no_fast_path_to_later_tests() -> None:
    """Runs after the rig's tests: a call like theirs, now off the rig (CPU tensors, no interpreter), must take the
    torch path, not a Triton fast path the rig registered."""
    from sagellm_backend.kernels import torch_ops, triton_ops

    if triton_ops.INTERPRET:
        pytest.skip("under TRITON_INTERPRET=1 CPU tensors take the Triton path")
    cs = torch.randn(32, 16)
    qkv = _bf16(3, 6 * 16, seed=1)
    want = qkv.clone()
    torch_ops.rotary_embedding(torch.tensor([0, 5, 31]), want[:, :64], want[:, 64:80], 16, cs, True)
    triton_ops.rotary_embedding(torch.tensor([0, 5, 31]), qkv[:, :64], qkv[:, 64:80], 16, cs, True)
    assert torch.equal(qkv, want)
    x, r, w = _bf16(4, 64, seed=1), _bf16(4, 64, seed=2), _bf16(64, seed=0)
    for got, exp in zip(triton_ops.add_rmsnorm(x, r, w, 1e-5), torch_ops.add_rmsnorm(x, r, w, 1e-5)):
        assert torch.equal(got, exp)
    gu = _bf16(4, 128, seed=4)
    assert torch.equal(triton_ops.silu_mul(gu, out=torch.empty(4, 64, dtype=torch.bfloat16)), torch_ops.silu_mul(gu))
