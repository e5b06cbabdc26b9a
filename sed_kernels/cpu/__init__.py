"""The ``cpu`` backend: C++/OpenMP kernels of ``csrc/cpu`` (module ``sed_kernels._cpu``).

One launcher module per op (``time_attention``, ``feature_attention``), each with the plain
``forward``/``backward`` functions of the backend contract. ``AVAILABLE`` is True when the
compiled module imported; otherwise importing this package warns once (see
:mod:`sed_kernels._native`).

Choices the kernels make:

- Compute dtype: float32, or float64 for float64 inputs (native double kernels, for
  gradient checks). float16/bfloat16 inputs are converted to float32 by the launchers before
  the call (one extra copy of ``h``) and the results converted back.
- Threads: ``torch.get_num_threads()`` OpenMP threads. The module links libgomp; with torch
  imported first (as here) it shares torch's libgomp and thread pool (same soname).
- Instruction set: the module holds the kernels compiled for AVX-512, AVX2+FMA and the
  architecture's baseline; the best one the CPU supports is used (``_cpu.isa()``), or the one
  ``SED_KERNELS_CPU_ISA`` names (``_cpu.set_isa(name)`` switches in-process, for tests). All
  variants are compiled with ``-ffp-contract=off``: each product and sum rounds as written.
- Feature attention's matrix products run as ``torch.mm`` on the packed valid steps (see
  :mod:`sed_kernels.cpu.feature_attention`); the compiled kernels fuse what lies between them.
- Determinism: every sum over steps is reduced in a fixed order (per-block partials added in
  block order); the GEMMs are torch's. Results are bitwise identical run to run for a given
  thread count.
- Under heavy CPU oversubscription (more runnable threads than cores), OpenMP's default
  spin-waiting can cost more than the kernels; ``OMP_WAIT_POLICY=passive`` helps there.
"""

from __future__ import annotations

import contextlib
import os
from types import ModuleType

from sed_kernels._native import REBUILD_HINT, load_extension

ISA_ENV_VAR = "SED_KERNELS_CPU_ISA"

extension = load_extension("_cpu", "cpu")
AVAILABLE: bool = extension is not None


def _select_isa_from_environment() -> None:
    """Use the instruction set named by ``SED_KERNELS_CPU_ISA`` instead of the best one.

    For tests and benchmarks of the lower variants on a CPU that has the higher ones; a name
    the module lacks or the CPU cannot run is an error here, not a silent fallback.
    """
    name = os.environ.get(ISA_ENV_VAR, "").strip()
    if extension is None or not name:
        return
    available = extension.available_isas()
    if name not in available:
        raise RuntimeError(
            f"sed_kernels: {ISA_ENV_VAR}={name!r} is not an instruction set this build has and "
            f"this CPU runs; available here: {', '.join(available)}"
        )
    extension.set_isa(name)


_select_isa_from_environment()

__all__ = ["AVAILABLE", "extension", "instruction_set", "require_extension", "usable_on"]


@contextlib.contextmanager
def instruction_set(isa: str | None):
    """Run the kernels compiled for ``isa`` inside the block (None: leave the choice as is).

    For tests and benchmarks of each variant; ``SED_KERNELS_CPU_ISA`` does the same for a
    whole process.
    """
    if isa is None:
        yield
        return
    previous = require_extension().isa()
    extension.set_isa(isa)
    try:
        yield
    finally:
        extension.set_isa(previous)


def usable_on(device_type: str) -> bool:
    """Whether the backend runs tensors of this device type here: CPU, when the module built."""
    return AVAILABLE and device_type == "cpu"


def require_extension() -> ModuleType:
    """The compiled ``sed_kernels._cpu`` module; RuntimeError when it was not built."""
    if extension is None:
        raise RuntimeError(f"sed_kernels: the 'cpu' backend needs sed_kernels._cpu; {REBUILD_HINT}")
    return extension
