"""Make the bundled pretrained model ``emodb`` and its model card, in one command.

    python scripts/make_pretrained_emodb.py --data ../shared/data/emodb
    python scripts/make_pretrained_emodb.py --preset P --normalize speaker
    python scripts/make_pretrained_emodb.py --set utterance_norm=none   # any recipe field

One ``sed_model.train`` run on EmoDB (all 535 clips, 10 speakers, 7 classes): the
leave-one-speaker-out cross-validation of the recipe (its UAR goes on the model card), then
the deployment model on all 10 speakers with the same recipe (the run's ``model.pt``). Writes

- ``sed_model/pretrained/emodb.pt``: the run's ``model.pt`` (package data; at most 2 MB);
- ``results/pretrained_emodb.json``: the recipe, the LOSO result, the file's size and SHA-256,
  the wall time and the commit;
- the model card in ``README.md``, between the ``pretrained-emodb-card`` markers, rendered
  from that JSON file (a test checks that the README, the JSON and the model file agree).

The audio is read from ``--data`` and never copied into the package. Run it from the
repository root of a checkout (an editable or in-place install), niced on a shared machine.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from sed_model.checkpoint import read_json, write_json
from sed_model.cli import (
    SetOption,
    add_normalize_option,
    non_negative_int,
    positive_int,
    run_main,
    set_values,
)
from sed_model.config import TrainConfig, make_config
from sed_model.model import VARIANTS
from sed_model.pretrained import BUNDLED
from sed_model.recipes import PRESETS, default_preset, utterance_norms
from sed_model.results import RunResult
from sed_model.runtime import RunOptions
from sed_model.trainer import default_out_dir, format_summary, train

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "sed_model" / "pretrained" / BUNDLED["emodb"][0]
RESULTS = ROOT / "results" / "pretrained_emodb.json"
README = ROOT / "README.md"
MAX_BYTES = 2 * 1024 * 1024
CARD_START = "<!-- pretrained-emodb-card:start (written by scripts/make_pretrained_emodb.py) -->"
CARD_END = "<!-- pretrained-emodb-card:end -->"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python scripts/make_pretrained_emodb.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "emodb"),
                        help="the EmoDB clips folder (default ../shared/data/emodb)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=default_preset("emodb"),
                        help="training recipe (default: emodb's default preset, "
                             f"{default_preset('emodb')})")
    add_normalize_option(parser)
    parser.add_argument("--variant", choices=VARIANTS, default="feature", help="model variant")
    parser.add_argument("--validation-speakers", type=non_negative_int, default=0, metavar="K",
                        help="validation speakers per fold (default 0: the fixed-length recipe; "
                             "the LOSO UAR is then that of the folds' final models, trained "
                             "exactly as the bundled model)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads (1)")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="feature extraction processes (default: all cores)")
    parser.add_argument("--set", action=SetOption, default=None, metavar="KEY=VALUE",
                        help="override one field of the recipe (repeatable), as for train")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="the run folder (default runs/emodb-<variant>-<time>)")
    return parser


def run_config(args) -> TrainConfig:
    """The training configuration of the parsed command line ``args``."""
    return make_config(**{"corpus": "emodb", "data": args.data, "variant": args.variant,
                          "preset": args.preset, "folds": "loso",
                          "validation_speakers": args.validation_speakers,
                          "normalize": args.normalize or "global", "device": "cpu",
                          "seed": args.seed, **set_values(args)})


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    config = run_config(args)
    out_dir = args.out_dir or default_out_dir("emodb", args.variant)
    commit = _commit()  # before the model file in sed_model/ is replaced
    started = time.time()
    run = train(config, out_dir, options=RunOptions(workers=args.workers,
                progress=sys.stderr.isatty()))
    wall = time.time() - started
    print(format_summary(run))
    size = install_model(out_dir / "model.pt")
    results = results_record(run, config, size, wall, argv, commit)
    write_json(RESULTS, results)
    update_readme(results)
    print(f"wrote {MODEL} ({size} bytes), {RESULTS} and the README model card; "
          f"wall time {wall:.0f} s; run folder {out_dir}")


def install_model(source: Path) -> int:
    size = source.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"error: {source} is {size} bytes, over the package's 2 MB budget")
    shutil.copyfile(source, MODEL)
    return size


def _commit() -> str | None:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True,
                              text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    changed = git("status", "--porcelain", "--untracked-files=no", "--", "sed_model")
    return (commit + " with uncommitted changes to sed_model" if changed else commit) or None


def portable_command(argv: list[str]) -> str:
    """The command as the card shows it: absolute paths written relative to the repository
    root, where the command runs, so that the card names no one's home or work folder."""
    def portable(word: str) -> str:
        return os.path.relpath(word, ROOT) if os.path.isabs(word) else word

    return " ".join(["python scripts/make_pretrained_emodb.py", *map(portable, argv)])


