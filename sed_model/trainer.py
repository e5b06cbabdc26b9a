"""Training and cross-validation of the dense LSTM variants.

One run = one variant trained on every fold of a speaker-independent protocol. Per fold:

* normalisation statistics fitted on the fold's training split only (global z-score);
* length-bucketed mini-batches (:func:`sed_model.data.epoch_batches`), cross-entropy,
  Adam(betas=(0.9, 0.7), weight_decay=1e-4) as in the paper's Table 1;
* every ``eval_every`` optimizer steps (and at step 0 and the last step) the model is
  evaluated on the held-out fold; these points are the UAR curves (paper Figs. 2 and 3).

Which split validates? The paper's Tables 2 and 3 are the "optimal recognition results" —
the best test UAR seen during training, which picks the step on the test speakers. We hold
out ``validation_speakers`` of each fold's training speakers instead
(:func:`sed_model.splits.with_validation_speakers`; default 1 when every fold keeps at least
4 training speakers, else 0), train on the rest, evaluate both sides at every evaluation and
record, per fold:

* ``selected``: test metrics of the checkpoint with the best validation UAR (ties: the
  earlier step) — nothing chosen on test data; the headline when validation is on;
* ``final``: the model after the last training step — also unbiased; the headline when
  ``validation_speakers`` is 0;
* ``best``: the best test UAR during training (the paper's protocol, optimistic).

The normaliser is fitted on the training speakers only (not validation, not test).

Files in the run folder::

    config.json                 the resolved training configuration
    fold-XX/last.pt             periodic checkpoint (at every evaluation), the final model at the end
    fold-XX/best.pt             checkpoint at the best test UAR (optimistic)
    fold-XX/selected.pt         checkpoint at the best validation UAR (with validation speakers)
    fold-XX/metrics.json        the fold's result; its presence marks the fold complete
    best.pt                     copy of fold-01/selected.pt, or fold-01/best.pt without validation
    metrics.json                per fold and pooled/mean results, ``selected``, ``final``, ``best``
    curves.png, confusion.png   UAR against step; pooled confusion matrix of the headline models

The top-level ``best.pt`` is simply fold 1's headline checkpoint: a model trained without
fold 1's speakers, ready for ``evaluate`` and ``predict``. It is not the best fold (that would
be cherry-picking) and not a model retrained on all data.

Crash safety: every checkpoint and JSON file is written atomically. ``resume=True`` skips
the folds whose ``metrics.json`` exists and continues the running fold from its
``last.pt`` — model, optimizer, RNG states, step and evaluation history — so a resumed run
ends with the same weights as an uninterrupted one (the batch order of each epoch depends
only on the seed, the fold and the epoch).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

import sed_kernels

from . import cpu_support, distributed
from .checkpoint import copy_atomic, load_checkpoint, read_json, save_checkpoint, write_json
from .data import (
    Dataset,
    Split,
    check_training_split,
    epoch_batches,
    evaluation_batches,
    load_dataset,
    make_split,
    steps_per_epoch,
)
from .errors import SedError
from .features import Normalizer
from .metrics import classification_report, mean_and_std, report_from_confusion
from .model import VARIANTS, DenseLSTMAttention
from .plots import plot_confusion, plot_curves
from .presets import get_preset
from .splits import Fold, make_folds, with_validation_speakers


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run's result.

    ``None`` fields take the preset's value in :meth:`resolved`; ``folds`` is the
    command-line form (``loso``, ``K``, ``holdout``, ``session``, ``paper``) or ``None`` for
    the corpus' default protocol.
    """

    corpus: str = "demo"
    data: str | None = None
    variant: str = "feature"
    preset: str = "demo"
    folds: str | None = None
    epochs: int | None = None
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    cells: tuple[int, ...] | None = None
    eval_every: int | None = None
    dense: int | None = None
    attention_dim: int | None = None
    betas: tuple[float, float] | None = None
    weight_decay: float | None = None
    device: str = "auto"
    backend: str = "auto"
    seed: int = 0
    precision: str = "fp32"  # fp32, bf16 or fp16 (autocast; see autocast_dtype)
    validation_speakers: int | None = None  # None: resolved by train() from the folds

    def resolved(self) -> TrainConfig:
        """A copy with every ``None`` hyperparameter filled from the preset, validated."""
        if self.variant not in VARIANTS:
            raise SedError(f"unknown variant {self.variant!r}; expected one of {', '.join(VARIANTS)}")
        if self.epochs is not None and self.steps is not None:
            raise SedError("give either epochs or steps, not both")
        preset = get_preset(self.preset)
        epochs, steps = self.epochs, self.steps
        if epochs is None and steps is None:
            epochs, steps = preset.epochs, preset.steps
        values = {
            "epochs": epochs,
            "steps": steps,
            "batch_size": self.batch_size or preset.batch_size,
            "lr": self.lr if self.lr is not None else preset.lr,
            "cells": tuple(self.cells or preset.cells),
            "eval_every": self.eval_every or preset.eval_every,
            "dense": self.dense or preset.dense,
            "attention_dim": self.attention_dim or preset.attention_dim,
            "betas": tuple(self.betas or preset.betas),
            "weight_decay": self.weight_decay if self.weight_decay is not None else preset.weight_decay,
        }
        for name in ("epochs", "steps", "batch_size", "eval_every"):
            if values[name] is not None and values[name] < 1:
                raise SedError(f"{name} must be a positive integer; got {values[name]}")
        if self.validation_speakers is not None and self.validation_speakers < 0:
            raise SedError(f"validation_speakers must be 0 or more; got {self.validation_speakers}")
        if self.precision not in PRECISIONS:
            raise SedError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if values["lr"] <= 0:
            raise SedError(f"lr must be positive; got {values['lr']}")
        if any(c < 1 for c in values["cells"]):
            raise SedError(f"cells must be positive sizes; got {list(values['cells'])}")
        return dataclasses.replace(self, **values)

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict) -> TrainConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise SedError(f"unknown training options in saved config: {', '.join(unknown)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SedError("device 'cuda' requested but torch sees no CUDA GPU; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise SedError(f"device must be auto, cpu or cuda; got {name!r}")
    return torch.device(name)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The ``torch.autocast`` dtype of ``precision`` on ``device`` (None: plain fp32).

    bf16 runs on CUDA and on the CPU (CPU autocast supports bfloat16; useful to check a
    bf16 run on a laptop, rarely faster). fp16 is CUDA only: it needs a gradient scaler and
    CPU float16 kernels are slow or missing, so on the CPU it is a :class:`SedError`.
    """
    if precision not in PRECISIONS:
        raise SedError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise SedError("precision fp16 needs a CUDA GPU (it trains with a gradient scaler); "
                       "on the CPU use --precision bf16 or fp32")
    if precision == "bf16" and device.type == "cpu" and not cpu_support.bf16_lstm_supported():
        raise SedError(cpu_support.bf16_lstm_missing_message())
    return PRECISIONS[precision]


def autocast(precision: str, device: torch.device):
    """``torch.autocast`` for ``precision`` on ``device``; a no-op context for fp32."""
    dtype = autocast_dtype(precision, device)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def check_backend(backend: str, device: torch.device) -> None:
    """:class:`SedError` unless ``backend`` is ``auto`` or usable for tensors on ``device``."""
    usable = sed_kernels.available_backends(device)
    if backend != "auto" and backend not in usable:
        raise SedError(f"attention backend {backend!r} is not usable on {device.type} here; "
                       f"expected auto or one of {', '.join(usable)}")


def dataset_folds(dataset: Dataset, folds_arg: str | None, seed: int,
                  validation_speakers: int = 0) -> list[Fold]:
    """The folds of the CLI form ``folds_arg`` (None: the corpus' default protocol), each
    with ``validation_speakers`` training speakers moved to its validation side."""
    folds = make_folds(dataset.utterances, folds_arg or "default", seed=seed, corpus=dataset.loader)
    folds = [with_validation_speakers(fold, dataset.utterances, validation_speakers, seed=seed)
             for fold in folds]
    for fold in folds:
        check_training_split(dataset, fold)
    return folds


def default_validation_speakers(dataset: Dataset, folds_arg: str | None, seed: int) -> int:
    """1 when the protocol has several folds and each keeps at least 4 training speakers
    (so 3 or more remain to train on), else 0 (a single hold-out or too few speakers: on the
    4-speaker demo corpus, training on 2 speakers instead of 3 cost 0.16 UAR)."""
    folds = dataset_folds(dataset, folds_arg, seed)
    fewest = min(len({dataset.utterances[i].speaker for i in f.train}) for f in folds)
    return 1 if len(folds) > 1 and fewest >= 4 else 0


# ---------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict_split(model: DenseLSTMAttention, split: Split, device: torch.device) -> np.ndarray:
    """Class probabilities (N, n_classes) of every utterance of ``split``.

    In a distributed run each rank predicts every ``world``-th batch and the rows are summed
    across ranks (each row has one nonzero contributor, so the sum is exact).
    """
    was_training = model.training
    model.eval()
    probabilities = torch.zeros((len(split), model.head[-1].out_features), dtype=torch.float32)
    batches = evaluation_batches(split.lengths)
    for indices in batches[distributed.rank()::distributed.world_size()]:
        x, lengths, _ = split.batch(indices, device)
        probabilities[indices] = torch.softmax(model(x, lengths).float(), dim=1).cpu()
    model.train(was_training)
    return distributed.sum_across_ranks(probabilities).numpy()


def evaluate_split(
    model: DenseLSTMAttention, split: Split, class_names, device: torch.device
) -> dict:
    """UAR, WA, per-class recall and confusion matrix of ``model`` on ``split``."""
    predicted = predict_split(model, split, device).argmax(axis=1)
    return classification_report(split.labels.numpy(), predicted, class_names)


# ------------------------------------------------------------------------------ one fold
def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train_fold(
    config: TrainConfig,
    dataset: Dataset,
    fold: Fold,
    fold_index: int,
    fold_count: int,
    fold_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    on_checkpoint: Callable[[Path, int], None] | None = None,
) -> dict:
    """Train one fold (``config`` resolved) and return its result dict.

    ``on_checkpoint(path, step)`` is called after every periodic checkpoint; an exception
    raised there stops training as a kill would (the tests use it to interrupt a run).
    """
    device = resolve_device(config.device)
    normalizer = Normalizer.fit([dataset.features[i] for i in fold.train])
    train_split = make_split(dataset, fold.train, normalizer)
    test_split = make_split(dataset, fold.test, normalizer)
    validation_split = make_split(dataset, fold.validation, normalizer) if fold.validation else None

    torch.manual_seed(config.seed)
    model = DenseLSTMAttention(
        n_classes=len(dataset.classes),
        variant=config.variant,
        cells=config.cells,
        attention_dim=config.attention_dim,
        dense=config.dense,
        backend=config.backend,
    ).to(device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    test_speakers = sorted({dataset.utterances[i].speaker for i in fold.test})
    validation_speakers = sorted({dataset.utterances[i].speaker for i in fold.validation})
    per_epoch = steps_per_epoch(len(train_split), config.batch_size)
    total_steps = config.steps or config.epochs * per_epoch
    eval_every = config.eval_every or per_epoch

    step, history, best, selected = 0, [], None, None
    last_path, best_path = fold_dir / "last.pt", fold_dir / "best.pt"
    selected_path = fold_dir / "selected.pt"
    if resume and last_path.exists():
        try:
            saved = load_checkpoint(last_path)
        except SedError as exc:
            raise SedError(f"{exc}; it is truncated or corrupt: delete it to restart fold "
                           f"{fold_index + 1} from step 0 (or restore a good copy) and resume "
                           "again") from None
        if saved["config"] != config.to_json():
            raise SedError(f"{last_path} was written with another configuration; cannot resume")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        _set_rng_state(saved["rng"])
        if saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        step, history, best = saved["step"], saved["history"], saved["best"]
        selected = saved.get("selected")

    ddp_model = model
    if distributed.world_size() > 1:  # after loading: DDP starts from rank 0's weights
        ddp_model = DistributedDataParallel(
            model, device_ids=[device.index or torch.cuda.current_device()] if device.type == "cuda" else None)

    def checkpoint(path: Path) -> None:
        if not distributed.is_main():
            return
        save_checkpoint(path, {
            "model": model.state_dict(),
            "hyperparameters": model.hyperparameters(),
            "class_names": list(dataset.classes),
            "normalizer": normalizer.state_dict(),
            "config": config.to_json(),
            "fold": {"index": fold_index, "name": fold.name, "count": fold_count,
                     "test_speakers": test_speakers, "validation_speakers": validation_speakers},
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": _rng_state(),
            "history": history,
            "best": best,
            "selected": selected,
        })

    @autocast(config.precision, device)
    def evaluate(train_loss: float | None) -> dict:
        nonlocal best, selected
        report = evaluate_split(model, test_split, dataset.classes, device)
        history.append({"step": step, "uar": report["uar"], "wa": report["wa"],
                        "train_loss": train_loss})
        if best is None or report["uar"] > best["uar"]:
            best = {"step": step, **report}
            checkpoint(best_path)
        if validation_split is not None:
            validation_uar = evaluate_split(model, validation_split, dataset.classes, device)["uar"]
            history[-1]["validation_uar"] = validation_uar
            if selected is None or validation_uar > selected["validation_uar"]:  # ties: earlier
                selected = {"step": step, "validation_uar": validation_uar, **report}
                checkpoint(selected_path)
        checkpoint(last_path)
        if on_checkpoint is not None and distributed.is_main():
            on_checkpoint(last_path, step)
        return report

    if not history:
        evaluate(None)  # step 0: the curve starts at the untrained model
    model.train()
    losses: list[float] = []
    bar = tqdm(total=total_steps, initial=step, disable=not progress or not distributed.is_main(),
               unit="step",
               desc=f"fold {fold_index + 1}/{fold_count} {config.variant}", leave=False)
    batches, batches_epoch = [], -1
    while step < total_steps:
        epoch = step // per_epoch
        if epoch != batches_epoch:
            rng = np.random.default_rng([config.seed, fold_index, epoch])
            batches, batches_epoch = epoch_batches(train_split.lengths, config.batch_size, rng), epoch
        global_batch = batches[step % per_epoch]
        mine = distributed.shard(global_batch)  # this rank's part (all of it in one process)
        x, lengths, labels = train_split.batch(mine if len(mine) else global_batch[:1], device)
        with autocast(config.precision, device):
            logits = ddp_model(x, lengths)  # (B_rank, n_classes)
        # The shard's summed loss / global batch size * world size: DDP averages gradients
        # over ranks, so each step follows the global batch's mean loss (as one process would).
        loss_sum = F.cross_entropy(logits.float(), labels, reduction="sum")
        loss = loss_sum / len(global_batch) * distributed.world_size() if len(mine) else loss_sum * 0
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        step += 1
        losses.append(loss_sum.item() / len(global_batch) if len(mine) else 0.0)
        bar.update(1)
        if step % eval_every == 0 or step == total_steps:
            step_losses = distributed.sum_across_ranks(torch.tensor(losses, dtype=torch.float64))
            report = evaluate(float(step_losses.mean()))
            losses.clear()
            bar.set_postfix(loss=f"{history[-1]['train_loss']:.3f}", uar=f"{report['uar']:.3f}",
                            best=f"{best['uar']:.3f}")
    bar.close()

    with autocast(config.precision, device):
        final = evaluate_split(model, test_split, dataset.classes, device)
    result = {
        "index": fold_index,
        "name": fold.name,
        "n_train": len(fold.train),
        "n_test": len(fold.test),
        "test_speakers": test_speakers,
        "steps": total_steps,
        "final": {"step": step, **final},
        "best": best,
        "history": history,
    }
    if validation_split is not None:
        result.update(n_validation=len(fold.validation), validation_speakers=validation_speakers,
                      selected=selected)
    if distributed.is_main():
        write_json(fold_dir / "metrics.json", result)
    return result


# ------------------------------------------------------------------------------- a run
def summarize(fold_results: list[dict], class_names) -> dict:
    """Pooled (confusion matrices summed over folds) and mean/std results: final, best and,
    when the folds had validation speakers, selected."""
    summary = {}
    kinds = ("selected", "final", "best") if "selected" in fold_results[0] else ("final", "best")
    for which in kinds:
        pooled = np.sum([r[which]["confusion"] for r in fold_results], axis=0)
        summary[which] = {
            "pooled": report_from_confusion(pooled, class_names),
            "uar": mean_and_std([r[which]["uar"] for r in fold_results]),
            "wa": mean_and_std([r[which]["wa"] for r in fold_results]),
        }
    return summary


def default_out_dir(corpus: str, variant: str) -> Path:
    return Path("runs") / f"{corpus}-{variant}-{time.strftime('%Y%m%d-%H%M%S')}"


def _prepare_out_dir(out_dir: Path, config: TrainConfig, resume: bool) -> None:
    config_path = out_dir / "config.json"
    if resume:
        if not config_path.exists():
            raise SedError(f"cannot resume: {out_dir} holds no run (no config.json)")
        saved = read_json(config_path)
        if saved != config.to_json():
            changed = sorted(k for k in saved if saved.get(k) != config.to_json().get(k))
            raise SedError(
                f"cannot resume {out_dir}: options differ from the saved run ({', '.join(changed)})"
            )
        return
    if config_path.exists():
        raise SedError(f"{out_dir} already holds a run; pass --resume to continue it or pick another --out-dir")
    write_json(config_path, config.to_json())


def train(
    config: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    dataset: Dataset | None = None,
    resume: bool = False,
    progress: bool = True,
    workers: int | None = None,
    strict: bool = False,
    cache_dir: str | Path | None = None,
    on_checkpoint: Callable[[Path, int], None] | None = None,
) -> dict:
    """Train ``config`` on every fold; write the run folder; return the metrics dict.

    ``dataset`` may be passed to reuse extracted features (``compare`` trains four
    variants on one dataset); otherwise it is loaded with :func:`load_dataset`.

    Started by torchrun (``WORLD_SIZE`` > 1), it joins the process group and trains with
    DistributedDataParallel (see :mod:`sed_model.distributed`): rank 0 extracts the
    features first, writes every file and prints; every rank returns the same metrics.
    """
    config = config.resolved()
    device = resolve_device(config.device)
    check_backend(config.backend, device)
    autocast_dtype(config.precision, device)  # fp16 on the CPU: an error before any work
    distributed.init(device)
    out_dir = Path(out_dir) if out_dir else default_out_dir(config.corpus, config.variant)
    if dataset is None:
        dataset = distributed.main_first(
            lambda: load_dataset(config.corpus, config.data, cache_dir=cache_dir, workers=workers,
                                 strict=strict, progress=progress and distributed.is_main()),
            then_others=True)  # the other ranks read rank 0's feature cache
    if config.validation_speakers is None:
        config = dataclasses.replace(
            config, validation_speakers=default_validation_speakers(dataset, config.folds, config.seed))
    folds = dataset_folds(dataset, config.folds, config.seed, config.validation_speakers)
    # after the data checks: no folder for a bad run
    distributed.main_first(lambda: _prepare_out_dir(out_dir, config, resume))

    results = []
    for index, fold in enumerate(folds):
        fold_dir = out_dir / f"fold-{index + 1:02d}"
        if resume and (fold_dir / "metrics.json").exists():
            results.append(read_json(fold_dir / "metrics.json"))
            status = "done before, skipped"
        else:
            results.append(train_fold(config, dataset, fold, index, len(folds), fold_dir,
                                      resume=resume, progress=progress,
                                      on_checkpoint=on_checkpoint))
            status = "trained"
        r = results[-1]
        if distributed.is_main():
            tqdm.write(
                f"{config.variant} fold {index + 1}/{len(folds)} ({fold.name}, {r['n_test']} test "
                f"utterances, {status}): "
                + (f"selected UAR {r['selected']['uar']:.3f} at step {r['selected']['step']} "
                   f"(validation speakers {', '.join(r['validation_speakers'])}), "
                   if "selected" in r else "")
                + f"final UAR {r['final']['uar']:.3f}, "
                f"best UAR {r['best']['uar']:.3f} at step {r['best']['step']}"
            )

    metrics = {
        "corpus": dataset.corpus,
        "variant": config.variant,
        "config": config.to_json(),
        "classes": list(dataset.classes),
        "n_utterances": len(dataset.utterances),
        "skipped_files": dataset.skipped,
        "headline": "selected" if config.validation_speakers else "final",
        "folds": results,
        "summary": summarize(results, dataset.classes),
    }
    distributed.barrier()
    if not distributed.is_main():
        return metrics  # rank 0 writes the run's files
    write_json(out_dir / "metrics.json", metrics)
    headline_checkpoint = "selected.pt" if config.validation_speakers else "best.pt"
    copy_atomic(out_dir / "fold-01" / headline_checkpoint, out_dir / "best.pt")
    plot_curves({config.variant: [r["history"] for r in results]}, out_dir / "curves.png",
                title=f"{dataset.corpus}: held-out UAR during training")
    plot_confusion(metrics["summary"][metrics["headline"]]["pooled"]["confusion"], dataset.classes,
                   out_dir / "confusion.png",
                   title=f"{dataset.corpus} {config.variant}: {metrics['headline']} models, "
                         "pooled over folds")
    return metrics


def format_summary(metrics: dict) -> str:
    """A few lines for the terminal: headline UAR and WA (selected on validation speakers, or
    final), the final-model UAR and the best-during-training UAR."""
    s = metrics["summary"]
    headline = metrics["headline"]
    n = len(metrics["folds"])
    over = f"pooled over {n} folds" if n > 1 else "held-out fold"
    what = "checkpoints selected on validation speakers" if headline == "selected" else "final models"
    lines = [
        f"{metrics['corpus']} / {metrics['variant']}: "
        f"UAR {s[headline]['pooled']['uar']:.3f}, WA {s[headline]['pooled']['wa']:.3f} "
        f"({what}, {over})",
    ]
    if n > 1:
        lines.append(f"  mean over folds: UAR {s[headline]['uar']['mean']:.3f} "
                     f"+- {s[headline]['uar']['std']:.3f}")
    if headline == "selected":
        lines.append(f"  final models: UAR {s['final']['pooled']['uar']:.3f}")
    lines.append(f"  best held-out UAR during training (paper's protocol, optimistic): "
                 f"{s['best']['pooled']['uar']:.3f}")
    recall = s[headline]["pooled"]["recall"]
    lines.append("  per-class recall: " + ", ".join(
        f"{c} {r:.2f}" if r is not None else f"{c} -" for c, r in recall.items()))
    return "\n".join(lines)
