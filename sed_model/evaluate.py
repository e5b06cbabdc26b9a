"""Evaluate a trained model on a corpus (all utterances, or some speakers).

    python -m sed_model.evaluate --checkpoint runs/emodb-feature-... --corpus emodb --data DIR
    python -m sed_model.evaluate --checkpoint runs/X/fold-03/best.pt --corpus emodb \
        --data DIR --speakers 03 08 --json
    python -m sed_model.evaluate --checkpoint runs/X --ensemble --corpus emodb --data DIR

``--checkpoint`` takes what :func:`sed_model.load_model` takes: a run folder (its
``model.pt``; with ``--ensemble`` its fold models, probabilities averaged), a checkpoint file
or a bundled model's name. The model's normalisation is applied: ``global``, its training
statistics; ``speaker``, every evaluated speaker's own statistics, from that speaker's
utterances in the corpus, as in training (``--normalize`` only checks the mode). A run
folder's ``model.pt`` was trained on every speaker of its corpus, and a fold model on all but
its fold's test speakers; evaluating a model on speakers it was trained on measures fit, not
generalisation, so the command says how many of the utterances come from speakers a model
was trained on.

``--folds`` (a protocol or a fold file, as for ``sed_model.train``) evaluates fold by fold,
each fold on exactly its test speakers: a run folder by the fold model that held those
speakers out (:func:`evaluate_folds`), so a run trained with ``--folds PATH`` is re-scored on
the same official folds; per-fold and pooled UAR are printed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .api import fold_checkpoints, load_model
from .checkpoint import read_json
from .cli import NameList, add_data_options, run_main
from .data import Dataset, load_dataset, make_split, trim_edge_quiet
from .errors import SedError
from .features.store import select_rows
from .fold import predict_split
from .metrics import classification_report, mean_and_std, report_from_confusion
from .splits import make_folds


def evaluate_checkpoint(
    checkpoint_path: str | Path,
    corpus: str,
    data: str | Path | None,
    *,
    speakers: list[str] | None = None,
    ensemble: bool = False,
    device: str = "auto",
    backend: str | None = None,
    normalize: str | None = None,
    workers: int | None = None,
    strict: bool = False,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    dataset: Dataset | None = None,
    folds: str | None = None,
) -> dict:
    """UAR, WA, per-class recall and confusion matrix of a model on a corpus.

    ``checkpoint_path``: a run folder, a checkpoint file or a bundled name (``ensemble``: a
    run folder's fold models). The corpus' labels are matched to the model's classes by
    name; a label the model does not know is an error. Returns
    :func:`classification_report`'s dict plus ``checkpoint``, ``corpus``, ``speakers`` and
    ``n_from_training_speakers``. ``dataset``: the corpus' features, already loaded.
    With ``folds`` the result of :func:`evaluate_folds` instead.
    """
    if dataset is None:
        dataset = load_dataset(corpus, data, cache_dir=cache_dir, workers=workers,
                               strict=strict, progress=progress)
    if folds is not None:
        if ensemble or speakers:
            raise SedError("--folds evaluates each fold on its own test speakers with its own "
                           "model; leave out --ensemble and --speakers")
        return evaluate_folds(checkpoint_path, dataset, folds, device=device, backend=backend,
                              normalize=normalize)
    model = load_model(checkpoint_path, ensemble=ensemble, device=device, backend=backend)
    class_names = model.class_names
    mode = model.members[0].normalizer.mode
    if normalize is not None and normalize != mode:
        raise SedError(f"{checkpoint_path} was trained with --normalize {mode}, not {normalize}; "
                       "a model is evaluated with the normalisation it was trained with")
    indices = _chosen_utterances(dataset, corpus, speakers)
    used_classes = sorted({dataset.classes[dataset.labels[i]] for i in indices})
    foreign = [c for c in used_classes if c not in class_names]
    if foreign:
        raise SedError(f"{corpus} has classes {', '.join(foreign)} that the checkpoint does not "
                       f"know (it was trained on {', '.join(class_names)})")
    to_model_class = np.array([class_names.index(c) if c in class_names else -1
                               for c in dataset.classes])
    probabilities = np.zeros((len(indices), len(class_names)))
    trained_on = set()
    evaluated = {dataset.speakers[i] for i in indices}
    for member in model.members:
        read = trim_edge_quiet(dataset) if member.edge_quiet == "trim" else dataset
        normalizer = member.normalizer.with_speakers(
            select_rows(read.features, indices), [dataset.speakers[i] for i in indices])
        split = make_split(read, indices, normalizer)  # speaker mode: each speaker's own
        probabilities += predict_split(member.model, split, model.device)
        if member.config["corpus"] == dataset.corpus:
            trained_on |= evaluated - set(member.fold.get("test_speakers", []))
    predicted = probabilities.argmax(axis=1)
    report = classification_report(to_model_class[dataset.labels[indices]], predicted, class_names)
    report.update({
        "checkpoint": str(checkpoint_path),
        "normalize": mode,
        "corpus": dataset.corpus,
        "speakers": sorted(evaluated),
        "n_from_training_speakers": int(sum(dataset.speakers[i] in trained_on for i in indices)),
    })
    return report


def evaluate_folds(checkpoint_path: str | Path, dataset: Dataset, folds: str, *,
                   device: str = "auto", backend: str | None = None,
                   normalize: str | None = None) -> dict:
    """A model on every fold of ``folds`` (a protocol or a fold file, as ``--folds``), each
    fold on exactly its test speakers; per-fold reports, the pooled report and the UAR's mean
    and std over folds.

    With a run folder every fold is evaluated by the run's fold model that held out exactly
    that fold's test speakers (an error when the run has none: it was trained on other
    folds); with a checkpoint file or a bundled name, by that one model on every fold.
    """
    made = make_folds(dataset.utterances, folds, corpus=dataset.loader)
    tested = [sorted({dataset.speakers[i] for i in fold.test}) for fold in made]
    models = _fold_models(Path(checkpoint_path), tested)
    reports = [evaluate_checkpoint(model, dataset.corpus, None, speakers=speakers,
                                   device=device, backend=backend, normalize=normalize,
                                   dataset=dataset)
               for model, speakers in zip(models, tested)]
    for report, fold in zip(reports, made):
        report["name"] = fold.name
    classes = list(reports[0]["recall"])
    pooled = report_from_confusion(np.sum([r["confusion"] for r in reports], axis=0), classes)
    return {"checkpoint": str(checkpoint_path), "corpus": dataset.corpus, "folds": folds,
            "normalize": reports[0]["normalize"], "per_fold": reports, "pooled": pooled,
            "uar": mean_and_std([r["uar"] for r in reports]),
            "n_from_training_speakers": sum(r["n_from_training_speakers"] for r in reports)}


def _fold_models(checkpoint: Path, tested: list[list[str]]) -> list[str | Path]:
    """The model evaluating each fold: a run folder's fold model whose test speakers are the
    fold's, else ``checkpoint`` itself for every fold."""
    if not checkpoint.is_dir():
        return [checkpoint] * len(tested)
    by_speakers = {tuple(read_json(path.parent / "metrics.json")["test_speakers"]): path
                   for path in fold_checkpoints(checkpoint)}
    missing = [speakers for speakers in tested if tuple(speakers) not in by_speakers]
    if missing:
        raise SedError(f"{checkpoint} has no fold model that held out exactly speakers "
                       f"{' '.join(missing[0])} (its folds held out: "
                       f"{'; '.join(' '.join(s) for s in by_speakers)}); train it with the "
                       "same --folds, or evaluate its model.pt file")
    return [by_speakers[tuple(speakers)] for speakers in tested]


