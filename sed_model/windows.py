"""Long recordings in bounded memory: overlapping windows from a stream of audio blocks,
running normalisation statistics and a waveform envelope for plots.

Windows. A recording of ``n`` samples is cut into windows of ``w = round(window * rate)``
samples; window ``k`` starts at ``k * h`` (``h = round(hop * rate)``) moved to the nearest
openSMILE frame boundary (a multiple of the 10 ms :func:`frame_step`; at most half a step,
and no move at all where the hop is a whole number of steps, as at 8, 16, 44.1 or 48 kHz),
while the window fits; when the last of them ends before the recording does, one more window
ends exactly at the end (``[n - w, n]``), so every sample is covered and every window has the
full length the model was trained on. A recording shorter than one window is one window, the
whole of it. Only the samples of the window being filled are held (:func:`iter_windows`),
never the recording.

Frames. A timeline does not extract each window: the recording's frames are extracted once,
in segments with a little context on both sides, and each window takes its frames from them
(:class:`FrameWindows`, :func:`iter_frame_windows`); every second is extracted about once
whatever the hop, and a live stream gives the same frames as the file. Windows start on the
frame grid so that the frames a window takes are the frames its own extraction would have.
The model was trained on clips extracted alone, whose first frames carry the start-up of
openSMILE's filters (the RASTA filter, smoothing, deltas and pitch tracker start from rest);
each window therefore takes its first :data:`HEAD_FRAMES` frames from an extraction of its
own first 0.38 s, and the rest from the one pass. The heads are extracted on a second
thread while the one pass goes on (openSMILE releases the GIL), so on two cores they cost
little wall time.

Statistics. ``speaker`` normalisation of one long recording needs the mean and std of all its
frames before any window is normalised: :class:`RunningStats` accumulates them chunk by chunk
(:class:`sed_model.features.normalization.RunningMoments`, float64, the arithmetic of
:meth:`sed_model.features.Normalizer.new_speaker`) in a first pass over the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from sed_model.errors import SedError
from sed_model.features import Normalizer
from sed_model.features.normalization import RunningMoments

FRAME_RATE = 100  # openSMILE ComParE frames per second (10 ms step, see frame_step)
EDGE_FRAMES = 4  # frames a signal extracted alone lacks against its 10 ms steps
SEGMENT_SECONDS = 2.0  # shortest extraction segment of a timeline (see FrameWindows)
CONTEXT_BEFORE = 20  # frames of history extracted before a segment (0.2 s)
CONTEXT_AFTER = 16  # frames of look-ahead after a segment (60 ms frames + smoothing, deltas)
MIN_WINDOW_SECONDS = 0.06  # openSMILE's ComParE_2016 needs 60 ms for finite frames
HEAD_FRAMES = 30  # first frames of a window taken from its own extraction (filter start-up)
HEAD_LOOKAHEAD = 4  # frames extracted after a window's head (60 ms frames, smoothing)


def check_window(window: float | None, hop: float | None) -> tuple[float | None, float | None]:
    """``(window, hop)`` checked; hop defaults to half the window; no window, no hop."""
    if window is None:
        if hop is not None:
            raise SedError("a hop needs a window: give --window SECONDS too")
        return None, None
    hop = window / 2 if hop is None else hop
    if not window > 0 or not hop > 0:
        raise SedError(f"window and hop must be positive seconds; got window {window}, hop {hop}")
    return float(window), float(hop)


def count_windows(n_samples: int | None, rate: int, window: float, hop: float) -> int | None:
    """How many windows :func:`iter_windows` yields for a recording of ``n_samples``."""
    if n_samples is None:
        return None
    w, h = _sizes(rate, window, hop)
    if n_samples <= w:
        return 1
    step = _grid(rate)
    fitting = (n_samples - w) // h + 1  # windows at k * h; moved to the grid, +-1
    while window_start(fitting, h, step) + w <= n_samples:
        fitting += 1
    while window_start(fitting - 1, h, step) + w > n_samples:
        fitting -= 1
    return fitting + int(window_start(fitting - 1, h, step) + w < n_samples)  # + the tail


def _sizes(rate: int, window: float, hop: float) -> tuple[int, int]:
    return max(1, int(round(window * rate))), max(1, int(round(hop * rate)))


def _grid(rate: int) -> int:
    return max(1, frame_step(rate))


def window_start(k: int, h: int, step: int) -> int:
    """First sample of window ``k``: ``k * h`` moved to the nearest multiple of ``step``
    (halves up)."""
    return (2 * k * h + step) // (2 * step) * step


def iter_windows(blocks: Iterable[np.ndarray], rate: int, window: float,
                 hop: float) -> Iterator[tuple[int, np.ndarray]]:
    """``(first_sample, samples)`` of every window (see the module docstring) of the signal
    that arrives in ``blocks``; holds at most one window plus one block."""
    w, h = _sizes(rate, window, hop)
    step = _grid(rate)
    held = np.zeros(0, dtype=np.float32)
    held_from = 0  # sample index of held[0]
    k, next_start, last_end = 0, 0, 0
    for block in blocks:
        held = np.concatenate([held, block])
        while next_start + w <= held_from + len(held):
            offset = next_start - held_from
            yield next_start, held[offset:offset + w].copy()  # a view would keep `held` alive
            k += 1
            last_end, next_start = next_start + w, window_start(k, h, step)
        end = held_from + len(held)
        keep_from = max(held_from, min(next_start, end - w))  # the tail window needs w samples
        held, held_from = held[keep_from - held_from:], keep_from
    end = held_from + len(held)
    if last_end == 0 and end > 0:
        yield 0, held  # shorter than one window: the whole recording
    elif 0 < last_end < end:
        yield end - w, held[len(held) - w:].copy()


def frame_step(rate: int) -> int:
    """openSMILE's 10 ms frame step in whole samples (rounded: 221 at 22.05 kHz)."""
    return int(rate / FRAME_RATE + 0.5)


