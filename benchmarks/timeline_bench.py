"""One-pass timelines against per-window extraction, and against openSMILE's own pass.

    python benchmarks/timeline_bench.py [--minutes 10] [--window 2] [--hop 1] [--rounds 3]

Makes a recording of real speech (EmoDB clips of ../shared/data joined one after another,
at their 22.05 kHz; with --ravdess, RAVDESS clips) in a temporary folder and measures, in one
run, side by side:

- ``opensmile``: openSMILE's own single pass over the file
  (``opensmile.Smile(ComParE_2016, LowLevelDescriptors).process_file``);
- ``timeline``: ``EmotionModel.predict(file, window, hop)`` with the bundled ``emodb`` model
  (decoding, one-pass frames, model), the model loaded beforehand;
- ``per-window``: the same timeline with every window extracted on its own (each second
  extracted window/hop times), the way timelines were computed before the one-pass frames.

Each is timed ``--rounds`` times (median; round-robin so that the load of other processes
hits all alike). Then the two timelines are compared window by window: the largest absolute
feature difference (raw, and in units of the model's normalisation std) and the share of
windows given the same label, and, for EmoDB, each timeline's accuracy against the label of
the clip under each window's centre.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from itertools import cycle
from pathlib import Path

import numpy as np
import soundfile

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


EMODB_LABELS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness",
                "T": "sadness", "N": "neutral"}  # the emotion letter of EmoDB's file names


def make_recording(path: Path, seconds: float, corpus: str = "emodb") -> Path:
    """``seconds`` of the corpus' clips joined end to end (sorted names, cycled), as a wav;
    the clips' spans are in ``clip_spans(path)``."""
    if corpus == "emodb":
        clips = sorted((SHARED_DATA / "emodb").glob("*.wav"))
    else:
        clips = sorted((SHARED_DATA / "ravdess").glob("Actor_*/*.wav"))
    if not clips:
        raise FileNotFoundError(f"no {corpus} clips under {SHARED_DATA}")
    parts, total, rate, spans = [], 0, None, []
    for clip in cycle(clips):
        signal, clip_rate = soundfile.read(clip, dtype="float32", always_2d=True)
        rate = rate or clip_rate
        if clip_rate != rate:
            continue
        parts.append(signal.mean(axis=1))
        label = EMODB_LABELS.get(clip.name[5]) if corpus == "emodb" else None
        spans.append((total / rate, (total + len(parts[-1])) / rate, label))
        total += len(parts[-1])
        if total >= seconds * rate:
            break
    soundfile.write(path, np.concatenate(parts)[:int(seconds * rate)], rate, subtype="PCM_16")
    path.with_suffix(".spans.json").write_text(json.dumps(spans))
    return path


def clip_spans(path: Path) -> list[tuple[float, float, str | None]]:
    """(start, end, label) in seconds of each clip of a recording made by make_recording."""
    return [tuple(span) for span in json.loads(path.with_suffix(".spans.json").read_text())]


def window_truth(path: Path, windows: list[tuple[int, int]], rate: int) -> list[str | None]:
    """The label of the clip under each window's centre."""
    spans = clip_spans(path)
    starts = np.array([s for s, _, _ in spans])
    centres = [(start + n / 2) / rate for start, n in windows]
    return [spans[int(np.searchsorted(starts, c, side="right")) - 1][2] for c in centres]


@dataclass
class Comparison:
    windows: int
    agreement: float  # share of windows with the same label
    max_difference: float  # largest |feature difference|
    max_difference_std: float  # the same in units of the model's normalisation std
    max_probability_difference: float
    accuracy_per_window: float | None  # against the clip under each window's centre
    accuracy_one_pass: float | None


def per_window_frames(path: Path, window: float,
                      hop: float) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Every window of ``path`` extracted on its own (:func:`sed_model.windows.iter_windows`),
    and the windows' (first sample, samples)."""
    from sed_model.audio import open_audio
    from sed_model.features import extract_frames
    from sed_model.windows import iter_windows

    stream = open_audio(path)
    windows = list(iter_windows(stream.blocks(), stream.sample_rate, window, hop))
    return ([extract_frames(samples, stream.sample_rate) for _, samples in windows],
            [(start, len(samples)) for start, samples in windows])