def format_fold_reports(result: dict) -> str:
    lines = [f"{result['corpus']}: {result['checkpoint']} on {len(result['per_fold'])} folds "
             f"of {result['folds']} (normalize {result['normalize']})"]
    lines += [f"  {r['name']} (speakers {', '.join(r['speakers'])}): UAR {r['uar']:.3f}  "
              f"WA {r['wa']:.3f}" for r in result["per_fold"]]
    lines.append(f"UAR {result['pooled']['uar']:.3f}  WA {result['pooled']['wa']:.3f} (pooled "
                 f"over folds); UAR mean over folds {result['uar']['mean']:.3f} +- "
                 f"{result['uar']['std']:.3f}")
    if result["n_from_training_speakers"]:
        lines.append(f"note: {result['n_from_training_speakers']} of the test utterances come "
                     "from speakers the model was trained on (pass the run folder to use each "
                     "fold's own model)")
    return "\n".join(lines)


def _chosen_utterances(dataset, corpus: str, speakers: list[str] | None) -> np.ndarray:
    indices = np.arange(len(dataset.utterances))
    if not speakers:
        return indices
    known = set(dataset.speakers)
    unknown = [s for s in speakers if s not in known]
    if unknown:
        raise SedError(f"speakers {', '.join(unknown)} are not in {corpus}; "
                       f"its speakers are {', '.join(sorted(known))}")
    return np.array([i for i in indices if dataset.speakers[i] in speakers])


