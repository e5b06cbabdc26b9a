"""End-to-end time of ``python -m sed_model.predict`` on one short file, against the floor of
any process that runs the model: ``python -c "import torch, opensmile"``.

Both commands run as fresh processes, alternately (predict, floor, predict, floor, ...), so
that load from other work on the machine hits both alike; the table gives the median wall
time of each and their ratio (the goal of issue 33: predict <= 1.5x the floor).

    python benchmarks/predict_startup.py [FILE.wav] [--rounds 3] [--source DIR]

``FILE`` defaults to a 2-second EmoDB clip of ``../shared/data/emodb`` when present, else a
generated 2-second voiced signal. ``--source`` runs the package from another source tree
(e.g. an export of an older commit) for a before/after table. ``tests``-free: the benchmark
suite runs it once in smoke mode (``test_predict_startup_bench.py``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EMODB_CLIP = ROOT.parent / "shared" / "data" / "emodb" / "03a01Fa.wav"
FLOOR = [sys.executable, "-c", "import torch, opensmile"]


@dataclass
class StartupTimes:
    """Wall seconds of every round of both commands, and what predict printed."""

    predict: list[float]
    floor: list[float]
    output: str

    @property
    def ratio(self) -> float:
        return statistics.median(self.predict) / statistics.median(self.floor)

    def row(self, label: str) -> str:
        return (f"| {label} | {statistics.median(self.predict):.2f} s | "
                f"{statistics.median(self.floor):.2f} s | {self.ratio:.2f}x |")


def _timed(command: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}")
    return seconds, done.stdout


def measure(audio: Path, rounds: int = 3, source: Path = ROOT) -> StartupTimes:
    """``rounds`` alternate runs of predict (from ``source``) and of the floor."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    predict = [sys.executable, "-m", "sed_model.predict", str(audio)]
    times = StartupTimes([], [], "")
    for _ in range(rounds):
        seconds, times.output = _timed(predict, env)
        times.predict.append(seconds)
        times.floor.append(_timed(FLOOR, env)[0])
    return times


def generated_clip(folder: Path) -> Path:
    """A 2-second voiced signal (the feature benchmark's) as a 16 kHz wav."""
    import soundfile
    from test_features_bench import voiced_signal

    path = folder / "voiced.wav"
    soundfile.write(path, voiced_signal(2.0, 16000, seed=0), 16000, subtype="PCM_16")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--source", type=Path, action="append", default=None,
                        help="source tree(s) to run predict from (default: this checkout)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        audio = args.file or (EMODB_CLIP if EMODB_CLIP.is_file() else generated_clip(Path(folder)))
        print(f"file: {audio}; {args.rounds} rounds each, alternating; load average "
              f"{os.getloadavg()[0]:.2f}")
        print("| source | predict (median) | import torch, opensmile (median) | ratio |")
        print("|---|---:|---:|---:|")
        for source in args.source or [ROOT]:
            print(measure(audio, args.rounds, source).row(str(source)), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
