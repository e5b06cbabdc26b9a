"""Attention-based dense LSTM speech emotion recognition (Xie et al., IEICE 2019).

Data side: ``sed_model.corpora`` (loaders), ``sed_model.features`` (openSMILE ComParE_2016
frames, cache, normalisation) and ``sed_model.splits`` (speaker-independent folds).
Using a model: ``sed_model.load_model(name_or_path)`` (:mod:`sed_model.api`), e.g.
``sed_model.load_model("emodb").predict(["a.wav"], window=2.0)``.
"""

__version__ = "0.1.0"

_API = ("load_model", "EmotionModel", "Prediction", "Segment")


def __getattr__(name: str):
    """The API names, imported on first use (``import sed_model`` stays light: the feature
    extraction workers import the package and need neither torch nor the model)."""
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'sed_model' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
