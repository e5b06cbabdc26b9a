"""Train the four variants on the same folds and print the paper's Table 2/3 layout.

    python -m sed_model.compare --corpus emodb --data DIR --folds loso --markdown table.md

Every variant sees the same features, folds, seed, preset and number of steps. The table
shows per-class recall and UAR of each variant, pooled over folds: for the checkpoints
selected on validation speakers (the headline when ``--validation-speakers`` is on), for the
final models (selected by nothing; the headline without validation) and for the best test
UAR during training (the paper's "optimal recognition results", optimistic). Files: one run
folder per variant under ``--out-dir`` (see ``sed_model.train``), ``comparison.json``,
``table.md`` and ``curves.png`` (mean held-out UAR against step per variant, like the
paper's Figs. 2-3).
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from .checkpoint import write_json
from .cli import NameList, add_training_options, config_from_args, positive_int, run_main
from .data import load_dataset
from .errors import SedError
from .model import VARIANTS
from .plots import plot_curves
from .tables import render_table
from .trainer import TrainConfig, train

TABLE_LABELS = {"lstm": "LSTM", "general": "General", "time": "Time", "feature": "Feature"}


def _train_variant(config: TrainConfig, out_dir: Path, resume: bool, progress: bool,
                   threads: int | None, dataset=None, **data_options) -> dict:
    """Train one variant (in this process or in a worker process of ``--jobs``)."""
    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    metrics = train(config, out_dir, dataset=dataset,
                    resume=resume and (out_dir / "config.json").exists(), progress=progress,
                    **data_options)
    s = metrics["summary"]
    selected = (f"{s['selected']['pooled']['uar']:.3f} (selected on validation), "
                if "selected" in s else "")
    print(f"{config.variant}: UAR {selected}{s['final']['pooled']['uar']:.3f} (final), "
          f"{s['best']['pooled']['uar']:.3f} (best during training), "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    return metrics


def compare(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    variants: tuple[str, ...] = VARIANTS,
    resume: bool = False,
    progress: bool = True,
    jobs: int = 1,
    threads: int | None = None,
    workers: int | None = None,
    strict: bool = False,
    cache_dir: str | Path | None = None,
) -> dict:
    """Train ``variants`` with ``config`` (its ``variant`` is ignored) into ``out_dir/<variant>``.

    ``jobs > 1`` trains that many variants at once in worker processes (each with
    ``threads`` torch threads, no progress bars; features come from the cache filled here
    first). Returns ``{"corpus", "classes", "config", "variants": {name: metrics}}`` and
    writes ``comparison.json``, ``table.md`` and ``curves.png`` into ``out_dir``.
    """
    out_dir = Path(out_dir)
    shared = {**config.to_json(), "variant": None}  # what every variant's run has in common
    config_path = out_dir / "config.json"
    if not resume and config_path.exists():
        raise SedError(f"{out_dir} already holds a comparison; pass --resume or pick another "
                       "--out-dir")
    data_options = {"workers": workers, "strict": strict, "cache_dir": cache_dir}
    dataset = load_dataset(config.corpus, config.data, progress=progress, **data_options)
    if not resume:
        write_json(config_path, shared)
    runs = {v: (dataclasses.replace(config, variant=v), out_dir / v) for v in variants}
    if jobs > 1:
        threads = threads or 1  # jobs x threads should not exceed the cores
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {v: pool.submit(_train_variant, c, d, resume, False, threads, **data_options)
                       for v, (c, d) in runs.items()}
            results = {v: f.result() for v, f in futures.items()}
    else:
        results = {v: _train_variant(c, d, resume, progress, threads, dataset, **data_options)
                   for v, (c, d) in runs.items()}
    comparison = {
        "corpus": dataset.corpus,
        "classes": list(dataset.classes),
        "n_utterances": len(dataset.utterances),
        "n_folds": len(next(iter(results.values()))["folds"]),
        "config": shared,
        "variants": results,
    }
    write_json(out_dir / "comparison.json", comparison)
    (out_dir / "table.md").write_text(format_tables(comparison, markdown=True) + "\n")
    plot_curves({TABLE_LABELS[v]: [f["history"] for f in m["folds"]] for v, m in results.items()},
                out_dir / "curves.png",
                title=f"{dataset.corpus}: held-out UAR during training (mean over folds)")
    return comparison


def class_headers(classes: list[str]) -> list[str]:
    """Three-letter column names as in the paper (Ang, Dis, ...), full names if they clash."""
    short = [c[:3].capitalize() for c in classes]
    return short if len(set(short)) == len(short) else [c.capitalize() for c in classes]


def format_table(comparison: dict, which: str, *, markdown: bool = False) -> str:
    """Table 2/3 layout: one row per variant, per-class recall and UAR (pooled over folds)."""
    classes = comparison["classes"]
    header = ["Model", *class_headers(classes), "UAR", "WA", "UAR mean+-std over folds"]
    rows = []
    for variant, metrics in comparison["variants"].items():
        s = metrics["summary"][which]
        recall = s["pooled"]["recall"]
        rows.append([TABLE_LABELS[variant],
                     *[f"{recall[c]:.2f}" if recall[c] is not None else "-" for c in classes],
                     f"{s['pooled']['uar']:.3f}", f"{s['pooled']['wa']:.3f}",
                     f"{s['uar']['mean']:.3f} +- {s['uar']['std']:.3f}"])
    return render_table(header, rows, markdown=markdown)


def format_tables(comparison: dict, *, markdown: bool = False) -> str:
    """The tables, headline first, each with a title saying what it shows: selected on
    validation speakers (when the runs had them), final models, best test UAR in training."""
    n = comparison["n_folds"]
    pooled = f"pooled over {n} folds" if n > 1 else "held-out fold"
    validated = all("selected" in m["summary"] for m in comparison["variants"].values())
    titles = {
        "selected": f"Checkpoints selected on validation speakers ({pooled}; headline, "
                    "nothing selected on test data)",
        "final": f"Final models ({pooled}; " + ("unbiased too" if validated else "headline")
                 + ", nothing selected on test data)",
        "best": f"Best held-out UAR during training ({pooled}; the paper's 'optimal "
                "recognition results' protocol, optimistic)",
    }
    parts = []
    for which in ("selected", "final", "best") if validated else ("final", "best"):
        title = f"**{titles[which]}**" if markdown else titles[which]
        parts += [title, "", format_table(comparison, which, markdown=markdown), ""]
    return "\n".join(parts).rstrip()


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
                        help="train this many variants at once in separate processes (use with "
                             "--threads; e.g. --jobs 2 --threads 1 on a 2-core machine); default 1")
    parser.add_argument("--markdown", type=Path, default=None, metavar="FILE",
                        help="also write the tables as markdown to FILE")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; user errors print ``error: ...`` and exit with status 2."""
    run_main(_compare_command, argv)


def _compare_command(argv: list[str] | None) -> None:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = args.out_dir or Path("runs") / f"compare-{config.corpus}-{stamp}"
    print(f"comparison folder: {out_dir}", flush=True)
    try:
        comparison = compare(config, out_dir, variants=args.variants, resume=args.resume,
                             progress=not args.no_progress, jobs=args.jobs, threads=args.threads,
                             workers=args.workers, strict=args.strict, cache_dir=args.cache_dir)
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
