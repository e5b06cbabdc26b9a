"""The typed recipe: presets as data, ``--set key=value`` overrides, old run folders."""

import json
import subprocess
import sys

import pytest

from sed_model import cli, compare, recipes, train
from sed_model.checkpoint import load_checkpoint
from sed_model.config import TrainConfig, changed_options, make_config
from sed_model.errors import SedError
from sed_model.recipes import KEYS, PRESETS, Recipe


def parse(*options):
    return cli.config_from_args(train.build_parser().parse_args(list(options)))


def test_every_preset_is_a_complete_checked_recipe():
    for preset in PRESETS.values():
        for normalize in ("global", "speaker"):
            recipe = preset.recipe_for(normalize)
            assert isinstance(recipe, Recipe)
            assert (recipe.epochs is None) != (recipe.steps is None)
    assert PRESETS["small"].recipe_for("speaker").augment == ("speed",)
    small = PRESETS["small"].recipe_for("global")
    assert [small.utterance_norm_of(v) for v in ("feature", "time", "general", "lstm")] == [
        "mean_std", "none", "none", "none"]  # chosen per variant on inner folds
    assert PRESETS["small"].recipe_for("speaker").utterance_norm == "none"
    assert PRESETS["iemocap"].recipe_for("global").utterance_norm == "none"  # the paper's
    assert set(KEYS) >= {"lr", "cells", "epochs", "steps", "input_dropout", "augment",
                         "ema_decay", "optimizer", "betas", "schedule", "warmup"}


@pytest.mark.parametrize("text, key, value", [
    ("lr=1e-3", "lr", 1e-3), ("cells=32,32", "cells", (32, 32)), ("cells=128", "cells", (128,)),
    ("class_balanced=false", "class_balanced", False), ("ema_decay=none", "ema_decay", None),
    ("ema_decay=0.9", "ema_decay", 0.9), ("betas=0.9,0.98", "betas", (0.9, 0.98)),
    ("augment=speed,mask", "augment", ("speed", "mask")), ("optimizer=adam", "optimizer", "adam"),
    ("attention_dim=none", "attention_dim", None), ("steps=100", "steps", 100),
    ("utterance_norm=mean", "utterance_norm", "mean"),
])
def test_set_values_are_read_with_the_fields_type(text, key, value):
    assert recipes.parse_assignments([text]) == {key: value}


@pytest.mark.parametrize("text, message", [
    ("lr=fast", "lr='fast': expected float"), ("cells=32,x", "expected tuple"),
    ("class_balanced=maybe", "expected bool"), ("epochs=2.5", "expected int"),
    ("lr", "expected key=value"),
])
def test_bad_set_values_are_one_line_errors(text, message):
    with pytest.raises(SedError, match=message):
        recipes.parse_assignments([text])


def test_set_overrides_any_field_and_keeps_the_pairs_consistent():
    config = parse("--set", "lr=1e-3", "--set", "cells=32,32", "--set", "head_dropout=0.5")
    assert (config.recipe.lr, config.recipe.cells, config.recipe.head_dropout) == (
        1e-3, (32, 32), 0.5)
    # the length is given one way: steps clears the preset's epochs and the other way round
    assert parse("--set", "steps=7").recipe.epochs is None
    assert parse("--corpus", "emodb", "--preset", "iemocap", "--epochs", "3").recipe.steps is None
    # a nested selection turns the preset's augmentation off
    nested = parse("--corpus", "emodb", "--set", "augment_candidates=none,speed")
    assert nested.recipe.augment == () and nested.recipe.augment_candidates == ("none", "speed")
    # run fields without a flag of their own
    assert parse("--set", "precision=bf16", "--set", "backend=reference").precision == "bf16"
    assert parse("--set", "lr=1e-3", "--set", "lr=2e-3").recipe.lr == 2e-3  # the later wins