def frames_of(n_samples: int, rate: int) -> int:
    """How many frames openSMILE's ComParE_2016 gives for ``n_samples`` extracted alone: one
    per frame step less the :data:`EDGE_FRAMES` its 60 ms frames, smoothing and deltas
    cost at the ends (``tests/test_timeline.py`` checks it against openSMILE)."""
    return n_samples // frame_step(rate) - EDGE_FRAMES


class FrameWindows:
    """One-pass timeline: the windows' frames cut from one extraction of the signal.

    Push the signal block by block (:meth:`push`), then :meth:`finish`; each returns the
    windows completed so far as ``(first_sample, n_samples, frames)``, in order. Where the
    windows fall is :func:`iter_windows`'s rule. ``extract(signal) -> (T, 130)`` is the frame
    extractor (:func:`sed_model.features.extract_frames`).

    Segments. The frame grid is openSMILE's grid over the whole recording: frame ``f``
    starts at sample ``f * step`` (:func:`frame_step`). It is extracted in segments of ``G``
    hops (the fewest that last ``segment`` seconds) that end where a window's frames end:
    segment ``k`` holds the frames ``[B_k, B_{k+1})``, ``B_0 = 0`` and ``B_{k+1}`` the end of
    the frames of window ``(k+1)G - 1``; it keeps them from an extraction of the samples from
    frame ``B_k - CONTEXT_BEFORE`` to frame ``B_{k+1} + CONTEXT_AFTER``, so its first frames
    have the history of the smoothing, delta and filter stages and its last frames the
    look-ahead of the 60 ms frames, the smoothing, the deltas and the pitch tracker. A
    window is therefore complete ``CONTEXT_AFTER`` frames after its end (within a segment of
    several hops, after the end of the segment's last window). The segment length trades
    throughput for latency: each segment extracts ``CONTEXT_BEFORE + CONTEXT_AFTER`` frames
    (0.36 s) more than it keeps, 1.18x the audio for 2-s segments, 1.36x for 1-s ones; the
    default :data:`SEGMENT_SECONDS` favours throughput, a ``segment`` of one hop lets every
    window out ``CONTEXT_AFTER`` frames after its end. The first segment whose
    context runs past the end of the recording takes the rest of it (its last frames are
    the recording's last frames, as in a whole-file extraction). Which samples each segment
    reads depends only on the recording's length, never on how the blocks arrive:
    ``EmotionModel.stream`` with any chunks gives the same frames as the offline timeline.

    Windows. A window ``[s, s + w)`` gets the ``frames_of(w)`` frames from frame
    ``round(s / step)`` (as many as the window extracted alone has, as the model was
    trained on), moved back where the recording's frames end first; its first
    :data:`HEAD_FRAMES` frames come from an extraction of the window's own first
    ``HEAD_FRAMES + HEAD_LOOKAHEAD`` frames of audio (the start-up of the filters its
    training clips had; a window no longer than that is extracted whole), started on a
    worker thread as soon as that audio has arrived. A recording shorter than one window is
    one window of all its frames. A window is complete once the segment holding its last
    frame is extracted. Only the frames from the previous window's start, the heads of the
    windows not yet complete, and the audio of one segment plus its context (at least the
    last window's) are held.
    """

    def __init__(self, rate: int, window: float, hop: float, extract,
                 segment: float = SEGMENT_SECONDS) -> None:
        self.rate, self.extract = rate, extract
        self.w, self.h = _sizes(rate, window, hop)
        self.m = frames_of(self.w, rate)
        if self.m < 2:
            raise SedError(f"a window of {window:g} s is too short for openSMILE's ComParE "
                           f"frames; expected at least {MIN_WINDOW_SECONDS:g} s")
        self.step = frame_step(rate)
        self.head_samples = min(self.w,
                                (HEAD_FRAMES + HEAD_LOOKAHEAD + EDGE_FRAMES) * self.step)
        self.hops_per_segment = max(1, int(np.ceil(segment / hop - 1e-9)))
        self._audio, self._audio_from, self.received = np.zeros(0, np.float32), 0, 0
        self._next_segment = 0
        self._frames, self._frames_from = np.zeros((0, 0), np.float32), 0
        self._next_window, self._last_end = 0, 0  # index of the next window; end of the last
        self._heads: dict[int, Future] = {}  # window start -> its own first frames
        self._next_head = 0
        self._pool: ThreadPoolExecutor | None = None

    def _start(self, k: int) -> int:
        return window_start(k, self.h, self.step)

    def _sample(self, frame: int) -> int:
        return frame * self.step

    def _frame(self, sample: int) -> int:
        return int(round(sample / self.step))

    def _segment_end(self, k: int) -> int:
        """``B_{k+1}``: the end of the frames of the last window of segment ``k``."""
        return self._frame(self._start((k + 1) * self.hops_per_segment - 1)) + self.m

    def _segment_source(self) -> int:
        """The first frame the next segment's extraction reads."""
        k = self._next_segment
        return max(0, (self._segment_end(k - 1) if k else 0) - CONTEXT_BEFORE)

    def push(self, block: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
        """Add the next samples; the windows they complete."""
        self._audio = np.concatenate([self._audio, np.asarray(block, np.float32)])
        self.received += len(block)
        while self._start(self._next_head) + self.head_samples <= self.received:
            start = self._start(self._next_head)
            self._pool = self._pool or ThreadPoolExecutor(1, thread_name_prefix="sed-heads")
            self._heads[start] = self._pool.submit(self.extract, self._head_audio(start))
            self._next_head += 1
        while self._sample(self._segment_end(self._next_segment) + CONTEXT_AFTER) \
                <= self.received:
            self._extract_segment(final=False)
        done = self._complete_windows(final=False)
        self._drop_audio()
        return done

    def finish(self) -> list[tuple[int, int, np.ndarray]]:
        """End of the recording: its last segment and the windows still open."""
        self._extract_segment(final=True)  # the last segment starts before the end
        try:
            return self._complete_windows(final=True)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the head extractions still queued (:meth:`finish` calls it)."""
        for future in self._heads.values():
            future.cancel()
        self._heads.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _audio_at(self, first: int, end: int) -> np.ndarray:
        return self._audio[first - self._audio_from:end - self._audio_from]

    def _head_audio(self, start: int) -> np.ndarray:
        return self._audio_at(start, start + self.head_samples).copy()

    def _extract_segment(self, final: bool) -> None:
        k = self._next_segment
        first = self._segment_end(k - 1) if k else 0
        stop = self._segment_end(k)
        source = self._segment_source()
        end = self.received if final else self._sample(stop + CONTEXT_AFTER)
        x = self.extract(self._audio_at(self._sample(source), end))
        kept = x[first - source:] if final else x[first - source:stop - source]
        held = self._frames if len(self._frames) else np.zeros((0, x.shape[1]), np.float32)
        self._frames = np.concatenate([held, kept])
        self._next_segment += 1

    def _drop_audio(self) -> None:
        """Keep the audio the next segment, the next head and a tail window may read."""
        keep_from = min(self._sample(self._segment_source()), self._start(self._next_head),
                        self.received - self.w)
        keep_from = max(self._audio_from, keep_from)
        self._audio = self._audio[keep_from - self._audio_from:]
        self._audio_from = keep_from

    def _complete_windows(self, final: bool) -> list[tuple[int, int, np.ndarray]]:
        total = self._frames_from + len(self._frames)
        done = []
        while self._start(self._next_window) + self.w <= (self.received if final else np.inf):
            start = self._start(self._next_window)
            first = self._frame(start)
            if first + self.m > total:
                if not final:
                    break
                first = max(0, total - self.m)
            done.append((start, self.w, self._with_head(start, self._cut(first, self.m))))
            self._last_end = start + self.w
            self._next_window += 1
        if final and self._last_end == 0:  # shorter than one window: all of it
            done.append((0, self.received, self._cut(0, total)))
        elif final and self._last_end < self.received:  # the tail window, ending at the end
            start = self.received - self.w
            frames = self._cut(min(self._frame(start), total - self.m), self.m)
            done.append((start, self.w, self._with_head(start, frames)))
        self._drop_frames()
        return done

    def _with_head(self, start: int, frames: np.ndarray) -> np.ndarray:
        """``frames`` with their first :data:`HEAD_FRAMES` from the window's own extraction
        (all of them where the window is no longer than :attr:`head_samples`)."""
        future = self._heads.pop(start, None)
        if future is None:  # the tail window's: its audio is still held
            head = self.extract(self._head_audio(start))
        else:
            head = future.result()
        count = len(frames) if self.head_samples == self.w else min(HEAD_FRAMES, len(frames))
        frames[:count] = head[:count]
        return frames

    def _cut(self, first: int, count: int) -> np.ndarray:
        offset = first - self._frames_from
        return self._frames[offset:offset + count].copy()

    def _drop_frames(self) -> None:
        previous = self._start(self._next_window - 1) if self._next_window else 0
        keep_from = max(self._frames_from, self._frame(previous) - 2)
        self._frames = self._frames[keep_from - self._frames_from:]
        self._frames_from = keep_from


def iter_frame_windows(blocks: Iterable[np.ndarray], rate: int, window: float, hop: float,
                       extract, segment: float = SEGMENT_SECONDS
                       ) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(first_sample, n_samples, frames)`` of every window of the signal that arrives in
    ``blocks``, from one pass of ``extract`` over it (:class:`FrameWindows`)."""
    cutter = FrameWindows(rate, window, hop, extract, segment)
    for block in blocks:
        yield from cutter.push(block)
    yield from cutter.finish()


class RunningStats:
    """Mean and std of frames given chunk by chunk; :meth:`normalizer` applies them."""

    def __init__(self) -> None:
        self._moments = RunningMoments()
        self.frames = 0

    def add(self, frames: np.ndarray) -> None:
        """Add (T, D) frames."""
        self._moments.add(frames)
        self.frames += len(frames)

    def normalizer(self) -> Normalizer:
        """A normaliser with these statistics (std below ``Normalizer.MIN_STD`` counts as 1,
        as in ``Normalizer.new_speaker``)."""
        if not self.frames:
            raise SedError("no frames to compute normalisation statistics from")
        std = np.sqrt(self._moments.var)
        std = np.where(std < Normalizer.MIN_STD, 1.0, std)
        return Normalizer("global", self._moments.mean, std)


class Envelope:
    """Minimum and maximum of every ``bin_seconds`` of a signal given block by block: the
    waveform of an hour-long file in a few MB, for plots."""

    def __init__(self, rate: int, bin_seconds: float = 0.01) -> None:
        self.rate = rate
        self.bin = max(1, int(round(bin_seconds * rate)))
        self._low: list[np.ndarray] = []
        self._high: list[np.ndarray] = []
        self._rest = np.zeros(0, dtype=np.float32)

    def add(self, block: np.ndarray) -> None:
        joined = np.concatenate([self._rest, block])
        whole = len(joined) - len(joined) % self.bin
        bins = joined[:whole].reshape(-1, self.bin)
        self._low.append(bins.min(axis=1))
        self._high.append(bins.max(axis=1))
        self._rest = joined[whole:]

    def arrays(self, max_points: int = 4000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(times, low, high), at most ``max_points`` bins (merged further for long files)."""
        tail = [self._rest[:1]] if len(self._rest) else []
        low = np.concatenate([np.zeros(0, np.float32), *self._low, *tail])
        high = np.concatenate([np.zeros(0, np.float32), *self._high, *tail])
        if tail:
            low[-1], high[-1] = self._rest.min(), self._rest.max()
        merge = max(1, -(-len(low) // max_points))
        pad = (-len(low)) % merge
        low = np.pad(low, (0, pad), mode="edge").reshape(-1, merge).min(axis=1)
        high = np.pad(high, (0, pad), mode="edge").reshape(-1, merge).max(axis=1)
        return np.arange(len(low)) * merge * self.bin / self.rate, low, high
