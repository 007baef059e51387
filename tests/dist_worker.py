"""A rank of a multi-process test. Run as a plain process (RANK etc. or --init-method) or under torchrun.

Usage: dist_worker.py SCENARIO [--init-method URL --rank R --world-size N] [--timeout S] [--provider cpu|cuda]
                      [--no-check]  (check_consistency=False: the opt-out fast path; the default checks)
Prints one JSON line per rank on success; exits non-zero (with the error) on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from sagellm_backend import (
    CollectiveError,
    CommGroupError,
    CommTimeoutError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    get_provider,
)


def check_all(p, dev: str) -> dict:
    r, ws = p.rank, p.world_size
    out: dict = {"rank": r, "world_size": ws}
    t = torch.arange(4, dtype=torch.float32, device=dev) + r
    assert p.all_reduce(t, "sum") is t
    assert t.tolist() == [float(4 * 0 + i * ws + sum(range(ws))) for i in range(4)], t
    for op, expect in (("max", ws - 1), ("min", 0), ("prod", 0.0 if ws > 1 else 1.0)):
        x = torch.full((3,), float(r), device=dev)
        p.all_reduce(x, op)
        assert x.tolist() == [float(expect)] * 3, (op, x)
    x = torch.full((5,), float(r), device=dev, dtype=torch.float64)
    p.all_reduce(x, "avg")
    assert torch.allclose(x, torch.full_like(x, (ws - 1) / 2)), x
    if not dev.startswith("cuda"):  # NCCL has no bitwise reductions
        bits = torch.tensor([1 << r], dtype=torch.int64, device=dev)
        p.all_reduce(bits, "bor")
        assert bits.item() == (1 << ws) - 1
    try:
        p.all_reduce(torch.arange(3, device=dev), "avg")
        raise AssertionError("avg on ints must fail")
    except InvalidArgumentError:
        pass
    g = p.all_gather(torch.tensor([r, 10 * r], dtype=torch.int32, device=dev))
    assert g.shape == (ws, 2) and g.tolist() == [[i, 10 * i] for i in range(ws)], g
    s = p.all_gather(torch.tensor(float(r), device=dev))
    assert s.tolist() == [float(i) for i in range(ws)]
    big = torch.randn(1 << 16, generator=torch.Generator().manual_seed(7)).to(dev)
    gg = p.all_gather(big)
    assert all(torch.equal(gg[i], big) for i in range(ws))
    rs = p.reduce_scatter(torch.arange(ws * 3, dtype=torch.float32, device=dev), "sum")
    assert rs.tolist() == [float(ws * v) for v in range(r * 3, r * 3 + 3)], rs
    b = torch.full((4,), float(r), device=dev)
    p.broadcast(b, src=ws - 1)
    assert b.tolist() == [float(ws - 1)] * 4
    p.barrier()
    if ws > 1:
        nxt, prev = (r + 1) % ws, (r - 1) % ws
        if r % 2 == 0:
            p.send(torch.tensor([r], device=dev), nxt)
            got = p.recv(torch.empty(1, device=dev, dtype=torch.int64), prev)
        else:
            got = p.recv(torch.empty(1, device=dev, dtype=torch.int64), prev)
            p.send(torch.tensor([r], device=dev), nxt)
        assert got.item() == prev
        evens = p.new_group([i for i in range(ws) if i % 2 == 0])
        if r % 2 == 0:
            e = torch.ones(2, device=dev)
            p.all_reduce(e, "sum", group=evens)
            assert e.tolist() == [float(len(evens.ranks))] * 2
        else:
            try:
                p.all_reduce(torch.ones(1, device=dev), group=evens)
                raise AssertionError("non-member used a group")
            except CommGroupError:
                pass
        try:
            p.send(torch.ones(1, device=dev), r)
            raise AssertionError("send to self must fail")
        except CommGroupError:
            pass
    try:
        p.all_reduce([1.0], "sum")
        raise AssertionError("list must be refused")
    except InvalidArgumentTypeError:
        pass
    p.barrier()
    out["ok"] = True
    return out


def _expect(fn, error: type[Exception], *words: str) -> str:
    """Call ``fn``; it must raise ``error`` whose message holds every word. Returns the message."""
    try:
        fn()
    except error as exc:
        msg = str(exc)
        missing = [w for w in words if w not in msg]
        assert not missing, (missing, msg)
        return msg
    raise AssertionError(f"{fn} did not raise {error.__name__}")


def check_p2p(p, dev: str) -> dict:
    """Mismatched send/recv pairs: the receiver raises CollectiveError naming both sides, the
    sender's send returns, and the channel still carries the next message correctly."""
    r = p.rank
    out: dict = {"rank": r, "errors": []}
    mismatches = [  # (sent, receive buffer)
        (torch.arange(8, dtype=torch.float32), torch.empty(4, dtype=torch.float32)),  # smaller: SIGABRT on gloo
        (torch.arange(4, dtype=torch.float32), torch.empty(8, dtype=torch.float32)),  # larger: silently short
        (torch.arange(4, dtype=torch.float32), torch.empty(4, dtype=torch.int32)),  # same bytes, other dtype
        (torch.arange(6, dtype=torch.float32), torch.empty(2, 3, dtype=torch.float32)),  # same numel, other shape
        # payloads larger than the header frame: drained into scratch memory of the sender's size
        (torch.arange(4096, dtype=torch.float32), torch.empty(1024, dtype=torch.float32)),
        (torch.ones(3000, dtype=torch.bfloat16), torch.empty(3000, dtype=torch.float16)),
    ]
    for k, (sent, buf) in enumerate(mismatches):
        if r == 0:
            p.send(sent.to(dev), 1, tag=k)
        else:
            msg = _expect(lambda b=buf, k=k: p.recv(b.to(dev), 0, tag=k), CollectiveError, "recv from rank 0")
            out["errors"].append(msg)
    for good in (
        torch.arange(5, dtype=torch.float64, device=dev) * 3,
        torch.tensor(7, dtype=torch.int16, device=dev),  # 0-d
        torch.randn(3, 700, generator=torch.Generator().manual_seed(1)).to(dev),  # 8400 bytes: separate payload
        torch.zeros(0, 4, device=dev),  # empty
    ):
        if r == 0:
            p.send(good, 1, tag=7)
        else:
            buf = torch.full_like(good, -1)
            got = p.recv(buf, 0, tag=7)
            assert got is buf and torch.equal(got, good), (got, good)
    _expect(lambda: p.send(torch.ones(1, device=dev), 1 - r, tag="x"), InvalidArgumentTypeError, "tag")
    _expect(lambda: p.send(torch.ones(1, device=dev), 1 - r, tag=-1), InvalidArgumentError, "tag")
    _expect(lambda: p.recv(torch.ones(1, device=dev), 1 - r, tag=True), InvalidArgumentTypeError, "tag")
    # avg on a leaf that requires grad: sums, divides and returns; nothing half-done
    leaf = torch.full((3,), float(r), device=dev, requires_grad=True)
    p.all_reduce(leaf, "avg")
    assert leaf.detach().tolist() == [0.5] * 3, leaf
    p.barrier()
    out["ok"] = True
    return out


