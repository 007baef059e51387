"""``triton_raw.raw_launch`` calls the C launch under Triton's CUDA launcher exactly as that launcher's own
``__call__`` would for a kernel without scratch memory: the installed Triton's code, and the reviewed Triton 3.6
code kept in tests/data (each run here over a stand-in driver); and it declines every launcher it cannot stand in
for."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("torch")
triton = pytest.importorskip("triton")
nvidia_driver = pytest.importorskip("triton.backends.nvidia.driver")

from sagellm_backend.kernels import triton_launch, triton_raw  # noqa: E402


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any) -> None:
        self.calls.append(args)


def _launcher(c_launch: _Recorder, **over: Any) -> Any:
    run = nvidia_driver.CudaLauncher.__new__(nvidia_driver.CudaLauncher)  # the installed class, its __call__ real
    attrs = {
        "gsan_enabled": False, "num_ctas": 1, "launch": c_launch, "global_scratch_size": 0,
        "global_scratch_align": 1, "profile_scratch_size": 0, "profile_scratch_align": 1,
        "launch_cooperative_grid": False, "launch_pdl": True, "arg_annotations": ["annotations"],
        "kernel_signature": b"signature",
    }  # fmt: skip
    for k, v in {**attrs, **over}.items():
        setattr(run, k, v)
    return run


def _wrapped(*args: Any) -> None:
    """A launch wrapped in Python (as Triton wraps one whose kernel takes tensor descriptors)."""


@pytest.fixture
def c_launch(monkeypatch: pytest.MonkeyPatch) -> _Recorder:
    rec = _Recorder()
    fake = SimpleNamespace(utils=SimpleNamespace(launch=rec), allocate_default_profile_scratch=None)
    monkeypatch.setattr(triton.runtime.driver, "_active", fake)  # what the launcher's __call__ asks for
    monkeypatch.setattr(triton_launch, "driver", SimpleNamespace(active=fake))
    digest = triton_raw.launcher_source_digest(nvidia_driver.CudaLauncher)
    if digest not in triton_raw.RAW_LAUNCH_SOURCES:
        pytest.skip(f"Triton {triton.__version__}'s launcher (source {digest[:12]}) is not one raw_launch knows")
    return rec


def test_raw_launch_passes_what_the_installed_launcher_passes(c_launch: _Recorder) -> None:
    kernel = SimpleNamespace(run=_launcher(c_launch), function=1234, packed_metadata=("meta",))
    args = (7, 0xDEAD00, 3.5, None, 16)
    enter, leave = object(), object()
    kernel.run(4, 2, 1, 99, kernel.function, kernel.packed_metadata, None, enter, leave, *args)
    go = triton_raw.raw_launch(kernel)
    assert go is not None
    go(4, 2, 1, 99, enter, leave, args)
    assert len(c_launch.calls) == 2
    assert c_launch.calls[1] == c_launch.calls[0]  # every argument, in order: grid, stream, hooks, the args tuple


@pytest.mark.parametrize(
    "over",
    [{"global_scratch_size": 64}, {"profile_scratch_size": 8}, {"gsan_enabled": True}, {"launch": _wrapped}],
    ids=["global scratch", "profile scratch", "sanitizer", "wrapped launch (tensor descriptors)"],
)  # fmt: skip
def test_raw_launch_declines_launchers_that_do_more_per_call(c_launch: _Recorder, over: dict[str, Any]) -> None:
    kernel = SimpleNamespace(run=_launcher(c_launch, **over), function=1, packed_metadata=())
    assert triton_raw.raw_launch(kernel) is None


def test_raw_launch_declines_other_launchers_and_can_be_turned_off(
    c_launch: _Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert triton_raw.raw_launch(SimpleNamespace(run=c_launch, function=1, packed_metadata=())) is None
    kernel = SimpleNamespace(run=_launcher(c_launch), function=1, packed_metadata=())
    monkeypatch.setattr(triton_raw, "RAW", False)
    assert triton_raw.raw_launch(kernel) is None
    monkeypatch.setattr(triton_raw, "RAW", True)
    monkeypatch.setattr(triton_raw, "RAW_LAUNCH_SOURCES", {})  # a launcher whose code was not reviewed
    assert triton_raw.raw_launch(kernel) is None


def test_raw_launch_passes_what_the_reviewed_triton_3_6_launcher_passes(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util
    import textwrap
    from pathlib import Path

    src = (Path(__file__).parent / "data" / "triton_3_6_cuda_launcher_call.py.txt").read_text()
    module = tmp_path / "triton36_launcher.py"
    module.write_text("_allocation = None\n\n\nclass CudaLauncher:\n" + textwrap.indent(textwrap.dedent(src), "    "))
    spec = importlib.util.spec_from_file_location("triton36_launcher", module)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert triton_raw.RAW_LAUNCH_SOURCES[triton_raw.launcher_source_digest(mod.CudaLauncher)] == "3.6"
    mod.__dict__["_allocation"] = SimpleNamespace(_allocator=None, _profile_allocator=None)  # asked nothing at size 0
    rec = _Recorder()
    run = mod.CudaLauncher()
    for k, v in {"launch": rec, "num_ctas": 1, "global_scratch_size": 0, "global_scratch_align": 1,
                 "profile_scratch_size": 0, "profile_scratch_align": 1, "launch_cooperative_grid": True,
                 "launch_pdl": False}.items():  # fmt: skip
        setattr(run, k, v)
    kernel = SimpleNamespace(run=run, function=55, packed_metadata=("meta",))
    args = (3, 0xBEEF00, 0.5, None)
    enter, leave = object(), object()
    kernel.run(8, 1, 2, 77, kernel.function, kernel.packed_metadata, None, enter, leave, *args)
    go = triton_raw.raw_launch(kernel)
    assert go is not None
    go(8, 1, 2, 77, enter, leave, args)
    assert len(rec.calls) == 2 and rec.calls[1] == rec.calls[0]


def test_direct_and_bound_launches_go_raw_with_the_arguments_the_launcher_would_get(
    c_launch: _Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through ``launch`` (kept compiled kernels) and ``bind`` (bound launches) over the stand-in driver, a kernel
    whose launcher ``raw_launch`` accepts is launched by the C launch directly, with exactly what the launcher's own
    ``__call__`` passes for the same call."""
    import torch

    from launch_rig import use_stand_in_driver

    use_stand_in_driver(monkeypatch)
    run = _launcher(c_launch)
    kernel = SimpleNamespace(run=run, function=4321, packed_metadata=(4, 1, 0))

    class Fn:  # a JIT kernel's shape: fn[grid](...) compiles (here: returns the kernel) and launches
        arg_names = ("x", "y", "n", "BLOCK")

        def __getitem__(self, grid: Any) -> Any:
            return lambda *a, **kw: kernel

    fn = Fn()
    x, y = torch.zeros(16), torch.zeros(16)
    go = triton_launch.launch(fn, (3,))
    go(x, y, 16, BLOCK=64, num_warps=4)  # compiles; the kernel is kept with its raw launch
    go(x, y, 16, BLOCK=64, num_warps=4)
    assert len(c_launch.calls) == 1
    enter, leave, _ = triton_launch._hooks()
    run(3, 1, 1, 7, kernel.function, kernel.packed_metadata, None, enter, leave, x, y, 16, 64)
    assert c_launch.calls[0] == c_launch.calls[1]
    bound = triton_launch.bind(fn, (3,), (x, y, 16), {"BLOCK": 64, "num_warps": 4}, (x,))
    assert bound is not None
    x2 = torch.zeros(16)
    bound((x2,), [x2.data_ptr()])
    run(3, 1, 1, 7, kernel.function, kernel.packed_metadata, None, enter, leave, x2.data_ptr(), y.data_ptr(), 16, 64)
    assert len(c_launch.calls) == 4 and c_launch.calls[2] == c_launch.calls[3]
