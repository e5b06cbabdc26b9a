"""Two comparisons of one variant on the same folds, side by side: A against B.

    python scripts/paired_runs.py runs/ravdess-emobox-global-epochs-60 \\
        runs/ravdess-emobox-global-utterance-norm --variant feature

``compare`` sets every variant against the SVM trained on the same folds; this sets one
variant of two ``compare`` folders (two recipes, two machines, two code versions) against
each other in the same way. It reads each folder's ``comparison.json`` and prints, per
folder, the variant's pooled UAR over its seeds (mean and standard deviation) and that of its
ensemble of all seeds when there is one, then A − B per fold (each fold's UAR averaged over
the seeds; mean difference, 95% bootstrap interval over folds, Wilcoxon p, folds better) for
the single models and for the ensembles. The two folders must test the same speakers in
every fold.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sed_model.checkpoint import read_json
from sed_model.cli import run_main
from sed_model.compare import Comparison
from sed_model.errors import SedError
from sed_model.seeds import SeedSummary
from sed_model.stats import PairedComparison, paired_comparison


def load_comparison(folder: Path) -> Comparison:
    path = Path(folder) / "comparison.json"
    if not path.is_file():
        raise SedError(f"{folder}: no comparison.json; give a folder written by "
                       "python -m sed_model.compare")
    return Comparison.from_json(read_json(path))


def variant_results(comparison: Comparison, variant: str,
                    folder: Path) -> tuple[SeedSummary, SeedSummary | None]:
    """The variant's summary over seeds and its ensemble of all seeds (None without one)."""
    if variant not in comparison.summaries:
        trained = ", ".join(v for v in comparison.summaries if v != "svm")
        raise SedError(f"{folder}: variant {variant} was not trained there; it has {trained}")
    return comparison.summaries[variant], (comparison.ensembles or {}).get(variant)


def check_same_folds(a: SeedSummary, b: SeedSummary, names: tuple[str, str]) -> None:
    if [sorted(s) for s in a.fold_test_speakers] != [sorted(s) for s in b.fold_test_speakers]:
        raise SedError(f"{names[0]} and {names[1]} test other speakers in their folds; a paired "
                       "comparison needs the same folds")


def describe(name: str, single: SeedSummary, ensemble: SeedSummary | None) -> str:
    text = (f"{name}: UAR {single.uar_mean:.3f} +- {single.uar_std:.3f} over "
            f"{len(single.seeds)} seed(s) (" + ", ".join(f"{u:.3f}" for u in single.pooled_uar)
            + ")")
    if ensemble is not None:
        text += f"; ensemble of {len(ensemble.seeds)} seeds {ensemble.uar_mean:.3f}"
    return text + "; per fold " + " ".join(f"{u:.3f}" for u in single.fold_uar)


def paired_runs(folder_a: Path, folder_b: Path, variant: str) -> list[PairedComparison]:
    """A − B per fold for the single models and, where both folders have one, the
    ensembles."""
    single_a, ensemble_a = variant_results(load_comparison(folder_a), variant, folder_a)
    single_b, ensemble_b = variant_results(load_comparison(folder_b), variant, folder_b)
    check_same_folds(single_a, single_b, (str(folder_a), str(folder_b)))
    pairs = [paired_comparison("A", single_a.fold_uar, "B", single_b.fold_uar)]
    if ensemble_a is not None and ensemble_b is not None:
        pairs.append(paired_comparison("A ensemble", ensemble_a.fold_uar, "B ensemble",
                                       ensemble_b.fold_uar))
    print(describe(f"A {folder_a}", single_a, ensemble_a))
    print(describe(f"B {folder_b}", single_b, ensemble_b))
    return pairs


def _paired_runs_command(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="a compare folder (comparison.json)")
    parser.add_argument("b", type=Path, help="the compare folder to set it against")
    parser.add_argument("--variant", default="feature", help="the variant (default feature)")
    args = parser.parse_args(argv)
    for pair in paired_runs(args.a, args.b, args.variant):
        print(pair.line())


def main(argv: list[str] | None = None) -> None:
    run_main(_paired_runs_command, argv)


if __name__ == "__main__":
    main()
