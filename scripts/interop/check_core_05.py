"""Interop check: this checkout as the backend of isagellm-core 0.5.4.26 and the isagellm 0.5.4.70 CLI.

For backend_type "cpu" and "auto" and for a tiny GPT-2 and Llama, ``LLMEngine`` must start, generate
and stream exactly the tokens that plain transformers greedy decoding produces; ``get_info()`` must work;
``quantization="fp8"`` must run and produce tokens; the umbrella's ``detect_backend()`` must pick "cpu"
from a freshly written hardware profile. Before that, ``surface_05`` probes every backend entry point
the engine uses, so that one run lists every gap.

Usage: ``python scripts/interop/check_core_05.py --models DIR --checkout ROOT``
Exit status 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import _harness as h

EXPECTED_VERSIONS = {"isagellm-core": "0.5.4.26", "isagellm-protocol": "0.5.4.16", "isagellm": "0.5.4.70"}
MAX_TOKENS = 12
# Models on which core 0.5.4.26 itself departs from transformers (its SageAttention replacement changes GPT-2's
# tokens with any backend, the released one included). Every other model must match transformers exactly.
ENGINE_DIVERGENT_MODELS = frozenset({"gpt2"})


def check_versions() -> str:
    """The engine packages are exactly the versions this suite targets."""
    found = {name: metadata.version(name) for name in EXPECTED_VERSIONS}
    h.expect_equal("engine package versions", found, EXPECTED_VERSIONS)
    return ", ".join(f"{k} {v}" for k, v in found.items())


async def _engine_session(model_dir: Path, backend_type: str, quantization: str | None) -> dict[str, Any]:
    from sagellm_core import LLMEngine, LLMEngineConfig

    config = LLMEngineConfig(
        model_path=str(model_dir),
        backend_type=backend_type,
        max_new_tokens=MAX_TOKENS,
        quantization=quantization,
    )
    engine = LLMEngine(config)
    out: dict[str, Any] = {"engine": engine}
    await engine.start()
    try:
        out["generate"] = []
        for prompt in h.PROMPTS:
            resp = await engine.generate(prompt, max_tokens=MAX_TOKENS)
            if resp.error is not None:
                raise AssertionError(f"generate({prompt!r}) returned error {resp.error!r}")
            out["generate"].append(list(resp.output_tokens))
        if quantization is None:
            events = [ev async for ev in engine.stream(h.PROMPTS[0], max_tokens=MAX_TOKENS)]
            out["stream"] = events
            out["info"] = engine.get_info()
            out["capabilities"] = engine.capabilities()
            out["backend"] = engine.backend
    finally:
        await engine.stop()
    return out


class _TorchKernelProvider:
    """Delegates to a real provider but hands the engine plain torch kernels (the engine-side reference)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def get_kernel(self, name: str) -> Any:
        import torch
        import torch.nn.functional as F

        table = {
            "linear": lambda x, w, b=None: F.linear(x, w, b),
            "embedding": lambda ids, w: F.embedding(ids, w),
            "rmsnorm": lambda x, w, eps: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w,
            "silu": F.silu,
        }
        if name not in table:
            raise KeyError(name)
        return table[name]

    def __getattr__(self, name: str) -> Any:
        if name == "register_kernels":
            raise AttributeError(name)
        return getattr(self._inner, name)


@contextlib.contextmanager
def torch_kernels() -> Iterator[None]:
    """Make ``sagellm_backend.get_provider`` (called by ``LLMEngine._init_backend``) return torch-kernel providers."""
    import sagellm_backend

    real = sagellm_backend.get_provider
    sagellm_backend.get_provider = lambda *a, **k: _TorchKernelProvider(real(*a, **k))
    try:
        yield
    finally:
        sagellm_backend.get_provider = real


