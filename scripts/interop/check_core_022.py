"""Interop check: this checkout as the backend of isagellm-core 0.2.2.8, the engine of the seed release's time.

What that engine calls on ``sagellm_backend`` (read from its bytecode):
- ``sagellm_backend.CapabilityDescriptor`` at import time (``sagellm_core.engine``);
- ``factory.create_backend(BackendConfig)`` -> the 'sagellm.backends' entry point, called ``impl(cfg)``;
- ``PyTorchEngine``: ``provider.capability()`` (``device_type``, ``device_name``) in ``__init__``, ``start`` and
  ``health_check``;
- ``HFCudaEngine`` (CUDA only): ``providers.pytorch_cuda.PyTorchCUDABackendProvider(device=...)`` or
  ``providers.cpu.CPUBackendProvider()``, then ``capability()``, ``create_stream()``, ``create_event()`` x2, and with
  hasattr guards ``memory_stats().get('allocated_mb', 0)`` and ``clear_cache()``;
- ``CPUEngine`` accepts a backend from ``create_engine(cfg, backend)`` and ignores it.

Usage: ``python scripts/interop/check_core_022.py --models DIR --checkout ROOT``
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import _harness as h

EXPECTED_VERSIONS = {"isagellm-core": "0.2.2.8", "isagellm-protocol": "0.1.2.4"}
MAX_TOKENS = 8
MODELS = ("gpt2", "llama")


def check_versions() -> str:
    """The engine packages are exactly the versions this phase targets."""
    found = {name: metadata.version(name) for name in EXPECTED_VERSIONS}
    h.expect_equal("engine package versions", found, EXPECTED_VERSIONS)
    return ", ".join(f"{k} {v}" for k, v in found.items())


def import_core() -> str:
    """``sagellm_core.engine`` imports ``sagellm_backend.CapabilityDescriptor`` at module level."""
    import sagellm_core

    return f"sagellm_core {sagellm_core.__version__}"


def create_backend(kind: str, device: str | None) -> Any:
    """Build a provider the way the seed-era engine does: entry point 'sagellm.backends', config positional.

    Args:
        kind: Entry-point name.
        device: BackendConfig.device.

    Returns:
        The provider.
    """
    from sagellm_core import BackendConfig
    from sagellm_core import create_backend as core_create_backend

    return core_create_backend(BackendConfig(kind=kind, device=device))


def backend_via_factory(kind: str, device: str | None, device_type: str) -> str:
    """``create_backend(BackendConfig(kind=...))`` returns a provider of the right device type."""
    provider = create_backend(kind, device)
    cap = provider.capability()
    h.expect_equal(f"{kind}: capability().device_type", str(cap.device_type), device_type)
    return f"{type(provider).__name__}, device_name={cap.device_name!r}"


def hf_cuda_provider_calls() -> str:
    """The calls ``HFCudaEngine.start`` makes on its provider, made here on the CPU provider it builds off-GPU."""
    from sagellm_backend.providers.cpu import CPUBackendProvider

    provider = CPUBackendProvider()
    cap = provider.capability()
    h.expect_equal("getattr(capability(), 'device_type')", str(cap.device_type), "cpu")
    stream = provider.create_stream()
    events = (provider.create_event(), provider.create_event())
    stats = provider.memory_stats()
    allocated = stats.get("allocated_mb", 0)
    provider.clear_cache()
    return f"stream={type(stream).__name__}, events={type(events[0]).__name__}, allocated_mb={allocated!r}"


def hf_cuda_gpu_entry() -> str:
    """On a GPU, ``HFCudaEngine._init_provider`` imports ``providers.pytorch_cuda`` and passes ``device=``."""
    from sagellm_backend.providers.pytorch_cuda import PyTorchCUDABackendProvider

    params = inspect.signature(PyTorchCUDABackendProvider).parameters
    if "device" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        sig = inspect.signature(PyTorchCUDABackendProvider)
        raise AssertionError(f"PyTorchCUDABackendProvider{sig} takes no device= keyword (the engine passes device=str)")
    return "importable, accepts device="


async def _serve(engine: Any, model_dir: Path) -> tuple[list[int], list[int], Any]:
    from sagellm_protocol import Request

    def request(rid: str, stream: bool) -> Any:
        return Request(
            request_id=rid,
            trace_id=rid,
            model=str(model_dir),
            prompt=h.PROMPTS[0],
            max_tokens=MAX_TOKENS,
            stream=stream,
        )

    await engine.start()
    try:
        resp = await engine.execute(request("interop-1", False))
        events = [ev async for ev in engine.stream(request("interop-2", True))]
        health = await engine.health_check()
    finally:
        await engine.stop()
    if events[0].event != "start" or events[-1].event != "end":
        raise AssertionError(f"stream event sequence {[ev.event for ev in events]}")
    return list(resp.output_tokens), list(events[-1].output_tokens), health


def engine_check(models: Path, model: str, build: str) -> str:
    """Start an engine, execute and stream one request, compare with transformers greedy decoding.

    Args:
        models: Models folder.
        model: Model folder name.
        build: "cpu-engine", "pytorch-cpu" or "pytorch-mock".

    Returns:
        A note for the table.
    """
    from sagellm_core import EngineConfig, create_engine
    from sagellm_core.engines.pytorch import PyTorchEngine, PyTorchEngineInstanceConfig

    model_dir = models / model
    if build == "cpu-engine":
        backend = create_backend("cpu", "cpu")
        engine = create_engine(EngineConfig(kind="cpu", model=model, model_path=str(model_dir), device="cpu"), backend)
    else:
        mock = build == "pytorch-mock"
        provider = create_backend("mock", None) if mock else create_backend("cpu", "cpu")
        engine = PyTorchEngine(
            PyTorchEngineInstanceConfig(
                engine_id=f"interop-{build}",
                model_path=str(model_dir),
                device="cpu",
                provider=provider,
                do_sample=False,
                max_new_tokens=MAX_TOKENS,
            )
        )
    prompt_ids, greedy = h.hf_greedy(model_dir, h.PROMPTS[0], MAX_TOKENS)
    executed, streamed, health = asyncio.run(_serve(engine, model_dir))
    # The seed-era engines return the prompt tokens followed by the generated ones.
    h.expect_equal("execute() output_tokens", executed, prompt_ids + greedy)
    h.expect_equal("stream end output_tokens", streamed, prompt_ids + greedy)
    if not health:
        raise AssertionError(f"health_check() returned {health!r}")
    return f"{type(engine).__name__}: {len(greedy)} tokens == transformers greedy (execute and stream)"


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
    args = parser.parse_args(argv)
    h.quiet_logs()
    suite = h.Suite("isagellm-core 0.2.2.8 (seed era) with this checkout's sagellm_backend")
    if not suite.run("env: sagellm_backend from this checkout", lambda: h.check_backend_location(args.checkout)):
        return suite.report()
    suite.run("env: engine package versions", check_versions)
    if not suite.run("import sagellm_core", import_core):
        return suite.report()
    suite.run("create_backend(kind='cpu')", lambda: backend_via_factory("cpu", "cpu", "cpu"))
    suite.run("create_backend(kind='mock')", lambda: backend_via_factory("mock", None, "mock"))
    suite.run("HFCudaEngine provider calls (on cpu)", hf_cuda_provider_calls)
    suite.run("HFCudaEngine GPU entry: providers.pytorch_cuda", hf_cuda_gpu_entry)
    for model in MODELS:
        for build in ("cpu-engine", "pytorch-cpu", "pytorch-mock"):
            suite.run(f"{build}[{model}] execute+stream", lambda m=model, b=build: engine_check(args.models, m, b))
    return suite.report()


if __name__ == "__main__":
    sys.exit(main())