def format_report(report: dict) -> str:
    speakers = ", ".join(report["speakers"])
    lines = [f"{report['corpus']}: {report['n']} utterances of speakers {speakers} "
             f"(normalize {report['normalize']})",
             f"UAR {report['uar']:.3f}  WA {report['wa']:.3f}",
             "per-class recall: " + ", ".join(
                 f"{c} {r:.2f}" if r is not None else f"{c} -"
                 for c, r in report["recall"].items())]
    if report["n_from_training_speakers"]:
        lines.append(f"note: {report['n_from_training_speakers']} of these utterances come from "
                     "speakers the model was trained on (use --speakers to pick held-out ones)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sed_model.evaluate",
        description="Evaluate a checkpoint written by sed_model.train on a corpus: UAR, WA, "
                    "per-class recall and the confusion matrix.",
    )
    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR|FILE.pt|NAME",
                        help="a run folder written by sed_model.train (its model.pt, trained on "
                             "all speakers), a checkpoint file (fold-XX/best.pt, last.pt) or a "
                             "bundled model name (emodb)")
    parser.add_argument("--ensemble", action="store_true",
                        help="with a run folder: average the class probabilities of its fold "
                             "models instead of using its model.pt")
    parser.add_argument("--corpus", required=True,
                        help="corpus name (emodb, ravdess, cremad, iemocap, iemocap4, enterface, "
                             "csv, demo)")
    parser.add_argument("--data", default=None,
                        help="the corpus folder (or the manifest for csv); not needed for demo")
    parser.add_argument("--speakers", action=NameList, default=None, metavar="SPEAKER",
                        help="speaker ids to evaluate on, e.g. --speakers 03 08 (the comma form "
                             "03,08 works too); default: all")
    parser.add_argument("--normalize", choices=("global", "speaker"), default=None,
                        help="the normalisation the model must have been trained with (an "
                             "error otherwise); default: the model's, which is always used")
    parser.add_argument("--folds", default=None, metavar="PROTOCOL|PATH",
                        help="evaluate fold by fold, each fold on exactly its test speakers: a "
                             "protocol as for sed_model.train or a fold folder (EmoBox "
                             "*_test_fold_K.jsonl) or CSV file (speaker,fold); a run folder "
                             "uses each fold's own model, a checkpoint file the one model")
    parser.add_argument("--json", action="store_true",
                        help="print the full result (with confusion matrix) as JSON")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run the model (default auto: cuda if available)")
    parser.add_argument("--backend", default=None,
                        help="attention kernel backend (default: the one saved in the checkpoint)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_data_options(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; user errors print ``error: ...`` and exit with status 2."""
    run_main(_evaluate_command, argv)


def _evaluate_command(argv: list[str] | None) -> None:
    args = build_parser().parse_args(argv)
    speakers = list(args.speakers) if args.speakers else None
    report = evaluate_checkpoint(
        args.checkpoint, args.corpus, args.data, speakers=speakers, ensemble=args.ensemble,
        device=args.device, backend=args.backend, normalize=args.normalize, workers=args.workers,
        strict=args.strict, cache_dir=args.cache_dir,
        progress=not (args.no_progress or args.json), folds=args.folds,
    )
    text = format_fold_reports(report) if args.folds is not None else format_report(report)
    print(json.dumps(report, indent=2) if args.json else text)


if __name__ == "__main__":
    main()
