"""``kernels.triton_launch.BoundCache`` on CPU with a stand-in kernel: for any arrangement of live tensors (in several
argument positions, one object in several roles) and bound tensors, a bound launch hands the compiled launcher
exactly the pointers (as ints) and values the dispatcher path would get, another aliasing pattern gets another
binding, and under launch hooks the dispatcher gets the tensors themselves."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from launch_rig import use_stand_in_driver  # noqa: E402

NAMES = ("p0", "p1", "p2", "p3", "p4", "p5", "p6", "C")  # six pointer-or-scalar positions, one int, a constexpr


class _Compiled:
    function, packed_metadata = "fn", "meta"

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def run(self, *args: Any) -> None:
        self.calls.append(args[9:])  # grid x3, stream, function, metadata, 3 hooks, then the arguments


class _Kernel:
    """The shape of a JIT kernel for ``triton_launch``: ``arg_names`` and ``kernel[grid](*args, **kw)``."""

    def __init__(self) -> None:
        self.arg_names = list(NAMES)
        self.compiled = _Compiled()
        self.dispatched: list[list[Any]] = []

    def __getitem__(self, grid: Any) -> Any:
        def call(*args: Any, **kw: Any) -> _Compiled:
            self.dispatched.append([*args, *(kw[n] for n in NAMES[len(args) :])])
            return self.compiled

        return call


def _pointers(values: list[Any]) -> list[Any]:
    return [v.data_ptr() if isinstance(v, torch.Tensor) else v for v in values]


# Each of the six positions: ("live", i) for live tensor i, ("bound", j) for bound tensor j, or ("int", v).
position = st.one_of(
    st.tuples(st.just("live"), st.integers(0, 3)),
    st.tuples(st.just("bound"), st.integers(0, 1)),
    st.tuples(st.just("int"), st.integers(-5, 5)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(position, min_size=6, max_size=6), st.lists(st.integers(0, 3), min_size=4, max_size=4))
def test_bound_launches_pass_the_dispatcher_paths_pointers(
    monkeypatch: pytest.MonkeyPatch, layout: list[tuple[str, int]], roles: list[int]
) -> None:
    """``roles[i]`` names the object playing live tensor ``i`` (equal roles: one tensor in several roles)."""
    from sagellm_backend.kernels import triton_launch as tl

    with monkeypatch.context() as m:
        use_stand_in_driver(m)
        kernel = _Kernel()
        cache = tl.BoundCache(kernel)
        bound = [torch.empty(8), torch.empty(8)]
        kept: list[Any] = []  # every launch's tensors stay alive: no address is reused by a later launch

        def launch() -> list[Any]:
            objs = [torch.empty(8) for _ in range(4)]
            kept.append(objs)
            live = tuple(objs[r] for r in roles)
            args = [live[i] if k == "live" else bound[i] if k == "bound" else i for k, i in layout]
            cache(("key",), (3,), (*args, 7), {"C": 2, "num_warps": 4}, live)
            return [*args, 7, 2]

        first = launch()  # through the dispatcher, then bound
        assert len(kernel.dispatched) == 1 and kernel.dispatched[0] == first
        for _ in range(3):
            want = launch()
            assert len(kernel.dispatched) == 1  # served by the binding
            got = kernel.compiled.calls[-1]
            assert list(got) == _pointers(want)
            assert all(type(g) is int for g in got)  # tensors reach the launcher as pointers only
        m.setattr(tl, "_hooks", lambda: (None, None, True))  # launch hooks installed: Triton's dispatcher
        want = launch()
        assert len(kernel.dispatched) == 2 and all(a is b for a, b in zip(kernel.dispatched[-1], want))


@pytest.mark.parametrize("first_aliased", [False, True])
def test_a_binding_from_distinct_tensors_serves_any_aliasing_one_from_aliased_only_its_own(
    monkeypatch: pytest.MonkeyPatch, first_aliased: bool
) -> None:
    from sagellm_backend.kernels import triton_launch as tl

    use_stand_in_driver(monkeypatch)
    kernel = _Kernel()
    cache = tl.BoundCache(kernel)
    kept: list[Any] = []  # no address is reused by a later launch

    def launch(same: bool) -> list[Any]:
        x, out = torch.empty(8), torch.empty(8)
        y = x if same else torch.empty(8)
        kept.append((x, y, out))
        args = (x, y, out, out, out, 1, 7)  # out in three roles, as the direct decode passes its output
        cache(("key",), (3,), args, {"C": 2, "num_warps": 4}, (x, y, out))
        return [*args, 2]

    launch(first_aliased)
    want = launch(first_aliased)
    assert len(cache) == 1 and list(kernel.compiled.calls[-1]) == _pointers(want)
    launch(not first_aliased)
    want = launch(not first_aliased)
    # Distinct tensors bound first: x is y takes that binding (each position its own pointer). x is y bound first:
    # its binding put one pointer in both positions, so distinct tensors get a binding of their own.
    assert len(cache) == (2 if first_aliased else 1) and list(kernel.compiled.calls[-1]) == _pointers(want)
    want = launch(first_aliased)  # and the first pattern is still launched right
    assert list(kernel.compiled.calls[-1]) == _pointers(want)
