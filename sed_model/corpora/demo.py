"""SYNTHETIC demo corpus: machine-made "emotional speech", generated on first use. Not real speech.

It exists so the main command runs with no data at all, and so the pipeline can be tried end to
end in a few minutes on a laptop. Results on it say nothing about real emotion recognition.

4 speakers x 4 emotions (angry, happy, neutral, sad) x 12 utterances = 192 wav files,
16 kHz mono, 1-2 s each, written once (atomically) to ``cache_root()/demo/v1/`` with a
README.txt that says they are synthetic. Deterministic: every file is a function of
``DEMO_SEED``, the speaker, the emotion and the utterance number only.

Source-filter synthesis of syllable sequences:

- Source: glottal pulse train whose period follows an F0 contour (declination + one accent per
  syllable), with cycle-to-cycle jitter (period) and shimmer (amplitude), shaped by a two-pole
  glottal low-pass, lip radiation (first difference) and a one-pole spectral-tilt filter;
  aspiration noise mixed in for breathiness.
- Filter: four formant resonators per syllable from five vowels (a, e, i, o, u), scaled by the
  speaker's vocal-tract factor; a short fricative noise burst at some syllable onsets.
- Envelope: raised-cosine attack and decay per syllable, gaps between syllables, silence at
  both ends, overall loudness set per emotion.

Speakers differ in base F0 and formant scale (two low, two high voices). Emotions differ as
emotional prosody does: F0 level and range (happy and angry high and wide, sad low and flat),
tempo (syllable rate), loudness, spectral tilt (angry flat/tense, sad steep/soft) and
breathiness (sad breathy), jitter and shimmer. Every utterance draws its own variation around
those means, so the classes overlap a little and the task is not trivial.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import lfilter

from sed_model.corpora.base import Corpus, Utterance, sorted_utterances
from sed_model.errors import CorpusError
from sed_model.paths import cache_root

DEMO_SEED = 2019
DEMO_VERSION = "v1"  # bump when the synthesis changes: the cache folder follows it
SAMPLE_RATE = 16_000
UTTERANCES_PER_CELL = 12
README_MARKER = "SYNTHETIC demo corpus of sed_model"


@dataclass(frozen=True)
class Voice:
    f0_hz: float  # base pitch
    formant_scale: float  # vocal-tract length factor (>1: shorter tract, higher formants)


@dataclass(frozen=True)
class Prosody:
    f0_factor: float  # pitch level relative to the speaker's base
    f0_range_semitones: float  # size of the per-syllable accents
    syllables_per_s: float  # tempo
    gain_db: float  # loudness
    tilt: float  # one-pole low-pass coefficient on the source: larger = steeper spectral tilt
    breathiness: float  # aspiration noise relative to the voiced source
    jitter: float  # relative cycle-to-cycle period perturbation
    shimmer: float  # relative cycle-to-cycle amplitude perturbation


SPEAKERS = {
    "spk1": Voice(f0_hz=105.0, formant_scale=1.00),
    "spk2": Voice(f0_hz=128.0, formant_scale=0.94),
    "spk3": Voice(f0_hz=200.0, formant_scale=1.15),
    "spk4": Voice(f0_hz=232.0, formant_scale=1.09),
}
EMOTIONS = {
    "angry": Prosody(1.25, 4.0, 5.6, 6.0, 0.30, 0.02, 0.015, 0.08),
    "happy": Prosody(1.35, 6.5, 5.0, 3.0, 0.55, 0.05, 0.010, 0.05),
    "neutral": Prosody(1.00, 2.0, 4.0, 0.0, 0.70, 0.08, 0.008, 0.04),
    "sad": Prosody(0.88, 0.8, 2.8, -7.0, 0.88, 0.30, 0.020, 0.10),
}
VOWEL_FORMANTS_HZ = np.array(  # F1..F4 of an adult male voice
    [
        [730, 1090, 2440, 3400],  # a
        [530, 1840, 2480, 3500],  # e
        [270, 2290, 3010, 3700],  # i
        [570, 840, 2410, 3300],  # o
        [300, 870, 2240, 3300],  # u
    ],
    dtype=np.float64,
)
FORMANT_BANDWIDTHS_HZ = np.array([70.0, 100.0, 140.0, 180.0])


def _resonator(frequency: float, bandwidth: float) -> tuple[np.ndarray, np.ndarray]:
    """Second-order all-pole resonator with unit gain at 0 Hz."""
    r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
    a = np.array([1.0, -2.0 * r * np.cos(2.0 * np.pi * frequency / SAMPLE_RATE), r * r])
    return np.array([a.sum()]), a


def _raised_cosine_envelope(n: int, attack: int, decay: int) -> np.ndarray:
    envelope = np.ones(n)
    attack, decay = min(attack, n // 2), min(decay, n // 2)
    envelope[:attack] = 0.5 - 0.5 * np.cos(np.pi * np.arange(attack) / max(attack, 1))
    envelope[n - decay :] = 0.5 + 0.5 * np.cos(np.pi * np.arange(decay) / max(decay, 1))
    return envelope


def _syllables(
    n: int, lead: int, tail: int, rate: float, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """(start, voiced length) in samples, laid out between the leading and trailing silence."""
    sr = SAMPLE_RATE
    syllables = []
    position = lead
    while True:
        length = int(sr / rate * rng.uniform(0.75, 1.25))
        if position + length > n - tail:
            break
        voiced = int(length * rng.uniform(0.6, 0.8))
        syllables.append((position, voiced))
        pause = int(rng.uniform(0.1, 0.25) * sr) if rng.random() < 0.12 else 0  # rare pause
        position += length + pause
    if not syllables:
        syllables.append((lead, n - lead - tail))
    return syllables


def synthesize(voice: Voice, prosody: Prosody, rng: np.random.Generator) -> np.ndarray:
    """One synthetic utterance, float32 in [-1, 1], 1-2 s at 16 kHz."""
    sr = SAMPLE_RATE
    # per-utterance variation around the emotion's means
    f0 = voice.f0_hz * prosody.f0_factor * np.exp(rng.normal(0.0, 0.05))
    rate = prosody.syllables_per_s * np.exp(rng.normal(0.0, 0.08))
    range_st = prosody.f0_range_semitones * np.exp(rng.normal(0.0, 0.15))
    gain_db = prosody.gain_db + rng.normal(0.0, 1.0)
    n = int(rng.uniform(1.0, 2.0) * sr)
    lead, tail = int(rng.uniform(0.08, 0.18) * sr), int(rng.uniform(0.08, 0.18) * sr)

    syllables = _syllables(n, lead, tail, rate, rng)

    # F0 contour in Hz per sample: declination (+8% -> -8%) and one accent bump per syllable
    t = np.arange(n) / n
    semitones = np.interp(t, [0.0, 1.0], [1.3, -1.3])
    for start, voiced in syllables:
        accent = range_st * rng.uniform(-0.3, 1.0)
        bump = np.sin(np.pi * np.arange(voiced) / voiced) ** 2
        semitones[start : start + voiced] += accent * bump
    f0_contour = f0 * 2.0 ** (semitones / 12.0)

    # glottal pulse train with jitter and shimmer
    pulses = np.zeros(n)
    time = 0.0
    while time < n:
        index = int(time)
        pulses[index] = 1.0 + prosody.shimmer * rng.standard_normal()
        time += sr / f0_contour[index] * (1.0 + prosody.jitter * rng.standard_normal())
    glottal_pole = 0.97
    source = lfilter(
        [1.0], [1.0, -2.0 * glottal_pole, glottal_pole**2], pulses
    )  # glottal pulse shape
    source = np.diff(source, prepend=0.0)  # lip radiation
    source = lfilter([1.0 - prosody.tilt], [1.0, -prosody.tilt], source)  # spectral tilt
    source /= np.sqrt(np.mean(source**2)) + 1e-12
    aspiration = lfilter([1.0, -0.9], [1.0], rng.standard_normal(n))  # breath noise, high-passed
    source += prosody.breathiness * 3.0 * aspiration / (np.sqrt(np.mean(aspiration**2)) + 1e-12)

    # vocal tract per syllable, syllable envelopes, fricative onsets
    speech = np.zeros(n)
    breathy_bandwidth = 1.0 + prosody.breathiness
    for start, voiced in syllables:
        formants = VOWEL_FORMANTS_HZ[rng.integers(len(VOWEL_FORMANTS_HZ))] * voice.formant_scale
        formants = formants * np.exp(rng.normal(0.0, 0.03, size=4))
        segment = source[start : start + voiced]
        for frequency, bandwidth in zip(formants, FORMANT_BANDWIDTHS_HZ * breathy_bandwidth):
            segment = lfilter(*_resonator(frequency, bandwidth), segment)
        stress = rng.uniform(0.6, 1.0)
        envelope = _raised_cosine_envelope(voiced, attack=int(0.02 * sr), decay=int(0.045 * sr))
        speech[start : start + voiced] += (
            stress * envelope * segment / (np.sqrt(np.mean(segment**2)) + 1e-12)
        )
        if rng.random() < 0.5:  # fricative before the vowel
            burst = min(int(rng.uniform(0.03, 0.06) * sr), start)
            noise = lfilter([1.0, -1.0], [1.0], rng.standard_normal(burst))  # bright noise
            fricative_level = 0.25 * stress * (1.0 + 0.1 * prosody.gain_db / 6.0)
            speech[start - burst : start] += (
                fricative_level * _raised_cosine_envelope(burst, burst // 3, burst // 3) * noise
            )

    # loudness, a faint noise floor, no clipping
    speech *= 0.05 * 10.0 ** (gain_db / 20.0) / (np.sqrt(np.mean(speech**2)) + 1e-12)
    speech += 10.0 ** (-65.0 / 20.0) * rng.standard_normal(n)
    peak = np.max(np.abs(speech))
    if peak > 0.99:
        speech *= 0.99 / peak
    return speech.astype(np.float32)


def _file_name(speaker: str, emotion: str, number: int) -> str:
    return f"{speaker}_{emotion}_{number:02d}.wav"


def expected_files(utterances_per_cell: int = UTTERANCES_PER_CELL) -> list[tuple[str, str, str]]:
    """(file name, speaker, emotion) of every file of the demo corpus."""
    return [
        (_file_name(speaker, emotion, number), speaker, emotion)
        for speaker in SPEAKERS
        for emotion in EMOTIONS
        for number in range(utterances_per_cell)
    ]


def _readme(seed: int, utterances_per_cell: int) -> str:
    return (
        f"{README_MARKER} ({DEMO_VERSION}, seed {seed}).\n\n"
        "These files are machine-made by source-filter synthesis (glottal pulses with jitter and\n"
        "shimmer, formant filters, syllable envelopes). They are NOT recordings of people and NOT\n"
        "real emotional speech; results on them say nothing about emotion recognition.\n"
        f"{len(SPEAKERS)} synthetic speakers x {len(EMOTIONS)} emotions ({', '.join(EMOTIONS)}) x "
        f"{utterances_per_cell} utterances, {SAMPLE_RATE} Hz mono 16-bit.\n"
        "File names: <speaker>_<emotion>_<number>.wav. Generated by sed_model.corpora.demo;\n"
        "delete this folder to have it generated again.\n"
    )


def generate(
    root: Path, seed: int = DEMO_SEED, utterances_per_cell: int = UTTERANCES_PER_CELL
) -> None:
    """Write the demo corpus to ``root`` atomically: into a temporary sibling folder, then
    renamed. A folder already complete (e.g. written meanwhile by another process) is kept."""
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    temporary = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex}"
    temporary.mkdir()
    try:
        for speaker_index, speaker in enumerate(SPEAKERS):
            for emotion_index, emotion in enumerate(EMOTIONS):
                for number in range(utterances_per_cell):
                    rng = np.random.default_rng([seed, speaker_index, emotion_index, number])
                    signal = synthesize(SPEAKERS[speaker], EMOTIONS[emotion], rng)
                    soundfile.write(
                        temporary / _file_name(speaker, emotion, number),
                        signal,
                        SAMPLE_RATE,
                        subtype="PCM_16",
                    )
        (temporary / "README.txt").write_text(_readme(seed, utterances_per_cell), encoding="utf-8")
        if root.exists():  # incomplete earlier attempt: checked to be ours by the caller
            shutil.rmtree(root)
        try:
            os.rename(temporary, root)
        except OSError:
            if not _is_complete(root, utterances_per_cell):
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _is_complete(root: Path, utterances_per_cell: int) -> bool:
    return (root / "README.txt").is_file() and all(
        (root / name).is_file() for name, _, _ in expected_files(utterances_per_cell)
    )


class Demo(Corpus):
    name = "demo"
    title = "demo (synthetic)"
    classes = tuple(EMOTIONS)
    default_protocol = "loso"
    data_hint = (
        "nothing (generated under the cache root), or an empty/new folder to generate the "
        "synthetic demo corpus in"
    )

    def __init__(self, seed: int = DEMO_SEED, utterances_per_cell: int = UTTERANCES_PER_CELL):
        self.seed = seed
        self.utterances_per_cell = utterances_per_cell

    def default_root(self) -> Path:
        return cache_root() / "demo" / DEMO_VERSION

    def utterances(self, data_dir: Path | None) -> list[Utterance]:
        """Generate the corpus on first use (in ``data_dir`` or ``cache_root()/demo/v1``), then
        list it."""
        root = Path(data_dir).expanduser() if data_dir is not None else self.default_root()
        if not _is_complete(root, self.utterances_per_cell):
            ours = root.is_dir() and (
                not any(root.iterdir())
                or (root / "README.txt").is_file()
                and (root / "README.txt")
                .read_text(encoding="utf-8", errors="replace")
                .startswith(README_MARKER)
            )
            if root.exists() and not ours:
                raise CorpusError(
                    f"folder {root} exists but does not hold the synthetic demo corpus; "
                    f"expected {self.data_hint}"
                )
            generate(root, self.seed, self.utterances_per_cell)
        return sorted_utterances(
            Utterance(root / name, emotion, speaker)
            for name, speaker, emotion in expected_files(self.utterances_per_cell)
        )


CORPUS = Demo()
