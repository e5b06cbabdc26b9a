"""Train the four variants on the same folds, beside the SVM baseline, and print the
paper's Table 2/3 layout with paired comparisons.

    python -m sed_model.compare --corpus emodb --data DIR --folds loso --seeds 3 --markdown t.md

Every variant sees the same features, folds, preset, normalisation and number of steps; with
``--seeds N`` each is trained N times (seeds ``--seed`` .. ``--seed+N-1``, the same folds;
:mod:`sed_model.seeds`). The ComParE functionals SVM (:mod:`sed_model.baseline`, its fixed C,
the same ``--normalize``) runs on the same folds unless ``--no-baseline``. The table shows
per-class recall (mean over seeds, pooled over folds) and UAR (pooled over folds, mean and
std over seeds) of the headline models: the checkpoints selected on validation speakers when
the runs have them, else the final models (selected by nothing). Below it, paired
comparisons on the same folds (:mod:`sed_model.stats`): every variant against the SVM, and
``feature`` against the other variants. With one seed, the tables of the final models and of
the best test UAR during training (the paper's "optimal recognition results", optimistic)
follow. Files under ``--out-dir``: one run folder per variant (``<variant>/``, or
``<variant>/seed-K/`` with several seeds), ``baseline.json``, ``comparison.json``,
``table.md`` and ``curves.png`` (mean held-out UAR against step per variant, like the paper's
Figs. 2-3).
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from .baseline import Tuning, run_baseline
from .checkpoint import read_json, write_json
from .cli import (
    NameList,
    add_training_options,
    config_from_args,
    given_options,
    positive_int,
    run_main,
    run_options,
)
from .config import CONFIG_FILE, saved_config
from .data import Dataset, load_dataset
from .ensemble import members_per_ensemble, seed_ensemble
from .errors import SedError
from .fold import FoldResult
from .model import VARIANTS
from .plots import plot_curves
from .results import RESULTS_SCHEMA, RunResult
from .runtime import RunOptions, keep_freed_memory
from .search import SearchSummary
from .seeds import SeedSummary, seed_configs, seed_dir, summarize_seeds, write_seed_summary
from .selection import candidate_settings
from .stats import PairedComparison, paired_comparison
from .tables import render_table
from .trainer import TrainConfig, finish_run, prepare_run, train, train_or_read_fold
from .workers import exit_with_parent

TABLE_LABELS = {"lstm": "LSTM", "general": "General", "time": "Time", "feature": "Feature",
                "svm": "SVM (functionals)"}


def _report_run(result: RunResult, seconds: float | None = None) -> None:
    """The line printed when a variant's run (one seed, every fold) is complete."""
    s = result.summary
    selected = (f"{s['selected'].pooled['uar']:.3f} (selected on validation), "
                if "selected" in s else "")
    took = "" if seconds is None else f", {seconds:.0f} s"
    print(f"{result.variant}: UAR {selected}{s['final'].pooled['uar']:.3f} (final), "
          f"{s['best'].pooled['uar']:.3f} (best during training){took}", flush=True)


def _resumes(run_dir: Path, resume: bool) -> bool:
    """Whether ``--resume`` continues ``run_dir``: only a run that has started (its config
    written); a new variant or seed in an old comparison starts fresh."""
    return resume and (run_dir / CONFIG_FILE).exists()


def _train_variant(config: TrainConfig, out_dir: Path, resume: bool, options: RunOptions,
                   dataset) -> RunResult:
    """Train one variant's run, every fold, in this process."""
    started = time.perf_counter()
    result = train(config, out_dir, dataset=dataset,
                   resume=_resumes(out_dir, resume), options=options,
                   final_model=False)  # compare measures; train deploys
    _report_run(result, time.perf_counter() - started)
    return result


def _run_dir(out_dir: Path, config: TrainConfig, seeds: int) -> Path:
    variant_dir = out_dir / config.variant
    return variant_dir if seeds == 1 else seed_dir(variant_dir, config)


