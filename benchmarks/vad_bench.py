"""Frame F1 and cost of the voice activity detectors of :mod:`sed_model.vad` on the labelled
set of ``vad_set.py`` (issue 33, point 1).

    python benchmarks/vad_bench.py [--files 3] [--seconds 30]

Each detector's one knob (Silero's probability threshold, WebRTC's aggressiveness, the
openSMILE rule's voicing and loudness thresholds) is chosen on the ``dev`` files by pooled
frame F1; the table gives, on the ``test`` files, the frame F1 (speech is the positive class,
10 ms frames, after the same gap filling for every detector) per condition and pooled, and
the cost in seconds of computing per second of audio on one core (torch on one thread). The
openSMILE rule's cost is that of the ComParE_2016 extraction it reads; inside ``predict`` the
model reads those frames anyway, so there it costs nothing extra. A detector whose package is
missing is left out with a note. ``test_vad_bench.py`` runs a smoke version in the benchmark
suite.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vad_set  # noqa: E402

SILERO_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
WEBRTC_MODES = (0, 1, 2, 3)
VOICING = (0.5, 0.55, 0.6, 0.65, 0.7)
LOUDNESS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.4)


@dataclass
class Scored:
    """A detector's raw output on a set of files, how long it took, and how it is decided."""

    name: str
    raw: list  # per file: whatever ``decide`` takes
    seconds: float  # compute time over the set
    decide: Callable  # (raw, knob) -> bool per 10 ms frame
    knobs: tuple
    chosen: object = None
    notes: list[str] = field(default_factory=list)


def f1(predicted: np.ndarray, labels: np.ndarray) -> float:
    true_pos = np.sum(predicted & labels)
    return float(2 * true_pos / max(1, predicted.sum() + labels.sum()))


def _aligned(decisions: np.ndarray, n: int) -> np.ndarray:
    """Decisions cut or padded (with the last one) to ``n`` frames."""
    decisions = np.asarray(decisions, dtype=bool)[:n]
    if len(decisions) < n:
        fill = decisions[-1] if len(decisions) else False
        decisions = np.concatenate([decisions, np.full(n - len(decisions), fill)])
    return decisions


def pooled_f1(scored: Scored, files: list, knob, condition: str | None = None) -> float:
    from sed_model.vad import fill_gaps

    chosen = [(r, f) for r, f in zip(scored.raw, files) if condition in (None, f.condition)]
    predicted = [fill_gaps(_aligned(scored.decide(r, knob), len(f.labels))) for r, f in chosen]
    return f1(np.concatenate(predicted), np.concatenate([f.labels for _, f in chosen]))


def _timed(run: Callable, files: list) -> tuple[list, float]:
    start = time.perf_counter()
    raw = [run(f.signal) for f in files]
    return raw, time.perf_counter() - start


def score_silero(files: list) -> Scored:
    from sed_model.vad import SileroDetector

    detector = SileroDetector()

    def probabilities(signal):
        detector.reset()
        x = signal[:len(signal) // detector.step * detector.step]
        return detector.probabilities(x)

    def decide(p, threshold):  # one probability per 32 ms -> one decision per 10 ms
        centres = (np.arange(len(p) * detector.step // 160) * 160 + 80) // detector.step
        return p[centres] > threshold

    raw, seconds = _timed(probabilities, files)
    return Scored("silero", raw, seconds, decide, SILERO_THRESHOLDS)


def score_webrtc(files: list) -> Scored:
    from sed_model.vad import WebrtcDetector

    detectors = {mode: WebrtcDetector(mode) for mode in WEBRTC_MODES}
    raw, seconds = _timed(lambda s: {m: d.speech(s, 16000) for m, d in detectors.items()}, files)
    return Scored("webrtc", raw, seconds / len(WEBRTC_MODES), lambda r, mode: r[mode],
                  WEBRTC_MODES)


def score_opensmile(files: list) -> Scored:
    from sed_model.features import extract_frames
    from sed_model.vad import FrameRule

    raw, seconds = _timed(lambda s: extract_frames(s, 16000), files)
    knobs = tuple(itertools.product(VOICING, LOUDNESS))
    return Scored("opensmile", raw, seconds, lambda frames, k: FrameRule(*k).speech(frames),
                  knobs)


SCORERS = {"silero": score_silero, "webrtc": score_webrtc, "opensmile": score_opensmile}


def compare(dev: list, test: list, names=tuple(SCORERS)) -> list[tuple[Scored, Scored]]:
    """(dev, test) scores of every available detector, the knob chosen on dev."""
    import torch

    torch.set_num_threads(1)
    results = []
    for name in names:
        try:
            on_dev = SCORERS[name](dev)
        except ImportError as missing:
            print(f"{name}: left out ({missing})", file=sys.stderr)
            continue
        on_dev.chosen = max(on_dev.knobs, key=lambda k: pooled_f1(on_dev, dev, k))
        on_test = SCORERS[name](test)
        on_test.chosen = on_dev.chosen
        results.append((on_dev, on_test))
    return results


def table(results: list[tuple[Scored, Scored]], dev: list, test: list) -> str:
    conditions = list(dict.fromkeys(f.condition for f in test))
    audio = sum(f.seconds for f in test)
    lines = ["| detector (knob chosen on dev) | " + " | ".join(conditions)
             + " | all (F1) | dev (F1) | x real time, 1 core |",
             "|---" * (len(conditions) + 4) + "|"]
    for on_dev, on_test in results:
        per = [pooled_f1(on_test, test, on_test.chosen, c) for c in conditions]
        lines.append(
            f"| {on_test.name} ({on_test.chosen}) | " + " | ".join(f"{v:.3f}" for v in per)
            + f" | **{pooled_f1(on_test, test, on_test.chosen):.3f}**"
            + f" | {pooled_f1(on_dev, dev, on_dev.chosen):.3f}"
            + f" | {on_test.seconds / audio:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=3, help="test files per condition")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each file")
    parser.add_argument("--conditions", nargs="+", default=list(vad_set.CONDITIONS))
    parser.add_argument("--detectors", nargs="+", default=list(SCORERS))
    args = parser.parse_args(argv)
    conditions = tuple(args.conditions)
    dev = vad_set.make_set("dev", 1, args.seconds, conditions)
    test = vad_set.make_set("test", args.files, args.seconds, conditions)
    labelled = np.concatenate([f.labels for f in test])
    print(f"test set: {len(test)} files, {sum(f.seconds for f in test) / 60:.1f} min, "
          f"{labelled.mean():.0%} speech frames; dev set: {len(dev)} files")
    result = table(compare(dev, test, args.detectors), dev, test)
    print(result)
    return result


if __name__ == "__main__":
    main()
