"""Classical baseline: ComParE_2016 functionals with a linear SVM, on the model's folds.

    python -m sed_model.baseline --corpus emodb --data DIR --folds loso

Per utterance the 6373 ComParE_2016 functionals (``sed_model.features.extract_functionals``);
per fold a ``StandardScaler`` fitted on the training split and a ``LinearSVC``
(squared hinge, L2, one-vs-rest, no class weighting). ``C`` is fixed (default 1e-3, a usual
value for standardised ComParE functionals) and never chosen on the test fold; ``--tune``
picks it instead by an inner speaker-grouped cross-validation on each fold's training
speakers only (nested CV: grid, inner folds and criterion in :mod:`sed_model.svm_tuning`;
each fold's chosen C and inner scores are in the ``--json`` result). The folds are made by
``sed_model.splits.make_folds`` exactly as for the neural models (same protocol, same seed,
same utterances unless the feature extractor skipped a file for one feature kind and not the
other). Results are reported like the models': per-class recall and UAR pooled over folds,
and per-fold UAR.

``--normalize speaker`` first z-scores every speaker's functionals with that speaker's own
mean and std (the test speakers' from their unlabelled utterances, as the models'
``--normalize speaker``; transductive), then runs the same pipeline; it warns first when
most speakers carry a single label (:mod:`sed_model.confounds`; ``label_spread`` in the
result). ``--against RUN`` pairs the SVM's per-fold UARs with those of a model run on the
same folds (a ``train`` run folder, with or without ``--seeds``) and prints the paired
comparison (:mod:`sed_model.stats`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from tqdm.auto import tqdm

from .checkpoint import read_json, write_json
from .cli import add_data_options, add_normalize_option, positive_float, positive_int, run_main
from .confounds import check_label_spread
from .corpora import load_corpus
from .corpora.base import Utterance
from .errors import SedError
from .features import extract_functionals
from .metrics import classification_report, mean_and_std, report_from_confusion
from .results import RunResult
from .splits import make_folds
from .stats import PairedComparison, paired_comparison
from .svm_tuning import CRITERION, INNER_FOLDS, TUNING_GRID, choose_C

DEFAULT_C = 1e-3


def svm_pipeline(C: float):
    """StandardScaler (fitted on the training data it is given) + linear SVM."""
    return make_pipeline(StandardScaler(), LinearSVC(C=C, max_iter=20000))


def speaker_standardized(X: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    """Every speaker's rows z-scored with that speaker's mean and std (std < 1e-6: 1)."""
    out = np.empty_like(X)
    for speaker in np.unique(speakers):
        rows = speakers == speaker
        mean, std = X[rows].mean(axis=0), X[rows].std(axis=0)
        out[rows] = (X[rows] - mean) / np.where(std < 1e-6, 1.0, std)
    return out


@dataclass(frozen=True)
class Tuning:
    """Choose C per fold on ``inner_folds`` speaker-grouped inner folds over ``grid``."""

    inner_folds: int = INNER_FOLDS
    grid: tuple[float, ...] = TUNING_GRID

    def to_dict(self) -> dict:
        return {"grid": list(self.grid), "inner_folds": self.inner_folds,
                "criterion": CRITERION}


def fit_fold(X: np.ndarray, y: np.ndarray, utterances: Sequence[Utterance],
             classes: Sequence[str], C: float, tuning: Tuning | None, seed: int = 0):
    """The fitted classifier of one training split (rows ``utterances``), the C it uses and,
    with ``tuning``, how the inner folds chose it (:mod:`sed_model.svm_tuning`; ``seed``:
    the run's split seed plus the fold's index)."""
    if tuning is None:
        return svm_pipeline(C).fit(X, y), C, None
    selection = choose_C(svm_pipeline, X, y, utterances, classes, k=tuning.inner_folds,
                         seed=seed, grid=tuning.grid)
    return svm_pipeline(selection.chosen).fit(X, y), selection.chosen, selection


def _functionals(loader, utterances: list[Utterance], **extract_options):
    """The utterances whose functionals could be extracted, and their (N, 6373) matrix."""
    vectors = extract_functionals([u.path for u in utterances], **extract_options)
    kept = [i for i, v in enumerate(vectors) if v is not None]
    if not kept:
        raise SedError(f"none of the {len(utterances)} files of {loader.name!r} could be used")
    X = np.stack([vectors[i] for i in kept]).astype(np.float64)
    return [utterances[i] for i in kept], X


def run_baseline(
    corpus: str,
    data: str | Path | None,
    *,
    folds: str | None = None,
    C: float = DEFAULT_C,
    tune: bool | Tuning = False,
    seed: int = 0,
    normalize: str = "global",
    workers: int | None = None,
    strict: bool = False,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Cross-validated functionals + linear SVM; a metrics dict shaped like the trainer's.

    ``tune``: True (or a :class:`Tuning`) chooses C per fold on inner folds of its training
    speakers; every fold's choice and inner scores are in its ``C_selection``."""
    tuning = Tuning() if tune is True else (tune or None)
    loader, all_utterances = load_corpus(corpus, Path(data) if data else None)
    utterances, X = _functionals(loader, all_utterances, cache_dir=cache_dir, workers=workers,
                                 progress=progress, strict=strict)
    y = np.array([loader.classes.index(u.label) for u in utterances])
    speakers = np.array([u.speaker for u in utterances])
    if normalize not in ("global", "speaker"):
        raise SedError(f"normalize must be global or speaker; got {normalize!r}")
    spread = check_label_spread(utterances, normalize)
    if normalize == "speaker":
        X = speaker_standardized(X, speakers)
    results = []
    for index, fold in enumerate(tqdm(make_folds(utterances, folds or "default", seed=seed,
                                                 corpus=loader),
                                      desc="SVM folds", disable=not progress)):
        train, test = np.array(fold.train), np.array(fold.test)
        if len(set(y[train])) < 2:
            raise SedError(f"fold {fold.name!r}: the training split has a single class")
        classifier, used_C, selection = fit_fold(
            X[train], y[train], [utterances[i] for i in train], loader.classes, C, tuning,
            seed=seed + index)
        report = classification_report(y[test], classifier.predict(X[test]), loader.classes)
        results.append({"index": index, "name": fold.name, "n_train": len(train),
                        "n_test": len(test), "test_speakers": sorted(set(speakers[test])),
                        "C": used_C, "C_selection": selection and selection.to_dict(),
                        "final": report})
    pooled = np.sum([r["final"]["confusion"] for r in results], axis=0)
    return {
        "corpus": loader.name,
        "model": "ComParE_2016 functionals + StandardScaler + LinearSVC",
        "C": "tuned by inner speaker-grouped CV on training folds" if tuning else C,
        "tuning": tuning and tuning.to_dict(),
        "normalize": normalize,
        "protocol": folds or "default",  # the --folds value as given (a fold file's path)
        "split_seed": seed,
        "label_spread": spread.to_dict(),
        "headline": "final",
        "classes": list(loader.classes),
        "n_utterances": len(utterances),
        "skipped_files": len(all_utterances) - len(utterances),
        "folds": results,
        "summary": {"final": {
            "pooled": report_from_confusion(pooled, loader.classes),
            "uar": mean_and_std([r["final"]["uar"] for r in results]),
            "wa": mean_and_std([r["final"]["wa"] for r in results]),
        }},
    }