class EngineChecks:
    """LLMEngine runs compared with transformers greedy decoding."""

    def __init__(self, suite: h.Suite, models: Path) -> None:
        """Prepare the checks.

        Args:
            suite: Where results go.
            models: Folder with gpt2/ and llama/ from make_models.py.
        """
        self.suite = suite
        self.models = models
        self.reference: dict[str, list[list[int]]] = {}
        self.expected: dict[str, list[list[int]]] = {}
        self.engine_reference: dict[str, list[list[int]]] = {}

    def _ref(self, model: str) -> list[list[int]]:
        if model not in self.reference:
            self.reference[model] = [h.hf_greedy(self.models / model, p, MAX_TOKENS)[1] for p in h.PROMPTS]
        return self.reference[model]

    def _judge(self, model: str, got: list[list[int]]) -> str:
        """Compare with transformers; on a model the engine itself gets wrong, with the engine's torch-kernel run.

        Core 0.5.4.26 replaces each model's attention by its own SageAttention; on the models of
        ``ENGINE_DIVERGENT_MODELS`` that alone changes the tokens (independently of any backend), so there the
        backend is judged against the same engine run with plain torch kernels instead.
        """
        hf = self._ref(model)
        if got == hf or model not in ENGINE_DIVERGENT_MODELS:
            h.expect_equal("greedy tokens vs transformers", got, hf)
            self.expected[model] = hf
            return f"{len(hf[0])} tokens x {len(hf)} prompts == transformers greedy"
        if model not in self.engine_reference:
            with torch_kernels():
                session = asyncio.run(_engine_session(self.models / model, "cpu", None))
            self.engine_reference[model] = session["generate"]
        engine_ref = self.engine_reference[model]
        if engine_ref == hf:
            h.expect_equal("greedy tokens (engine with torch kernels matches transformers)", got, hf)
        h.expect_equal("greedy tokens vs the same engine with plain torch kernels", got, engine_ref)
        self.expected[model] = engine_ref
        return (
            f"== engine run with plain torch kernels; KNOWN ENGINE DIVERGENCE: core's own attention path "
            f"gives {engine_ref[0][:4]}... where transformers gives {hf[0][:4]}..."
        )

    def run_plain(self, backend_type: str, model: str) -> None:
        """start/generate/stream/get_info for one backend type and model.

        Args:
            backend_type: LLMEngineConfig.backend_type ("cpu" or "auto").
            model: Model folder name.
        """
        tag = f"engine[{backend_type}/{model}]"
        session: dict[str, Any] = {}

        def start_and_generate() -> str:
            session.update(asyncio.run(_engine_session(self.models / model, backend_type, None)))
            return self._judge(model, session["generate"])

        if not self.suite.run(f"{tag} start+generate", start_and_generate):
            self.suite.skip(f"{tag} stream", f"blocked: {tag} start+generate did not pass")
            self.suite.skip(f"{tag} get_info", f"blocked: {tag} start+generate did not pass")
            return

        def stream() -> str:
            events = session["stream"]
            kinds = [ev.event for ev in events]
            if not kinds or kinds[0] != "start" or kinds[-1] != "end":
                raise AssertionError(f"event sequence {kinds}")
            deltas = [t for ev in events if ev.event == "delta" for t in ev.content_tokens]
            h.expect_equal("streamed delta tokens", deltas, self.expected[model][0])
            h.expect_equal("end event output_tokens", list(events[-1].output_tokens), self.expected[model][0])
            return f"{len(deltas)} delta tokens == generate() tokens"

        def info() -> str:
            data = session["info"]
            h.expect_equal("get_info()['device_type']", str(data.get("device_type")), "cpu")
            cap = session["capabilities"]
            h.expect_equal("capabilities().device_type", str(cap.device_type), "cpu")
            backend = session["backend"]
            if not type(backend).__module__.startswith("sagellm_backend."):
                raise AssertionError(f"engine backend is {type(backend)!r}, not a sagellm_backend provider")
            json.dumps(data, default=str)
            return f"backend={type(backend).__name__}, device_name={data.get('device_name')!r}"

        self.suite.run(f"{tag} stream", stream)
        self.suite.run(f"{tag} get_info", info)

    def run_fp8(self, model: str) -> None:
        """``quantization="fp8"`` on the cpu backend.

        Args:
            model: Model folder name.
        """

        def fp8() -> str:
            session = asyncio.run(_engine_session(self.models / model, "cpu", "fp8"))
            tokens = session["generate"]
            if not all(tokens):
                raise AssertionError(f"fp8 engine produced no tokens: {tokens}")
            if not session["engine"].get_info().get("quantized"):
                raise AssertionError("get_info()['quantized'] is false after quantization='fp8'")
            ref = self._ref(model)
            same = sum(a == b for got, want in zip(tokens, ref) for a, b in zip(got, want))
            return f"{sum(map(len, tokens))} tokens, {same}/{sum(map(len, ref))} equal to fp32 greedy"

        self.suite.run(f"engine[cpu/{model}] fp8", fp8)