# The features of a worker process of ``--jobs``, read from the cache once per process.
_worker_dataset: Dataset | None = None


def _start_worker(threads: int, corpus: str, data, speeds: tuple, options: RunOptions) -> None:
    global _worker_dataset
    exit_with_parent()
    torch.set_num_threads(threads)
    keep_freed_memory()
    _worker_dataset = load_dataset(corpus, data, speeds=speeds, **options.data(progress=False))


def _train_fold_in_worker(config: TrainConfig, folds: list, index: int, out_dir: Path,
                          resume: bool) -> FoldResult:
    return train_or_read_fold(config, _worker_dataset, folds, index, out_dir, resume=resume,
                              progress=False)


def _train_in_workers(runs: list[tuple[TrainConfig, Path]], *, resume: bool, jobs: int,
                      threads: int | None, dataset: Dataset, options: RunOptions,
                      meanwhile: Callable[[], object]) -> tuple[list[RunResult], object]:
    """Every fold of every run, ``jobs`` folds at a time in worker processes, and
    ``meanwhile()`` run here while they train; the runs' results and what it returned.

    The unit of work is one fold, not one run: with runs of 10 folds on 2 workers the last
    run would otherwise train alone while the other core waits (a sixth of the EmoDB table's
    wall time). A fold depends only on its configuration, seed and index, so the results are
    those of the runs trained one after another."""
    prepared = []
    for config, run_dir in runs:  # config.json of every run, before any fold trains
        run_resume = _resumes(run_dir, resume)
        prepared.append((*prepare_run(config, dataset, run_dir, run_resume), run_dir, run_resume))
    first = runs[0][0]
    start = (threads or 1, first.corpus, first.data,  # jobs x threads should not exceed cores
             first.recipe.speeds, options)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_worker, initargs=start) as pool:
        futures = [[pool.submit(_train_fold_in_worker, config, folds, index, run_dir, run_resume)
                    for index in range(len(folds))]
                   for config, folds, run_dir, run_resume in prepared]
        try:
            extra = meanwhile()
        except BaseException:  # do not wait for the folds before reporting it
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        trained = []
        for (config, _, run_dir, _), fold_futures in zip(prepared, futures):
            results = [f.result() for f in fold_futures]
            trained.append(finish_run(config, dataset, results, run_dir))
            _report_run(trained[-1])
    return trained, extra


def _train_all(runs: list[tuple[TrainConfig, Path]], *, resume: bool, options: RunOptions,
               jobs: int, threads: int | None, dataset,
               meanwhile: Callable[[], object]) -> tuple[list[RunResult], object]:
    """Every (configuration, folder) trained, in this process or with ``jobs > 1`` fold by
    fold in worker processes, and ``meanwhile()`` (the SVM): after the runs in this process,
    during them with workers (its cost then hides behind theirs)."""
    if jobs == 1:
        if threads:
            torch.set_num_threads(threads)
        trained = [_train_variant(c, d, resume, options, dataset) for c, d in runs]
        return trained, meanwhile()
    return _train_in_workers(runs, resume=resume, jobs=jobs, threads=threads, dataset=dataset,
                             options=options, meanwhile=meanwhile)


def svm_tuned(config: TrainConfig, svm_tune: bool) -> bool:
    """Whether the comparison's SVM chooses its C on inner folds: when asked, and whenever
    the recipe chooses settings per fold (a search or a nested selection), so that both
    systems have a tuning budget on the same inner folds."""
    return svm_tune or config.recipe.search_trials > 0 or config.recipe.selects


