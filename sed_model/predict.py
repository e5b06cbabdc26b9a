"""Classify audio files with the bundled model, a run folder's model or a checkpoint.

    python -m sed_model.predict a.wav b.mp3                       # bundled model "emodb"
    python -m sed_model.predict --checkpoint runs/X a.wav         # the run's model.pt
    python -m sed_model.predict --checkpoint runs/X --ensemble a.wav   # its fold models
    python -m sed_model.predict --checkpoint runs/S a.wav   # train --seeds 3: the 3 models
    python -m sed_model.predict long.m4a --window 2 --hop 1 --csv segments.csv \
        --plot-timeline timeline.png
    python -m sed_model.predict --checkpoint best.pt a.wav --plot-attention attention.png
    python -m sed_model.predict --live --window 2 --hop 1       # the microphone, as it speaks
    python -m sed_model.predict --checkpoint model.onnx a.wav   # exported by sed_model.export

A thin layer over :meth:`sed_model.api.EmotionModel.predict` (see :mod:`sed_model.api` for
what is loaded, how new recordings are normalised and where the windows fall). Every file is
decoded (wav, flac, ogg, mp3, m4a, the audio track of video files; any rate, channels mixed
down), turned into ComParE_2016 frames, normalised and classified. A file that cannot be
read gives one ``error: ...`` line naming it and why (NaN or infinite samples included);
the other files are still classified and the exit status is then 2.

Speech activity (``--vad``, default ``opensmile``; see :mod:`sed_model.vad`): a file or a
window without speech gets no emotion (label ``null`` in JSON, empty in CSV, ``no speech`` in
text); every file and window says its share of speech. Float samples far outside [-1, 1],
clipping and no speech found are said per file in a ``warning: ...`` line and in the JSON
(``clipping``, ``speech``, ``warnings``).

``--plot-attention`` draws, for every file, the attention over its waveform: the
time-attention weight of every 10 ms frame (``time`` variant), or, for the ``feature``
variant, each step's attention *focus* (1 - normalised entropy of the softmax over features;
the weights of a step always sum to 1, so their mass over time is flat) and a heatmap of the
top layer's feature weights. The ``lstm`` and ``general`` variants have no attention to draw.
``--plot-timeline`` draws the class probabilities of the windows under the waveform.

``--live`` classifies the microphone (``sounddevice``, the ``[live]`` extra) with
:meth:`sed_model.api.EmotionModel.stream`: one line per window as soon as it is complete
(``--json``: one JSON object per line), until Ctrl-C or ``--seconds``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from . import pretrained
from .api import DEFAULT_VAD, Prediction, load_model
from .cli import non_negative_int, positive_float, run_main
from .vad import NAMES as VAD_NAMES
from .windows import check_window


def predict_files(
    checkpoint_path: str | Path,
    files: list[str | Path],
    *,
    device: str = "auto",
    backend: str | None = None,
    with_attention: bool = False,
) -> list[dict]:
    """Label and class probabilities of every file, as dicts (see :func:`sed_model.load_model`
    for the object API). With ``with_attention`` also ``signal``, ``sample_rate``,
    ``variant`` and ``weights`` (one numpy array per LSTM layer)."""
    model = load_model(checkpoint_path, device=device, backend=backend)
    results = model.predict(files, with_attention=with_attention)
    return [{**r.to_dict(), **(r.attention or {})} for r in results]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sed_model.predict",
        description="Classify audio files (wav, flac, ogg, mp3, m4a, or the audio track of "
                    "video files; any sample rate, channels mixed down), whole or as a timeline "
                    "of overlapping windows. Each file is normalised as a speaker of its own "
                    "(see --same-speaker). Without --checkpoint the bundled pretrained model "
                    f"{pretrained.DEFAULT!r} is used.",
    )
    parser.add_argument("files", nargs="*", type=Path, metavar="FILE",
                        help="audio or video files to classify (none with --live)")
    parser.add_argument("--checkpoint", default=None, metavar="NAME|RUN_DIR|FILE.pt",
                        help="a bundled model name (" + ", ".join(pretrained.BUNDLED) + "), a "
                             "run folder written by sed_model.train (its model.pt, trained on "
                             "all speakers; of a --seeds N folder, the N seeds' model.pt "
                             "averaged) or a checkpoint file (model.pt, fold-XX/best.pt); "
                             f"default: the bundled {pretrained.DEFAULT!r}")
    parser.add_argument("--ensemble", action="store_true",
                        help="with a run folder: average the class probabilities of its fold "
                             "models (of every seed's, in a --seeds N folder) instead of using "
                             "its model.pt")
    parser.add_argument("--window", type=positive_float, default=None, metavar="SECONDS",
                        help="classify overlapping windows of this length (a timeline); the "
                             "file's result is the mean of the windows' probabilities. Use "
                             "about the length of the training utterances (2 for emodb)")
    parser.add_argument("--hop", type=positive_float, default=None, metavar="SECONDS",
                        help="step between window starts (default: half the window)")
    parser.add_argument("--same-speaker", action="store_true",
                        help="all files are one speaker: a speaker-normalised model (--normalize "
                             "speaker) z-scores them with their pooled statistics instead of "
                             "each file (or each recording, with --window) with its own; a "
                             "global model always uses its training statistics")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of {file, label, probabilities, duration} (and "
                             "segments and shares with --window; error for a file that failed)")
    parser.add_argument("--csv", type=Path, default=None, metavar="FILE",
                        help="write one row per segment (per file without --window): file, "
                             "start, end, label, one probability column per class")
    parser.add_argument("--plot-timeline", type=Path, default=None, metavar="OUT.png",
                        help="with --window: draw each file's waveform and the class "
                             "probabilities of its windows over time into this PNG")
    parser.add_argument("--plot-attention", type=Path, default=None, metavar="OUT.png",
                        help="draw the attention over each file's waveform into this PNG (time "
                             "variant: weight per 10 ms frame; feature variant: per-step focus "
                             "= 1 - normalised entropy over features, plus a heatmap of the top "
                             "layer's feature weights); lstm/general have no attention")
    parser.add_argument("--vad", choices=(*VAD_NAMES, "none"), default=DEFAULT_VAD,
                        help="speech detector: windows and files without speech get no "
                             f"emotion (default {DEFAULT_VAD}: a rule on the openSMILE frames "
                             "the model reads, no extra cost; silero needs the [vad] extra "
                             "and is the better one with music; webrtc the [webrtc] extra; "
                             "none: classify everything); measured in benchmarks/RESULTS.md")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar for windowed files")
    parser.add_argument("--live", action="store_true",
                        help="classify the microphone as it records (needs the [live] extra: "
                             "sounddevice): one line per window of --window seconds (default "
                             "2) every --hop, printed as soon as the window is complete")
    parser.add_argument("--seconds", type=positive_float, default=None,
                        help="with --live: stop after this much audio (default: at Ctrl-C)")
    parser.add_argument("--input-device", default=None, metavar="NAME|INDEX",
                        help="with --live: the sounddevice input device (default: the "
                             "system's)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run the model (default auto: cuda if available)")
    parser.add_argument("--threads", type=non_negative_int, default=1, metavar="N",
                        help="torch threads for the model (default 1: the model is small, and "
                             "on a busy machine a second thread waiting for a core made one "
                             "2-second file take seconds instead of 0.02 s; 0: torch's default)")
    parser.add_argument("--backend", default=None,
                        help="attention kernel backend (default: the one saved in the checkpoint)")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; user errors print ``error: ...`` and exit with status 2."""
    run_main(_predict_command, argv)


