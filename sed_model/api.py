"""The Python API: load a trained model and classify audio files, whole or as timelines.

    import sed_model

    model = sed_model.load_model("emodb")            # bundled; or a run folder, or a .pt file
    for p in model.predict(["a.wav", "long.mp3"], window=2.0, hop=1.0):
        print(p.file, p.label, p.probabilities)      # whole file: mean over the windows
        for s in p.segments:                         # one per window
            print(s.start, s.end, s.label, s.probabilities)

``python -m sed_model.predict`` is a thin command-line layer over :meth:`EmotionModel.predict`.

What ``load_model`` accepts (:func:`resolve_checkpoints`):

- a bundled model's name (:mod:`sed_model.pretrained`, e.g. ``emodb``);
- a run folder written by ``sed_model.train``: its ``model.pt``, the deployment model trained
  on all speakers after the cross-validation; with ``ensemble=True`` instead the fold models
  (each fold's ``selected.pt`` with validation speakers, else its ``last.pt``, the headline
  model of the fold), whose class probabilities are averaged;
- the folder of ``sed_model.train --seeds N``: the N seeds' deployment models
  (``seed-K/model.pt``) as one ensemble; with ``ensemble=True`` every seed's fold models;
- a checkpoint file (``model.pt``, ``fold-XX/best.pt``, ...).

An ensemble of N members costs N forward passes per window or file; the features are
extracted once.

Normalisation of new recordings. Every file is a speaker nobody has seen, normalised through
:meth:`sed_model.features.Normalizer.new_speaker`: a ``global`` model uses its training
statistics; a ``speaker`` model uses the statistics of the file itself (for a windowed file,
those of the whole recording, accumulated in a first pass over it in 60-second chunks, see
:mod:`sed_model.windows`). ``same_speaker=True`` says all the files given are one speaker:
their frames are pooled into one set of statistics.

Windows (``window``, ``hop`` in seconds; hop defaults to half the window): each window is one
model input, with as many frames as a training utterance of its length; the recording's
frames are extracted once and cut into the windows (:class:`sed_model.windows.FrameWindows`,
which also says where the windows fall). The audio is decoded in blocks, so an hour-long
file needs memory for a window and an extraction segment, not for the hour.
:meth:`EmotionModel.stream` gives the same segments for audio arriving in chunks.

Batches. Windows, and whole files (:data:`FILE_BATCH` decoded at a time), go through the
model in padded batches of similar lengths with their lengths; the LSTM layers are
unidirectional and the attention reads only valid steps, so a padded row gives its own
result. An ONNX file written by :mod:`sed_model.export` loads as an :class:`OnnxMember`.

openSMILE extraction and one model input, as a training utterance was; see
:mod:`sed_model.windows` for where the windows fall. The audio is decoded in blocks, so an
hour-long file needs memory for a window and a block, not for the hour.

Speech activity (``vad``, see :mod:`sed_model.vad`): a window, or a whole file, in which the
detector finds no speech gets no emotion (``label`` None, no probabilities) and is not run
through the model; every Segment and Prediction says its share of speech (``speech``), and a
file's probabilities are the mean over its windows with speech. ``vad="none"`` classifies
everything. Each file also reports its clipping (share of samples at full scale) and, as
``warnings`` (also issued as :class:`~sed_model.errors.DataWarning`), float samples far
outside [-1, 1], clipping and no speech found.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import pretrained
from .audio import SignalReport, open_audio
from .checkpoint import (
    edge_quiet_from_checkpoint,
    load_checkpoint,
    model_from_checkpoint,
    normalizer_from_checkpoint,
)
from .errors import AudioError, DataWarning, SedError
from .features import Normalizer, extract_frames, load_audio
from .model import VARIANTS_WITH_ATTENTION
from .runtime import check_backend, resolve_device
from .seeds import seed_runs
from .vad import FrameRule, SignalDetector, SpeechTrack, make_detector, speech_span
from .windows import (
    SEGMENT_SECONDS,
    Envelope,
    FrameWindows,
    RunningStats,
    check_window,
    count_windows,
    iter_frame_windows,
)

MODEL_FILE = "model.pt"  # the deployment model of a run folder
STATS_CHUNK_SECONDS = 60.0  # chunk length of the statistics pass over a windowed recording
WINDOW_BATCH = 16  # windows per model call
FILE_BATCH = 16  # whole files decoded at a time and classified together
FILE_BATCH_FRAMES = 60_000  # ... unless they reach 10 minutes of frames first
LONG_FILE_SECONDS = 60.0  # a whole file longer than this gets a hint about --window
DEFAULT_VAD = "opensmile"  # the speech detector predict uses unless told (sed_model.vad)


@dataclass
class Segment:
    """One window of a recording: ``start``/``end`` in seconds, the most likely class and
    every class's probability; ``speech``: its share of speech frames (None without a speech
    detector). A window without speech has ``label`` None and no probabilities."""

    start: float
    end: float
    label: str | None
    probabilities: dict[str, float]
    speech: float | None = None

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "label": self.label,
                "probabilities": self.probabilities, "speech": self.speech}


@dataclass
class Prediction:
    """The result for one file.

    ``label`` and ``probabilities`` are the whole file's: its own prediction, or with windows
    the mean of the probabilities of the windows with speech (and ``segments`` lists the
    windows). No speech found: ``label`` None, no probabilities. ``speech``: the file's share
    of speech frames (None without a speech detector); ``clipping``: its share of samples at
    full scale; ``warnings``: one line per problem with the audio. A file that could not be
    classified (``errors="report"``) has ``error`` (one line naming the file and why) and no
    label. ``attention`` and ``envelope`` are for the plots only.
    """

    file: str
    label: str | None
    probabilities: dict[str, float]
    duration: float | None = None
    segments: list[Segment] | None = None
    error: str | None = None
    speech: float | None = None
    clipping: float | None = None
    warnings: list[str] = field(default_factory=list)
    attention: dict | None = field(default=None, repr=False, compare=False)
    envelope: Envelope | None = field(default=None, repr=False, compare=False)

    @property
    def shares(self) -> dict[str, float] | None:
        """With windows: the fraction of the windows with speech given each class (all classes
        listed; empty when no window has speech)."""
        if self.segments is None:
            return None
        labels = [s.label for s in self.segments if s.label is not None]
        return {c: labels.count(c) / len(labels) for c in self.probabilities}

    def to_dict(self) -> dict:
        """JSON-ready: file, label, probabilities, duration (and segments, shares; or error)."""
        if self.error is not None:
            return {"file": self.file, "error": self.error}
        d = {"file": self.file, "label": self.label, "probabilities": self.probabilities,
             "duration": self.duration, "speech": self.speech, "clipping": self.clipping,
             "warnings": self.warnings}
        if self.segments is not None:
            d.update(segments=[s.to_dict() for s in self.segments], shares=self.shares)
        return d


@dataclass
class Member:
    """One model of an :class:`EmotionModel` with the normalisation it was trained with."""

    model: torch.nn.Module
    normalizer: Normalizer
    path: Path
    config: dict
    fold: dict
    edge_quiet: str = "keep"  # "trim": the model reads each input from its speech's edges

    def span(self, frames: np.ndarray) -> tuple[int, int]:
        """The frames of an input (raw ComParE frames) that the model reads: all of them, or
        with ``edge_quiet`` ``trim`` those around its speech (:func:`speech_span`)."""
        return speech_span(frames) if self.edge_quiet == "trim" else (0, len(frames))

    def read(self, frames: np.ndarray) -> np.ndarray:
        start, stop = self.span(frames)
        return frames[start:stop]

    def probabilities(self, features: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """(B, classes) class probabilities of normalised frames ``features`` (B, T, D),
        padded, with ``lengths`` (B,)."""
        device = next(self.model.parameters()).device
        x = torch.from_numpy(features).to(device)
        with torch.no_grad():
            logits = self.model(x, torch.from_numpy(lengths).to(device)).float()
        return torch.softmax(logits, dim=1).cpu().numpy()


@dataclass
class OnnxMember(Member):
    """A model exported by :mod:`sed_model.export`, run with onnxruntime (CPU);
    ``model`` is a :class:`sed_model.onnx_model.OnnxNet`."""

    def probabilities(self, features: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return self.model.probabilities(features, lengths)


def load_onnx(path: Path) -> tuple[OnnxMember, list[str]]:
    """The member of an ONNX file and its class names (from the file's metadata)."""
    from .onnx_model import OnnxNet

    net = OnnxNet(path)
    normalizer = Normalizer(**net.metadata["normalizer"])
    member = OnnxMember(net, normalizer, Path(path), {}, {},
                        edge_quiet=net.metadata.get("edge_quiet", "keep"))
    return member, net.class_names


def resolve_checkpoints(name_or_path: str | Path, ensemble: bool = False) -> tuple[list[Path], str]:
    """The checkpoint files behind a bundled name, a run folder or a file, and a description."""
    text = str(name_or_path)
    path = Path(name_or_path)
    if text in pretrained.BUNDLED and not path.exists():
        if ensemble:
            raise SedError(f"--ensemble needs a run folder; {text!r} is a bundled model")
        return [pretrained.bundled_path(text)], pretrained.describe(text)
    if path.is_dir():
        seeds = seed_runs(path)
        if seeds and not (path / MODEL_FILE).is_file():
            return seed_checkpoints(path, seeds, ensemble)
        if ensemble:
            return fold_checkpoints(path), f"ensemble of the fold models of {path}"
        if not (path / MODEL_FILE).is_file():
            raise SedError(f"run folder {path} has no {MODEL_FILE} (trained with "
                           "--no-final-model, or not finished): pass --ensemble to average its "
                           "fold models, or a checkpoint file such as "
                           f"{path / 'fold-01' / 'last.pt'}")
        return [path / MODEL_FILE], f"deployment model {path / MODEL_FILE}"
    if path.is_file():
        if ensemble:
            raise SedError(f"--ensemble needs a run folder, not the file {path}")
        return [path], f"checkpoint {path}"
    raise SedError(f"{text} is neither a bundled model ({', '.join(pretrained.BUNDLED)}), a run "
                   "folder nor a checkpoint file")


def seed_checkpoints(run_dir: Path, seeds: list[Path], ensemble: bool) -> tuple[list[Path], str]:
    """The members of a ``--seeds N`` folder: every seed's deployment model, or with
    ``ensemble`` every seed's fold models."""
    if ensemble:
        paths = [p for seed in seeds for p in fold_checkpoints(seed)]
        return paths, f"ensemble of the fold models of {len(seeds)} seeds in {run_dir}"
    missing = [seed.name for seed in seeds if not (seed / MODEL_FILE).is_file()]
    if missing:
        raise SedError(f"{run_dir}: {', '.join(missing)} {'has' if len(missing) == 1 else 'have'} "
                       f"no {MODEL_FILE} (trained with --no-final-model, or not finished); pass "
                       "--ensemble to average the seeds' fold models")
    return ([seed / MODEL_FILE for seed in seeds],
            f"ensemble of the deployment models of {len(seeds)} seeds in {run_dir}")


def fold_checkpoints(run_dir: Path) -> list[Path]:
    """The headline model of every completed fold of a run folder."""
    folds = sorted(d for d in run_dir.glob("fold-*") if (d / "metrics.json").is_file())
    if not folds:
        raise SedError(f"{run_dir} has no completed folds (fold-XX/metrics.json) to ensemble")
    return [d / "selected.pt" if (d / "selected.pt").is_file() else d / "last.pt" for d in folds]


def load_model(name_or_path: str | Path = pretrained.DEFAULT, *, ensemble: bool = False,
               device: str = "auto", backend: str | None = None) -> EmotionModel:
    """An :class:`EmotionModel` from a bundled name, a run folder or a checkpoint file (see
    the module docstring); ``ensemble=True`` averages a run folder's fold models."""
    paths, description = resolve_checkpoints(name_or_path, ensemble)
    target = resolve_device(device)
    if backend is not None:
        check_backend(backend, target)
    members, class_names = [], None
    for path in paths:
        if path.suffix.lower() == ".onnx":
            member, class_names = load_onnx(path)
            members.append(member)
            continue
        checkpoint = load_checkpoint(path)
        if class_names is not None and list(checkpoint["class_names"]) != class_names:
            raise SedError(f"{path} has other classes than {paths[0]}; cannot ensemble them")
        class_names = list(checkpoint["class_names"])
        members.append(Member(model_from_checkpoint(checkpoint, backend=backend,
                                                    device=str(target)),
                              normalizer_from_checkpoint(checkpoint), path,
                              checkpoint["config"], checkpoint.get("fold", {}),
                              edge_quiet_from_checkpoint(checkpoint)))
    return EmotionModel(members, class_names, description, target)


class EmotionModel:
    """One model, or an ensemble whose class probabilities are averaged; see
    :meth:`predict`."""

    def __init__(self, members: list[Member], class_names: list[str], description: str,
                 device: torch.device) -> None:
        self.members, self.class_names = members, class_names
        self.description, self.device = description, device
        self._detectors: dict[str, SignalDetector | FrameRule | None] = {}

    @property
    def variant(self) -> str:
        return self.members[0].model.variant

    def __repr__(self) -> str:
        return f"EmotionModel({self.description}; {self.variant}; classes {self.class_names})"

    def predict(self, paths: str | Path | Sequence[str | Path], *, window: float | None = None,
                hop: float | None = None, same_speaker: bool = False, errors: str = "raise",
                progress: bool = False, with_attention: bool = False,
                with_waveform: bool = False, vad: str = DEFAULT_VAD) -> list[Prediction]:
        """One :class:`Prediction` per file, in order.

        ``window``/``hop`` (seconds): classify overlapping windows; ``segments`` then lists
        them. ``same_speaker``: all files are one speaker (pooled statistics for a
        ``speaker`` model). ``errors="raise"`` stops at the first file that cannot be
        classified (:class:`~sed_model.errors.SedError` naming it); ``"report"`` gives that
        file a Prediction with ``error`` and goes on. ``progress``: a bar per windowed file.
        ``with_attention`` (whole files, one model): attention weights for
        :func:`sed_model.plots.plot_attention`; ``with_waveform`` (windows): the waveform
        envelope for :func:`sed_model.plots.plot_timeline`. ``vad``: the speech detector
        (:mod:`sed_model.vad`: ``opensmile``, ``silero``, ``webrtc``) or ``"none"``.
        """
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        window, hop = check_window(window, hop)
        if errors not in ("raise", "report"):
            raise SedError(f"errors must be 'raise' or 'report'; got {errors!r}")
        if with_attention:
            self._check_attention(window)
        self.detector = self._detector(vad)
        if window is None:
            return self._predict_whole(paths, same_speaker, errors, with_attention)
        return self._predict_windowed(paths, window, hop, same_speaker, errors, progress,
                                      with_waveform)

    def stream(self, chunks: Iterable[np.ndarray], sample_rate: int, *, window: float = 2.0,
               hop: float | None = None, segment: float = SEGMENT_SECONDS,
               name: str = "stream", vad: str = DEFAULT_VAD) -> Iterator[Segment]:
        """The timeline of audio arriving in ``chunks`` (1-D float arrays at ``sample_rate``,
        any lengths): each window's :class:`Segment` as soon as the frames it needs are
        extracted (:class:`sed_model.windows.FrameWindows`), with the default ``segment`` the
        same segments as :meth:`predict` with this window and hop on the same audio. A
        window is yielded once the audio reaches :data:`sed_model.windows.CONTEXT_AFTER`
        frames (0.16 s) past the end of the extraction segment holding it: its own end when
        ``segment`` is at most the hop (lowest latency; the frames then come from other
        extraction boundaries than :meth:`predict`'s), else the end of the segment's last
        window. Needs a ``global`` model: a ``speaker`` model's statistics are those of the
        whole recording. ``name`` names the input in errors; ``vad`` is the speech detector,
        as for :meth:`predict` (windows without speech get no label)."""
        window, hop = check_window(window, hop)
        if any(m.normalizer.mode == "speaker" for m in self.members):
            raise SedError("streaming needs a model with global normalisation; this one "
                           "normalises each recording with its own statistics, known only at "
                           "its end (predict the recorded file instead)")
        cutter = FrameWindows(sample_rate, window, hop,
                              lambda samples: _frames(name, samples, sample_rate), segment)
        detector = self._detector(vad)
        track = None if detector is None else SpeechTrack(detector)
        for chunk in chunks:
            chunk = np.asarray(chunk, dtype=np.float32)
            if chunk.ndim != 1:
                raise SedError(f"{name}: chunks must be 1-D arrays of samples; got shape "
                               f"{chunk.shape}")
            if track is not None:
                track.add_block(chunk, sample_rate)
            if ready := cutter.push(chunk):
                yield from self._segments(ready, sample_rate, None, track)
        yield from self._segments(cutter.finish(), sample_rate, None, track)

    def _detector(self, vad: str):
        """The speech detector called ``vad`` (made once per model), None for ``none``."""
        if vad not in self._detectors:
            self._detectors[vad] = make_detector(vad)
        return self._detectors[vad]

    def _check_attention(self, window: float | None) -> None:
        if window is not None:
            raise SedError("attention is drawn for whole files; leave out the window")
        if len(self.members) > 1:
            raise SedError("attention needs one model, not an ensemble")
        if isinstance(self.members[0], OnnxMember):
            raise SedError(f"attention is drawn from a PyTorch checkpoint, not from the ONNX "
                           f"file {self.members[0].path}")
        if self.variant not in VARIANTS_WITH_ATTENTION:
            raise SedError(f"the checkpoint's variant {self.variant!r} has no attention to plot "
                           f"(only {' and '.join(VARIANTS_WITH_ATTENTION)} have)")

    # ------------------------------------------------------------------ whole files
    def _predict_whole(self, paths: list, same_speaker: bool, errors: str,
                       with_attention: bool) -> list[Prediction]:
        """Each file its own speaker (unless ``same_speaker``: all decoded, then classified
        together); files are decoded into groups of at most ``FILE_BATCH`` files and
        ``FILE_BATCH_FRAMES`` frames, each group's frames through the model in batches."""
        results, group, frames = [], [], 0
        for path in paths:
            decoded = _guard(lambda p=path: _decode_whole(p), path, errors)
            group.append((path, decoded))
            frames += 0 if isinstance(decoded, Prediction) else len(decoded["frames"])
            if not same_speaker and (len(group) == FILE_BATCH or frames >= FILE_BATCH_FRAMES):
                results += self._classify_files(group, same_speaker, with_attention)
                group, frames = [], 0
        return results + self._classify_files(group, same_speaker, with_attention)

    def _classify_files(self, group: list[tuple], same_speaker: bool,
                        with_attention: bool) -> list[Prediction]:
        """Predictions of decoded files (a file that failed is its Prediction already)."""
        usable = [d for _, d in group if not isinstance(d, Prediction)]
        for d in usable:
            d["track"] = self._whole_speech(d)
        speaking = [d for d in usable if d["track"] is None or d["track"].has_speech()]
        speakers = [0] * len(speaking) if same_speaker else range(len(speaking))
        outputs = iter(self._probabilities([d["frames"] for d in speaking], None, speakers))
        results = []
        for path, d in group:
            if not isinstance(d, Prediction):
                attention = self._attention(d) if with_attention else None
                spoken = d["track"] is None or d["track"].has_speech()
                result = self._prediction(path, next(outputs) if spoken else None,
                                          d["duration"])
                d, d.attention = self._audio_notes(result, d["track"], d["report"]), attention
            results.append(d)
        return results

    def _whole_speech(self, decoded: dict) -> SpeechTrack | None:
        """The speech frames of a whole decoded file (None without a detector)."""
        if self.detector is None:
            return None
        track = SpeechTrack(self.detector)
        track.add_block(decoded["signal"], decoded["rate"])
        track.add_frames(0.0, decoded["frames"])
        return track

    @staticmethod
    def _audio_notes(result: Prediction, track: SpeechTrack | None,
                     report: SignalReport) -> Prediction:
        """``result`` with its speech share, clipping and warnings (each also issued)."""
        result.speech = None if track is None else round(track.fraction(), 4)
        result.clipping = round(report.clipping, 6)
        result.warnings = report.warnings(result.file)
        if track is not None and result.label is None:
            result.warnings.append(f"{result.file}: no speech found (speech detector "
                                   f"{_detector_name(track.detector)}); no emotion given")
        for line in result.warnings:
            warnings.warn(line, DataWarning, stacklevel=3)
        return result

    def _attention(self, decoded: dict) -> dict:
        member = self.members[0]
        frames = decoded["frames"]
        start, stop = member.span(frames)
        x = member.normalizer.new_speaker([frames[start:stop]])[0]
        lengths = torch.tensor([len(x)], device=self.device)
        with torch.no_grad():
            _, weights = member.model.forward_with_attention(
                torch.from_numpy(x)[None].to(self.device), lengths)
        return {"signal": decoded["signal"], "sample_rate": decoded["rate"],
                "variant": self.variant,
                "weights": [_over_all_frames(w[0].cpu().numpy(), start, len(frames))
                            for w in weights]}

    def _prediction(self, path, probabilities: np.ndarray | None, duration: float | None,
                    segments: list[Segment] | None = None) -> Prediction:
        """None probabilities: no speech, no label."""
        if probabilities is None:
            return Prediction(str(path), None, {}, duration, segments)
        return Prediction(str(path), self.class_names[int(np.argmax(probabilities))],
                          self._named(probabilities), duration, segments)

    def _named(self, probabilities: np.ndarray) -> dict[str, float]:
        return {c: float(p) for c, p in zip(self.class_names, probabilities)}

    def _probabilities(self, frames: list[np.ndarray], recording: Normalizer | None,
                       speakers: Sequence[int] | None = None) -> np.ndarray:
        """(N, classes): the members' mean class probabilities of N frame arrays.

        ``speakers``: a speaker index per array (default: all one speaker); a ``speaker``
        model normalises each speaker's arrays with their pooled statistics, or with
        ``recording`` (that speaker's statistics, computed beforehand) when given. The arrays
        go through the model in padded batches of similar lengths (:data:`WINDOW_BATCH`)."""
        total = np.zeros((len(frames), len(self.class_names)))
        speakers = [0] * len(frames) if speakers is None else list(speakers)
        order = sorted(range(len(frames)), key=lambda i: -len(frames[i]))
        read: dict[str, list[np.ndarray]] = {}  # the frames members read, cut once per mode
        for member in self.members if frames else []:
            if member.edge_quiet not in read:
                read[member.edge_quiet] = [member.read(f) for f in frames]
            normalised = _normalise(member.normalizer, read[member.edge_quiet], speakers,
                                    recording)
            for first in range(0, len(order), WINDOW_BATCH):
                rows = order[first:first + WINDOW_BATCH]
                x, lengths = pad_batch([normalised[i] for i in rows])
                total[rows] += member.probabilities(x, lengths)
        return total / len(self.members)

    # ----------------------------------------------------------------------- windows
    def _predict_windowed(self, paths: list, window: float, hop: float, same_speaker: bool,
                          errors: str, progress: bool, with_waveform: bool) -> list[Prediction]:
        streams = [_guard(lambda p=p: open_audio(p), p, errors) for p in paths]
        usable = [s for s in streams if not isinstance(s, Prediction)]
        needs_stats = any(m.normalizer.mode == "speaker" for m in self.members)
        shared = None
        if needs_stats and same_speaker and usable:
            shared = recording_statistics(usable)
        results = []
        for path, stream in zip(paths, streams):
            if isinstance(stream, Prediction):
                results.append(stream)
                continue
            results.append(_guard(lambda s=stream: self._timeline(
                s, window, hop, shared if same_speaker else None, needs_stats, progress,
                with_waveform), path, errors))
        return results

    def _timeline(self, stream, window: float, hop: float, recording: Normalizer | None,
                  needs_stats: bool, progress: bool, with_waveform: bool) -> Prediction:
        """Classify every window of one recording (a second pass when it needs statistics)."""
        if needs_stats and recording is None:
            recording = recording_statistics([stream])
        envelope = Envelope(stream.sample_rate) if with_waveform else None
        track = None if self.detector is None else SpeechTrack(self.detector)
        counter = _Counter(stream.sample_rate, envelope, track)
        windows = iter_frame_windows(counter.tap(stream.blocks()), stream.sample_rate, window, hop,
                                     lambda samples: _frames(stream.path, samples,
                                                             stream.sample_rate))
        total = count_windows(stream.n_samples, stream.sample_rate, window, hop)
        segments = []
        with tqdm(total=total, unit="window", desc=stream.path.name, leave=False,
                  disable=not progress) as bar:
            while batch := list(islice(windows, WINDOW_BATCH)):
                segments += self._segments(batch, stream.sample_rate, recording, track)
                bar.update(len(batch))
        if not segments:
            raise AudioError(f"{stream.path}: empty audio (0 samples)")
        heard = [[s.probabilities[c] for c in self.class_names] for s in segments if s.label]
        result = self._prediction(stream.path, np.mean(heard, axis=0) if heard else None,
                                  counter.samples / stream.sample_rate, segments)
        result.envelope = envelope
        return self._audio_notes(result, track, counter.report)

    @staticmethod
    def _span_has_speech(track: SpeechTrack | None, span: tuple[float, float],
                         frames: np.ndarray) -> bool:
        if track is None:
            return True
        track.add_frames(span[0], frames)  # the opensmile rule reads the window's frames
        return track.has_speech(*span)

    def _segment(self, span: tuple[float, float], probabilities: np.ndarray | None,
                 speech: float | None) -> Segment:
        if probabilities is None:
            return Segment(round(span[0], 4), round(span[1], 4), None, {}, speech)
        return Segment(round(span[0], 4), round(span[1], 4),
                       self.class_names[int(np.argmax(probabilities))],
                       self._named(probabilities), speech)

    def _segments(self, windows: list[tuple[int, int, np.ndarray]], rate: int,
                  recording: Normalizer | None, track: SpeechTrack | None) -> list[Segment]:
        """A :class:`Segment` for each ``(first_sample, n_samples, frames)`` window; windows
        without speech (``track``) are not run through the model and get no label. Each
        window's speech is judged when its frames arrive, so the answer does not depend on
        how the windows are grouped (a stream's chunks, a batch)."""
        spans, spoken, shares = [], [], []
        for start, n, frames in windows:
            spans.append((start / rate, (start + n) / rate))
            spoken.append(self._span_has_speech(track, spans[-1], frames))
            shares.append(None if track is None else round(track.fraction(*spans[-1]), 4))
        outputs = iter(self._probabilities([w[2] for w, s in zip(windows, spoken) if s],
                                           recording))
        return [self._segment(span, next(outputs) if s else None, share)
                for span, s, share in zip(spans, spoken, shares)]


class _Counter:
    """Counts the samples that pass through, measures their level (``report``) and feeds an
    envelope and a speech track."""

    def __init__(self, rate: int, envelope: Envelope | None, track: SpeechTrack | None) -> None:
        self.samples, self.rate, self.report = 0, rate, SignalReport()
        self.envelope, self.track = envelope, track

    def tap(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for block in blocks:
            self.samples += len(block)
            self.report.add(block)
            if self.envelope is not None:
                self.envelope.add(block)
            if self.track is not None:
                self.track.add_block(block, self.rate)
            yield block


def recording_statistics(streams) -> Normalizer:
    """Normalisation statistics of all frames of ``streams`` (one speaker), from 60-second
    chunks, without holding a recording in memory."""
    stats = RunningStats()
    for stream in streams:
        for block in stream.blocks(STATS_CHUNK_SECONDS):
            try:
                stats.add(extract_frames(block, stream.sample_rate))
            except AudioError:
                if stats.frames:  # a tail chunk under 60 ms: nothing to add
                    continue
                raise AudioError(f"{stream.path}: too short or empty for openSMILE") from None
    return stats.normalizer()


def _normalise(normalizer: Normalizer, frames: list[np.ndarray], speakers: list[int],
               recording: Normalizer | None) -> list[np.ndarray]:
    """``frames`` normalised: ``global``: training statistics; ``speaker``: ``recording``'s,
    else the pooled statistics of the arrays of each speaker index."""
    if recording is not None and normalizer.mode == "speaker":
        return [recording(x) for x in frames]
    normalised: list = [None] * len(frames)
    for speaker in dict.fromkeys(speakers):
        chosen = [i for i, s in enumerate(speakers) if s == speaker]
        for i, x in zip(chosen, normalizer.new_speaker([frames[i] for i in chosen])):
            normalised[i] = x
    return normalised


def _over_all_frames(weights: np.ndarray, start: int, frames: int) -> np.ndarray:
    """Attention ``weights`` of the frames a model read from ``start`` on, placed among all
    ``frames`` of the input: the frames it did not read get no time-attention weight, and
    uniform feature-attention weights (no focus)."""
    if len(weights) == frames:
        return weights
    fill = 0.0 if weights.ndim == 1 else 1.0 / weights.shape[1]
    out = np.full((frames, *weights.shape[1:]), fill, dtype=weights.dtype)
    out[start:start + len(weights)] = weights
    return out


def pad_batch(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(B, T_max, D) float32 zero-padded along T, and the lengths (B,) int64."""
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    batch = np.zeros((len(arrays), int(lengths.max()), arrays[0].shape[1]), dtype=np.float32)
    for row, a in enumerate(arrays):
        batch[row, :len(a)] = a
    return batch, lengths


def _frames(path: Path | str, samples: np.ndarray, rate: int) -> np.ndarray:
    try:
        return extract_frames(samples, rate)
    except SedError as exc:
        raise AudioError(f"{path}: {exc}") from None


def _decode_whole(path) -> dict:
    signal, rate = load_audio(path)  # AudioError names the file
    duration = len(signal) / rate
    if duration > LONG_FILE_SECONDS:
        warnings.warn(f"{path} is {duration:.0f} s long and is classified as one utterance; "
                      "a window (predict --window SECONDS) gives a timeline", DataWarning,
                      stacklevel=2)
    report = SignalReport()
    report.add(signal)
    return {"frames": _frames(Path(path), signal, rate), "signal": signal, "rate": rate,
            "duration": duration, "report": report}


def _detector_name(detector) -> str:
    return {FrameRule: "opensmile"}.get(type(detector), type(detector).__name__
                                        .removesuffix("Detector").lower())


def _guard(make, path, errors: str):
    """``make()``; with ``errors="report"`` a :class:`SedError` becomes a Prediction with
    ``error`` (the message names the file)."""
    try:
        return make()
    except SedError as exc:
        if errors == "raise":
            raise
        message = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
        return Prediction(str(path), None, {}, error=message)