DETECT_SNIPPET = """
import json, sys
sys.path.insert(0, sys.argv[1])
import _harness
try:
    from sagellm.cli.utils.backend import detect_backend

    picked = detect_backend()
    from sagellm_backend.hardware import ProfileCache
    from sagellm_backend.hardware.inspectors import get_inspector, list_supported_hardware
    from sagellm_backend.hardware.profile import HardwareProfile

    cache = ProfileCache()
    profiles = cache.load()
    raw = cache.load_raw()
    cpu = get_inspector("cpu").get_profile(include_functional=False)
    again = HardwareProfile.from_dict(cpu.to_dict())
    out = {
        "picked": picked,
        "usable": sorted(k for k, p in profiles.items() if p.is_usable()),
        "listed": list(list_supported_hardware()),
        "path": str(cache.cache_path),
        "raw_cpu_max_level": raw.get("cpu", {}).get("max_level"),
        "cpu_level": cpu.max_level.value,
        "cpu_devices": cpu.device_count,
        "roundtrip": again.to_dict() == cpu.to_dict(),
    }
    print("INTEROP-JSON " + json.dumps(out))
except BaseException as exc:
    print("INTEROP-ERROR " + json.dumps(_harness.describe_exception(exc)))
    sys.exit(1)
"""


def umbrella_detect_backend() -> str:
    """``sagellm.cli.utils.backend.detect_backend()`` with an empty profile cache (fresh $HOME), and spec section 6."""
    here = str(Path(__file__).resolve().parent)
    with tempfile.TemporaryDirectory(prefix="interop-home-") as home:
        env = {**os.environ, "HOME": home}
        proc = subprocess.run(
            [sys.executable, "-c", DETECT_SNIPPET, here],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        found = {
            ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in proc.stdout.splitlines() if ln.startswith("INTEROP-")
        }
        if "INTEROP-ERROR" in found:
            raise AssertionError(json.loads(found["INTEROP-ERROR"]).replace("\n", " | "))
        if proc.returncode != 0 or "INTEROP-JSON" not in found:
            tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-3:]
            raise AssertionError(f"detect_backend() subprocess failed (rc={proc.returncode}): " + " | ".join(tail))
        data = json.loads(found["INTEROP-JSON"])
        h.expect_equal("detect_backend()", data["picked"], "cpu")
        h.expect_equal("usable profiles", data["usable"], ["cpu"])
        if "cpu" not in data["listed"]:
            raise AssertionError(f"list_supported_hardware() lacks 'cpu': {data['listed']}")
        h.expect_equal("load_raw()['cpu']['max_level']", data["raw_cpu_max_level"], data["cpu_level"])
        if data["cpu_level"] not in ("framework", "functional") or data["cpu_devices"] < 1:
            raise AssertionError(f"cpu profile level {data['cpu_level']!r} with {data['cpu_devices']} devices")
        if not data["roundtrip"]:
            raise AssertionError("HardwareProfile.from_dict(p.to_dict()).to_dict() != p.to_dict()")
        profile_file = Path(home) / ".sagellm" / "hardware_profile.json"
        if not profile_file.is_file():
            raise AssertionError(f"profile cache not written at {profile_file} (reported {data['path']})")
        h.expect_equal("profile file version", json.loads(profile_file.read_text()).get("version"), "1.0")
    return f"cpu from a freshly written profile cache; inspectors {data['listed']}"


