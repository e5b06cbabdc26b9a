"""End-to-end time of ``python -m sed_model.predict`` on one short file, against the floor of
any process that runs the model: ``python -c "import torch, opensmile"``.

Both commands run as fresh processes, alternately (predict, floor, predict, floor, ...), so
that load from other work on the machine hits both alike; the table gives the median wall
time of each and their ratio (the goal of issue 33: predict <= 1.5x the floor).

    python benchmarks/predict_startup.py [FILE.wav] [--rounds 3] [--source DIR]

``FILE`` defaults to a 2-second EmoDB clip of ``../shared/data/emodb`` when present, else a
generated 2-second voiced signal. ``--source`` runs the package from another source tree
(e.g. an export of an older commit) for a before/after table. The benchmark suite runs one
round of it as a smoke test (``test_predict_startup_bench.py``).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EMODB_CLIP = ROOT.parent / "shared" / "data" / "emodb" / "03a01Fa.wav"
FLOOR = [sys.executable, "-c", "import torch, opensmile"]


@dataclass
class StartupTimes:
    """Wall (and CPU: user + system) seconds of every round of both commands, and what
    predict printed."""

    predict: list[float]
    floor: list[float]
    output: str
    predict_cpu: list[float] = field(default_factory=list)
    floor_cpu: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(self.predict) / statistics.median(self.floor)

    def row(self, label: str) -> str:
        median = statistics.median
        return (f"| {label} | {median(self.predict):.2f} s | {median(self.floor):.2f} s | "
                f"{self.ratio:.2f}x | {median(self.predict_cpu):.2f} s | "
                f"{median(self.floor_cpu):.2f} s |")


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(command: list[str], env: dict, cwd: Path) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, stdout) of one run of ``command`` in ``cwd``."""
    cpu, start = _cpu_of_children(), time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}")
    return seconds, _cpu_of_children() - cpu, done.stdout


def measure(audio: Path, rounds: int = 3, source: Path = ROOT) -> StartupTimes:
    """``rounds`` alternate runs of predict (from ``source``, run there: ``-m`` puts the
    working folder first on the path) and of the floor."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    predict = [sys.executable, "-m", "sed_model.predict", str(Path(audio).resolve())]
    times = StartupTimes([], [], "")
    for _ in range(rounds):
        seconds, cpu, times.output = _timed(predict, env, source)
        times.predict.append(seconds)
        times.predict_cpu.append(cpu)
        seconds, cpu, _ = _timed(FLOOR, env, source)
        times.floor.append(seconds)
        times.floor_cpu.append(cpu)
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
        print("| source | predict (median wall) | import torch, opensmile | ratio | "
              "predict (median CPU) | import torch, opensmile (CPU) |")
        print("|---|---:|---:|---:|---:|---:|")
        for source in args.source or [ROOT]:
            print(measure(audio, args.rounds, source).row(str(source)), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