def _predict_command(argv: list[str] | None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.plot_timeline is not None and args.window is None:
        parser.error("--plot-timeline needs --window SECONDS")
    if bool(args.files) == args.live:
        parser.error("give the files to classify, or --live for the microphone (not both)")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    name = args.checkpoint
    if name is None:
        name = pretrained.DEFAULT
        print(f"using the {pretrained.describe(name)}; --checkpoint picks another model",
              file=sys.stderr)
    model = load_model(name, ensemble=args.ensemble, device=args.device, backend=args.backend)
    if args.live:
        return _live(model, args)
    results = model.predict(args.files, window=args.window, hop=args.hop,
                            same_speaker=args.same_speaker, errors="report",
                            progress=not args.no_progress and not args.json,
                            with_attention=args.plot_attention is not None,
                            with_waveform=args.plot_timeline is not None, vad=args.vad)
    failed = [r for r in results if r.error is not None]
    good = [r for r in results if r.error is None]
    for r in failed:
        print(f"error: {r.error}", file=sys.stderr)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        window, hop = check_window(args.window, args.hop)
        for r in good:
            print(format_prediction(r, window, hop))
    _write_outputs(args, good, model.class_names)
    if failed:
        sys.exit(2)


def _live(model, args: argparse.Namespace) -> None:
    """--live: the microphone's segments, one line each as soon as it is complete."""
    from .live import LIVE_RATE, LIVE_SEGMENT_SECONDS, microphone_chunks

    device = args.input_device
    if device is not None and device.isdigit():
        device = int(device)
    chunks = microphone_chunks(LIVE_RATE, args.seconds, device)
    window = 2.0 if args.window is None else args.window
    print(f"listening at {LIVE_RATE} Hz: windows of {window:g} s (Ctrl-C stops)",
          file=sys.stderr)
    try:
        for s in model.stream(chunks, LIVE_RATE, window=window, hop=args.hop,
                              segment=LIVE_SEGMENT_SECONDS, name="microphone", vad=args.vad):
            if args.json:
                print(json.dumps(s.to_dict()), flush=True)
            else:
                print(format_segment(s), flush=True)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)


