"""Where sed_model keeps what it generates: feature cache and the synthetic demo corpus."""

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache folder: ``$SED_MODEL_CACHE``, else ``$XDG_CACHE_HOME/sed_model``, else
    ``~/.cache/sed_model``. Not created here; writers create what they need."""
    if explicit := os.environ.get("SED_MODEL_CACHE"):
        return Path(explicit).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "sed_model"
    return Path.home() / ".cache" / "sed_model"


def feature_cache_dir() -> Path:
    """Default folder of the per-utterance feature cache: ``cache_root()/features``."""
    return cache_root() / "features"
