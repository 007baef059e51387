"""Shared plumbing of the interop checks: result table, failure call sites, reference decoding.

Each check is a plain function run through :class:`Suite`, which records PASS / FAIL / SKIP with the
time it took. A failure is described by its exception chain and by two places in the traceback: the
innermost frame inside the engine (``sagellm_core/...``, where the engine called into the backend) and
the innermost frame overall (where it was raised).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENGINE_PACKAGES = ("sagellm_core", "sagellm_protocol", "sagellm_kv_cache", "sagellm_comm", "sagellm")
PROMPTS = ("the quick brown fox", "hello world this is a test")


@dataclass
class Result:
    """Outcome of one check."""

    name: str
    status: str  # PASS, FAIL or SKIP
    detail: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _frame_label(frame: traceback.FrameSummary) -> str:
    path = frame.filename.replace("\\", "/")
    if "/src/sagellm_backend/" in path:
        path = "src/sagellm_backend/" + path.split("/src/sagellm_backend/", 1)[1]
    elif "/site-packages/" in path:
        path = path.split("/site-packages/", 1)[1]
    return f"{path}:{frame.lineno} in {frame.name}"


def _is_engine_frame(frame: traceback.FrameSummary) -> bool:
    name = frame.filename.replace("\\", "/")
    return any(name.startswith(f"{pkg}/") or f"/{pkg}/" in name for pkg in ENGINE_PACKAGES)


def describe_exception(exc: BaseException) -> str:
    """Describe an exception chain with its engine call site.

    Args:
        exc: The exception caught by a check.

    Returns:
        One or more lines: ``Type: message`` for each exception of the chain (outermost first), then
        ``engine call site: ...`` and ``raised at: ...`` for the innermost exception that has a traceback.
    """
    chain: list[BaseException] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        chain.append(cur)
        seen.add(id(cur))
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    lines = [f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}" for e in chain]
    # The call site comes from the deepest exception; a wrapper raised in the engine hides the origin otherwise.
    for err in reversed(chain):
        frames = traceback.extract_tb(err.__traceback__)
        if not frames:
            continue
        engine_frames = [f for f in frames if _is_engine_frame(f)]
        if engine_frames:
            lines.append(f"engine call site: {_frame_label(engine_frames[-1])}")
        lines.append(f"raised at: {_frame_label(frames[-1])}")
        break
    return "\n".join(lines)


class Suite:
    """Runs named checks and prints a PASS/FAIL table."""

    def __init__(self, title: str) -> None:
        """Create an empty suite.

        Args:
            title: Heading printed above the table.
        """
        self.title = title
        self.results: list[Result] = []

    def run(self, name: str, fn: Callable[[], Any], *, needs: list[str] | None = None) -> bool:
        """Run one check and record its outcome.

        Args:
            name: Unique check name (shown in the table).
            fn: The check; it raises on failure and may return a note string.
            needs: Names of checks that must have passed; otherwise this one is skipped.

        Returns:
            True if the check passed.
        """
        for dep in needs or []:
            if not any(r.name == dep and r.status == "PASS" for r in self.results):
                self.results.append(Result(name, "SKIP", f"blocked: {dep} did not pass"))
                print(f"[SKIP] {name}: blocked by {dep}", flush=True)
                return False
        start = time.perf_counter()
        try:
            note = fn()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit from engine code must not end the suite
            detail = describe_exception(exc)
            self.results.append(Result(name, "FAIL", detail, time.perf_counter() - start))
            print(f"[FAIL] {name}\n    " + detail.replace("\n", "\n    "), flush=True)
            if os.environ.get("INTEROP_TRACEBACK"):
                traceback.print_exception(exc)
            return False
        result = Result(name, "PASS", str(note) if note else "", time.perf_counter() - start)
        self.results.append(result)
        print(f"[PASS] {name} ({result.seconds:.1f}s){': ' + result.detail if result.detail else ''}", flush=True)
        return True

    def skip(self, name: str, why: str) -> None:
        """Record a check that does not apply here.

        Args:
            name: Check name.
            why: Reason shown in the table.
        """
        self.results.append(Result(name, "SKIP", why))

    def report(self) -> int:
        """Print the summary table.

        Returns:
            0 if no check failed, else 1.
        """
        failed = [r for r in self.results if r.status == "FAIL"]
        blocked = [r for r in self.results if r.status == "SKIP" and r.detail.startswith("blocked")]
        width = max(len(r.name) for r in self.results) if self.results else 10
        print(f"\n== {self.title} ==")
        for r in self.results:
            first = r.detail.splitlines()[0] if r.detail else ""
            print(f"{r.status:<5} {r.name:<{width}} {r.seconds:6.1f}s  {first[:110]}")
        passed = sum(r.status == "PASS" for r in self.results)
        skipped = sum(r.status == "SKIP" for r in self.results)
        print(f"{passed} passed, {len(failed)} failed, {skipped} skipped")
        if failed:
            print("\nFailures (exception chain, engine call site, origin):")
            for r in failed:
                print(f"- {r.name}\n    " + r.detail.replace("\n", "\n    "))
        return 1 if failed or blocked else 0


def check_backend_location(checkout: Path) -> str:
    """Fail unless ``sagellm_backend`` is imported from this checkout.

    Args:
        checkout: Root of the project checkout.

    Returns:
        The module path, as a note.

    Raises:
        AssertionError: If the module lives elsewhere (for example a released wheel).
    """
    import sagellm_backend

    where = Path(sagellm_backend.__file__).resolve()
    src = (checkout / "src" / "sagellm_backend").resolve()
    if not where.is_relative_to(src):
        raise AssertionError(f"sagellm_backend imported from {where}, not from this checkout ({src})")
    return str(where)


def hf_greedy(model_dir: Path, prompt: str, max_new_tokens: int) -> tuple[list[int], list[int]]:
    """Greedy-decode with plain transformers: the reference the engines must reproduce.

    Args:
        model_dir: Model folder written by make_models.py.
        prompt: Prompt text.
        max_new_tokens: Tokens to generate.

    Returns:
        ``(prompt_ids, new_ids)``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    enc = tok(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens)
    prompt_ids = enc["input_ids"][0].tolist()
    return prompt_ids, out[0, len(prompt_ids) :].tolist()


def expect_equal(what: str, got: Any, want: Any) -> None:
    """Raise AssertionError with both values when they differ.

    Args:
        what: Name of the compared quantity.
        got: Observed value.
        want: Expected value.

    Raises:
        AssertionError: If ``got != want``.
    """
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, expected {want!r}")


def quiet_logs() -> None:
    """Keep engine INFO logs and progress bars out of the report."""
    import logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The engine warns on every short request ("No complete blocks to cache"); failures surface as exceptions.
    level = logging.DEBUG if os.environ.get("INTEROP_VERBOSE") else logging.ERROR
    logging.basicConfig(level=level, stream=sys.stderr)
    for name in ("sagellm_core", "sagellm_kv_cache", "sagellm_comm", "sagellm_backend", "transformers"):
        logging.getLogger(name).setLevel(level)
