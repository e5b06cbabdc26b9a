"""One signal to openSMILE ComParE_2016 frames (or functionals), aligned and checked.

Choices where the paper is silent, recorded here:

- One pass. openSMILE's ComParE_2016 emits the LLDs and the deltas as two separate levels
  (a signal of T seconds gives 100T-4 LLD rows but 100T-2 delta rows, the extra rows
  repeating the last timestamp); asked for one level at a time, the package runs the whole
  pipeline once per level. ``compare_2016_frames.conf`` (beside this module) runs the same
  LLD components once and joins the two levels row by row (row i of both starts at the same
  time: the deltas recomputed from the LLD rows match the delta rows at the same position),
  cut to the shorter, never joined on the time index. Its output equals the two separate
  runs' exactly (tests/test_features.py checks it), in about half the time.
- Input. ``opensmile.Smile.process_signal`` on the decoded mono signal (``load_audio``), so
  wav files and the audio of eNTERFACE's .avi files go through the same path. Native sample
  rate unless ``FeatureConfig.sampling_rate`` asks for resampling.
- Full scale. opensmile converts the signal to int16 as ``(x * 32768).astype(int16)``, which
  wraps a sample of +1.0 round to -32768; signals are clipped to [-1, 32767/32768] first.
- Minimum length. ComParE_2016's pitch and voice-quality LLDs use a 60 ms window: below 60 ms
  openSMILE returns a single row of NaN ("Segment too short"); from 60 ms on it returns >= 2
  finite rows. Shorter signals are therefore an :class:`AudioError` ("too short"); any output
  that is still not finite is one too.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sed_model.errors import AudioError, SedError

LLD_DIM = 65
FEATURE_DIM = 2 * LLD_DIM  # 65 ComParE_2016 LLDs + 65 deltas per 10 ms frame
FUNCTIONALS_DIM = 6373  # ComParE_2016 functionals per utterance (SVM baseline)
MIN_DURATION_S = 0.060  # shortest signal for which openSMILE returns finite ComParE frames
SUPPORTED_FEATURE_SETS = ("ComParE_2016",)


@dataclass(frozen=True)
class FeatureConfig:
    """What enters the features (and so the cache key).

    feature_set: the openSMILE feature set; only "ComParE_2016" (the paper's) has the LLD deltas
        that make up the 130 columns.
    sampling_rate: resample to this rate before extraction; None keeps each file's native rate.
    speed: speed perturbation (Ko et al., 2015) before extraction: the signal is played
        ``speed`` times faster (duration / speed, pitch x speed); 1.0 leaves it as it is.
    """

    feature_set: str = "ComParE_2016"
    sampling_rate: int | None = None
    speed: float = 1.0

    def __post_init__(self):
        if self.feature_set not in SUPPORTED_FEATURE_SETS:
            raise SedError(f"feature set {self.feature_set!r} is not supported; "
                           f"expected one of {SUPPORTED_FEATURE_SETS}")
        rate = self.sampling_rate
        if rate is not None and (not isinstance(rate, int) or rate < 8000):
            raise SedError(f"sampling_rate {rate!r} is invalid; "
                           "expected None or an integer >= 8000 Hz")
        if not 0.5 <= self.speed <= 2.0:
            raise SedError(f"speed {self.speed!r} is invalid; expected a factor in [0.5, 2]")


def speed_perturbed(signal: np.ndarray, sampling_rate: int, speed: float) -> np.ndarray:
    """``signal`` played ``speed`` times faster, at the same sampling rate: read as if
    recorded at ``speed * rate`` and resampled to ``rate`` (audresample, openSMILE's own
    resampler)."""
    if speed == 1.0:
        return signal
    import audresample

    faster = audresample.resample(signal, round(sampling_rate * speed), sampling_rate)
    return np.ascontiguousarray(faster.reshape(-1))


FRAMES_LEVEL = "lld_and_de"  # the output level of compare_2016_frames.conf
FRAMES_CONFIG = Path(__file__).with_name("compare_2016_frames.conf")


_EXTRACTORS = threading.local()  # each thread its own extractors: they are not shared


def _smile(feature_set: str, level: str, sampling_rate: int | None):
    """One openSMILE extractor per (set, level, rate) and thread (construction costs ~0.15 s).

    ``level`` is a :class:`opensmile.FeatureLevel` name, or :data:`FRAMES_LEVEL` for the
    one-pass LLD + delta configuration."""
    made = _EXTRACTORS.__dict__.setdefault("made", {})
    key = (feature_set, level, sampling_rate)
    if key not in made:
        made[key] = _new_smile(feature_set, level, sampling_rate)
    return made[key]


def _new_smile(feature_set: str, level: str, sampling_rate: int | None):
    import opensmile

    _skip_distribution_scan()
    resampling = {"sampling_rate": sampling_rate, "resample": sampling_rate is not None}
    if level == FRAMES_LEVEL:
        config_root = Path(opensmile.__file__).parent / "core" / "config"
        lld_config = config_root / "compare" / f"{feature_set}_core.lld.conf.inc"
        return opensmile.Smile(feature_set=str(FRAMES_CONFIG), feature_level=FRAMES_LEVEL,
                               options={"lldconf": str(lld_config)}, **resampling)
    return opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set],
                           feature_level=opensmile.FeatureLevel[level], **resampling)


def _skip_distribution_scan() -> None:
    """Spare ``opensmile.Smile()`` a scan of every installed distribution (about a second).

    Smile's constructor names its class through audobject, which asks
    ``importlib.metadata.packages_distributions()`` which distribution provides the top-level
    module ``opensmile``, unless audobject's cache of that answer already holds it. The answer
    is ``["opensmile"]`` (the module is its own distribution); putting it in the cache first
    changes nothing but the time. A newer audobject without the cache is left alone.
    """
    try:
        from audobject.core import utils
    except ImportError:
        return
    cache = getattr(utils, "PACKAGES_DISTRIBUTIONS", None)
    if isinstance(cache, dict) and not cache:
        cache["opensmile"] = ["opensmile"]


def _process(config: FeatureConfig, level: str, signal: np.ndarray,
             sampling_rate: int) -> np.ndarray:
    """openSMILE's output for ``signal`` at ``level`` as a float32 array (rows, columns)."""
    smile = _smile(config.feature_set, level, config.sampling_rate)
    return smile.process_signal(signal, sampling_rate).to_numpy(dtype=np.float32)


def opensmile_version() -> str:
    import opensmile

    return opensmile.__version__


def _as_opensmile_input(signal: np.ndarray, sampling_rate: int) -> np.ndarray:
    """(n,) float32 clipped to the int16 range opensmile converts to; AudioError if not usable."""
    signal = np.asarray(signal, dtype=np.float32)
    if signal.ndim != 1:
        raise AudioError(f"expected a mono signal of shape (n,), got shape {signal.shape}")
    _check_length(signal, sampling_rate)
    return np.clip(signal, -1.0, 32767 / 32768)


def _check_length(signal: np.ndarray, sampling_rate: int) -> None:
    if signal.size == 0:
        raise AudioError("empty audio (0 samples)")
    min_samples = -(-sampling_rate * round(MIN_DURATION_S * 1000) // 1000)  # ceil, integer math
    if signal.size < min_samples:
        raise AudioError(
            f"too short ({signal.size / sampling_rate * 1000:.0f} ms; openSMILE ComParE_2016 needs "
            f">= {MIN_DURATION_S * 1000:.0f} ms)"
        )


def extract_frames(
    signal: np.ndarray, sampling_rate: int, config: FeatureConfig = FeatureConfig()
) -> np.ndarray:
    """ComParE_2016 LLDs and deltas of one mono signal: (T, 130) float32, aligned by position.

    signal: (n,) float mono. Raises AudioError when the signal is empty, too short or gives
    non-finite features.
    """
    signal = _as_opensmile_input(signal, sampling_rate)
    if config.speed != 1.0:
        signal = _as_opensmile_input(speed_perturbed(signal, sampling_rate, config.speed),
                                     sampling_rate)
    x = _process(config, FRAMES_LEVEL, signal, sampling_rate)  # (100T-4, 130), one pass
    if len(x) == 0 or not np.isfinite(x).all():
        raise AudioError("openSMILE returned no finite frames")
    return np.ascontiguousarray(x)


def extract_functionals_vector(
    signal: np.ndarray, sampling_rate: int, config: FeatureConfig = FeatureConfig()
) -> np.ndarray:
    """ComParE_2016 functionals of one mono signal: (6373,) float32 (the SVM baseline's input)."""
    signal = _as_opensmile_input(signal, sampling_rate)
    vector = _process(config, "Functionals", signal, sampling_rate)[0]  # (6373,)
    if not np.isfinite(vector).all():
        raise AudioError("openSMILE returned non-finite functionals")
    return vector


def frame_feature_names(config: FeatureConfig = FeatureConfig()) -> list[str]:
    """The 130 column names of ``extract_frames``: 65 LLD names, then their 65 ``*_de`` deltas."""
    return list(_smile(config.feature_set, FRAMES_LEVEL, None).feature_names)
