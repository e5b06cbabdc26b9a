"""How much quiet a corpus' recordings begin and end with.

    python scripts/measure_edge_quiet.py --corpus ravdess --data ../shared/data/ravdess
    python scripts/measure_edge_quiet.py --corpus emodb --data ../shared/data/emodb

The ``lstm`` and ``general`` variants classify from the LSTM state after the last frame, so a
recording that ends in a second of room noise makes them read a state that has forgotten
part of the speech. This script measures that quiet: 25 ms frames every 10 ms, a frame is
*quiet* when its RMS is more than ``--below`` dB (default 40) under the recording's loudest
frame, and the leading (trailing) quiet is the time before the first (after the last) frame
that is not. It reads the audio with the package's loader (mixed down, native rate) and
prints one line per corpus: the median and 90th percentile of both, and the share of all
frames that lie in them.
"""

from __future__ import annotations

import argparse

import numpy as np
from tqdm.auto import tqdm

from sed_model.audio import load_audio
from sed_model.cli import run_main
from sed_model.corpora import CORPUS_NAMES, load_corpus

FRAME_S = 0.025
HOP_S = 0.010


def frame_levels_db(samples: np.ndarray, rate: int) -> np.ndarray:
    """RMS of every 25 ms frame (10 ms hop), in dB relative to the loudest frame."""
    width, hop = int(FRAME_S * rate), int(HOP_S * rate)
    frames = (np.lib.stride_tricks.sliding_window_view(samples, width)[::hop]
              if len(samples) >= width else samples[None, :])
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-20)
    return 20 * np.log10(rms / rms.max())


def edge_quiet_s(samples: np.ndarray, rate: int, below_db: float) -> tuple[float, float]:
    """(leading, trailing) quiet in seconds."""
    levels = frame_levels_db(samples, rate)
    heard = np.flatnonzero(levels > -below_db)
    return heard[0] * HOP_S, (len(levels) - 1 - heard[-1]) * HOP_S


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, choices=CORPUS_NAMES)
    parser.add_argument("--data", required=True, help="the corpus folder")
    parser.add_argument("--below", type=float, default=40.0,
                        help="dB under the loudest frame that count as quiet (default 40)")
    args = parser.parse_args(argv)
    _, utterances = load_corpus(args.corpus, args.data)
    lead, trail, duration = [], [], []
    for utterance in tqdm(utterances, desc=f"{args.corpus}: reading", unit="file"):
        samples, rate = load_audio(utterance.path)
        first, last = edge_quiet_s(samples, rate, args.below)
        lead.append(first)
        trail.append(last)
        duration.append(len(samples) / rate)
    lead, trail, duration = map(np.asarray, (lead, trail, duration))
    print(f"{args.corpus}: {len(utterances)} files, duration median {np.median(duration):.2f} s; "
          f"leading quiet median {np.median(lead):.2f} s (90th percentile "
          f"{np.percentile(lead, 90):.2f} s); trailing quiet median {np.median(trail):.2f} s "
          f"(90th percentile {np.percentile(trail, 90):.2f} s); "
          f"{int(np.sum(trail > 0.5))} files end in more than 0.5 s; "
          f"share of all audio in the edge quiet {(lead + trail).sum() / duration.sum():.2f} "
          f"(frames {args.below:g} dB or more under the loudest)")


if __name__ == "__main__":
    run_main(main, None)
