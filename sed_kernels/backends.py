"""The kernel backends: which exist, which are usable for a device, and which ``auto`` picks.

The backends and the devices each runs on are listed in docs/kernels.md.
Each fused backend is a package (``sed_kernels.triton``, ``.cuda``, ``.cpu``) that says
itself whether it is usable for a device type (``usable_on``) and holds one module per op
(``time_attention``, ``feature_attention``) with plain ``forward``/``backward`` functions;
the custom ops in :mod:`sed_kernels.ops` call them. This module only asks.

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
def _package(name: str) -> ModuleType | None:
    """The fused backend's package; None when it cannot be imported (Triton not installed).

    A native package whose compiled module is missing imports (and warns); it then says it
    is usable nowhere.
    """
    try:
        return importlib.import_module(f"sed_kernels.{name}")
    except ImportError:
        return None


def _usable(name: str, device_type: str) -> bool:
    """Each backend package answers for itself (``usable_on``); reference runs everywhere."""
    if name == "reference":
        return True
    if name not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKEND_NAMES)}")
    package = _package(name)
    return package is not None and package.usable_on(device_type)


def available_backends(device: torch.device | str | None = None) -> list[str]:
    """Backends usable in this process, for ``device`` if given (e.g. ``["reference", "cpu"]``)."""
    device_types = ("cpu", "cuda") if device is None else (torch.device(device).type,)
    return [
        name for name in BACKEND_NAMES if any(_usable(name, kind) for kind in device_types)
    ]


def _assume_constant_result(fn):
    """``torch.compiler.assume_constant_result`` without importing ``torch._dynamo``, which
    costs seconds of start-up in every process that only runs a model: that decorator sets
    this one attribute, which dynamo reads when it traces a call (tests/test_lean_predict.py
    checks that it still does just that)."""
    fn._dynamo_marked_constant = True
    return fn


@_assume_constant_result
def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend for ``backend`` (a name or ``"auto"``) on ``device``.

    ``torch.compile`` evaluates this once while tracing and keeps the answer as a constant.
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    source = "backend"
    if backend == "auto" and os.environ.get(ENV_VAR):
        backend, source = os.environ[ENV_VAR], f"{ENV_VAR} (environment)"
    if backend == "auto":  # the first usable in order: later ones are never imported
        order = _AUTO_ORDER.get(device.type, ("reference",))
        return next(name for name in order if _usable(name, device.type))
    if backend not in BACKEND_NAMES:
        raise ValueError(
            f"{source} is {backend!r}; expected 'auto' or one of {', '.join(BACKEND_NAMES)}"
        )
    if not _usable(backend, device.type):
        raise ValueError(
            f"{source} {backend!r} is not usable for {device.type} tensors in this process; "
            f"usable: {', '.join(available_backends(device))}"
        )
    return backend


def kernels(backend: str, op: str) -> ModuleType:
    """The module with ``forward``/``backward`` of ``op`` for a fused ``backend``."""
    return importlib.import_module(f"{_package(backend).__name__}.{op}")
