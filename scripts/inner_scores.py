"""Score recipe settings on the inner folds of every outer fold: the training speakers only.

    python scripts/inner_scores.py --corpus emodb --data ../shared/data/emodb --folds loso \\
        --normalize global --seeds 1 --out-dir runs/inner-scores \\
        --setting default --setting epochs40 epochs=40 --setting cells128 cells=128,128

This is the evidence a change of the default recipe is chosen on. For every outer fold of the
protocol, and every seed, each setting (the run's recipe with the given ``TrainConfig``
overrides) trains on the ``--inner-folds`` speaker-grouped inner folds of the outer fold's
training speakers, exactly as the nested selection does (:mod:`sed_model.selection`), and
its score is the UAR pooled over the inner test utterances. The outer test speakers are never
trained on nor scored: nothing here reads them. The script prints each setting's mean inner
UAR and, per setting, on how many (fold, seed) runs it beat the first setting, and writes
``scores.json`` (with each inner fold's own UAR, to judge a margin against the inner folds'
spread). Finished inner runs are read back, so an interrupted run continues.

A setting is a name followed by ``option=value`` overrides of :class:`TrainConfig`
(``epochs=40``, ``cells=128,128``, ``augment=speed+shift+mixup``, ``augment=none``,
``head_dropout=0.5``); a name alone is the run's recipe unchanged.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sed_model import recipes
from sed_model.augment import candidate_augment, needed_speeds
from sed_model.cli import run_main
from sed_model.config import TrainConfig, make_config
from sed_model.data import load_dataset
from sed_model.errors import SedError
from sed_model.runtime import keep_freed_memory
from sed_model.selection import inner_folds, inner_score
from sed_model.trainer import dataset_folds


@dataclass(frozen=True)
class Setting:
    """A named set of recipe overrides."""

    name: str
    overrides: dict


def parse_value(option: str, text: str):
    """The value of recipe field ``option`` written as ``text``; an augmentation is written
    as a candidate, its names joined by ``+`` or by commas as ``--set`` writes them
    (``speed+shift``, ``speed,shift``, ``none``)."""
    if option == "augment":
        return candidate_augment(text.replace(",", "+"))
    return recipes.parse_value(option, text)


def parse_setting(words: list[str]) -> Setting:
    """``["epochs40", "epochs=40"]`` -> Setting("epochs40", {"epochs": 40})."""
    name, *pairs = words
    overrides = {}
    for pair in pairs:
        option, sep, text = pair.partition("=")
        if not sep:
            raise SedError(f"setting {name!r}: expected option=value, got {pair!r}")
        overrides[option] = parse_value(option, text)
    return Setting(name, overrides)


def score_settings(configs: dict[str, TrainConfig], dataset, folds, seeds, out_dir: Path, *,
                   progress: bool = True
                   ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, list[float]]]]:
    """``{setting: {"seed S, <fold name>": inner UAR}}`` for every seed and outer fold, and
    the same with each inner fold's own UAR; the inner runs live in
    ``out_dir/seed-S/fold-XX/<setting>/fold-J``."""
    scores: dict[str, dict[str, float]] = {name: {} for name in configs}
    fold_scores: dict[str, dict[str, list[float]]] = {name: {} for name in configs}
    for seed in seeds:
        for index, fold in enumerate(folds):
            for name, config in configs.items():
                fold_dir = out_dir / f"seed-{seed}" / f"fold-{index + 1:02d}" / name
                folds_of_fold = inner_folds(dataset, fold, config.recipe.inner_folds,
                                            seed=config.folds_seed + index)
                score = inner_score(dataclasses.replace(config, seed=seed), dataset,
                                    folds_of_fold, fold_dir, progress=progress)
                scores[name][f"seed {seed}, {fold.name}"] = score.uar
                fold_scores[name][f"seed {seed}, {fold.name}"] = list(score.fold_uars)
                print(f"seed {seed} fold {index + 1}/{len(folds)} ({fold.name}) {name}: "
                      f"inner UAR {score.uar:.4f}", flush=True)
    return scores, fold_scores


def summarize(scores: dict[str, dict[str, float]], reference: str) -> list[str]:
    """A line per setting: its mean inner UAR over the (seed, fold) runs and, against the
    setting ``reference``, the mean difference and on how many runs it was better or worse."""
    runs = sorted(scores[reference])
    base = np.array([scores[reference][k] for k in runs])
    lines = []
    for name, by_run in scores.items():
        values = np.array([by_run[k] for k in runs])
        line = f"{name}: mean inner UAR {values.mean():.4f} over {len(runs)} fold runs"
        if name != reference:
            line += (f"; against {reference} {values.mean() - base.mean():+.4f}, better on "
                     f"{int((values > base).sum())}, worse on {int((values < base).sum())}")
        lines.append(line)
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--folds", default=None)
    parser.add_argument("--variant", default="feature")
    parser.add_argument("--preset", default=None)
    parser.add_argument("--normalize", default="global")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds first-seed .. first-seed + seeds - 1 (default 0)")
    parser.add_argument("--inner-folds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--setting", nargs="+", action="append", required=True,
                        metavar="NAME [OPTION=VALUE ...]")
    parser.add_argument("--reference", default=None,
                        help="the setting the others are compared with (default: the first)")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()
    settings = [parse_setting(words) for words in args.setting]
    base = make_config(corpus=args.corpus, data=args.data, variant=args.variant,
                       preset=args.preset, folds=args.folds, normalize=args.normalize,
                       inner_folds=args.inner_folds, split_seed=0, validation_speakers=0)
    configs = {s.name: base.updated(s.overrides) for s in settings}
    reference = args.reference or settings[0].name
    if reference not in configs:
        raise SedError(f"--reference {reference!r} is not one of the settings: "
                       f"{', '.join(configs)}")
    speeds = needed_speeds((), tuple("+".join(c.recipe.augment) or "none"
                                   for c in configs.values()))
    dataset = load_dataset(args.corpus, args.data, progress=not args.no_progress, speeds=speeds)
    folds = dataset_folds(dataset, args.folds, seed=0)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    scores, fold_scores = score_settings(configs, dataset, folds, seeds, args.out_dir,
                                         progress=not args.no_progress)
    lines = summarize(scores, reference)
    print("\n".join(lines))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "scores.json").write_text(json.dumps({
        "settings": {s.name: {k: list(v) if isinstance(v, tuple) else v
                              for k, v in s.overrides.items()} for s in settings},
        "base": base.to_json(), "scores": scores, "inner_fold_scores": fold_scores,
        "summary": lines}, indent=2) + "\n")


if __name__ == "__main__":
    run_main(main, None)