def _run_svm(config: TrainConfig, options: RunOptions, tune: bool = False,
             saved: Path | None = None) -> dict:
    """The SVM on the comparison's folds (the same protocol and seed) and normalisation;
    ``tune``: C chosen per fold on ``config.recipe.inner_folds`` inner folds of its training
    speakers (:mod:`sed_model.svm_tuning`). ``saved``: a resumed comparison's
    ``baseline.json``, read back instead of refitting when it was made the same way."""
    tuning = Tuning(inner_folds=config.recipe.inner_folds) if tune else None
    if saved is not None and saved.exists():
        try:
            svm = read_json(saved)
        except SedError:  # a damaged file: fit again
            svm = {}
        if _svm_made_as(svm, config, tuning):
            print(f"SVM: read back from {saved} (the same folds, normalisation and tuning)")
            return svm
    svm = run_baseline(config.corpus, config.data, folds=config.folds, seed=config.folds_seed,
                       normalize=config.normalize, tune=tuning or False, **options.data())
    svm.update(config={"seed": None}, variant="svm")
    return svm


def _svm_made_as(svm: dict, config: TrainConfig, tuning: Tuning | None) -> bool:
    """Whether a saved SVM result used ``config``'s folds, split seed and normalisation and
    ``tuning`` (a result saved without its split seed is not trusted)."""
    return (svm.get("protocol") == (config.folds or "default")
            and svm.get("split_seed") == config.folds_seed
            and svm.get("normalize") == config.normalize
            and svm.get("tuning") == (tuning and tuning.to_dict()))


def _svm_summary(svm: dict, folds: list[list[str]]) -> SeedSummary:
    """The SVM's results shaped like a variant's, after checking that its folds are theirs."""
    if [f["test_speakers"] for f in svm["folds"]] != folds:
        raise SedError("the SVM's folds differ from the models' (a file usable for one feature "
                       "kind and not the other?); compare them with --no-baseline")
    pooled = svm["summary"]["final"]["pooled"]
    return SeedSummary(seeds=[None], headline="final", pooled_uar=[pooled["uar"]],
                       pooled_wa=[pooled["wa"]], recall=pooled["recall"],
                       fold_names=[f["name"] for f in svm["folds"]], fold_test_speakers=folds,
                       fold_uar=[f["final"]["uar"] for f in svm["folds"]])


def selection_choices(runs: list[RunResult]) -> dict[str, int] | None:
    """How often the inner folds chose each candidate of the nested selection, over the folds
    of ``runs`` (one variant's results, every seed); None when the runs chose none."""
    picks = [f.selection["chosen"] for run in runs for f in run.folds if f.selection]
    if not picks:
        return None
    return {c: picks.count(c) for c in candidate_settings(runs[0].config.recipe)}


def _ensembles(out_dir: Path, results: dict[str, list[RunResult]],
               summaries: dict[str, SeedSummary], classes,
               size: int | None = None) -> dict[str, SeedSummary]:
    """Each variant's ensembles over its seeds (final models; :mod:`sed_model.ensemble`):
    one of all its seeds, or disjoint ensembles of ``size`` seeds, for the variants whose
    every fold left its test predictions."""
    ensembles = {}
    for v, runs in results.items():
        if runs[0].headline != "final":  # checkpoints selected on validation: not ensembled
            continue
        s = summaries[v]
        found = seed_ensemble([_run_dir(out_dir, run.config, len(runs)) for run in runs],
                              s.seeds, s.fold_names, s.fold_test_speakers, classes, size)
        if found is not None:
            ensembles[v] = found
    return ensembles


def ensemble_label(variant: str, summary: SeedSummary) -> str:
    size, count = members_per_ensemble(summary), len(summary.pooled_uar)
    if count == 1:
        return f"{TABLE_LABELS[variant]}, ensemble of {size} seeds"
    return f"{TABLE_LABELS[variant]}, {count} ensembles of {size} seeds"


def check_ensemble_size(size: int | None, seeds: int) -> None:
    """``--ensemble-size K`` must split the ``seeds`` runs into at least one ensemble of 2 or
    more members with none left over."""
    if size is not None and not (2 <= size <= seeds and seeds % size == 0):
        raise SedError(f"--ensemble-size {size} does not split --seeds {seeds} into ensembles "
                       "of 2 or more seeds each with none left over; give a divisor of "
                       "--seeds of at least 2")


