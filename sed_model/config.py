"""The training configuration: everything that determines a run's result.

A :class:`TrainConfig` names the data, the model variant, the evaluation protocol and the
machine, and holds the :class:`~sed_model.recipes.Recipe` it trains with. It is complete when
made: :func:`make_config` takes the preset's recipe for the normalisation mode, applies the
options given (run fields and recipe keys alike, ``--set key=value`` on the command line)
and checks the result, in that one place. The one value that may wait for the data is the
recipe's ``validation_speakers`` when None: :func:`sed_model.trainer.train` decides it from
the folds before the run starts and records the number in ``config.json``.

A run folder's ``config.json`` is :meth:`TrainConfig.to_json`: the run fields, the recipe
under ``"recipe"`` and a ``schema`` number. :meth:`TrainConfig.from_json` reads it back, and
also the flat form (every option on one level, no ``"recipe"``), so such run folders
resume.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .augment import candidate_augment
from .checkpoint import read_json
from .errors import SedError
from .features.normalization import MODES as NORMALIZE_MODES
from .model import VARIANTS
from .recipes import KEYS as RECIPE_KEYS
from .recipes import Recipe, default_preset, get_preset, override
from .runtime import check_precision

CONFIG_FILE = "config.json"
CONFIG_SCHEMA = 2


@dataclass(frozen=True)
class TrainConfig:
    """Corpus, model variant, protocol, device, seed and recipe of a run.

    ``folds`` is the command-line form (``loso``, ``K``, ``holdout``, ``session``, ``paper``)
    or None for the corpus' default protocol. ``preset`` names the recipe's origin;
    ``recipe`` is what trains (the preset's with every override applied).
    """

    recipe: Recipe
    corpus: str = "demo"
    data: str | None = None
    variant: str = "feature"
    preset: str = "demo"
    folds: str | None = None
    normalize: str = "global"  # global | speaker: see sed_model.features.normalization
    device: str = "auto"
    backend: str = "auto"
    seed: int = 0
    split_seed: int | None = None  # seed of random folds and validation speakers; None: seed
    precision: str = "fp32"  # fp32, bf16 or fp16: see sed_model.runtime.check_precision

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise SedError(f"unknown variant {self.variant!r}; "
                           f"expected one of {', '.join(VARIANTS)}")
        check_precision(self.precision)
        if self.normalize not in NORMALIZE_MODES:
            raise SedError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}; "
                           f"got {self.normalize!r}")
        if self.normalize == "speaker" and _asks_for_shift(self.recipe):
            raise SedError("augmentation shift gives an utterance another training speaker's "
                           "statistics, which --normalize speaker removes again (the map is "
                           "the identity there); use it with --normalize global")

    @property
    def folds_seed(self) -> int:
        """The seed of random folds and validation speakers (``split_seed``, else ``seed``):
        the runs of ``--seeds N`` share their folds and differ in training only."""
        return self.seed if self.split_seed is None else self.split_seed

    def with_recipe(self, **values) -> TrainConfig:
        """This configuration with the recipe fields ``values`` changed (see
        :func:`sed_model.recipes.override`)."""
        return dataclasses.replace(self, recipe=override(self.recipe, values))

    def updated(self, options: Mapping[str, object]) -> TrainConfig:
        """This configuration with ``options`` (run fields and recipe keys) changed."""
        run, recipe = split_options(options)
        return dataclasses.replace(self, **run, recipe=override(self.recipe, recipe))

    def flat(self) -> dict:
        """Run fields and recipe fields on one level (JSON values), to compare two runs."""
        d = self.to_json()
        return {**{k: v for k, v in d.items() if k not in ("recipe", "schema")}, **d["recipe"]}

    def to_json(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "recipe"}
        return {"schema": CONFIG_SCHEMA, **d, "recipe": self.recipe.to_json()}

    @classmethod
    def from_json(cls, d: Mapping) -> TrainConfig:
        """A configuration written by :meth:`to_json`, or a flat one (whose recipe
        fields not saved take the preset's values, and whose missing ``augment`` and
        ``utterance_norm`` mean none: every run that used them recorded them)."""
        d = dict(d)
        if "recipe" in d:
            d.pop("schema", None)
            return cls(recipe=Recipe.from_json(d.pop("recipe")), **_run_fields(d))
        return make_config(**{"augment": (), "utterance_norm": "none",
                              **{k: _tuple(v) for k, v in d.items()}})

    @classmethod
    def resumed(cls, out_dir: Path, options: Mapping[str, object] | None = None) -> TrainConfig:
        """The configuration saved in the run folder ``out_dir``, with ``options`` (given
        explicitly; the trainer refuses to resume when they differ from the saved ones)."""
        return cls.from_json(saved_config(out_dir)).updated(options or {})


RUN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "recipe")
OPTION_KEYS = RUN_FIELDS + RECIPE_KEYS


def _tuple(value):
    return tuple(value) if isinstance(value, list) else value


def _run_fields(d: Mapping) -> dict:
    unknown = sorted(set(d) - set(RUN_FIELDS))
    if unknown:
        raise SedError(f"unknown training options in saved config: {', '.join(unknown)}")
    return dict(d)


def _asks_for_shift(recipe: Recipe) -> bool:
    asked = [recipe.augment, *(candidate_augment(c) for c in recipe.augment_candidates or ())]
    return any("shift" in names for names in asked)


def split_options(options: Mapping[str, object]) -> tuple[dict, dict]:
    """``options`` as (run fields, recipe fields); :class:`SedError` naming an unknown key
    with the valid ones."""
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise SedError(f"unknown option {unknown[0]!r}; valid keys: {', '.join(OPTION_KEYS)}")
    run = {k: v for k, v in options.items() if k in RUN_FIELDS}
    return run, {k: v for k, v in options.items() if k in RECIPE_KEYS}


def make_config(**options) -> TrainConfig:
    """The configuration of ``options``: run fields (``corpus``, ``variant``, ``normalize``,
    ...) and recipe keys (``lr``, ``cells``, ...). Every recipe key left out takes the
    value of the preset (``preset``, else the corpus' default) under ``normalize``."""
    run, values = split_options(options)
    run["preset"] = run.get("preset") or default_preset(run.get("corpus", "demo"))
    preset = get_preset(run["preset"]).recipe_for(run.get("normalize", "global"))
    return TrainConfig(recipe=override(preset, values), **run)


def _same_data(saved: str | None, current: str | None) -> bool:
    """Whether two ``data`` (or ``folds``) values name one corpus folder (fold file): equal
    strings, or paths (one relative, one absolute, or through a link) to the same one."""
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
    folder and a fold file count as unchanged when given by another path to the same one."""
    before, now = TrainConfig.from_json(saved).flat(), config.flat()
    return [f"{k} (saved {before.get(k)!r}, now {now.get(k)!r})" for k in sorted(now)
            if before.get(k) != now.get(k)
            and not (k in ("data", "folds") and _same_data(before.get(k), now.get(k)))]


def saved_config(out_dir: Path) -> dict:
    """The JSON configuration of the run in ``out_dir``; :class:`SedError` when there is none."""
    path = Path(out_dir) / CONFIG_FILE
    if not path.exists():
        raise SedError(f"cannot resume: {out_dir} holds no run (no {CONFIG_FILE})")
    return read_json(path)
