"""Collectives over torch.distributed + gloo, in real processes: explicit init, torchrun, two nodes,
timeouts, exited peers, mismatched arguments. Every test is bounded in time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not (dist.is_available() and dist.is_gloo_available()):  # pragma: no cover
    pytest.skip("needs torch.distributed with gloo; this torch has none", allow_module_level=True)

import sagellm_backend  # noqa: E402

WORKER = str(Path(__file__).with_name("dist_worker.py"))
SRC = str(Path(sagellm_backend.__file__).resolve().parents[1])
ENV = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
pytestmark = pytest.mark.slow


def _results(procs: list[subprocess.Popen[str]], timeout: float, out: Path) -> list[dict]:
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            stdout, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError("a rank hung past the test's time bound") from None
        assert p.returncode == 0, f"rank failed (exit {p.returncode}):\n{stdout}\n{err[-3000:]}"
    return [json.loads(f.read_text()) for f in sorted(out.glob("rank*.json"))]


def _spawn(
    scenario: str, world: int, port: int, out: Path, *extra: str, env_style: bool = False
) -> list[subprocess.Popen[str]]:
    procs = []
    for r in range(world):
        env = dict(ENV, DIST_WORKER_OUT=str(out))
        args = [sys.executable, WORKER, scenario, *extra]
        if env_style:
            env.update(RANK=str(r), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        else:
            args += ["--init-method", f"tcp://127.0.0.1:{port}", "--rank", str(r), "--world-size", str(world)]
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    return procs


@pytest.mark.parametrize("world", [2, 4])
def test_every_collective_explicit_init(world: int, free_port: int, tmp_path: Path) -> None:
    rows = _results(_spawn("all", world, free_port, tmp_path), timeout=180, out=tmp_path)
    assert sorted(r["rank"] for r in rows) == list(range(world)) and all(r["ok"] for r in rows)
    assert all(r["check_consistency"] is True for r in rows)  # the safe default


def test_env_init_like_torchrun_without_the_check(free_port: int, tmp_path: Path) -> None:
    """The opt-out fast path (check_consistency=False) computes the same results."""
    rows = _results(_spawn("all", 2, free_port, tmp_path, "--no-check", env_style=True), timeout=180, out=tmp_path)
    assert len(rows) == 2 and all(r["ok"] and r["check_consistency"] is False for r in rows)


def test_launched_by_torchrun(free_port: int, tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        "--nnodes=1",
        f"--master-port={free_port}",
        "--master-addr=127.0.0.1",
        WORKER,
        "all",
        "--out",
        str(tmp_path),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    rows = [json.loads(f.read_text()) for f in sorted(tmp_path.glob("rank*.json"))]
    assert sorted(r["rank"] for r in rows) == [0, 1] and all(r["ok"] for r in rows)


def test_two_nodes_through_torchrun(free_port: int, tmp_path: Path) -> None:
    """Two torchrun invocations as two nodes (2 processes each) meeting at a rendezvous on 127.0.0.1."""
    procs = []
    for node in range(2):
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes=2",
            f"--node-rank={node}",
            "--nproc-per-node=2",
            "--rdzv-backend=static",
            "--master-addr=127.0.0.1",
            f"--master-port={free_port}",
            WORKER,
            "all",
            "--out",
            str(tmp_path),
        ]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV))
    rows = _results(procs, timeout=300, out=tmp_path)
    assert sorted(r["rank"] for r in rows) == [0, 1, 2, 3] and all(r["world_size"] == 4 for r in rows)


def test_absent_rank_raises_comm_timeout(free_port: int, tmp_path: Path) -> None:
    timeout = 3.0
    rows = _results(_spawn("absent", 2, free_port, tmp_path, "--timeout", str(timeout)), timeout=90, out=tmp_path)
    r0 = next(r for r in rows if r["rank"] == 0)
    assert r0["code"] == "comm_timeout" and "timed out" in r0["msg"]
    assert timeout - 0.5 <= r0["elapsed"] < timeout + 10, r0


def test_exited_rank_raises_comm_timeout(free_port: int, tmp_path: Path) -> None:
    rows = _results(_spawn("exits", 2, free_port, tmp_path, "--timeout", "20"), timeout=90, out=tmp_path)
    r0 = next(r for r in rows if r["rank"] == 0)
    assert r0["code"] == "comm_timeout" and "left" in r0["msg"] and r0["elapsed"] < 20, r0


def test_mismatched_shapes_and_dtypes_are_clear_errors(free_port: int, tmp_path: Path) -> None:
    """Under default settings: without the consistency check, gloo aborts a rank on mismatched sizes."""
    rows = _results(_spawn("mismatch", 2, free_port, tmp_path, "--timeout", "30"), timeout=120, out=tmp_path)
    assert len(rows) == 2
    for r in rows:
        assert all(e is not None and "mismatched arguments" in e for e in r["errors"]), r
        assert "rank 0: shape (4,)" in r["errors"][0] and "rank 1: shape (5,)" in r["errors"][0]
        # dtype names, never hash codes, for both ranks' dtypes (each rank saw only its own)
        dtypes = r["errors"][1]
        assert "rank 0: shape (4,) dtype torch.float32" in dtypes and "rank 1: shape (4,) dtype torch.int32" in dtypes
        assert "#" not in dtypes and "op sum" in dtypes, dtypes
        assert r["after"] == [2.0, 2.0]


def test_send_recv_mismatch_is_an_error_not_an_abort(free_port: int, tmp_path: Path) -> None:
    """recv into a smaller buffer aborted the receiving process (SIGABRT in gloo) before."""
    rows = _results(_spawn("p2p", 2, free_port, tmp_path, "--timeout", "30"), timeout=120, out=tmp_path)
    r1 = next(r for r in rows if r["rank"] == 1)
    assert all(r["ok"] for r in rows) and len(r1["errors"]) == 6
    smaller, larger, dtype, shape, big_smaller, big_dtype = r1["errors"]
    assert "(8,) torch.float32" in smaller and "(4,) torch.float32" in smaller
    assert "(4,) torch.float32" in larger and "(8,) torch.float32" in larger
    assert "torch.float32" in dtype and "torch.int32" in dtype
    assert "(6,)" in shape and "(2, 3)" in shape
    assert "(4096,) torch.float32" in big_smaller and "(1024,) torch.float32" in big_smaller
    assert "(3000,) torch.bfloat16" in big_dtype and "(3000,) torch.float16" in big_dtype


def test_bad_group_arguments_are_typed_errors(free_port: int, tmp_path: Path) -> None:
    rows = _results(_spawn("group_args", 2, free_port, tmp_path, "--timeout", "30"), timeout=120, out=tmp_path)
    assert len(rows) == 2 and all(r["ok"] for r in rows)


def test_world_of_one_without_group(monkeypatch: pytest.MonkeyPatch) -> None:
    from sagellm_backend import CommGroupError, CPUBackendProvider, InvalidDeviceError

    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    p = CPUBackendProvider()
    t = torch.arange(3.0)
    assert p.world_size == 1 and p.all_reduce(t, "avg") is t and t.tolist() == [0.0, 1.0, 2.0]
    assert p.all_gather(t).shape == (1, 3) and p.reduce_scatter(t).tolist() == t.tolist()
    assert p.broadcast(t, 0) is t
    p.barrier()
    with pytest.raises(CommGroupError, match="no process group"):
        p.send(t, 0)
    with pytest.raises(CommGroupError, match="not given and not in the environment"):
        p.init_process_group()
    with pytest.raises(InvalidDeviceError, match="meta"):
        p.all_reduce(torch.ones(2, device="meta"))


def _gloo_threads() -> list[str]:
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            names.append(Path(f"/proc/self/task/{task}/comm").read_text().strip())
        except OSError:  # the thread ended meanwhile
            continue
    return sorted(n for n in names if "gloo" in n or "tcpstore" in n)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread names from /proc (Linux)")
def test_destroy_process_group_ends_the_gloo_threads(free_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider outlives the group: nothing it caches may keep the group (and its threads) alive, or those
    threads release tensors while the interpreter exits and abort it."""
    from sagellm_backend import CPUBackendProvider

    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    p = CPUBackendProvider()
    p.init_process_group(init_method=f"tcp://127.0.0.1:{free_port}", rank=0, world_size=1, timeout=30)
    t = torch.ones(3)
    p.all_reduce(t, "avg")
    p.all_gather(t)
    solo = p.new_group([0])
    p.all_reduce(t, group=solo)
    del solo
    assert _gloo_threads(), "a gloo group runs threads: this test would prove nothing"
    p.destroy_process_group()
    assert _gloo_threads() == []
    assert p.world_size == 1 and p.all_reduce(t) is t  # a world of one again