def results_record(run: RunResult, config: TrainConfig, size: int, wall: float,
                   argv: list[str] | None, commit: str | None) -> dict:
    """What the model card says, as data."""
    summary = run.headline_summary
    return {
        "model": "emodb",
        "file": str(MODEL.relative_to(ROOT)),
        "bytes": size,
        "sha256": hashlib.sha256(MODEL.read_bytes()).hexdigest(),
        "classes": run.classes,
        "n_utterances": run.n_utterances,
        "speakers": sorted({s for f in run.folds for s in f.test_speakers}),
        "config": {k: v for k, v in config.flat().items() if k != "data"},
        "final_model": run.final_model,
        "loso": {"headline": run.headline, "uar": summary.pooled["uar"],
                 "wa": summary.pooled["wa"], "recall": summary.pooled["recall"],
                 "uar_mean": summary.uar["mean"], "uar_std": summary.uar["std"],
                 "best_during_training_uar": run.summary["best"].pooled["uar"]},
        "wall_seconds": round(wall),
        "command": portable_command(argv or sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "commit": commit,
    }


def render_card(results: dict) -> str:
    """The README's model card (Markdown) from ``results/pretrained_emodb.json``."""
    c, loso = results["config"], results["loso"]
    which = {"final": "the folds' final models (nothing selected on test data)",
             "selected": "checkpoints selected on a validation speaker"}[loso["headline"]]
    recall = ", ".join(f"{k} {v:.2f}" for k, v in loso["recall"].items())
    return "\n".join([
        CARD_START,
        f"| | `{results['model']}` (`{results['file']}`, {results['bytes']:,} bytes) |",
        "| --- | --- |",
        f"| model | `{c['variant']}` variant, cells {c['cells']}, dense {c['dense']}; preset "
        f"`{c['preset']}`, {c['normalize']} normalisation, utterance_norm "
        f"`{utterance_norms(c.get('utterance_norm', 'none'))[c['variant']]}`, augmentation "
        f"{' + '.join(c.get('augment') or ()) or 'none'}, seed {c['seed']}; "
        f"{results['final_model']['steps']} steps ({results['final_model']['rule']}) |",
        f"| data | EmoDB 2-second clips (`shared/data/emodb`, 22.05 kHz): all "
        f"{results['n_utterances']} utterances of the {len(results['speakers'])} speakers "
        f"({', '.join(results['speakers'])}); the audio is not in the package |",
        f"| classes | {', '.join(results['classes'])} |",
        f"| leave-one-speaker-out, same recipe | UAR **{loso['uar']:.3f}**, WA {loso['wa']:.3f} "
        f"(pooled over 10 folds, {which}); per-fold UAR {loso['uar_mean']:.3f} +- "
        f"{loso['uar_std']:.3f}; recall: {recall} |",
        f"| made by | `{results['command'].strip()}` on {results['date']}, "
        f"{results['wall_seconds']} s; numbers (and the commit) in "
        "`results/pretrained_emodb.json` |",
        CARD_END,
    ])


def update_readme(results: dict) -> None:
    text = README.read_text()
    if CARD_START not in text or CARD_END not in text:
        raise SystemExit(f"error: {README} has no model-card markers")
    head, rest = text.split(CARD_START, 1)
    _, tail = rest.split(CARD_END, 1)
    README.write_text(head + render_card(results) + tail)


def card_in_readme() -> str:
    """The card as it stands in the README (for the consistency test)."""
    text = README.read_text()
    start = text.index(CARD_START)
    return text[start:text.index(CARD_END) + len(CARD_END)]


def saved_results() -> dict:
    return read_json(RESULTS)


if __name__ == "__main__":
    run_main(main, None)
