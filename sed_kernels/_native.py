"""Loading of the compiled extension modules ``sed_kernels._cpu`` and ``sed_kernels._cuda``.

Both are built from ``csrc/`` by ``pip install .`` (``setup.py``). When one is missing or
fails to load, the package still imports: the backend that needs it is reported as
unavailable and :func:`load_extension` warns once, naming the module and how to rebuild.
"""

from __future__ import annotations

import importlib
import os
import warnings
from pathlib import Path
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
            reason = _shadowed_message(name) or (
                f"sed_kernels.{name} could not be imported ({error}); to build it, {REBUILD_HINT}"
            )
            warnings.warn(
                f"{reason}. The '{backend}' backend is unavailable; the other backends still work.",
                RuntimeWarning,
                stacklevel=2,
            )
        return None


DISTRIBUTION = "sed-dense-lstm"


def installed_extension(name: str) -> str | None:
    """Path of ``sed_kernels.<name>`` as the installed distribution holds it, or None.

    None also for editable installs, whose compiled modules live in the source tree.
    """
    from importlib import metadata

    # Every copy of the distribution's metadata on sys.path, not only the first: a checkout
    # where pip built the package holds an .egg-info that lists the sources, not the modules.
    for dist in metadata.distributions(name=DISTRIBUTION):
        for file in dist.files or []:
            parts = file.parts
            if (len(parts) == 2 and parts[0] == "sed_kernels" and parts[1].startswith(f"{name}.")
                    and parts[1].endswith((".so", ".pyd")) and Path(file.locate()).is_file()):
                return str(file.locate())
    return None


def _shadowed_message(name: str) -> str | None:
    """Why ``sed_kernels.<name>`` is missing when the installed package has it, else None."""
    installed = installed_extension(name)
    if installed is None:
        return None
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return (
        f"sed_kernels.{name} is installed ({installed}) but missing from the imported package "
        f"in {here}, which shadows it: run `pip install .` again from this checkout (it puts "
        "the compiled modules into the source tree too) or `python setup.py build_ext "
        "--inplace`, or run from outside the checkout"
    )


def shadowed_extensions() -> list[str]:
    """One line per compiled module that the installed package has and this import lacks.

    That happens when a source checkout without built modules comes first on ``sys.path``
    (Python started from the checkout's root) while ``pip install .`` put them elsewhere.
    """
    lines = []
    for name in ("_cpu", "_cuda"):
        try:
            importlib.import_module(f"sed_kernels.{name}")
        except ImportError:
            message = _shadowed_message(name)
            if message:
                lines.append(message)
    return lines