HYGON_SNIPPET = """
import json, sys
sys.path.insert(0, sys.argv[1])
import _harness
try:
    from sagellm.cli.utils.backend import default_device_for_backend, detect_backend, resolve_backend_and_engine
    from sagellm_backend.hardware import ProfileCache, get_inspector
    from sagellm_backend.hardware.profile import DetectionLevel, LayerResult, HardwareProfile
    from sagellm_backend.registry import resolve_provider_name

    # What `sagellm profile --refresh` stores on a Hygon DCU machine with a DTK build of torch: the cpu profile of
    # this machine, and a usable profile under this package's name for the ROCm/DTK family, "rocm".
    ok = LayerResult(True, "stand-in: 1 Hygon DCU (hydcu 6.3.13, torch 2.1.0+das.opt1.dtk24042)")
    dcu = HardwareProfile("rocm", DetectionLevel.FRAMEWORK, ok, ok, ok, device_count=1, device_names=["Z100"])
    cache = ProfileCache()
    cache.update("cpu", get_inspector("cpu").get_profile(include_functional=False))
    cache.update("rocm", dcu)
    picked = detect_backend()  # the umbrella's own lookup: ascend, kunlun, haiguang, muxi, cuda, cpu
    out = {
        "picked": picked,
        "resolved": list(resolve_backend_and_engine(picked)),
        "device": default_device_for_backend(picked),
        "provider": resolve_provider_name(picked),
        "stored": sorted(cache.load_raw()),
    }
    print("INTEROP-JSON " + json.dumps(out))
except BaseException as exc:
    print("INTEROP-ERROR " + json.dumps(_harness.describe_exception(exc)))
    sys.exit(1)
"""


def _run_snippet(snippet: str) -> dict[str, Any]:
    """Run ``snippet`` in a fresh interpreter with an empty ``$HOME``; returns its INTEROP-JSON object."""
    here = str(Path(__file__).resolve().parent)
    with tempfile.TemporaryDirectory(prefix="interop-home-") as home:
        proc = subprocess.run(
            [sys.executable, "-c", snippet, here],
            env={**os.environ, "HOME": home},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    found = {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in proc.stdout.splitlines() if ln.startswith("INTEROP-")}
    if "INTEROP-ERROR" in found:
        raise AssertionError(json.loads(found["INTEROP-ERROR"]).replace("\n", " | "))
    if proc.returncode != 0 or "INTEROP-JSON" not in found:
        tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-3:]
        raise AssertionError(f"snippet subprocess failed (rc={proc.returncode}): " + " | ".join(tail))
    data: dict[str, Any] = json.loads(found["INTEROP-JSON"])
    return data


def umbrella_finds_hygon_dcu() -> str:
    """Stand-in Hygon DCU: the umbrella's real ``detect_backend()`` picks ``haiguang`` from the ``rocm`` profile this
    package stores, and the name it hands the engine resolves to this package's ``rocm`` provider."""
    data = _run_snippet(HYGON_SNIPPET)
    h.expect_equal("detect_backend()", data["picked"], "haiguang")
    h.expect_equal("resolve_backend_and_engine()", data["resolved"], ["haiguang", "haiguang"])
    h.expect_equal("registry name", data["provider"], "rocm")
    h.expect_equal("profiles in the file", data["stored"], ["cpu", "rocm"])
    return f"haiguang (engine {data['resolved'][1]}, device {data['device']}) -> provider rocm"


def main(argv: list[str] | None = None) -> int:
    """Run every check and print the table.

    Args:
        argv: Command-line arguments (defaults to ``sys.argv[1:]``).

    Returns:
        Exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True, help="folder written by make_models.py")
    parser.add_argument("--checkout", type=Path, required=True, help="root of this project's checkout")
    parser.add_argument("--skip-surface", action="store_true", help="skip the direct surface probes")
    args = parser.parse_args(argv)
    h.quiet_logs()
    suite = h.Suite("isagellm-core 0.5.4.26 / isagellm 0.5.4.70 with this checkout's sagellm_backend")
    if not suite.run("env: sagellm_backend from this checkout", lambda: h.check_backend_location(args.checkout)):
        return suite.report()
    suite.run("env: engine package versions", check_versions)
    if not args.skip_surface:
        import surface_05

        for name, fn in surface_05.CHECKS:
            suite.run(name, fn)
    engines = EngineChecks(suite, args.models)
    for backend_type in ("cpu", "auto"):
        for model in ("gpt2", "llama"):
            engines.run_plain(backend_type, model)
    for model in ("gpt2", "llama"):
        engines.run_fp8(model)
    suite.run("umbrella: detect_backend() picks cpu", umbrella_detect_backend)
    suite.run("umbrella: a Hygon DCU profile is found as haiguang", umbrella_finds_hygon_dcu)
    return suite.report()


if __name__ == "__main__":
    sys.exit(main())
