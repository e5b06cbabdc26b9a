"""Pieces shared by the command-line tools: error handling and the training options."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from . import recipes
from .config import TrainConfig, make_config
from .errors import SedError
from .features.normalization import MODES as NORMALIZE_MODES
from .fold_files import is_fold_path
from .model import VARIANTS
from .recipes import KEYS as RECIPE_KEYS
from .recipes import PRESETS
from .runtime import DEVICES, RunOptions
from .seeds import seed_runs


def run_main(main: Callable[[list[str] | None], None], argv: list[str] | None) -> None:
    """Run ``main(argv)``; a :class:`SedError` prints ``error: ...`` and exits with status 2.

    Warnings (skipped files) are printed as one ``warning: ...`` line each.
    """
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"
    try:
        main(argv)
    except SedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def _number_type(convert, accept, expected: str):
    """An argparse type: ``convert`` the text, keep it when ``accept`` says so, else name
    what was expected."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


positive_int = _number_type(int, lambda v: v >= 1, "a positive integer")
positive_float = _number_type(float, lambda v: v > 0, "a positive number")
non_negative_int = _number_type(int, lambda v: v >= 0, "0 or a positive integer")


class NameList(argparse.Action):
    """A list option, ``nargs="+"``: ``--variants lstm time``; the comma form ``lstm,time``
    (and a mix of both) is read the same. With ``choices`` every name must be one of them."""

    def __init__(self, option_strings, dest, *, choices=None, **kwargs):
        self.names = tuple(choices) if choices is not None else None
        super().__init__(option_strings, dest, nargs="+", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        names = tuple(part.strip() for value in values for part in value.split(",")
                      if part.strip())
        if not names:
            parser.error(f"argument {option_string}: expected at least one name")
        unknown = [n for n in names if self.names is not None and n not in self.names]
        if unknown:
            parser.error(f"argument {option_string}: invalid choice: {unknown[0]!r} "
                         f"(choose from {', '.join(self.names)})")
        setattr(namespace, self.dest, names)


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """--workers, --strict, --cache-dir: how features are extracted (not part of the result)."""
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="processes for feature extraction (default: number of CPU cores)")
    parser.add_argument("--strict", action="store_true",
                        help="stop with an error at the first unusable audio file instead of "
                             "skipping it with a warning")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="feature cache folder (default: $SED_MODEL_CACHE/features or "
                             "~/.cache/sed_model/features)")


def add_normalize_option(parser: argparse.ArgumentParser) -> None:
    """--normalize global|speaker (train, compare, baseline)."""
    parser.add_argument("--normalize", choices=NORMALIZE_MODES, default=None,
                        help="feature normalisation: global = z-score with the training "
                             "speakers' pooled statistics (default); speaker = every speaker "
                             "with its own statistics, the test speakers' from their unlabelled "
                             "audio (transductive; the usual speaker-independent SER practice)")