def test_checked_values_name_the_field():
    for text, message in (("optimizer=sgd", "optimizer must be one of adam, adamw"),
                          ("head_dropout=1.5", "head_dropout must be in"),
                          ("cells=0", "cells must be positive"),
                          ("epochs=0", "epochs must be a positive integer"),
                          ("utterance_norm=cmvn",
                           "utterance_norm must be one of none, mean, mean_std")):
        with pytest.raises(SedError, match=message):
            parse("--set", text)
    with pytest.raises(SedError, match="exactly one of epochs and steps"):
        parse("--epochs", "3", "--set", "steps=4")


@pytest.mark.parametrize("text, message", [
    ("utterance_norm=feature:mean_std", "names no mode for lstm, general, time"),
    ("utterance_norm=feature:cmvn,time:none,general:none,lstm:none", "unknown mode 'cmvn'"),
    ("utterance_norm=atention:none,time:none,general:none,lstm:none",
     "unknown variant 'atention'"),
    ("utterance_norm=time:none,time:mean,general:none,lstm:none", "a variant named twice"),
])
def test_a_per_variant_utterance_norm_names_every_variant_once(text, message):
    with pytest.raises(SedError, match=message):
        parse("--set", text)


def test_a_per_variant_utterance_norm_is_kept_in_one_written_form():
    recipe = parse("--set", "utterance_norm=feature: mean_std, time:mean,general:none,"
                   "lstm:none").recipe
    assert recipe.utterance_norm == "lstm:none,general:none,time:mean,feature:mean_std"
    assert [recipe.utterance_norm_of(v) for v in ("lstm", "general", "time", "feature")] == [
        "none", "none", "mean", "mean_std"]
    # one mode for every variant is written as that mode
    same = parse("--set", "utterance_norm=feature:mean,time:mean,general:mean,lstm:mean")
    assert same.recipe.utterance_norm == "mean"
    assert parse("--set", "utterance_norm=mean").recipe.utterance_norm_of("lstm") == "mean"


def test_compare_builds_each_variant_with_its_own_utterance_norm(tmp_path):
    out = tmp_path / "c"
    compare.main(["--variants", "time,feature", "--epochs", "1", "--folds", "2", "--no-baseline",
                  "--set", "utterance_norm=lstm:none,general:none,time:mean,feature:mean_std",
                  "--set", "cells=16,16", "--out-dir", str(out), "--no-progress",
                  "--threads", "1"])
    for variant, mode in (("time", "mean"), ("feature", "mean_std")):
        checkpoints = sorted((out / variant).glob("fold-*/last.pt"))
        assert len(checkpoints) == 2
        assert {load_checkpoint(p)["hyperparameters"]["utterance_norm"]
                for p in checkpoints} == {mode}


def test_old_flags_still_work_with_a_deprecation_warning():
    with pytest.warns(FutureWarning, match="--lr is deprecated; use --set lr=0.01"):
        config = parse("--lr", "0.01", "--cells", "16,16", "--augment", "mask", "crop")
    assert (config.recipe.lr, config.recipe.cells, config.recipe.augment) == (
        0.01, (16, 16), ("crop", "mask"))
    assert "--lr" not in train.build_parser().format_help()  # hidden from the help