def _paired(summaries: dict[str, SeedSummary],
            ensembles: dict[str, SeedSummary] | None = None) -> list[PairedComparison]:
    """Every variant (and ensemble) against the SVM, and feature against the other
    variants."""
    pairs = [(v, "svm") for v in summaries if v != "svm" and "svm" in summaries]
    if "feature" in summaries:
        pairs += [("feature", v) for v in summaries if v not in ("feature", "svm")]
    paired = [paired_comparison(TABLE_LABELS[a], summaries[a].fold_uar, TABLE_LABELS[b],
                                summaries[b].fold_uar) for a, b in pairs]
    if "svm" in summaries:
        paired += [paired_comparison(ensemble_label(v, e), e.fold_uar, TABLE_LABELS["svm"],
                                     summaries["svm"].fold_uar)
                   for v, e in (ensembles or {}).items()]
    return paired


@dataclass
class Comparison:
    """What :func:`compare` measured (its ``comparison.json``): every variant's (and the
    SVM's) results over seeds, their paired comparisons, and with one seed the runs."""

    corpus: str
    classes: list[str]
    n_utterances: int
    n_folds: int
    seeds: int
    normalize: str
    headline: str
    config: dict  # the configuration every variant shares (TrainConfig JSON, variant None)
    summaries: dict[str, SeedSummary]
    paired: list[PairedComparison]
    selection_choices: dict | None = None  # variant -> candidate -> folds that chose it
    svm_tuning: dict | None = None  # None: the SVM's fixed C (or no SVM)
    single_runs: dict[str, RunResult] | None = None  # with one seed
    ensembles: dict[str, SeedSummary] | None = None  # with several seeds: their ensemble
    searches: dict[str, SearchSummary] | None = None  # variant -> its per-fold searches

    @classmethod
    def of(cls, dataset, config: TrainConfig, seeds: int, results: dict[str, list[RunResult]],
           summaries: dict[str, SeedSummary], svm: dict | None,
           ensembles: dict[str, SeedSummary] | None = None) -> Comparison:
        first = next(iter(results))
        choices = {v: selection_choices(runs) for v, runs in results.items()}
        searches = {v: SearchSummary.of([f.search for run in runs for f in run.folds])
                    for v, runs in results.items()}
        return cls(dataset.corpus, list(dataset.classes), len(dataset.utterances),
                   len(summaries[first].fold_uar), seeds, config.normalize,
                   summaries[first].headline, {**config.to_json(), "variant": None}, summaries,
                   _paired(summaries, ensembles),
                   {v: c for v, c in choices.items() if c is not None} or None,
                   svm and svm["tuning"],
                   {v: runs[0] for v, runs in results.items()} if seeds == 1 else None,
                   ensembles or None,
                   {v: r for v, r in searches.items() if r is not None} or None)

    def to_json(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"schema": RESULTS_SCHEMA, **d,
                "summaries": {v: s.to_dict() for v, s in self.summaries.items()},
                "paired": [p.to_dict() for p in self.paired],
                "single_runs": self.single_runs and {v: r.to_json()
                                                     for v, r in self.single_runs.items()},
                "ensembles": self.ensembles and {v: s.to_dict()
                                                 for v, s in self.ensembles.items()},
                "searches": self.searches and {v: dataclasses.asdict(r)
                                               for v, r in self.searches.items()}}

    @classmethod
    def from_json(cls, d: dict) -> Comparison:
        d = {k: v for k, v in d.items() if k != "schema"}
        if "augment_choices" in d:  # the name of a selection of the augmentation alone
            d["selection_choices"] = d.pop("augment_choices")
        singles, ensembles = d.pop("single_runs", None), d.pop("ensembles", None)
        searches = d.pop("searches", None)
        return cls(**{**d, "searches": searches and {v: SearchSummary(**r)
                                                     for v, r in searches.items()},
                      "summaries": {v: SeedSummary.from_dict(s)
                                         for v, s in d["summaries"].items()},
                      "paired": [PairedComparison(**p) for p in d["paired"]],
                      "single_runs": singles and {v: RunResult.from_json(r)
                                                  for v, r in singles.items()},
                      "ensembles": ensembles and {v: SeedSummary.from_dict(e)
                                                  for v, e in ensembles.items()}})


