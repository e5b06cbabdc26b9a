"""Train one model variant with speaker-independent cross-validation.

With no arguments: the ``feature`` variant on the synthetic ``demo`` corpus with the
``demo`` preset, on the CPU, in a few minutes.

    python -m sed_model.train
    python -m sed_model.train --corpus emodb --data /path/to/emodb --folds loso --variant time
    python -m sed_model.train --resume --out-dir runs/emodb-time-20250101-120000
    torchrun --standalone --nproc-per-node 4 -m sed_model.train --corpus iemocap --data ... \
        --precision bf16 --out-dir runs/iemocap-feature

Under torchrun, every process runs this command; rank 0 prints and writes the run folder.
"""

from __future__ import annotations

import argparse
import sys

import torch

from . import distributed
from .cli import add_training_options, config_from_args, run_main, run_options
from .errors import SedError
from .runtime import keep_freed_memory
from .seeds import seed_configs, seed_dir, write_seed_summary
from .trainer import default_out_dir, format_summary, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sed_model.train",
        description=(
            "Train an attention-based dense LSTM (Xie et al. 2019) on frame-level ComParE_2016 "
            "features, one model per speaker-independent fold, then one more on all speakers "
            "(model.pt, the model to deploy). Writes model.pt, best.pt, metrics.json, "
            "curves.png and confusion.png into --out-dir and prints the UAR of the final models "
            "(and, labelled, the best held-out UAR seen during training: the paper's optimistic "
            "protocol)."
        ),
    )
    add_training_options(parser)
    parser.add_argument("--no-final-model", action="store_true",
                        help="skip the model trained on all speakers after the cross-validation "
                             "(model.pt; same recipe, and with validation speakers the median "
                             "selected epoch of the folds); give it again with --resume")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; user errors print ``error: ...`` and exit with status 2."""
    run_main(_train_command, argv)


def _train_command(argv: list[str] | None) -> None:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()
    config = config_from_args(args)
    out_dir = args.out_dir or default_out_dir(config.corpus, config.variant)
    if distributed.launched_distributed() and args.out_dir is None:
        raise SedError("under torchrun give --out-dir: the processes must agree on one run folder")
    main_process = distributed.is_main()
    if main_process:
        print(f"run folder: {out_dir}", flush=True)
    options = {"options": run_options(args), "final_model": not args.no_final_model}
    try:
        if args.seeds > 1:
            _train_seeds(config, out_dir, args.seeds, args.resume, options)
            return
        result = train(config, out_dir, resume=args.resume, **options)
    except KeyboardInterrupt:
        if main_process:
            print(f"\ninterrupted; continue with: python -m sed_model.train --resume "
                  f"--out-dir {out_dir}", file=sys.stderr)
        sys.exit(130)
    finally:
        distributed.teardown()
    if main_process:
        print(format_summary(result))
        deployed = "model.pt, " if result.final_model else ""
        print(f"wrote {out_dir}/{deployed}best.pt, metrics.json, curves.png, confusion.png")


def _train_seeds(config, out_dir, n: int, resume: bool, options: dict) -> None:
    """``--seeds N``: N runs in ``out_dir/seed-K`` on the same folds, then seeds.json."""
    runs = []
    for seed_config in seed_configs(config, n):
        run_dir = seed_dir(out_dir, seed_config)
        runs.append(train(seed_config, run_dir,
                          resume=resume and (run_dir / "config.json").exists(), **options))
        if distributed.is_main():
            print(f"seed {seed_config.seed}: " + format_summary(runs[-1]).splitlines()[0])
    if distributed.is_main():
        summary = write_seed_summary(out_dir, runs)
        print(f"{config.corpus} / {config.variant}: UAR {summary.uar_mean:.3f} +- "
              f"{summary.uar_std:.3f} over {n} seeds ({summary.headline} models, pooled over "
              f"{len(summary.fold_uar)} folds); wrote {out_dir}/seeds.json and seed-K/")
        if options["final_model"]:
            print(f"deploy the {n} seeds' models as one ensemble: python -m sed_model.predict "
                  f"--checkpoint {out_dir} FILE")


if __name__ == "__main__":
    main()
