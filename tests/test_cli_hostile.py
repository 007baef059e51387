"""The CLI driven as a subprocess with bad arguments: exit status, a one-line message on stderr,
never a traceback. Every case runs concurrently once (module fixture); each test asserts one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import sagellm_backend

SRC = str(Path(sagellm_backend.__file__).resolve().parents[1])

PLUGIN = """
from sagellm_backend import UnavailableError, provider_factory

@provider_factory(detect=lambda: (True, "found"), priority=None)
def multiline(config=None, **options):
    raise UnavailableError("first line of the reason\\nsecond line of the reason")
"""


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    rc: int
    words: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


CASES = {
    "info-unknown": Case(("info", "--provider", "tpu"), 2, ("unknown provider 'tpu'",)),
    "info-json-unknown": Case(("info", "--json", "--provider", "TPU"), 2, ("unknown provider 'TPU'",)),
    "demo-unknown": Case(("demo", "--provider", "tpu"), 2, ("unknown provider 'tpu'",)),
    "check-unknown": Case(("check", "tpu"), 2, ("unknown provider 'tpu'",)),
    "bench-unknown": Case(("bench", "--provider", "tpu", "--quick"), 2, ("unknown provider 'tpu'",)),
    "demo-unavailable": Case(("demo", "--provider", "kunlun"), 2, ("torch_xmlir",)),
    "env-unknown": Case(("info",), 2, ("SAGELLM_BACKEND='nonsense'",), (("SAGELLM_BACKEND", "nonsense"),)),
    "check-filter-nothing": Case(("check", "mock", "-k", "zzz-nothing"), 2, ("'zzz-nothing'", "matches no check")),
    "bench-only-empty": Case(("bench", "--provider", "mock", "--quick", "--only", " , "), 2, ("--only",)),
    "bench-only-nothing": Case(("bench", "--provider", "mock", "--quick", "--only", "nonesuch"), 2, ("'nonesuch'",)),
    "bench-report-missing-dir": Case(
        ("bench", "--provider", "mock", "--quick", "--report", "/nonexistent-dir-xyz/r.md"),
        2,
        ("does not exist",),
    ),
    "bench-plot-bad-format": Case(
        ("bench", "--provider", "mock", "--quick", "--plot", "{tmp}/plot.xyz"), 2, ("'xyz'", "png")
    ),
    "broken-plugin-info": Case(("info",), 0, ("h-runtime", "RuntimeError: driver exploded"), (("PLUGIN", "1"),)),
    "multiline-error": Case(
        ("demo", "--provider", "h-multiline"), 2, ("first line", "second line"), (("PLUGIN", "1"),)
    ),
}


@dataclass
class Outcome:
    rc: int
    stdout: str
    stderr: str


def _plugin_dir(tmp: Path) -> Path:
    root = tmp / "plugin"
    root.mkdir()
    (root / "hostile_cli_plugin.py").write_text(textwrap.dedent(PLUGIN))
    (root / "hostile_cli_runtime.py").write_text('raise RuntimeError("driver exploded")\n')
    dist = root / "hostile_cli-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hostile-cli\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[sagellm.backends]\nh-runtime = hostile_cli_runtime:create\nh-multiline = hostile_cli_plugin:multiline\n"
    )
    return root


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    tmp = tmp_path_factory.mktemp("cli")
    plugin = _plugin_dir(tmp)
    base = {k: v for k, v in os.environ.items() if k != "SAGELLM_BACKEND"}
    base.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    procs: dict[str, subprocess.Popen[str]] = {}
    for key, case in CASES.items():
        env = dict(base, PYTHONPATH=SRC)
        for k, v in case.env:
            if k == "PLUGIN":
                env["PYTHONPATH"] = f"{SRC}{os.pathsep}{plugin}"
            else:
                env[k] = v
        args = [a.replace("{tmp}", str(tmp)) for a in case.args]
        cmd = [sys.executable, "-m", "sagellm_backend", *args]
        procs[key] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp)
    results: dict[str, Outcome] = {}
    deadline = time.monotonic() + 120
    try:
        for key, proc in procs.items():
            try:
                out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                results[key] = Outcome(-9, out, err + "\n<killed: ran past the bound>")
                continue
            results[key] = Outcome(proc.returncode, out, err)
        yield results
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()


@pytest.mark.parametrize("key", list(CASES))
def test_cli_bad_arguments(key: str, outcomes: dict[str, Outcome]) -> None:
    case, got = CASES[key], outcomes[key]
    if key == "bench-plot-bad-format":
        pytest.importorskip("matplotlib")
    both = got.stdout + got.stderr
    assert "Traceback" not in both, both[-3000:]
    assert got.rc == case.rc, f"exit {got.rc}, wanted {case.rc}:\n{both[-2000:]}"
    text = got.stdout if case.rc == 0 else got.stderr
    for w in case.words:
        assert w in text, (w, text[-2000:])
    if case.rc != 0:
        # one line: also no benchmark progress bar, so bench checked its arguments before running
        lines = [ln for ln in got.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error ["), got.stderr
