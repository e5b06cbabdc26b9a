"""Extract a corpus' features and build its feature stores ahead of training.

    python -m sed_model.prepare --corpus iemocap --data /data/IEMOCAP_full_release --workers 32

Does what the first training run would do before its first step (:func:`load_dataset`):
every file's frames into the per-file cache (in ``--workers`` processes, with a progress bar
and an estimated time to completion; an interrupted run resumes from the files already
cached), then the corpus' store, mapped by every later run. ``--speeds`` also builds the
speed-perturbed versions that speed augmentation reads (the ``small`` preset's default).
Useful on each node of a multi-node run without a shared cache folder, or to extract once
on a machine with many cores. Prints one line: utterances, hours of frames and the stores' size.
"""

from __future__ import annotations

import argparse

from .augment import SPEEDS
from .cli import add_data_options, run_main
from .corpora import CORPUS_NAMES
from .data import load_dataset
from .features import FEATURE_DIM


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sed_model.prepare",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", choices=CORPUS_NAMES, required=True)
    parser.add_argument("--data", default=None, help="the corpus folder (or CSV manifest)")
    parser.add_argument("--speeds", action="store_true",
                        help=f"also the speed-perturbed versions ({', '.join(map(str, SPEEDS))})")
    parser.add_argument("--no-progress", action="store_true")
    add_data_options(parser)
    return parser


def _prepare(argv: list[str] | None) -> None:
    args = build_parser().parse_args(argv)
    dataset = load_dataset(args.corpus, args.data, cache_dir=args.cache_dir,
                           workers=args.workers, strict=args.strict,
                           progress=not args.no_progress, speeds=SPEEDS if args.speeds else ())
    frames = int(dataset.features.lengths.sum())
    stores = [dataset.features, *dataset.speed_features.values()]
    gigabytes = sum(int(s.lengths.sum()) for s in stores) * FEATURE_DIM * 4 / 1e9
    print(f"{dataset.corpus}: {len(dataset.utterances)} utterances, {frames / 360000:.2f} hours "
          f"of frames ({dataset.skipped} files skipped); {len(stores)} store"
          f"{'s' if len(stores) > 1 else ''}, {gigabytes:.2f} GB", flush=True)


def main(argv: list[str] | None = None) -> None:
    run_main(_prepare, argv)


if __name__ == "__main__":
    main()