def test_an_unknown_key_exits_2_listing_the_valid_keys():
    done = subprocess.run([sys.executable, "-m", "sed_model.train", "--set", "nonsense=1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --set nonsense=1: unknown key")
    assert all(key in lines[0] for key in ("lr", "cells", "augment", "precision"))
    with pytest.raises(SedError, match="unknown option 'nonsense'; valid keys: corpus"):
        make_config(nonsense=1)


def test_config_json_holds_the_recipe_and_reads_back():
    config = make_config(corpus="emodb", preset="small", lr=1e-3, cells=(32, 32))
    saved = json.loads(json.dumps(config.to_json()))
    assert saved["schema"] == 2 and saved["recipe"]["lr"] == 1e-3
    assert saved["recipe"]["cells"] == [32, 32]
    assert TrainConfig.from_json(saved) == config
    assert changed_options(saved, config) == []
    assert changed_options(saved, config.with_recipe(lr=2e-3)) == [
        "lr (saved 0.001, now 0.002)"]
    # a recipe saved before utterance_norm existed trained without it
    del saved["recipe"]["utterance_norm"]
    assert TrainConfig.from_json(saved).recipe.utterance_norm == "none"


# The flat config.json of a run folder written before the recipe was typed (small, 40
# epochs, global, with the fields it had then); such a folder must still resume.
FLAT_CONFIG = {
    "corpus": "emodb", "data": "/data/emodb", "variant": "feature", "preset": "small",
    "folds": "loso", "epochs": 40, "steps": None, "batch_size": 32, "lr": 0.004,
    "cells": [64, 64], "eval_every": None, "dense": 128, "attention_dim": None,
    "optimizer": "adamw", "betas": [0.9, 0.999], "weight_decay": 0.05, "schedule": "cosine",
    "warmup": 0.05, "input_dropout": 0.1, "layer_dropout": 0.2, "head_dropout": 0.3,
    "clip_norm": 1.0, "class_balanced": True, "label_smoothing": 0.1, "ema_decay": 0.99,
    "device": "auto", "backend": "auto", "seed": 0, "split_seed": 0, "precision": "fp32",
    "validation_speakers": 0, "normalize": "global", "augment": ["speed", "shift"],
    "augment_candidates": None, "inner_folds": 3,
}


def test_a_flat_config_of_an_older_run_folder_resumes(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(FLAT_CONFIG))
    resumed = TrainConfig.resumed(tmp_path)
    # it trained without utterance normalisation, which it does not record
    today = make_config(corpus="emodb", data="/data/emodb", folds="loso", split_seed=0,
                        utterance_norm="none")
    assert resumed == today
    assert changed_options(FLAT_CONFIG, today) == []
    # an older one still: fields it did not save take the preset's values, but a missing
    # augment means it trained without augmentation
    older = {k: v for k, v in FLAT_CONFIG.items()
             if k not in ("augment", "augment_candidates", "inner_folds", "ema_decay")}
    assert TrainConfig.from_json(older).recipe.augment == ()
    assert TrainConfig.from_json(older).recipe.ema_decay == 0.99


def test_the_demo_records_set_values_in_config_json(tmp_path):
    out = tmp_path / "run"
    train.main(["--set", "lr=1e-3", "--set", "cells=32,32", "--set", "utterance_norm=mean",
                "--epochs", "1", "--folds", "2", "--out-dir", str(out), "--no-progress",
                "--no-final-model", "--threads", "1"])
    saved = json.loads((out / "config.json").read_text())
    assert saved["recipe"]["lr"] == 1e-3 and saved["recipe"]["cells"] == [32, 32]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["recipe"]["cells"] == [32, 32]
    # the model a fold trains and keeps is built with the recipe's utterance_norm
    fold_model = load_checkpoint(next(out.glob("fold-*/last.pt")))
    assert fold_model["hyperparameters"]["utterance_norm"] == "mean"


def test_a_run_resumes_from_another_directory_with_relative_corpus_and_fold_paths(
        tmp_path, monkeypatch):
    """--data and --folds PATH given relative are kept absolute in config.json; a resume
    that names them relative from elsewhere, or not at all, is the same run."""
    (tmp_path / "corpus").mkdir()
    (tmp_path / "folds.csv").write_text("speaker,fold\na,1\nb,2\n")
    monkeypatch.chdir(tmp_path)
    config = parse("--corpus", "csv", "--data", "corpus", "--folds", "folds.csv")
    assert config.data == str(tmp_path / "corpus")
    assert config.folds == str(tmp_path / "folds.csv")
    assert parse("--folds", "loso").folds == "loso"  # a protocol stays a protocol
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    again = parse("--corpus", "csv", "--data", "../corpus", "--folds", "../folds.csv")
    assert changed_options(config.to_json(), again) == []
    old_run = {**config.to_json(), "data": "corpus", "folds": "folds.csv"}  # saved relative
    monkeypatch.chdir(tmp_path)
    assert changed_options(old_run, config) == []