def one_pass_frames(path: Path, window: float, hop: float) -> list[np.ndarray]:
    """Every window's frames cut from the one-pass extraction."""
    from sed_model.audio import open_audio
    from sed_model.features import extract_frames
    from sed_model.windows import iter_frame_windows

    stream = open_audio(path)
    rate = stream.sample_rate
    return [frames for _, _, frames in iter_frame_windows(
        stream.blocks(), rate, window, hop, lambda s: extract_frames(s, rate))]


def compare(model, path: Path, window: float, hop: float) -> Comparison:
    """One-pass against per-window frames of the same windows, through ``model``."""
    from sed_model.audio import open_audio

    (old, spans), new = per_window_frames(path, window, hop), one_pass_frames(path, window, hop)
    assert [len(x) for x in old] == [len(x) for x in new], "window frame counts differ"
    differences = [np.abs(a - b).max(axis=0) for a, b in zip(old, new)]
    std = model.members[0].normalizer.std
    p_old, p_new = model._probabilities(old, None), model._probabilities(new, None)
    truth = window_truth(path, spans, open_audio(path).sample_rate)
    accuracy = [None, None]
    if all(truth):
        classes = np.array(model.class_names)
        accuracy = [float(np.mean(classes[p.argmax(1)] == np.array(truth)))
                    for p in (p_old, p_new)]
    return Comparison(len(old), float(np.mean(p_old.argmax(1) == p_new.argmax(1))),
                      float(np.max(differences)), float(np.max(np.array(differences) / std)),
                      float(np.abs(p_old - p_new).max()), *accuracy)


def per_window_timeline(model, path: Path, window: float, hop: float) -> np.ndarray:
    return model._probabilities(per_window_frames(path, window, hop)[0], None)


def opensmile_pass(path: Path) -> None:
    import opensmile

    opensmile.Smile(opensmile.FeatureSet.ComParE_2016,
                    opensmile.FeatureLevel.LowLevelDescriptors).process_file(str(path))


def timed(cases: dict, rounds: int) -> dict[str, tuple[float, float]]:
    """Median wall and CPU seconds (all threads of this process) of each case, the rounds
    interleaved."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, run in cases.items():
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {name: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t))
            for name, t in times.items()}


def arguments_and_model(doc: str, minutes: float, add_options) -> tuple:
    """The command line (--minutes, --window, --hop and ``add_options(parser)``'s) and the
    bundled ``emodb`` model on the CPU, torch on one thread."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=minutes)
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--hop", type=float, default=1.0)
    add_options(parser)
    args = parser.parse_args()
    import torch

    import sed_model

    torch.set_num_threads(1)
    return args, sed_model.load_model("emodb", device="cpu")


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ravdess", action="store_true",
                        help="RAVDESS clips instead of EmoDB's")


def main() -> None:
    args, model = arguments_and_model(__doc__, 10.0, _options)
    with tempfile.TemporaryDirectory() as folder:
        corpus = "ravdess" if args.ravdess else "emodb"
        path = make_recording(Path(folder) / "recording.wav", args.minutes * 60, corpus)
        model.predict(path, window=args.window, hop=args.hop)  # warm-up (openSMILE set-up)
        cases = {
            "opensmile": lambda: opensmile_pass(path),
            "timeline": lambda: model.predict(path, window=args.window, hop=args.hop),
            "per-window": lambda: per_window_timeline(model, path, args.window, args.hop),
        }
        seconds = timed(cases, args.rounds)
        result = compare(model, path, args.window, args.hop)
    print(f"{corpus} recording of {args.minutes:g} min, window {args.window:g} s, hop "
          f"{args.hop:g} s, median of {args.rounds} rounds, torch threads 1")
    (wall0, cpu0) = seconds["opensmile"]
    for name, (wall, cpu) in seconds.items():
        print(f"  {name:11s} {wall:7.2f} s  {wall / wall0:.2f}x openSMILE's pass   "
              f"(CPU {cpu:7.2f} s, {cpu / cpu0:.2f}x)")
    print(f"  windows {result.windows}; labels agree {result.agreement:.2%}; largest feature "
          f"difference {result.max_difference:.3g} ({result.max_difference_std:.3g} std); "
          f"largest probability difference {result.max_probability_difference:.3f}")
    if result.accuracy_one_pass is not None:
        print(f"  accuracy against the clip under each window's centre: per-window "
              f"{result.accuracy_per_window:.2%}, one-pass {result.accuracy_one_pass:.2%} "
              "(the bundled model was trained on these EmoDB clips)")


if __name__ == "__main__":
    main()
