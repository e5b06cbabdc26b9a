"""The kernel backends: which exist, which are usable for a device, and which ``auto`` picks.

| name        | devices                                    | where                              |
| ----------- | ------------------------------------------ | ---------------------------------- |
| `reference` | any                                        | `sed_kernels/reference.py` (eager) |
| `triton`    | CUDA; CPU only under `TRITON_INTERPRET=1`  | `sed_kernels/triton/`              |
| `cuda`      | CUDA, when the `_cuda` extension was built | `csrc/cuda/`, `sed_kernels/cuda/`  |
| `cpu`       | CPU, when the `_cpu` extension was built   | `csrc/cpu/`, `sed_kernels/cpu/`    |

Each fused backend is a package with one module per op (``time_attention``,
``feature_attention``), each holding plain ``forward``/``backward`` functions; the custom
ops in :mod:`sed_kernels.ops` call them.

``auto`` picks, for CUDA tensors, ``triton`` then ``cuda`` then ``reference``; for CPU
tensors ``cpu`` then ``reference`` (the Triton interpreter is for testing, never picked).
The environment variable ``SED_KERNELS_BACKEND`` replaces ``auto`` by a fixed name.
"""

from __future__ import annotations

import functools
import importlib
import os
from types import ModuleType

import torch

BACKEND_NAMES = ("reference", "triton", "cuda", "cpu")
ENV_VAR = "SED_KERNELS_BACKEND"
_AUTO_ORDER = {"cuda": ("triton", "cuda", "reference"), "cpu": ("cpu", "reference")}


@functools.cache
def _triton_package() -> tuple[ModuleType | None, bool]:
    """The Triton backend package and whether its kernels were built for the interpreter.

    Triton decides interpreter or compiler when a kernel is decorated, i.e. when this
    package is imported, so ``TRITON_INTERPRET`` must be set before that.
    """
    interpreted = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    try:
        return importlib.import_module("sed_kernels.triton"), interpreted
    except ImportError:
        return None, interpreted


@functools.cache
def _native_package(name: str) -> ModuleType | None:
    """The native backend package, or None when its compiled module is missing (it warns)."""
    package = importlib.import_module(f"sed_kernels.{name}")
    return package if package.AVAILABLE else None


def _usable_devices(name: str) -> tuple[str, ...]:
    if name == "reference":
        return ("cpu", "cuda")
    if name == "triton":
        package, interpreted = _triton_package()
        if package is None:
            return ()
        if interpreted:
            return ("cpu",)
        return ("cuda",) if torch.cuda.is_available() else ()
    if name == "cuda":
        return ("cuda",) if torch.cuda.is_available() and _native_package("cuda") else ()
    if name == "cpu":
        return ("cpu",) if _native_package("cpu") else ()
    raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKEND_NAMES)}")


def available_backends(device: torch.device | str | None = None) -> list[str]:
    """Backends usable in this process, for ``device`` if given (e.g. ``["reference", "cpu"]``)."""
    device_type = None if device is None else torch.device(device).type
    return [
        name
        for name in BACKEND_NAMES
        if (devices := _usable_devices(name)) and (device_type is None or device_type in devices)
    ]


@torch.compiler.assume_constant_result
def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend for ``backend`` (a name or ``"auto"``) on ``device``.

    ``torch.compile`` evaluates this once while tracing and keeps the answer as a constant.
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    source = "backend"
    if backend == "auto" and os.environ.get(ENV_VAR):
        backend, source = os.environ[ENV_VAR], f"{ENV_VAR} (environment)"
    usable = available_backends(device)
    if backend == "auto":
        return next(name for name in _AUTO_ORDER.get(device.type, ("reference",)) if name in usable)
    if backend not in BACKEND_NAMES:
        raise ValueError(
            f"{source} is {backend!r}; expected 'auto' or one of {', '.join(BACKEND_NAMES)}"
        )
    if backend not in usable:
        raise ValueError(
            f"{source} {backend!r} is not usable for {device.type} tensors in this process; "
            f"usable: {', '.join(usable)}"
        )
    return backend


def kernels(backend: str, op: str) -> ModuleType:
    """The module with ``forward``/``backward`` of ``op`` for a fused ``backend``."""
    package = _triton_package()[0] if backend == "triton" else _native_package(backend)
    return importlib.import_module(f"{package.__name__}.{op}")