def compare(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    variants: tuple[str, ...] = VARIANTS,
    seeds: int = 1,
    baseline: bool = True,
    resume: bool = False,
    options: RunOptions = RunOptions(),
    jobs: int = 1,
    threads: int | None = None,
    svm_tune: bool = False,
    ensemble_size: int | None = None,
) -> Comparison:
    """Train ``variants`` with ``config`` (its ``variant`` is ignored), ``seeds`` times each,
    into ``out_dir``, and the SVM on the same folds unless not ``baseline`` (with
    ``svm_tune``, or when the recipe chooses settings per fold, the SVM's C is chosen on inner
    folds of each fold's training speakers too: :func:`svm_tuned`).
    With several seeds every variant's ensemble is reported too: one of all the seeds, or with
    ``ensemble_size`` K the ``seeds / K`` disjoint ensembles of K seeds, mean and spread.

    ``jobs > 1`` trains that many folds at once in worker processes (each with ``threads``
    torch threads, no progress bars; features come from the cache filled here first).
    Returns the :class:`Comparison` and writes it (``comparison.json``), ``table.md`` and
    ``curves.png`` into ``out_dir``.
    """
    out_dir = Path(out_dir)
    check_ensemble_size(ensemble_size, seeds)
    shared = {**config.to_json(), "variant": None}  # what every variant's run has in common
    config_path = out_dir / "config.json"
    if not resume and config_path.exists():
        raise SedError(f"{out_dir} already holds a comparison; pass --resume or pick another "
                       "--out-dir")
    dataset = load_dataset(config.corpus, config.data, speeds=config.recipe.speeds,
                           **options.data())
    if not resume:
        write_json(config_path, {**shared, "seeds": seeds})
    runs = [(c, _run_dir(out_dir, c, seeds)) for v in variants
            for c in seed_configs(dataclasses.replace(config, variant=v), seeds)]
    # beside the workers' lines, no bar
    svm_options = dataclasses.replace(options, progress=options.progress and jobs == 1)
    trained, svm = _train_all(
        runs, resume=resume, options=options, jobs=jobs, threads=threads, dataset=dataset,
        meanwhile=lambda: _run_svm(config, svm_options, svm_tuned(config, svm_tune),
                                   saved=out_dir / "baseline.json" if resume else None)
        if baseline else None)
    results = {v: [m for (c, _), m in zip(runs, trained) if c.variant == v] for v in variants}
    if seeds > 1:
        for v, runs_of_v in results.items():
            write_seed_summary(out_dir / v, runs_of_v)
    summaries = {v: summarize_seeds(m) for v, m in results.items()}
    if svm is not None:
        summaries["svm"] = _svm_summary(svm, summaries[variants[0]].fold_test_speakers)
        write_json(out_dir / "baseline.json", svm)
    ensembles = (_ensembles(out_dir, results, summaries, dataset.classes, ensemble_size)
                 if seeds > 1 else None)
    comparison = Comparison.of(dataset, config, seeds, results, summaries, svm, ensembles)
    write_json(out_dir / "comparison.json", comparison.to_json())
    (out_dir / "table.md").write_text(format_tables(comparison, markdown=True) + "\n")
    plot_curves({TABLE_LABELS[v]: [f.history for run in runs for f in run.folds]
                 for v, runs in results.items()}, out_dir / "curves.png",
                title=f"{dataset.corpus}: held-out UAR during training (mean over folds, seeds)")
    return comparison


def class_headers(classes: list[str]) -> list[str]:
    """Three-letter column names as in the paper (Ang, Dis, ...), full names if they clash."""
    short = [c[:3].capitalize() for c in classes]
    return short if len(set(short)) == len(short) else [c.capitalize() for c in classes]


