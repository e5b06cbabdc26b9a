"""Training recipes: one typed :class:`Recipe` per preset, and ``--set key=value`` overrides.

A recipe is everything about *how* a model is trained that does not name the data or the
machine: the model's sizes, the optimiser, the learning-rate schedule, regularisation, the
loss, weight averaging, augmentation and the length of training. The presets are data: the
table :data:`PRESETS` below, one :class:`Preset` (a recipe plus the changes it makes under
``--normalize speaker``) per name.

* ``enterface`` and ``iemocap`` are the paper's Table 1 as printed: Adam with betas
  (0.9, 0.7) ("beta2 = 0.7"), the paper's L2 of 1e-4 as Adam's ``weight_decay`` (coupled L2,
  not AdamW), a constant learning rate, the dense layer of 128 units, plain cross-entropy,
  no dropout, no clipping, no averaging; eNTERFACE's length in epochs, IEMOCAP's in steps.
* ``small`` is the recipe for corpora of a few hundred to a few thousand utterances (EmoDB,
  RAVDESS, CREMA-D, ...), the default for every real corpus without one of its own: dropout
  on the input frames, between the LSTM layers and on the dense layer's input; AdamW with a
  linear warm-up and a cosine decay; gradient clipping; a class-balanced, label-smoothed loss
  (the metric is UAR); an exponential moving average of the weights is what is evaluated and
  kept; all of a fold's training speakers train (no validation speaker) for 40 epochs, with
  speed perturbation and, under ``global`` normalisation, the speaker-statistics shift
  (:mod:`sed_model.augment`; the shift is the identity under ``speaker``) and the
  normalisation of every ``feature`` utterance by its own mean and standard deviation
  (``utterance_norm``: ``mean_std`` for ``feature``, ``none`` for the three other variants,
  :func:`sed_model.model.normalize_utterances`). Its values were chosen on inner folds of
  EmoDB's training speakers only (docs/results-protocol.md; ``utterance_norm`` per variant,
  docs/recipes.md).
* ``demo`` trains in about a minute on two CPU cores; ``emodb-cpu`` is a reduced setting for
  EmoDB leave-one-speaker-out on a 2-core CPU.

Overrides (:func:`override`) are read from text with the field's own type: integers, floats,
``true``/``false``, ``none`` for an optional value, comma-separated lists (``cells=256,256``,
``augment=speed,mask``, ``augment=none``). Two fields come in pairs: setting ``epochs``
clears ``steps`` and the other way round (a run's length is given one way), and setting
``augment_candidates`` without ``augment`` turns the preset's augmentation off (a nested
selection chooses it), as ``utterance_norm_candidates`` without ``utterance_norm`` sets
``utterance_norm`` to ``none`` and ``edge_quiet_candidates`` without ``edge_quiet`` sets
``edge_quiet`` to ``keep``. ``epochs_candidates`` leaves ``epochs`` as it is: each candidate
replaces it (and clears ``steps``) in the runs that train with it.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field

from .augment import candidate_augment, check_augment, needed_speeds
from .errors import SedError
from .model import UTTERANCE_NORMS, VARIANTS

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine")
EDGE_QUIET = ("keep", "trim")
# the fields a nested selection chooses per fold, each from its ``<key>_candidates``
SELECTED_KEYS = ("augment", "utterance_norm", "edge_quiet", "epochs")

# Search spaces: each key is a recipe field, each value the choices (as --set writes them).
# ``small`` is the search for the ``small`` recipe: the learning rate, the training length,
# the LSTM widths, the dropout between layers and before the dense layer, and augmentation.
SPACES: dict[str, dict[str, tuple[str, ...]]] = {
    "small": {
        "lr": ("2e-3", "4e-3", "8e-3"),
        "epochs": ("20", "40", "60"),
        "cells": ("64,64", "128,128"),
        "layer_dropout": ("0.1", "0.2", "0.3"),
        "head_dropout": ("0.1", "0.3", "0.5"),
        "augment": ("none", "speed", "speed+shift"),
    },
}


@dataclass(frozen=True)
class Recipe:
    """How a model is trained (see the module docstring for the presets' values).

    Exactly one of ``epochs`` (passes over the training split) and ``steps`` (optimizer
    steps) is set. ``eval_every`` is the number of steps between two evaluations on the
    held-out fold (the points of the UAR curves, the paper's Figs. 2 and 3); None means once
    per epoch. ``attention_dim`` None means ``d_a = H_i``. ``validation_speakers`` K holds
    out K of each fold's training speakers and reports the step with the best validation
    UAR; None lets the trainer decide from the folds (1 when there are several folds and
    each keeps at least 4 training speakers, else 0). ``augment_candidates``,
    ``utterance_norm_candidates``, ``edge_quiet_candidates`` and ``epochs_candidates``: a
    nested selection of the augmentation, the utterance normalisation, the edges' quiet and
    the training length on ``inner_folds`` speaker-grouped inner folds of each fold's
    training speakers (:mod:`sed_model.selection`).
    ``search_trials`` N > 0 chooses the settings of :data:`SPACES` ``[search_space]`` per
    fold on those inner folds, N settings tried (:mod:`sed_model.search`).
    """

    # the model
    cells: tuple[int, ...] = (64, 64)
    dense: int = 128
    attention_dim: int | None = None
    # none, mean or mean_std of each utterance (model.py), for every variant or one per
    # variant ("lstm:none,general:none,time:none,feature:mean_std"): utterance_norms()
    utterance_norm: str = "none"
    # keep, or trim the quiet before and after each utterance's speech (data.trim_edge_quiet),
    # for every variant or one per variant ("lstm:trim,general:trim,time:keep,feature:keep")
    edge_quiet: str = "keep"
    # the optimiser and its schedule
    optimizer: str = "adam"  # adam (coupled L2, as the paper) or adamw (decoupled decay)
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.7)
    weight_decay: float = 1e-4
    schedule: str = "constant"  # constant, or cosine: linear warm-up then cosine decay to 0
    warmup: float = 0.0  # the warm-up's share of all steps (cosine schedule)
    clip_norm: float | None = None  # gradient clipping (global L2 norm)
    # the length of training
    batch_size: int = 32
    epochs: int | None = None
    steps: int | None = None
    eval_every: int | None = None
    # regularisation and the loss
    input_dropout: float = 0.0  # on the 130 input features of every frame
    layer_dropout: float = 0.0  # on each LSTM layer's output, as the next layer reads it
    head_dropout: float = 0.0  # on the dense layer's input D
    class_balanced: bool = False  # cross-entropy weighted by inverse class frequency
    label_smoothing: float = 0.0
    ema_decay: float | None = None  # evaluate/keep an exponential moving average of weights
    # data: validation speakers and augmentation
    validation_speakers: int | None = None
    augment: tuple[str, ...] = ()
    augment_candidates: tuple[str, ...] | None = None
    utterance_norm_candidates: tuple[str, ...] | None = None  # modes, chosen per fold
    edge_quiet_candidates: tuple[str, ...] | None = None  # keep and trim, chosen per fold
    epochs_candidates: tuple[int, ...] | None = None  # training lengths, chosen per fold
    inner_folds: int = 3
    # per-fold selection of the recipe on inner folds of the training speakers
    search_trials: int = 0
    search_space: str = "small"

    def __post_init__(self) -> None:
        object.__setattr__(self, "augment", check_augment(self.augment))  # canonical order
        object.__setattr__(self, "utterance_norm",
                           canonical_per_variant(utterance_norms(self.utterance_norm)))
        object.__setattr__(self, "edge_quiet", canonical_per_variant(edge_quiets(self.edge_quiet)))
        self._check_sizes()
        self._check_rates()
        self._check_choices()

    def _check_sizes(self) -> None:
        if (self.epochs is None) == (self.steps is None):
            raise SedError(f"set exactly one of epochs and steps; got epochs={self.epochs}, "
                           f"steps={self.steps}")
        for name in ("epochs", "steps", "batch_size", "eval_every", "dense", "attention_dim"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SedError(f"{name} must be a positive integer; got {value}")
        if not self.cells or any(c < 1 for c in self.cells):
            raise SedError(f"cells must be positive sizes; got {list(self.cells)}")
        if self.validation_speakers is not None and self.validation_speakers < 0:
            raise SedError(f"validation_speakers must be 0 or more; got {self.validation_speakers}")
        if self.inner_folds < 2:
            raise SedError(f"inner_folds must be at least 2; got {self.inner_folds}")
        if self.search_trials < 0:
            raise SedError(f"search_trials must be 0 (no search) or more; got "
                           f"{self.search_trials}")

    def _check_rates(self) -> None:
        for name in ("input_dropout", "layer_dropout", "head_dropout", "label_smoothing", "warmup"):
            if not 0 <= getattr(self, name) < 1:
                raise SedError(f"{name} must be in [0, 1); got {getattr(self, name)}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise SedError(f"ema_decay must be in (0, 1); got {self.ema_decay}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise SedError(f"lr must be positive and weight_decay 0 or more; got lr={self.lr}, "
                           f"weight_decay={self.weight_decay}")
        if self.clip_norm is not None and self.clip_norm <= 0:
            raise SedError(f"clip_norm must be positive or none; got {self.clip_norm}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise SedError(f"betas must be two numbers in [0, 1); got {list(self.betas)}")

    def _check_choices(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise SedError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; "
                           f"got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise SedError(f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        if self.augment_candidates is not None:
            candidates = self.augment_candidates
            for candidate in candidates:
                candidate_augment(candidate)  # SedError for an unknown name
            if len(set(candidates)) != len(candidates) or len(candidates) < 2:
                raise SedError("augment_candidates needs at least two different candidates; "
                               f"got {', '.join(candidates)}")
            if self.augment:
                raise SedError("give augment or augment_candidates, not both")
        if self.utterance_norm_candidates is not None:
            self._check_mode_candidates("utterance_norm", UTTERANCE_NORMS, "none")
        if self.edge_quiet_candidates is not None:
            self._check_mode_candidates("edge_quiet", EDGE_QUIET, "keep")
        if self.epochs_candidates is not None:
            self._check_epochs_candidates()
        if self.search_space not in SPACES:
            raise SedError(f"search_space must be one of {', '.join(SPACES)}; "
                           f"got {self.search_space!r}")
        if self.search_trials and self.selects:
            raise SedError("give search_trials or a nested selection ("
                           + ", ".join(f"{key}_candidates" for key in SELECTED_KEYS)
                           + "), not both (the search chooses per fold too)")

    def _check_mode_candidates(self, key: str, modes: tuple[str, ...], plain: str) -> None:
        """``<key>_candidates``: known, distinct modes, and ``key`` itself left at ``plain``."""
        candidates = getattr(self, f"{key}_candidates")
        unknown = [c for c in candidates if c not in modes]
        if unknown:
            raise SedError(f"{key}_candidates: unknown mode {unknown[0]!r}; expected "
                           f"modes from {', '.join(modes)}")
        if len(set(candidates)) != len(candidates) or len(candidates) < 2:
            raise SedError(f"{key}_candidates needs at least two different modes; "
                           f"got {', '.join(candidates)}")
        if getattr(self, key) != plain:
            raise SedError(f"give {key} or {key}_candidates, not both; got "
                           f"{key}={getattr(self, key)!r}")

    def _check_epochs_candidates(self) -> None:
        """``epochs_candidates``: at least two different positive lengths."""
        candidates = self.epochs_candidates
        if any(c < 1 for c in candidates):
            raise SedError(f"epochs_candidates must be positive numbers of epochs; got "
                           f"{', '.join(map(str, candidates))}")
        if len(set(candidates)) != len(candidates) or len(candidates) < 2:
            raise SedError(f"epochs_candidates needs at least two different lengths; "
                           f"got {', '.join(map(str, candidates))}")

    @property
    def selects(self) -> bool:
        """Whether each fold chooses a setting on inner folds (:mod:`sed_model.selection`)."""
        return any(getattr(self, f"{key}_candidates") is not None for key in SELECTED_KEYS)

    @property
    def speeds(self) -> tuple:
        """The perturbed speeds whose features training with this recipe reads."""
        candidates = self.augment_candidates
        if self.search_trials:
                candidates = SPACES[self.search_space].get("augment", ())
        return needed_speeds(self.augment, candidates)

    def utterance_norm_of(self, variant: str) -> str:
        """The ``utterance_norm`` the model of ``variant`` is built with."""
        return utterance_norms(self.utterance_norm)[variant]

    def edge_quiet_of(self, variant: str) -> str:
        """Whether ``variant`` keeps or trims the quiet at each utterance's edges."""
        return edge_quiets(self.edge_quiet)[variant]

    @property
    def length(self) -> str:
        """The run's length in words: ``40 epochs`` or ``30000 steps``."""
        return f"{self.epochs} epochs" if self.epochs else f"{self.steps} steps"

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, d: Mapping) -> Recipe:
        unknown = sorted(set(d) - set(KEYS))
        if unknown:
            raise SedError(f"unknown recipe keys: {', '.join(unknown)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Recipe))


def per_variant(key: str, text: str, modes: tuple[str, ...], example: str) -> dict[str, str]:
    """A field set per variant, as one mode per variant: a mode alone is that mode for every
    variant; ``variant:mode,...`` (``example``) names each of the four variants once.
    :class:`SedError` naming the field, the value and what was expected otherwise."""
    expected = (f"one of {', '.join(modes)}, or variant:mode for each of "
                f"{', '.join(VARIANTS)} (e.g. {example})")
    if ":" not in text:
        if text not in modes:
            raise SedError(f"{key} must be {expected}; got {text!r}")
        return dict.fromkeys(VARIANTS, text)
    chosen: dict[str, str] = {}
    for part in text.split(","):
        variant, _, mode = (word.strip() for word in part.partition(":"))
        if variant in chosen:
            problem = "a variant named twice"
        elif variant not in VARIANTS:
            problem = f"unknown variant {variant!r}"
        elif mode not in modes:
            problem = f"unknown mode {mode!r}"
        else:
            chosen[variant] = mode
            continue
        raise SedError(f"{key}={text!r}: {problem}; expected {expected}")
    missing = [v for v in VARIANTS if v not in chosen]
    if missing:
        raise SedError(f"{key}={text!r} names no mode for {', '.join(missing)}; "
                       f"expected {expected}")
    return {v: chosen[v] for v in VARIANTS}


def canonical_per_variant(chosen: dict[str, str]) -> str:
    """One mode per variant written one way: the mode alone when every variant has it, else
    ``variant:mode`` in the order of the variants."""
    if len(set(chosen.values())) == 1:
        return chosen[VARIANTS[0]]
    return ",".join(f"{v}:{m}" for v, m in chosen.items())


def utterance_norms(text: str) -> dict[str, str]:
    """``utterance_norm`` as one mode per variant (:func:`per_variant`)."""
    return per_variant("utterance_norm", text, UTTERANCE_NORMS,
                       "lstm:none,general:none,time:none,feature:mean_std")


def edge_quiets(text: str) -> dict[str, str]:
    """``edge_quiet`` as one mode per variant (:func:`per_variant`)."""
    return per_variant("edge_quiet", text, EDGE_QUIET,
                       "lstm:trim,general:trim,time:keep,feature:keep")


@dataclass(frozen=True)
class Preset:
    """A named recipe, and the fields it changes under ``--normalize speaker``."""

    name: str
    description: str
    recipe: Recipe
    speaker: Mapping[str, object] = field(default_factory=dict)

    def recipe_for(self, normalize: str) -> Recipe:
        """The preset's recipe under the normalisation mode ``normalize``."""
        if normalize == "speaker" and self.speaker:
            return dataclasses.replace(self.recipe, **self.speaker)
        return self.recipe


PRESETS: dict[str, Preset] = {
    "demo": Preset(
        "demo", "small model that trains in about a minute on 2 CPU cores",
        Recipe(cells=(64, 64), lr=3e-3, batch_size=16, epochs=12),
    ),
    "enterface": Preset(
        "enterface", "paper Table 1, eNTERFACE column",
        Recipe(cells=(512, 256), lr=1e-3, batch_size=128, epochs=1500, eval_every=50),
    ),
    "iemocap": Preset(
        "iemocap", "paper Table 1, IEMOCAP column",
        Recipe(cells=(256, 256), lr=1e-4, batch_size=64, steps=30000, eval_every=500),
    ),
    "small": Preset(
        "small",
        "recipe for small corpora (default for real corpora without a paper preset): "
        "dropout, AdamW with warm-up and cosine decay, clipping, class-balanced loss, "
        "weight EMA, all training speakers, 40 epochs; speed perturbation, and under global "
        "normalisation the speaker-statistics shift and, for feature, utterance mean and std "
        "normalisation",
        Recipe(cells=(64, 64), lr=4e-3, batch_size=32, epochs=40, optimizer="adamw",
               betas=(0.9, 0.999), weight_decay=0.05, schedule="cosine", warmup=0.05,
               input_dropout=0.1, layer_dropout=0.2, head_dropout=0.3, clip_norm=1.0,
               class_balanced=True, label_smoothing=0.1, ema_decay=0.99,
               validation_speakers=0, augment=("speed", "shift"),
               utterance_norm="lstm:none,general:none,time:none,feature:mean_std"),
        speaker={"augment": ("speed",), "utterance_norm": "none"},
    ),
    "emodb-cpu": Preset(
        "emodb-cpu",
        "reduced setting for EmoDB leave-one-speaker-out on a 2-core CPU: "
        "4 variants x 10 folds in under an hour",
        Recipe(cells=(64, 64), lr=3e-3, batch_size=32, epochs=30),
    ),
}

# The preset of a corpus given none: the demo setting for the synthetic demo corpus, the
# small-corpus recipe for every real corpus (the paper's are enterface and iemocap).
CORPUS_PRESETS = {"demo": "demo"}
REAL_CORPUS_PRESET = "small"


def default_preset(corpus: str) -> str:
    """The preset a run on ``corpus`` uses when none is given."""
    return CORPUS_PRESETS.get(corpus, REAL_CORPUS_PRESET)


def get_preset(name: str) -> Preset:
    """The preset called ``name``; :class:`SedError` listing the known names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise SedError(
            f"unknown preset {name!r}; expected one of: {', '.join(PRESETS)}"
        ) from None


# ------------------------------------------------------------------------- overrides
_TYPES = typing.get_type_hints(Recipe)
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def _scalar(kind: type, text: str):
    if kind is bool:
        if text.lower() not in _TRUE + _FALSE:
            raise ValueError("expected true or false")
        return text.lower() in _TRUE
    return kind(text)


def parse_value(key: str, text: str):
    """The value of recipe field ``key`` written as ``text``; :class:`SedError` naming the
    key, the text and the expected type otherwise."""
    if key not in _TYPES:
        raise SedError(f"unknown recipe key {key!r}; valid keys: {', '.join(KEYS)}")
    kind = _TYPES[key]
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    optional = type(None) in typing.get_args(kind)
    if optional and text.strip().lower() in ("none", "null"):
        return None
    if optional:
        kind = args[0]
    try:
        if typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            return tuple(_scalar(item, part.strip()) for part in text.split(",") if part.strip())
        return _scalar(kind, text.strip())
    except ValueError:
        raise SedError(f"{key}={text!r}: expected {_type_name(_TYPES[key])}") from None


def _type_name(kind) -> str:
    return str(kind).replace("typing.", "").replace("<class '", "").replace("'>", "")


def parse_assignments(texts) -> dict[str, object]:
    """``["lr=1e-3", "cells=32,32"]`` as ``{"lr": 0.001, "cells": (32, 32)}`` (later wins)."""
    values = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise SedError(f"--set {text!r}: expected key=value; valid keys: {', '.join(KEYS)}")
        values[key.strip()] = parse_value(key.strip(), value)
    return values


def override(recipe: Recipe, values: Mapping[str, object]) -> Recipe:
    """``recipe`` with ``values`` (already typed) set, the paired fields kept consistent (see
    the module docstring) and every value checked; :class:`SedError` for an unknown key."""
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise SedError(f"unknown recipe key {unknown[0]!r}; valid keys: {', '.join(KEYS)}")
    values = dict(values)
    if values.get("epochs") is not None and "steps" not in values:
        values["steps"] = None
    if values.get("steps") is not None and "epochs" not in values:
        values["epochs"] = None
    if values.get("augment_candidates") is not None and "augment" not in values:
        values["augment"] = ()
    if values.get("utterance_norm_candidates") is not None and "utterance_norm" not in values:
        values["utterance_norm"] = "none"
    if values.get("edge_quiet_candidates") is not None and "edge_quiet" not in values:
        values["edge_quiet"] = "keep"
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()}
    return dataclasses.replace(recipe, **values)
