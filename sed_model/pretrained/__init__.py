"""Pretrained models shipped inside the package (package data, ``pip install`` ships them).

``emodb``: the ``feature`` variant trained on all 535 EmoDB clips of ``shared/data/emodb``
(10 speakers, 7 classes) by ``scripts/make_pretrained_emodb.py``; model card in the README
(its numbers come from ``results/pretrained_emodb.json``, written by the same script).
The audio it was trained on is not part of the package.
"""

from __future__ import annotations

from pathlib import Path

from sed_model.errors import SedError

FOLDER = Path(__file__).resolve().parent
BUNDLED = {
    "emodb": ("emodb.pt", "EmoDB (acted German speech, 10 speakers, 2-second clips), 7 classes"),
}
DEFAULT = "emodb"


def bundled_path(name: str) -> Path:
    """The checkpoint file of the bundled model ``name``."""
    if name not in BUNDLED:
        raise SedError(f"no bundled model called {name!r}; bundled: {', '.join(BUNDLED)}")
    path = FOLDER / BUNDLED[name][0]
    if not path.is_file():
        raise SedError(f"the bundled model {name!r} is missing from this installation ({path}); "
                       "reinstall the package or make it with scripts/make_pretrained_emodb.py")
    return path


def describe(name: str) -> str:
    """One line saying which bundled model this is."""
    return f"bundled pretrained model {name!r}: {BUNDLED[name][1]}"