class SetOption(argparse.Action):
    """``--set key=value``, repeatable: collected in order into ``namespace.set``."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.set = [*(getattr(namespace, "set", None) or []), values]


class DeprecatedAlias(argparse.Action):
    """A flag that has become ``--set KEY=VALUE``: it still works, with a warning, and is
    hidden from the help. Several values (``--augment speed shift``) join with commas."""

    def __init__(self, option_strings, dest, *, key: str, **kwargs):
        self.key = key
        super().__init__(option_strings, dest, nargs="+", help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        value = ",".join(values)
        warnings.warn(f"{option_string} is deprecated; use --set {self.key}={value}",
                      FutureWarning, stacklevel=2)
        namespace.set = [*(getattr(namespace, "set", None) or []), f"{self.key}={value}"]


# deprecated aliases of --set keys
DEPRECATED_FLAGS = {"--steps": "steps", "--batch-size": "batch_size", "--lr": "lr",
                    "--cells": "cells", "--eval-every": "eval_every",
                    "--validation-speakers": "validation_speakers", "--augment": "augment",
                    "--augment-candidates": "augment_candidates", "--inner-folds": "inner_folds",
                    "--backend": "backend", "--precision": "precision"}
# run fields that --set takes besides the recipe's (the others have flags of their own)
SET_RUN_FIELDS = ("backend", "precision", "split_seed")
# TrainConfig fields set from command-line flags of the same name
TRAINING_OPTIONS = ("corpus", "data", "variant", "preset", "folds", "epochs", "normalize",
                    "device", "seed")


def add_training_options(parser: argparse.ArgumentParser, *, variant: bool = True) -> None:
    """The options that define a training run (shared by train and compare)."""
    parser.add_argument("--corpus", default=None,
                        help="corpus name: emodb, ravdess, cremad, iemocap (5 classes), iemocap4, "
                             "enterface, csv (a path,label,speaker manifest given with --data) or "
                             "demo (synthetic, generated on first use; the default)")
    parser.add_argument("--data", default=None,
                        help="the corpus folder (or the manifest for csv); not needed for demo")
    if variant:
        parser.add_argument("--variant", choices=VARIANTS, default=None,
                            help="model variant (rows of the paper's Tables 2/3): lstm = last "
                                 "step of the top layer, general = last steps of all layers, "
                                 "time = time attention (Eq. 5), feature = feature attention "
                                 "(Eq. 6); default feature")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="training recipe: "
                             + "; ".join(f"{p.name} = {p.description}" for p in PRESETS.values())
                             + ". Default: demo for the demo corpus, small for every real "
                               "corpus (use enterface or iemocap for the paper's Table 1)")
    parser.add_argument("--set", action=SetOption, default=None, metavar="KEY=VALUE",
                        help="override one field of the recipe (repeatable), e.g. --set lr=1e-3 "
                             "--set cells=128,128 --set augment=none; also backend, precision "
                             "(fp32, bf16, fp16) and split_seed. Keys: "
                             + ", ".join((*RECIPE_KEYS, *SET_RUN_FIELDS)))
    parser.add_argument("--folds", default=None,
                        help="evaluation protocol: loso (leave one speaker out), K (an integer: "
                             "K speaker-grouped folds), holdout (fixed held-out speakers), session "
                             "(leave one IEMOCAP session out), paper (the paper's eNTERFACE "
                             "260-utterance test set), or PATH: official test folds, a folder "
                             "of EmoBox *_test_fold_K.jsonl lists or a CSV file with speaker,"
                             "fold columns (each fold tests exactly its listed speakers). "
                             "Default: the corpus' usual protocol")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help="train for this many passes over the training split (default: the "
                             "recipe's; --set steps=N gives the length in optimizer steps)")
    add_normalize_option(parser)
    parser.add_argument("--device", choices=DEVICES, default=None,
                        help="where to train; auto = cuda if available, else cpu (default auto)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of weight initialisation, batch order and random splits "
                             "(default 0)")
    parser.add_argument("--seeds", type=positive_int, default=1, metavar="N",
                        help="train N times with the seeds --seed, --seed+1, ... on the same "
                             "folds (each run in <out-dir>/seed-K) and report the mean and "
                             "standard deviation over seeds (default 1)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="run folder (default runs/<corpus>-<variant>-<timestamp>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the killed run in --out-dir: completed folds are kept, "
                             "the running fold continues from its last checkpoint; training "
                             "options are read from the run's config.json")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (for log files)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads for torch (default: torch's choice, one per core); on "
                             "a busy machine 1 can be several times faster for small models")
    add_data_options(parser)
    for flag, key in DEPRECATED_FLAGS.items():
        parser.add_argument(flag, action=DeprecatedAlias, key=key, dest=f"deprecated_{key}")


def resumed_run_dir(out_dir: Path, seeds: int) -> Path:
    """The folder whose config.json a resumed run reads: ``out_dir``, or with several seeds
    its first ``seed-K`` folder (the lowest seed, whose seed is the runs' base seed)."""
    if seeds == 1:
        return out_dir
    runs = seed_runs(out_dir)
    if not runs:
        raise SedError(f"cannot resume: {out_dir} holds no seed-K run folders")
    return runs[0]


def given_options(args: argparse.Namespace) -> dict:
    """The training options given on the command line: flags and ``--set`` values, typed.
    The corpus folder and a fold file are kept as absolute paths, so that a run resumes
    from any working directory."""
    given = {name: getattr(args, name) for name in TRAINING_OPTIONS
             if getattr(args, name, None) is not None}
    given.update(set_values(args))
    for key in ("data", "folds"):
        if key in given and (key == "data" or is_fold_path(given[key])) \
                and Path(given[key]).exists():
            given[key] = str(Path(given[key]).absolute())
    return given


def set_values(args: argparse.Namespace) -> dict:
    """Every ``--set key=value`` of ``args``, typed, in order (a later value wins)."""
    values = {}
    for text in getattr(args, "set", None) or []:
        values.update(parse_set(text))
    return values


def parse_set(text: str) -> dict:
    """One ``--set key=value`` as ``{key: typed value}``."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if key in SET_RUN_FIELDS and sep:
        if key == "split_seed":
            return {key: None if value.lower() == "none" else _int_value(key, value)}
        return {key: value.strip()}
    if not sep or key not in RECIPE_KEYS:
        what = f"unknown key {key!r}" if sep else "expected KEY=VALUE"
        raise SedError(f"--set {text}: {what}; valid keys: "
                       f"{', '.join((*RECIPE_KEYS, *SET_RUN_FIELDS))}")
    return recipes.parse_assignments([text])


def _int_value(key: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SedError(f"{key}={text!r}: expected an integer or none") from None


def run_options(args: argparse.Namespace) -> RunOptions:
    """The run options of --no-progress, --workers, --strict and --cache-dir."""
    return RunOptions(progress=not args.no_progress, workers=args.workers, strict=args.strict,
                      cache_dir=args.cache_dir)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of the given options; with --resume, the saved one (options given
    explicitly override it, and the trainer refuses to resume when they differ)."""
    given = given_options(args)
    if args.resume:
        if args.out_dir is None:
            raise SedError("--resume needs --out-dir: the folder of the run to continue")
        return TrainConfig.resumed(resumed_run_dir(args.out_dir, getattr(args, "seeds", 1)),
                                   given)
    return make_config(**given)