def _recall_cells(recall: dict, classes: list[str]) -> list[str]:
    return [f"{recall[c]:.2f}" if recall[c] is not None else "-" for c in classes]


def format_summary_table(comparison: Comparison, *, markdown: bool = False) -> str:
    """One row per variant (and the SVM): per-class recall, UAR mean +- std over seeds."""
    classes = comparison.classes
    header = ["Model", *class_headers(classes), "UAR", "WA", "UAR per fold (mean)"]
    rows = []
    named = [(TABLE_LABELS[name], s) for name, s in comparison.summaries.items()]
    named += [(ensemble_label(name, s), s) for name, s in (comparison.ensembles or {}).items()]
    for label, s in named:
        spread = f" +- {s.uar_std:.3f}" if len(s.pooled_uar) > 1 else ""
        rows.append([label, *_recall_cells(s.recall, classes),
                     f"{s.uar_mean:.3f}{spread}", f"{s.wa_mean:.3f}",
                     f"{sum(s.fold_uar) / len(s.fold_uar):.3f}"])
    return render_table(header, rows, markdown=markdown)


def format_table(runs: dict[str, RunResult], classes: list[str], which: str, *,
                 markdown: bool = False) -> str:
    """Table 2/3 layout of single runs: per-class recall and UAR (pooled over folds)."""
    header = ["Model", *class_headers(classes), "UAR", "WA", "UAR mean+-std over folds"]
    rows = []
    for variant, run in runs.items():
        s = run.summary[which]
        rows.append([TABLE_LABELS[variant], *_recall_cells(s.pooled["recall"], classes),
                     f"{s.pooled['uar']:.3f}", f"{s.pooled['wa']:.3f}",
                     f"{s.uar['mean']:.3f} +- {s.uar['std']:.3f}"])
    return render_table(header, rows, markdown=markdown)


def format_tables(comparison: Comparison, *, markdown: bool = False) -> str:
    """The headline table with its paired comparisons, then (one seed) the single runs'
    final-model and best-during-training tables, each with a title saying what it shows."""
    n, seeds = comparison.n_folds, comparison.seeds
    pooled = f"pooled over {n} folds" if n > 1 else "held-out fold"
    what = ("checkpoints selected on validation speakers" if comparison.headline == "selected"
            else "final models")
    over = f"; UAR mean +- std over {seeds} seeds" if seeds > 1 else ""
    titles = [(f"Headline: {what} ({pooled}{over}; normalize {comparison.normalize}; "
               "nothing selected on test data)", format_summary_table(comparison,
                                                                      markdown=markdown))]
    if comparison.single_runs:
        for which, title in (("final", f"Final models of each run ({pooled})"),
                             ("best", f"Best held-out UAR during training ({pooled}; the paper's "
                                      "'optimal recognition results' protocol, optimistic)")):
            titles.append((title, format_table(comparison.single_runs, comparison.classes,
                                               which, markdown=markdown)))
    parts = []
    for index, (title, table) in enumerate(titles):
        parts += [f"**{title}**" if markdown else title, "", table, ""]
        if index == 0 and comparison.paired:
            lines = [p.line() for p in comparison.paired]
            parts += [("- " if markdown else "  ") + line for line in lines] + [""]
        if index == 0 and comparison.selection_choices:
            parts += [_selection_choices_line(comparison.selection_choices), ""]
        if index == 0 and comparison.searches:
            parts += [_searches_line(comparison), ""]
    return "\n".join(parts).rstrip()


def _selection_choices_line(choices: dict[str, dict[str, int]]) -> str:
    """Which candidate the inner folds chose, per variant, counted over fold runs."""
    per_variant = ["{}: {} of {} fold runs".format(
        TABLE_LABELS[v], ", ".join(f"{c} {n}" for c, n in counts.items()), sum(counts.values()))
        for v, counts in choices.items()]
    return "Chosen by the inner folds (nested selection): " + "; ".join(per_variant)


