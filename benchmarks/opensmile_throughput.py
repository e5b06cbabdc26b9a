"""openSMILE frame extraction speed on real recordings, in times real time per core.

    python benchmarks/opensmile_throughput.py --corpus emodb --data DIR --files 100

Extracts the first ``--files`` utterances of the corpus in this process (``workers=1``, no
cache) and prints seconds of audio per second of CPU time (``time.process_time``: what one
core does, whatever else the machine runs) and per second of wall time.
"""

from __future__ import annotations

import argparse
import time

import soundfile

from sed_model.corpora import load_corpus
from sed_model.features import extract_corpus


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="emodb")
    parser.add_argument("--data", required=True)
    parser.add_argument("--files", type=int, default=100)
    args = parser.parse_args(argv)
    _, utterances = load_corpus(args.corpus, args.data)
    paths = [u.path for u in utterances[: args.files]]
    audio = sum(soundfile.info(str(p)).duration for p in paths)
    extract_corpus(paths[:1], cache=False, workers=1, progress=False)  # openSMILE's start-up
    cpu, wall = time.process_time(), time.perf_counter()
    extract_corpus(paths, cache=False, workers=1, progress=False)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"{len(paths)} files, {audio:.0f} s of audio: {audio / cpu:.0f}x real time per core "
          f"(CPU time {cpu:.1f} s), {audio / wall:.0f}x in wall time ({wall:.1f} s)")


if __name__ == "__main__":
    main()
