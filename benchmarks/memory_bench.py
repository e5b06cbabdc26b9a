"""Memory and speed of training from the feature store, on synthetic corpora of 1 to 100 hours.

    python benchmarks/memory_bench.py --hours 1 10 100 --steps 40 --jobs 2 \\
        --store-dir /big/disk/stores --json benchmarks/results/memory-DATE.json

For each size a store of random float32 frames of the real shape (T, 130) is written straight
to disk with :func:`sed_model.features.store.write_store` (no openSMILE; 100 frames per second
of audio, so 360 000 frames and 187 MB per hour; utterances of 1.5 to 5.5 s, ten speakers,
four classes), and ``--jobs`` processes (spawned, one torch thread each, like
``compare --jobs 2 --threads 1``) each map it and train the default recipe's model on it
(the ``small`` preset: feature variant, cells 64,64, batch 32, speed perturbation and speaker
shift; the speed versions map the same store, as the synthetic audio has no other speed):
a :class:`sed_model.fold.FoldTraining` on all speakers but one (setup: the streaming
normalisation and shift statistics), ``--warmup`` steps, then ``--steps`` timed steps.

Measured per size: the store's build time and size; per process its peak resident set
(``VmHWM``: anonymous memory and the mapped pages it holds), its setup time and its steps per
second (in wall time, and per second of the process' CPU time: the figure that other work on
the machine disturbs least); for all processes together the peak of their summed resident
sets (sampled every 0.2 s). With ``--in-memory-hours H`` a last case copies the H-hour store
into each process' memory first (rows as plain arrays, the mapping released): the in-RAM
baseline that the steps per second are compared with. The JSON goes to ``--json``;
``--markdown`` prints the table of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

FRAMES_PER_HOUR = 360_000
SPEAKERS, CLASSES = 10, ("angry", "happy", "neutral", "sad")
TEST_UTTERANCES = 64
SHORTEST, LONGEST = 150, 550  # frames per utterance


def _identity(hours: float, seed: int) -> dict:
    from sed_model.features.store import STORE_FORMAT

    return {"key": f"synthetic-{hours}-{seed}", "config": "synthetic", "format": STORE_FORMAT}


def _random_rows(hours: float, seed: int):
    rng = np.random.default_rng(seed)
    remaining = int(hours * FRAMES_PER_HOUR)
    while remaining > 0:
        n = min(remaining, int(rng.integers(SHORTEST, LONGEST + 1)))
        remaining -= n
        yield rng.standard_normal((n, 130), dtype=np.float32)


@dataclass
class Build:
    hours: float
    seconds: float
    rows: int
    frames: int
    bytes: int


def build_store(folder: Path, hours: float, seed: int = 0) -> Build:
    """A synthetic store of ``hours`` of frames in ``folder`` (kept when already there)."""
    from sed_model.features.store import StoreInvalid, open_store, read_manifest, write_store

    started = time.perf_counter()
    try:
        open_store(folder, _identity(hours, seed))
    except StoreInvalid:
        write_store(folder, _random_rows(hours, seed), _identity(hours, seed))
    seconds = time.perf_counter() - started
    manifest = read_manifest(folder)
    return Build(hours, seconds, manifest["rows"], manifest["frames"], manifest["data_bytes"])


def _status_kib(pid: int | str, field_name: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def synthetic_dataset(frames, seed: int = 0):
    """A :class:`sed_model.data.Dataset` over store rows: speakers in turn, random classes."""
    from sed_model.corpora import Utterance, get_corpus
    from sed_model.data import Dataset

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), len(frames))
    utterances = [Utterance(Path(f"/synthetic/{i}.wav"), CLASSES[label], f"s{i % SPEAKERS}")
                  for i, label in enumerate(labels)]
    return Dataset(corpus="synthetic", loader=get_corpus("emodb"), classes=CLASSES,
                   utterances=utterances, features=frames, labels=labels.astype(np.int64),
                   skipped=0, speed_features={0.9: frames, 1.1: frames})


def _train(folder: str, hours: float, in_memory: bool, steps: int, warmup: int,
           out_dir: str) -> dict:
    """One process: map the store, set up one fold of the default recipe, time the steps."""
    import torch

    from sed_model.config import make_config
    from sed_model.features.store import Frames, open_store
    from sed_model.fold import FoldTraining
    from sed_model.splits import Fold

    torch.set_num_threads(1)
    started = time.perf_counter()
    frames, _ = open_store(Path(folder), _identity(hours, 0))
    if in_memory:  # the rows copied into this process, the mapping's pages handed back
        frames = Frames.in_memory(np.array(frames[i]) for i in range(len(frames)))
    dataset = synthetic_dataset(frames)
    test = [i for i in range(len(frames)) if i % SPEAKERS == 0][:TEST_UTTERANCES]
    train = [i for i in range(len(frames)) if i % SPEAKERS != 0]
    config = make_config(corpus="synthetic", preset="small", variant="feature", device="cpu",
                         folds="synthetic")
    run = FoldTraining(config, dataset, Fold("synthetic", tuple(train), tuple(test)), 0, 1,
                       Path(out_dir))
    setup = time.perf_counter() - started
    for _ in range(warmup):
        run.train_step()
    timed, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        run.train_step()
    seconds, cpu = time.perf_counter() - timed, time.process_time() - cpu
    return {"pid": os.getpid(), "setup_s": setup, "steps": steps,
            "steps_per_s": steps / seconds, "steps_per_cpu_s": steps / cpu,
            "peak_rss_mib": _status_kib("self", "VmHWM") / 1024,
            "rss_anon_mib": _status_kib("self", "RssAnon") / 1024,
            "rss_file_mib": _status_kib("self", "RssFile") / 1024}


@dataclass
class Case:
    hours: float
    in_memory: bool
    jobs: int
    processes: list[dict] = field(default_factory=list)
    peak_total_rss_mib: float = 0.0

    @property
    def peak_rss_mib(self) -> float:
        return max(p["peak_rss_mib"] for p in self.processes)

    @property
    def steps_per_s(self) -> float:
        return float(np.mean([p["steps_per_s"] for p in self.processes]))


def _sample_total(pids: list[int], stop: threading.Event, peak: list[float]) -> None:
    while not stop.is_set():
        total = sum(_status_kib(pid, "VmRSS") or 0 for pid in pids)
        peak[0] = max(peak[0], total / 1024)
        stop.wait(0.2)


def _child(queue, *args) -> None:
    queue.put(_train(*args))


def run_case(folder: Path, hours: float, *, jobs: int, steps: int, warmup: int,
             in_memory: bool = False) -> Case:
    """``jobs`` spawned processes training on the store at once; their measurements."""
    case = Case(hours, in_memory, jobs)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    with tempfile.TemporaryDirectory() as scratch:
        children = [context.Process(target=_child, args=(queue, str(folder), hours, in_memory,
                                                          steps, warmup, f"{scratch}/{j}"))
                    for j in range(jobs)]
        for child in children:
            child.start()
        stop, peak = threading.Event(), [0.0]
        sampler = threading.Thread(target=_sample_total,
                                   args=([c.pid for c in children], stop, peak), daemon=True)
        sampler.start()
        try:
            case.processes = [queue.get() for _ in children]
        finally:
            stop.set()
            sampler.join()
            for child in children:
                child.join()
    if any(child.exitcode for child in children):
        raise RuntimeError(f"a training process failed: exit codes "
                           f"{[c.exitcode for c in children]}")
    case.peak_total_rss_mib = peak[0]
    return case


def _mean_of(processes: list[dict], key: str) -> str:
    values = [p[key] for p in processes if key in p]
    return f"{np.mean(values):.2f}" if values else "-"


def markdown_table(report: dict) -> str:
    builds = {b["hours"]: b for b in report["builds"]}
    lines = ["| store | data | build | setup (per process) | peak RSS per process | "
             "peak RSS, all processes | steps/s per process | steps per CPU second |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for case in report["cases"]:
        build = builds[case["hours"]]
        name = f"{case['hours']:g} h" + (" in RAM" if case["in_memory"] else " mapped")
        processes = case["processes"]
        lines.append(
            f"| {name} | {build['bytes'] / 1e9:.2f} GB, {build['rows']} utterances | "
            f"{build['seconds']:.0f} s | "
            f"{np.mean([p['setup_s'] for p in processes]):.0f} s | "
            f"{max(p['peak_rss_mib'] for p in processes):.0f} MiB | "
            f"{case['peak_total_rss_mib']:.0f} MiB | "
            f"{np.mean([p['steps_per_s'] for p in processes]):.2f} | "
            f"{_mean_of(processes, 'steps_per_cpu_s')} |")
    return "\n".join(lines)


def measure(hours: list[float], *, store_dir: Path, jobs: int, steps: int, warmup: int,
            in_memory_hours: float | None, keep: bool) -> dict:
    builds, cases = [], []
    for h in hours:
        folder = store_dir / f"synthetic-{h:g}h"
        builds.append(build_store(folder, h))
        print(f"{h:g} h: store of {builds[-1].bytes / 1e9:.2f} GB in {builds[-1].seconds:.0f} s",
              flush=True)
        cases.append(run_case(folder, h, jobs=jobs, steps=steps, warmup=warmup))
        if in_memory_hours == h:
            cases.append(run_case(folder, h, jobs=jobs, steps=steps, warmup=warmup,
                                  in_memory=True))
        for case in cases[-1 - (in_memory_hours == h):]:
            print(f"{h:g} h{' in RAM' if case.in_memory else ''}: peak RSS "
                  f"{case.peak_rss_mib:.0f} MiB per process, {case.peak_total_rss_mib:.0f} MiB "
                  f"in all, {case.steps_per_s:.2f} steps/s", flush=True)
        if not keep:
            shutil.rmtree(folder)
    return {"machine": {"cpu": platform.processor() or platform.machine(),
                        "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
                        "load_average": list(os.getloadavg())},
            "settings": {"jobs": jobs, "steps": steps, "warmup": warmup,
                         "frames_per_hour": FRAMES_PER_HOUR},
            "builds": [asdict(b) for b in builds],
            "cases": [{**asdict(c), "peak_rss_mib": c.peak_rss_mib,
                       "steps_per_s": c.steps_per_s} for c in cases]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, nargs="+", default=[1, 10, 100])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--in-memory-hours", type=float, default=1.0,
                        help="also train in RAM on this size (the baseline); 0: no")
    parser.add_argument("--store-dir", type=Path, required=True,
                        help="folder for the synthetic stores (187 MB per hour)")
    parser.add_argument("--keep", action="store_true", help="keep the stores afterwards")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    report = measure(args.hours, store_dir=args.store_dir, jobs=args.jobs, steps=args.steps,
                     warmup=args.warmup, in_memory_hours=args.in_memory_hours or None,
                     keep=args.keep)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        print(markdown_table(report))
    return report


if __name__ == "__main__":
    main()