def _searches_line(comparison: Comparison) -> str:
    """What the per-fold searches chose, per variant (:class:`sed_model.search.SearchSummary`)."""
    trials = comparison.config["recipe"]["search_trials"]
    return (f"Recipe chosen per fold on inner folds ({trials} settings searched): "
            + "; ".join(f"{TABLE_LABELS[v]}: {s.line()}" for v, s in comparison.searches.items()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sed_model.compare",
        description="Train lstm, general, time and feature on the same folds and print per-class "
                    "recall and UAR per variant (the layout of the paper's Tables 2 and 3).",
    )
    add_training_options(parser, variant=False)
    parser.add_argument("--variants", action=NameList, choices=VARIANTS, default=VARIANTS,
                        metavar="VARIANT",
                        help=f"variants to train, e.g. --variants lstm time (the comma form "
                             f"lstm,time works too); default {' '.join(VARIANTS)}")
    parser.add_argument("--jobs", type=positive_int, default=1,
                        help="train this many folds (of every variant and seed) at once in "
                             "separate processes (use with --threads; e.g. --jobs 2 --threads 1 "
                             "on a 2-core machine); default 1")
    parser.add_argument("--no-baseline", action="store_true",
                        help="do not run the ComParE functionals SVM on the same folds")
    parser.add_argument("--svm-tune", action="store_true",
                        help="choose the SVM's C per fold on inner_folds speaker-grouped "
                             "inner folds of the fold's training speakers (as sed_model."
                             "baseline --tune); default: the fixed C, or tuned when the recipe "
                             "chooses settings per fold (--set search_trials=N or a "
                             "<key>_candidates list)")
    parser.add_argument("--ensemble-size", type=positive_int, default=None, metavar="K",
                        help="with --seeds N: report N/K disjoint ensembles of K seeds each "
                             "(their mean and spread, as for single models over seeds) "
                             "instead of one ensemble of all N; K must divide N. Nothing is "
                             "trained for it, so a resumed comparison can change it")
    parser.add_argument("--markdown", type=Path, default=None, metavar="FILE",
                        help="also write the tables as markdown to FILE")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; user errors print ``error: ...`` and exit with status 2."""
    run_main(_compare_command, argv)


def resumed_comparison_config(args: argparse.Namespace) -> TrainConfig:
    """``--resume``: the configuration saved in the comparison folder's ``config.json`` (the
    options every variant shares), with the options given explicitly; a seed count other than
    the saved one is refused (the runs' folders depend on it)."""
    if args.out_dir is None:
        raise SedError("--resume needs --out-dir: the folder of the comparison to continue")
    saved = saved_config(args.out_dir)
    seeds = saved.pop("seeds", 1)
    if args.seeds != seeds:
        raise SedError(f"cannot resume {args.out_dir} with --seeds {args.seeds}: it was made "
                       f"with --seeds {seeds}")
    return TrainConfig.from_json({**saved, "variant": "feature"}).updated(given_options(args))


def _compare_command(argv: list[str] | None) -> None:
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    config = resumed_comparison_config(args) if args.resume else config_from_args(args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = args.out_dir or Path("runs") / f"compare-{config.corpus}-{stamp}"
    print(f"comparison folder: {out_dir}", flush=True)
    try:
        comparison = compare(config, out_dir, variants=args.variants, seeds=args.seeds,
                             baseline=not args.no_baseline, resume=args.resume,
                             options=run_options(args), jobs=args.jobs, threads=args.threads,
                             svm_tune=args.svm_tune, ensemble_size=args.ensemble_size)
    except KeyboardInterrupt:
        print("\ninterrupted; continue with: python -m sed_model.compare --resume "
              f"--out-dir {out_dir}",
              file=sys.stderr)
        sys.exit(130)
    print(format_tables(comparison))
    if args.markdown is not None:
        args.markdown.write_text(format_tables(comparison, markdown=True) + "\n")
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