def _write_outputs(args: argparse.Namespace, results: list[Prediction], classes) -> None:
    """--csv, --plot-timeline and --plot-attention files, and a ``wrote`` line for each."""
    written = []
    if args.csv is not None:
        write_csv(args.csv, results, classes)
        written.append(args.csv)
    if args.plot_timeline is not None and results:
        from .plots import plot_timeline  # matplotlib only when plotting

        plot_timeline(results, args.plot_timeline)
        written.append(args.plot_timeline)
    if args.plot_attention is not None and results:
        from .plots import plot_attention

        plot_attention([{"name": Path(r.file).name, "label": r.label, **r.attention}
                        for r in results], args.plot_attention)
        written.append(args.plot_attention)
    for path in written:
        print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)


def format_prediction(result: Prediction, window: float | None, hop: float | None) -> str:
    """The file's label and ranked probabilities (``no speech`` without a label) and its share
    of speech; with windows one line per segment."""
    ranked = sorted(result.probabilities.items(), key=lambda kv: -kv[1])
    line = f"{result.file}: " + (
        "no speech" if result.label is None
        else f"{result.label}  ({', '.join(f'{c} {p:.2f}' for c, p in ranked)})")
    if result.speech is not None:
        line += f"  speech {result.speech:.0%}"
    if result.segments is None:
        return line
    spoken = sum(s.label is not None for s in result.segments)
    lines = [line + f"  mean of {spoken} windows with speech of {len(result.segments)} windows "
             f"of {window:g} s every {hop:g} s over {result.duration:.1f} s"]
    for s in result.segments:
        lines.append("  " + format_segment(s))
    return "\n".join(lines)


def format_segment(segment) -> str:
    """``start-end s  label probability`` of one window (``no speech`` without a label)."""
    said = ("no speech" if segment.label is None
            else f"{segment.label} {segment.probabilities[segment.label]:.2f}")
    return f"{segment.start:8.2f}-{segment.end:8.2f} s  {said}"


def write_csv(path: Path, results: list[Prediction], classes) -> None:
    """One row per segment (per file without windows): label (empty without speech), share of
    speech (empty without a detector), probabilities in class order (empty without speech)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "start", "end", "label", "speech", *classes])
        for r in results:
            rows = r.segments or [None]
            for s in rows:
                start, end = (0.0, r.duration) if s is None else (s.start, s.end)
                chosen = r if s is None else s
                probabilities = chosen.probabilities
                writer.writerow([r.file, f"{start:.3f}", f"{end:.3f}", chosen.label or "",
                                 "" if chosen.speech is None else f"{chosen.speech:.4f}",
                                 *(f"{probabilities[c]:.6f}" if probabilities else ""
                                   for c in classes)])


if __name__ == "__main__":
    main()
