"""Loading of the compiled extension modules ``sed_kernels._cpu`` and ``sed_kernels._cuda``.

Both are built from ``csrc/`` by ``pip install .`` (``setup.py``). When one is missing or
fails to load, the package still imports: the backend that needs it is reported as
unavailable and :func:`load_extension` warns once, naming the module and how to rebuild.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

REBUILD_HINT = (
    "rebuild with `pip install .` (or `pip install -e .` / "
    "`python setup.py build_ext --inplace` in a source checkout)"
)


def load_extension(name: str, backend: str, *, warn: bool = True) -> ModuleType | None:
    """Import ``sed_kernels.<name>``; on failure return None and, if ``warn``, warn why.

    ``backend`` is the backend that needs the module (named in the warning).
    """
    try:
        return importlib.import_module(f"sed_kernels.{name}")
    except ImportError as error:
        if warn:
            warnings.warn(
                f"sed_kernels.{name} could not be imported ({error}); the '{backend}' backend "
                f"is unavailable, the other backends still work. To build it, {REBUILD_HINT}.",
                RuntimeWarning,
                stacklevel=2,
            )
        return None