def check_bad_group_args(p, dev: str) -> dict:
    """Bad new_group arguments are typed errors on every rank, before any collective runs."""
    ws = p.world_size
    cases = [
        (lambda: p.new_group(1), InvalidArgumentTypeError, "sequence"),
        (lambda: p.new_group("01"), InvalidArgumentTypeError, "sequence"),
        (lambda: p.new_group([0, 0.5]), InvalidArgumentTypeError, "0.5"),
        (lambda: p.new_group([True]), InvalidArgumentTypeError, "True"),
        (lambda: p.new_group([0, 0]), InvalidArgumentError, "twice"),
        (lambda: p.new_group([]), CommGroupError, "at least one"),
        (lambda: p.new_group([0, ws]), CommGroupError, str(ws)),
        (lambda: p.new_group([-1]), CommGroupError, "-1"),
        (lambda: p.new_group([0], timeout=float("nan")), InvalidArgumentError, "nan"),
        (lambda: p.new_group([0], timeout=float("inf")), InvalidArgumentError, "inf"),
        (lambda: p.new_group([0], timeout=0), InvalidArgumentError, "timeout"),
        (lambda: p.new_group([0], timeout="5"), InvalidArgumentTypeError, "timeout"),
        (lambda: p.new_group([0], timeout=True), InvalidArgumentTypeError, "timeout"),
    ]
    for fn, error, word in cases:
        _expect(fn, error, word)
    g = p.new_group(list(range(ws)), timeout=30)  # still usable: every rank calls it once
    t = torch.ones(2, device=dev)
    p.all_reduce(t, group=g)
    assert t.tolist() == [float(ws)] * 2
    return {"rank": p.rank, "ok": True}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario")
    ap.add_argument("--init-method")
    ap.add_argument("--rank", type=int)
    ap.add_argument("--world-size", type=int)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--provider", default="cpu")
    ap.add_argument("--out", default=os.environ.get("DIST_WORKER_OUT"), help="write rank<r>.json here")
    ap.add_argument("--no-check", action="store_true", help="init_process_group(check_consistency=False)")
    a = ap.parse_args()

    def emit(result: dict) -> None:
        line = json.dumps(result)
        if a.out:
            with open(os.path.join(a.out, f"rank{result['rank']}.json"), "w") as fh:
                fh.write(line)
        print(line, flush=True)

    if a.provider == "cuda":
        local = int(os.environ.get("LOCAL_RANK", a.rank or 0))
        p = get_provider("cuda", None, device_id=local)
        dev = p.device
    else:
        p = get_provider("cpu")
        dev = "cpu"
    p.init_process_group(
        init_method=a.init_method,
        rank=a.rank,
        world_size=a.world_size,
        timeout=a.timeout,
        check_consistency=False if a.no_check else None,  # None: the default, which checks
    )
    r = p.rank
    if a.scenario == "all":
        result = check_all(p, dev)
        result["check_consistency"] = p.communicator.check_consistency
    elif a.scenario == "p2p":
        result = check_p2p(p, dev)
    elif a.scenario == "group_args":
        result = check_bad_group_args(p, dev)
    elif a.scenario == "absent":
        if r == 1:
            time.sleep(a.timeout + 6)
            emit({"rank": r, "slept": True})
            os._exit(0)
        t0 = time.monotonic()
        try:
            p.all_reduce(torch.ones(4, device=dev))
            raise AssertionError("all_reduce with an absent peer returned")
        except CommTimeoutError as exc:
            result = {"rank": r, "elapsed": time.monotonic() - t0, "code": exc.code.value, "msg": str(exc)[:200]}
        emit(result)
        os._exit(0)  # the group is broken; do not wait in destroy
    elif a.scenario == "exits":
        if r == 1:
            os._exit(0)
        time.sleep(1.0)
        t0 = time.monotonic()
        try:
            p.all_reduce(torch.ones(4, device=dev))
            raise AssertionError("all_reduce with an exited peer returned")
        except CommTimeoutError as exc:
            result = {"rank": r, "elapsed": time.monotonic() - t0, "code": exc.code.value, "msg": str(exc)[:200]}
        emit(result)
        os._exit(0)
    elif a.scenario == "mismatch":
        errors = []
        for make in (
            lambda: torch.ones(4 + r, device=dev),
            lambda: torch.ones(4, device=dev, dtype=torch.float32 if r == 0 else torch.int32),
        ):
            try:
                p.all_reduce(make(), "sum")
                errors.append(None)
            except CollectiveError as exc:
                errors.append(str(exc))
        try:
            p.all_gather(torch.ones(2 + r, device=dev))
            errors.append(None)
        except CollectiveError as exc:
            errors.append(str(exc))
        ok = torch.ones(2, device=dev)
        p.all_reduce(ok)  # the group still works afterwards
        result = {"rank": r, "errors": errors, "after": ok.tolist()}
    else:
        raise SystemExit(f"unknown scenario {a.scenario}")
    emit(result)
    p.barrier()  # leave together: a rank tearing gloo down while its peer still uses a group can abort the peer
    p.destroy_process_group()
    # The group's threads must be gone now, not at interpreter exit: a gloo worker that releases a tensor while
    # the interpreter finalizes cannot take the GIL and aborts the process ("terminate called without an active
    # exception"). The provider is still alive here; nothing it holds may keep the group alive.
    left = native_threads(("gloo", "tcpstore")) if a.provider == "cpu" else []  # NCCL's teardown: not checked here
    if left:
        raise SystemExit(f"rank {r}: threads of the destroyed process group still run: {left}")
    return 0


def native_threads(words: tuple[str, ...]) -> list[str]:
    """Names of this process's native threads that contain one of ``words`` (Linux; [] elsewhere)."""
    names = []
    for task in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else []:
        try:
            with open(f"/proc/self/task/{task}/comm") as fh:
                names.append(fh.read().strip())
        except OSError:  # the thread ended between listdir and open
            continue
    return sorted(n for n in names if any(w in n for w in words))


if __name__ == "__main__":
    sys.exit(main())
