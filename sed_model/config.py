"""The training configuration: everything that determines a run's result.

A :class:`TrainConfig` is made once, from a preset plus the options given explicitly, and is
complete from then on: every option left out takes the preset's value when the object is
made, and the values are checked there. The one value that needs the data is
``validation_speakers`` when left out (``None``): :func:`sed_model.trainer.train` decides it
from the folds before the run starts and records the number in ``config.json``.

A run folder's ``config.json`` is the configuration's JSON form; :meth:`TrainConfig.resumed`
is the only way back from it (``--resume``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .augment import candidate_augment, check_augment
from .checkpoint import read_json
from .errors import SedError
from .features.normalization import MODES as NORMALIZE_MODES
from .model import VARIANTS
from .presets import default_preset, get_preset
from .runtime import check_precision

# Options a preset provides; an option given explicitly (not None) overrides the preset's.
PRESET_OPTIONS = ("batch_size", "lr", "cells", "eval_every", "dense", "attention_dim", "optimizer",
                  "betas", "weight_decay", "schedule", "warmup", "input_dropout", "layer_dropout",
                  "head_dropout", "clip_norm", "class_balanced", "label_smoothing", "ema_decay",
                  "validation_speakers")  # and augment, which depends on the normalisation
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class TrainConfig:
    """Corpus, model variant, hyperparameters, device and seed of a run.

    The recipe fields (optimizer, schedule, dropout, clipping, loss, weight averaging) are
    those of :class:`sed_model.presets.Preset`, documented there.

    ``folds`` is the command-line form (``loso``, ``K``, ``holdout``, ``session``, ``paper``)
    or ``None`` for the corpus' default protocol. Exactly one of ``epochs`` and ``steps`` is
    set once made (the preset's unless one is given); ``eval_every`` None means once per
    epoch and ``attention_dim`` None means ``d_a = H_i``; ``validation_speakers`` None means
    "decided by ``train()`` from the folds" (see the module docstring).
    """

    corpus: str = "demo"
    data: str | None = None
    variant: str = "feature"
    preset: str | None = None  # None: presets.default_preset(corpus)
    folds: str | None = None
    epochs: int | None = None
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    cells: tuple[int, ...] | None = None
    eval_every: int | None = None
    dense: int | None = None
    attention_dim: int | None = None
    optimizer: str | None = None
    betas: tuple[float, float] | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    warmup: float | None = None
    input_dropout: float | None = None
    layer_dropout: float | None = None
    head_dropout: float | None = None
    clip_norm: float | None = None
    class_balanced: bool | None = None
    label_smoothing: float | None = None
    ema_decay: float | None = None
    device: str = "auto"
    backend: str = "auto"
    seed: int = 0
    split_seed: int | None = None  # seed of random folds and validation speakers; None: seed
    precision: str = "fp32"  # fp32, bf16 or fp16: see sed_model.runtime.check_precision
    validation_speakers: int | None = None
    normalize: str = "global"  # global | speaker: see sed_model.features.normalization
    augment: tuple[str, ...] | None = None  # see sed_model.augment
    # nested selection of the augmentation: the candidates scored by inner folds per fold
    augment_candidates: tuple[str, ...] | None = None
    inner_folds: int = 3

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise SedError(f"unknown variant {self.variant!r}; "
                           f"expected one of {', '.join(VARIANTS)}")
        if self.epochs is not None and self.steps is not None:
            raise SedError("give either epochs or steps, not both")
        if self.preset is None:
            object.__setattr__(self, "preset", default_preset(self.corpus))
        preset = get_preset(self.preset)
        values = {name: getattr(self, name) for name in PRESET_OPTIONS}
        for name, value in values.items():
            if value is None:
                values[name] = getattr(preset, name)
        if self.augment is not None:
            values["augment"] = self.augment
        else:  # the preset's for this normalisation; none beside a nested selection
            values["augment"] = (() if self.augment_candidates is not None
                                 else preset.augment_for(self.normalize))
        if self.epochs is None and self.steps is None:
            values.update(epochs=preset.epochs, steps=preset.steps)
        values.update(cells=tuple(values["cells"]), betas=tuple(values["betas"]),
                      augment=check_augment(values["augment"]))
        if self.augment_candidates is not None:
            candidates = tuple(self.augment_candidates)
            for candidate in candidates:
                candidate_augment(candidate)  # SedError for an unknown name
            if len(set(candidates)) != len(candidates) or len(candidates) < 2:
                raise SedError("augment_candidates needs at least two different candidates; "
                               f"got {', '.join(candidates)}")
            values["augment_candidates"] = candidates
            if values["augment"]:
                raise SedError("give augment or augment_candidates, not both")
        for name, value in values.items():
            object.__setattr__(self, name, value)  # frozen: set once, here
        self._check()

    def _check(self) -> None:
        if self.inner_folds < 2:
            raise SedError(f"inner_folds must be at least 2; got {self.inner_folds}")
        for name in ("epochs", "steps", "batch_size", "eval_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SedError(f"{name} must be a positive integer; got {value}")
        if self.validation_speakers is not None and self.validation_speakers < 0:
            raise SedError(f"validation_speakers must be 0 or more; got {self.validation_speakers}")
        check_precision(self.precision)
        if self.normalize not in NORMALIZE_MODES:
            raise SedError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}; "
                           f"got {self.normalize!r}")
        asked = [self.augment, *(candidate_augment(c) for c in self.augment_candidates or ())]
        if self.normalize == "speaker" and any("shift" in names for names in asked):
            raise SedError("augmentation shift gives an utterance another training speaker's "
                           "statistics, which --normalize speaker removes again (the map is "
                           "the identity there); use it with --normalize global")
        for name in ("input_dropout", "layer_dropout", "head_dropout", "label_smoothing", "warmup"):
            if not 0 <= getattr(self, name) < 1:
                raise SedError(f"{name} must be in [0, 1); got {getattr(self, name)}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise SedError(f"ema_decay must be in (0, 1); got {self.ema_decay}")
        if self.lr <= 0:
            raise SedError(f"lr must be positive; got {self.lr}")
        if any(c < 1 for c in self.cells):
            raise SedError(f"cells must be positive sizes; got {list(self.cells)}")

    @property
    def folds_seed(self) -> int:
        """The seed of random folds and validation speakers (``split_seed``, else ``seed``):
        the runs of ``--seeds N`` share their folds and differ in training only."""
        return self.seed if self.split_seed is None else self.split_seed

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict) -> TrainConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise SedError(f"unknown training options in saved config: {', '.join(unknown)}")
        # a config saved before augmentation existed trained without it; every later one
        # records its augmentation, so the preset's current default never fills it in
        d = {"augment": [], **d}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})

    @classmethod
    def resumed(cls, out_dir: Path, **overrides) -> TrainConfig:
        """The configuration saved in the run folder ``out_dir``, with ``overrides`` (options
        given explicitly; the trainer refuses to resume when they differ from the saved ones)."""
        return dataclasses.replace(cls.from_json(saved_config(out_dir)), **overrides)


def comparable_json(saved: dict) -> dict:
    """A saved configuration as this version writes it (options added since it was saved
    take their defaults), to compare with :meth:`TrainConfig.to_json` on resume."""
    return TrainConfig.from_json(saved).to_json()


def _same_data(saved: str | None, current: str | None) -> bool:
    """Whether two ``data`` values name one corpus folder: equal strings, or paths (one
    relative, one absolute, or through a link) to the same existing folder."""
    if saved == current:
        return True
    if saved is None or current is None:
        return False
    try:
        return Path(saved).samefile(current)
    except OSError:  # one of them does not exist from here
        return False


def changed_options(saved: dict, config: TrainConfig) -> list[str]:
    """The options of ``config`` that differ from a saved configuration (``config.json`` or a
    checkpoint's), each as ``name (saved S, now C)``; empty when a run may resume. The corpus
    folder counts as unchanged when it is given by another path to the same folder."""
    before, now = comparable_json(saved), config.to_json()
    return [f"{k} (saved {before.get(k)!r}, now {now.get(k)!r})" for k in sorted(now)
            if before.get(k) != now.get(k)
            and not (k == "data" and _same_data(before.get(k), now.get(k)))]


def saved_config(out_dir: Path) -> dict:
    """The JSON configuration of the run in ``out_dir``; :class:`SedError` when there is none."""
    path = Path(out_dir) / CONFIG_FILE
    if not path.exists():
        raise SedError(f"cannot resume: {out_dir} holds no run (no {CONFIG_FILE})")
    return read_json(path)
