"""Frame-level openSMILE ComParE_2016 features (the paper's input), their cache and normalisation.

Per 10 ms frame: the 65 ComParE_2016 low-level descriptors (LLDs) followed by their 65 deltas,
``x`` of shape (T, 130). Three jobs, one module each:

- :mod:`sed_model.features.opensmile_frames`: one signal to frames (or to the functionals of
  the SVM baseline) with openSMILE: alignment of LLDs and deltas, full scale, minimum length.
- :mod:`sed_model.features.cache`: many files to features, through the per-utterance cache
  and a pool of worker processes, leaving out (or, strict, refusing) unusable files.
- :mod:`sed_model.features.normalization`: z-score statistics fitted on training utterances.

The names below are the package's interface; import them from ``sed_model.features``.
"""

from sed_model.audio import load_audio
from sed_model.features.cache import CACHE_FORMAT, extract_corpus, extract_functionals
from sed_model.features.normalization import Normalizer
from sed_model.features.opensmile_frames import (
    FEATURE_DIM,
    FUNCTIONALS_DIM,
    MIN_DURATION_S,
    FeatureConfig,
    extract_frames,
    extract_functionals_vector,
    frame_feature_names,
)

__all__ = [
    "CACHE_FORMAT",
    "FEATURE_DIM",
    "FUNCTIONALS_DIM",
    "MIN_DURATION_S",
    "FeatureConfig",
    "Normalizer",
    "extract_corpus",
    "extract_frames",
    "extract_functionals",
    "extract_functionals_vector",
    "frame_feature_names",
    "load_audio",
]