def format_result(metrics: dict) -> str:
    s = metrics["summary"]["final"]
    classes = metrics["classes"]
    recall = s["pooled"]["recall"]
    n = len(metrics["folds"])
    return "\n".join([
        f"{metrics['corpus']}: {metrics['model']}, C = {metrics['C']}, normalize "
        f"{metrics['normalize']}, {n} folds",
        "  ".join(f"{c[:3].capitalize()} {recall[c]:.2f}" if recall[c] is not None else f"{c} -"
                  for c in classes),
        f"UAR {s['pooled']['uar']:.3f}  WA {s['pooled']['wa']:.3f} (pooled over folds); "
        f"UAR mean over folds {s['uar']['mean']:.3f} +- {s['uar']['std']:.3f}",
    ])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sed_model.baseline",
        description="ComParE_2016 functionals + linear SVM on the same speaker-independent "
                    "folds as the neural models; prints per-class recall and UAR.",
    )
    parser.add_argument("--corpus", default="demo",
                        help="corpus name (emodb, ravdess, cremad, iemocap, iemocap4, enterface, "
                             "csv, demo; default demo)")
    parser.add_argument("--data", default=None,
                        help="the corpus folder (or the manifest for csv); not needed for demo")
    parser.add_argument("--folds", default=None,
                        help="loso, K, holdout, session, paper or PATH (a folder of EmoBox "
                             "*_test_fold_K.jsonl lists or a speaker,fold CSV), as for "
                             "sed_model.train (default: the corpus' usual protocol)")
    parser.add_argument("--C", type=positive_float, default=DEFAULT_C, dest="C",
                        help=f"SVM regularisation constant (default {DEFAULT_C}); fixed, never "
                             "chosen on test data")
    parser.add_argument("--tune", action="store_true",
                        help="choose C per fold from " + ", ".join(map(str, TUNING_GRID))
                             + " by the pooled UAR of --inner-folds speaker-grouped inner folds "
                               "of the fold's training speakers only (nested CV; ties: the "
                               "smaller C); every choice and inner score in --json")
    parser.add_argument("--inner-folds", type=positive_int, default=INNER_FOLDS, metavar="K",
                        help=f"inner folds of --tune (default {INNER_FOLDS}, as the models' "
                             "recipe key inner_folds)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of random splits (holdout, K folds); default 0")
    add_normalize_option(parser)
    parser.add_argument("--against", type=Path, default=None, metavar="RUN_DIR",
                        help="also print the paired comparison (per-fold UAR differences, "
                             "bootstrap CI, Wilcoxon test) with this train run folder, made on "
                             "the same folds (its seeds.json with --seeds, else metrics.json)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="write the full result (per fold, confusion matrices) to FILE")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_data_options(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; user errors print ``error: ...`` and exit with status 2."""
    run_main(_baseline_command, argv)


def _baseline_command(argv: list[str] | None) -> None:
    args = build_parser().parse_args(argv)
    if args.tune and args.inner_folds < 2:
        raise SedError(f"--inner-folds must be at least 2; got {args.inner_folds}")
    tune = Tuning(inner_folds=args.inner_folds) if args.tune else False
    metrics = run_baseline(args.corpus, args.data, folds=args.folds, C=args.C, tune=tune,
                           seed=args.seed, normalize=args.normalize or "global",
                           workers=args.workers, strict=args.strict, cache_dir=args.cache_dir,
                           progress=not args.no_progress)
    print(format_result(metrics))
    if args.against is not None:
        comparison = compare_with_run(metrics, args.against)
        metrics["paired"] = comparison.to_dict()
        print(comparison.line())
    if args.json is not None:
        write_json(args.json, metrics)
        print(f"wrote {args.json}")


def _fold_text(folds: list[list[str]]) -> str:
    return "; ".join(" ".join(speakers) for speakers in folds)


def compare_with_run(svm: dict, run_dir: Path) -> PairedComparison:
    """The run in ``run_dir`` minus the SVM, fold by fold; the folds must be the same."""
    run_dir = Path(run_dir)
    if (run_dir / "seeds.json").exists():
        saved = read_json(run_dir / "seeds.json")
        tested, uars = saved["summary"]["fold_test_speakers"], saved["summary"]["fold_uar"]
        label = f"{saved['variant']} ({len(saved['runs'])} seeds)"
    elif (run_dir / "metrics.json").exists():
        run = RunResult.read(run_dir)
        saved = {"config": run.config.to_json()}
        tested = [list(f.test_speakers) for f in run.folds]
        uars, label = run.fold_uars(), run.variant
    else:
        raise SedError(f"--against {run_dir}: no seeds.json or metrics.json there")
    svm_tested = [f["test_speakers"] for f in svm["folds"]]
    if tested != svm_tested:
        raise SedError(f"--against {run_dir}: its folds' test speakers ({_fold_text(tested)}) are "
                       f"not the SVM's ({_fold_text(svm_tested)}); use the same corpus, --folds "
                       "and --seed")
    if saved["config"].get("normalize", "global") != svm["normalize"]:
        print(f"warning: {run_dir} used normalize {saved['config'].get('normalize', 'global')}, "
              f"the SVM {svm['normalize']}", file=sys.stderr)
    return paired_comparison(label, uars, "SVM", [f["final"]["uar"] for f in svm["folds"]])


if __name__ == "__main__":
    main()
