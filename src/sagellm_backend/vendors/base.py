"""A vendor's facts in one typed record, detection written once over the ``torch.cuda`` shape,
and the one generic factory every built-in provider is created through (the accelerator
constructor and its parts are in :mod:`.accelerator`)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypedDict, TypeVar

from ..core.config import Availability, ProviderConfig
from ..errors import InvalidArgumentTypeError, ProviderNotFoundError
from ..protocol import DType

__all__ = [
    "CUDA_API",
    "TorchAPI",
    "VendorSpec",
    "capability_hint",
    "capability_string",
    "check_options",
    "create_from_config",
    "detect_torch_module",
    "device_capability",
    "torch_api",
    "vendor_factory",
]


@dataclass(frozen=True, kw_only=True)
class VendorSpec:
    """Every fact about one vendor.

    Attributes:
        name: Registry name.
        aliases: Other registry names.
        hardware_aliases: Other words for the vendor's hardware that are not registry names
            (``"nvidia"``, ``"npu"``): ``hardware.get_inspector`` accepts them besides ``name`` and
            ``aliases``.
        device_type: torch device type of its tensors.
        torch_module: Attribute of ``torch`` serving the device (``"cuda"``, ``"npu"``), or
            ``None`` for the host.
        sdk_module: Python module to import first (``"torch_npu"``), or ``None``.
        dist_backend: torch.distributed backend, or ``None``.
        graph_class: Graph class in the torch module (``"CUDAGraph"``), or ``None``.
        install_hint: What to install.
        priority: Rank in ``get_provider("auto")``; ``None`` keeps it out.
        detect: Side-effect-free detection.
        provider_class: ``"module:Class"`` of the provider, or ``None``: the class bound to this spec
            by ``vendor_factory(SPEC, Class)`` in the spec's own module (its entry-point factory).
        native_dtypes: ``(module, index) -> dtypes`` the device computes in, or ``None`` (all).
        dtype_hint: ``(dtype, module, index) -> why it is missing``, or ``None``.
        compute_capability: ``(module, index) -> "9.0"``, or ``None``.
        fast_copy: Whether the Triton row copier serves batched block copies.
        configure: Maps an engine config onto constructor keywords (default: ``device_id``).
        sources: Where these facts come from.
    """

    name: str
    aliases: tuple[str, ...] = ()
    device_type: str
    torch_module: str | None = None
    sdk_module: str | None = None
    dist_backend: str | None
    graph_class: str | None = None
    install_hint: str
    priority: int | None
    detect: Callable[[], Availability]
    provider_class: str | None = None
    native_dtypes: Callable[[Any, int], list[DType]] | None = None
    dtype_hint: Callable[[DType, Any, int], str] | None = None
    compute_capability: Callable[[Any, int], str | None] | None = None
    fast_copy: bool = False
    configure: Callable[[ProviderConfig, dict[str, Any]], None] | None = None
    sources: tuple[str, ...] = ()
    hardware_aliases: tuple[str, ...] = ()

    @property
    def factory_path(self) -> str:
        """The ``sagellm.backends`` entry point target of this vendor (the seed's ``providers`` path)."""
        return f"sagellm_backend.providers.{self.name}:create_{self.name}_backend"

    def load_class(self) -> type[Any]:
        """Import the provider class (``provider_class``), or the class the vendor's entry-point
        factory (:attr:`factory_path`) was bound to by :func:`vendor_factory`.

        Returns:
            The class.

        Raises:
            ProviderNotFoundError: the class (or the factory) cannot be imported, or the factory is
                bound to no class.
        """
        path = self.provider_class or self.factory_path
        module, _, attr = path.partition(":")
        try:
            found = getattr(importlib.import_module(module), attr, None)
        except ImportError:
            found = None
        if self.provider_class is None:
            found = getattr(found, "provider_class", None)
        if not isinstance(found, type):
            raise ProviderNotFoundError(
                f"no provider class found for vendor {self.name!r}: {path} does not import, or is not a class "
                "or a factory made by vendor_factory(spec, cls). Bind the class there, or set the spec's "
                "provider_class to 'module:Class'.",
                provider=self.name,
            )
        return found


class TorchAPI(TypedDict):
    """How torch reaches a vendor's devices: the :class:`VendorSpec` fields of that name."""

    device_type: str
    torch_module: str
    dist_backend: str
    graph_class: str


def torch_api(module: str, dist_backend: str, graph_class: str) -> TorchAPI:
    """The :class:`TorchAPI` of a ``torch.<module>`` whose tensors' device type is the module's name.

    Args:
        module: ``"cuda"``, ``"npu"``, ``"musa"`` ...
        dist_backend: Its torch.distributed backend.
        graph_class: Its graph class.

    Returns:
        The four fields, passed as ``VendorSpec(..., **torch_api(...), ...)``.
    """
    return {"device_type": module, "torch_module": module, "dist_backend": dist_backend, "graph_class": graph_class}


#: The ``torch.cuda`` API: tensors on ``"cuda"``, ``torch.cuda``, the ``"nccl"`` collective backend and
#: ``CUDAGraph``. NVIDIA's CUDA builds of torch serve it; so do ROCm/HIP builds (RCCL under that name)
#: and Kunlunxin's XPyTorch (BKCL).
CUDA_API: Final[TorchAPI] = torch_api("cuda", "nccl", "CUDAGraph")


def device_capability(module: Any, index: int) -> tuple[int, int]:
    """``(major, minor)`` of device ``index`` of a ``torch.cuda``-shaped module, as ints.

    Args:
        module: The torch module (``torch.cuda``, ``torch.musa``).
        index: Device ordinal.

    Returns:
        ``module.get_device_capability(index)``.
    """
    major, minor = module.get_device_capability(index)
    return int(major), int(minor)


def capability_string(module: Any, index: int) -> str:
    """:func:`device_capability` written ``"major.minor"`` (a :attr:`VendorSpec.compute_capability`).

    Args:
        module: The torch module.
        index: Device ordinal.

    Returns:
        E.g. ``"9.0"``.
    """
    return "{}.{}".format(*device_capability(module, index))


def capability_hint(dtype: DType, needs: str, fix: str, module: Any, device_type: str, index: int) -> str:
    """Why device ``index`` does not compute in ``dtype`` (a :attr:`VendorSpec.dtype_hint` by capability).

    Args:
        dtype: The missing dtype.
        needs: What it needs (``"compute capability >= 8.0"``).
        fix: What to use instead (``"use fp16"``).
        module: The torch module (``torch.cuda``, ``torch.musa``).
        device_type: Its device type (``"cuda"``).
        index: Device ordinal.

    Returns:
        ``"<dtype> needs <needs>; <device> (<model>) has <major.minor>; <fix>"``.
    """
    return (
        f"{dtype.value} needs {needs}; {device_type}:{index} ({module.get_device_name(index)}) has "
        f"{capability_string(module, index)}; {fix}"
    )


def detect_torch_module(
    install_hint: str,
    torch_module: str,
    sdk_module: str | None = None,
    *,
    exclude_module: str | None = None,
    exclude_reason: str = "",
) -> Availability:
    """Side-effect-free detection of a ``torch.<module>`` accelerator: import torch and the SDK,
    ask for devices. ``is_available`` and ``device_count`` create no device context.

    Args:
        install_hint: What to install.
        torch_module: ``"cuda"``, ``"npu"``, ``"musa"`` ...
        sdk_module: The vendor's torch plugin to import first.
        exclude_module: A module whose presence means the torch module belongs to another vendor.
        exclude_reason: Why, for the message.

    Returns:
        Availability with the reason.
    """
    try:
        import torch
    except ImportError as exc:
        return Availability(False, f"torch is not installed ({exc}); install {install_hint}")
    if sdk_module is not None:
        if importlib.util.find_spec(sdk_module) is None:
            return Availability(False, f"{sdk_module} is not installed; install {install_hint}")
        try:
            importlib.import_module(sdk_module)
        except Exception as exc:
            return Availability(False, f"{sdk_module} failed to import: {type(exc).__name__}: {exc}")
    if exclude_module is not None and importlib.util.find_spec(exclude_module) is not None:
        return Availability(False, exclude_reason)
    mod = getattr(torch, torch_module, None)
    if mod is None:
        return Availability(False, f"torch.{torch_module} does not exist in torch {torch.__version__}")
    try:
        ok = bool(mod.is_available())
        count = int(mod.device_count()) if ok else 0
    except Exception as exc:
        return Availability(False, f"torch.{torch_module}.is_available() raised {type(exc).__name__}: {exc}")
    if not ok:
        return Availability(False, f"torch.{torch_module}.is_available() is False", 0)
    if count < 1:
        return Availability(False, f"torch.{torch_module}.device_count() is 0", 0)
    return Availability(True, f"{count} device(s) via torch.{torch_module} (torch {torch.__version__})", count)


_P = TypeVar("_P")


def check_options(spec: VendorSpec, cls: type[Any], kwargs: dict[str, Any]) -> None:
    """Refuse keywords that ``cls``'s constructor does not take, naming the accepted ones.

    Args:
        spec: The vendor (for the message).
        cls: The provider class.
        kwargs: The constructor keywords about to be passed.

    Raises:
        InvalidArgumentTypeError: a keyword the constructor has no parameter for.
    """
    params = inspect.signature(cls).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    accepted = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        shown = sorted(accepted - {"availability"})
        raise InvalidArgumentTypeError(
            f"the {spec.name!r} provider has no option {', '.join(repr(k) for k in unknown)}. It accepts: "
            f"{', '.join(shown)}; a config may also give kind, device and device_ids.",
            provider=spec.name,
            unknown=unknown,
        )


def create_from_config(
    spec: VendorSpec,
    cls: type[_P],
    config: object = None,
    *,
    availability: Availability | None = None,
    **options: Any,
) -> _P:
    """The generic entry-point factory: build ``spec``'s provider from an engine config.

    Args:
        spec: The vendor.
        cls: Its provider class.
        config: ``None``, a dict, or an object with ``kind``/``device``/``device_ids``.
        availability: A detection result already computed (the registry passes it on).
        **options: Constructor keywords (``device_id``, ``kv_geometry``, ``max_memory_bytes`` ...).

    Returns:
        The provider.

    Raises:
        InvalidArgumentTypeError: ``config`` is of an unusable type, or an option (or a config key)
            the provider's constructor does not take.
    """
    cfg = ProviderConfig.from_any(config, **options)
    kwargs = dict(cfg.options)
    if spec.configure is not None:
        spec.configure(cfg, kwargs)
    else:
        index = cfg.device_index(spec.device_type)
        if index is not None:
            kwargs.setdefault("device_id", index)
    if availability is not None:
        kwargs["availability"] = availability
    check_options(spec, cls, kwargs)
    return cls(**kwargs)


def vendor_factory(spec: VendorSpec, cls: type[_P]) -> Callable[..., _P]:
    """The entry-point factory of a vendor: :func:`create_from_config` bound to ``spec`` and its
    provider class, with the ``detect``, ``priority`` and ``provider_class`` attributes the
    registry and :meth:`VendorSpec.load_class` read.

    Args:
        spec: The vendor.
        cls: Its provider class (defined beside ``spec``, declaring ``vendor = spec``).

    Returns:
        ``create_<name>_backend(config=None, **options)``.
    """

    def factory(config: object = None, **options: Any) -> _P:
        return create_from_config(spec, cls, config, **options)

    factory.__name__ = factory.__qualname__ = f"create_{spec.name}_backend"
    factory.__doc__ = f"Entry-point factory for {spec.name!r}: see :func:`create_from_config`."
    factory.detect = spec.detect  # type: ignore[attr-defined]  # read by the registry
    factory.priority = spec.priority  # type: ignore[attr-defined]  # read by the registry
    factory.provider_class = cls  # type: ignore[attr-defined]  # read by VendorSpec.load_class
    return factory
