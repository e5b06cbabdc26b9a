"""Trainer, metrics, batching and checkpoints on small random-feature datasets."""

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from sed_model.checkpoint import (
    load_checkpoint,
    model_from_checkpoint,
    normalizer_from_checkpoint,
    save_checkpoint,
    write_json,
)
from sed_model.config import make_config
from sed_model.corpora import get_corpus
from sed_model.corpora.base import Utterance
from sed_model.data import Dataset, check_training_split, epoch_batches
from sed_model.errors import SedError
from sed_model.metrics import classification_report, report_from_confusion
from sed_model.runtime import RunOptions
from sed_model.splits import Fold
from sed_model.trainer import TrainConfig, train

QUIET = RunOptions(progress=False)  # no progress bars in tests

CLASSES = ("anger", "joy", "sadness")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test here on one torch thread (the shared fixture of conftest.py)."""


def random_dataset(speakers=("s1", "s2", "s3", "s4"), per_class=3, seed=0) -> Dataset:
    """Random frames of lengths 3..12 whose mean depends on the class (learnable)."""
    rng = np.random.default_rng(seed)
    utterances, features, labels = [], [], []
    for speaker in speakers:
        for label, name in enumerate(CLASSES):
            for n in range(per_class):
                x = rng.standard_normal((int(rng.integers(3, 13)), 130)).astype(np.float32)
                x[:, :10] += 1.5 * label
                utterances.append(Utterance(Path(f"/none/{speaker}_{name}_{n}.wav"), name, speaker))
                features.append(x)
                labels.append(label)
    return Dataset(corpus="random", loader=get_corpus("emodb"), classes=CLASSES,
                   utterances=utterances, features=features, labels=np.array(labels), skipped=0)


def tiny_config(**changes) -> TrainConfig:
    values = dict(corpus="random", variant="feature", preset="demo", folds="2", steps=8,
                  batch_size=8, cells=(6, 5), eval_every=2, lr=1e-2, device="cpu",
                  backend="reference", seed=3)
    values.update(changes)
    return make_config(**values)


# ------------------------------------------------------------------------------- metrics
def test_metrics_on_a_hand_computed_confusion_matrix():
    # reference 0: 3 utterances (2 right), 1: 2 (both right), 2: 1 (wrong, predicted 0)
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 1, 0]
    report = classification_report(y_true, y_pred, CLASSES)
    assert report["confusion"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert report["recall"] == {"anger": pytest.approx(2 / 3), "joy": 1.0, "sadness": 0.0}
    assert report["uar"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert report["wa"] == pytest.approx(4 / 6)
    assert report_from_confusion(report["confusion"], CLASSES) == report


def test_uar_leaves_out_classes_without_reference_utterances():
    report = classification_report([0, 0, 1], [0, 2, 1], CLASSES)
    assert report["recall"]["sadness"] is None
    assert report["uar"] == pytest.approx((0.5 + 1.0) / 2)


# ------------------------------------------------------------------------------ batching
def test_epoch_batches_cover_every_utterance_once_with_little_padding():
    lengths = np.random.default_rng(0).integers(1, 500, size=203)
    batches = epoch_batches(lengths, batch_size=8, rng=np.random.default_rng(5), bucket_batches=4)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(203))
    assert all(len(b) <= 8 for b in batches)
    assert all(np.all(np.diff(lengths[b]) >= 0) for b in batches)  # sorted inside a bucket
    again = epoch_batches(lengths, batch_size=8, rng=np.random.default_rng(5), bucket_batches=4)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))  # a function of the rng


def test_training_split_needs_files_and_two_classes():
    dataset = random_dataset()
    one_class = tuple(i for i, y in enumerate(dataset.labels) if y == 0)
    with pytest.raises(SedError, match="single class"):
        check_training_split(dataset, Fold("f", one_class, (1, 2)))
    with pytest.raises(SedError, match="no usable files"):
        check_training_split(dataset, Fold("f", (), (1, 2)))


def test_config_is_complete_when_made():
    config = make_config(preset="iemocap")
    recipe = config.recipe
    assert (recipe.cells, recipe.lr, recipe.batch_size, recipe.steps, recipe.epochs) == (
        (256, 256), 1e-4, 64, 30000, None)
    assert config.recipe.betas == (0.9, 0.7) and config.recipe.weight_decay == 1e-4
    enterface = make_config(preset="enterface", batch_size=4)
    assert (enterface.recipe.cells, enterface.recipe.epochs,
            enterface.recipe.batch_size) == ((512, 256), 1500, 4)
    # epochs given: no preset steps
    assert make_config(preset="iemocap", epochs=2).recipe.steps is None
    with pytest.raises(SedError, match="exactly one of epochs and steps"):
        make_config(epochs=1, steps=1)
    with pytest.raises(SedError, match="unknown preset"):
        make_config(preset="fast")
    with pytest.raises(SedError, match="unknown variant"):
        make_config(variant="dense")
    assert TrainConfig.from_json(json.loads(json.dumps(config.to_json()))) == config


def test_resumed_config_is_the_saved_one_with_the_options_given(tmp_path):
    saved = tiny_config()
    write_json(tmp_path / "config.json", saved.to_json())
    assert TrainConfig.resumed(tmp_path) == saved
    assert TrainConfig.resumed(tmp_path, {"lr": 0.5}).recipe.lr == 0.5
    with pytest.raises(SedError, match="holds no run"):
        TrainConfig.resumed(tmp_path / "empty")


# ---------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip(tmp_path):
    metrics = train(tiny_config(steps=2), tmp_path / "run", dataset=random_dataset(),
                    options=QUIET).to_json()
    checkpoint = load_checkpoint(tmp_path / "run" / "best.pt")
    assert checkpoint["class_names"] == list(CLASSES)
    assert checkpoint["config"] == metrics["config"]
    assert set(checkpoint) >= {"model", "optimizer", "rng", "step", "fold", "normalizer", "history"}
    model = model_from_checkpoint(checkpoint)
    x = torch.from_numpy(normalizer_from_checkpoint(checkpoint)(random_dataset().features[0]))[None]
    logits = model(x, torch.tensor([x.shape[1]]))
    save_checkpoint(tmp_path / "copy.pt", {k: v for k, v in checkpoint.items() if k != "format"})
    again = model_from_checkpoint(load_checkpoint(tmp_path / "copy.pt"))
    torch.testing.assert_close(again(x, torch.tensor([x.shape[1]])), logits)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_loading_something_else_is_a_clear_error(tmp_path):
    with pytest.raises(SedError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(SedError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"a": 1}, tmp_path / "other.pt")
    with pytest.raises(SedError, match="not a sed_model checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_write_json_replaces_atomically(tmp_path):
    write_json(tmp_path / "m.json", {"a": 1})
    write_json(tmp_path / "m.json", {"a": 2})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
    umask = os.umask(0)
    os.umask(umask)
    mode = stat.S_IMODE((tmp_path / "m.json").stat().st_mode)
    assert mode == 0o666 & ~umask  # not mkstemp's 0600


# --------------------------------------------------------------------------------- runs
def test_run_folder_and_metrics(tmp_path):
    metrics = train(tiny_config(), tmp_path, dataset=random_dataset(), options=QUIET).to_json()
    for name in ("config.json", "metrics.json", "best.pt", "curves.png", "confusion.png",
                 "fold-01/best.pt", "fold-01/last.pt", "fold-02/metrics.json"):
        assert (tmp_path / name).is_file(), name
    assert len(metrics["folds"]) == 2
    fold = metrics["folds"][0]
    assert [p["step"] for p in fold["history"]] == [0, 2, 4, 6, 8]
    assert fold["best"]["uar"] == max(p["uar"] for p in fold["history"])
    assert fold["final"]["uar"] == fold["history"][-1]["uar"]
    assert fold["final"]["step"] == 8
    pooled = metrics["summary"]["final"]["pooled"]
    assert pooled["n"] == 36 and np.array(pooled["confusion"]).sum() == 36
    assert metrics["headline"] == "final"
    assert load_checkpoint(tmp_path / "best.pt")["fold"]["index"] == 0
    with pytest.raises(SedError, match="already holds a run"):
        train(tiny_config(), tmp_path, dataset=random_dataset(), options=QUIET)


def test_the_model_learns_a_separable_task(tmp_path):
    metrics = train(tiny_config(steps=30, eval_every=30, cells=(16,)), tmp_path,
                    dataset=random_dataset(per_class=6), options=QUIET).to_json()
    assert metrics["summary"]["final"]["pooled"]["uar"] > 0.8


class Killed(Exception):
    pass


def kill_at(fold_index_step):
    def on_checkpoint(path, step):
        if (path.parent.name, step) == fold_index_step:
            raise Killed
    return on_checkpoint


# the small recipe's training pieces without its speed augmentation (random data have no audio)
RECIPES = {"paper-like": {},
           "small": {"preset": "small", "normalize": "speaker", "augment": ("none",)}}


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("kill", [("fold-01", 4), ("fold-02", 6)])
def test_resume_after_a_kill_ends_like_an_uninterrupted_run(tmp_path, kill, recipe):
    """Also with the small recipe: dropout's RNG, the schedule and the weight EMA resume."""
    dataset = random_dataset()
    config = tiny_config(**RECIPES[recipe])
    reference = train(config, tmp_path / "a", dataset=dataset, options=QUIET).to_json()

    with pytest.raises(Killed):
        train(config, tmp_path / "b", dataset=dataset, options=QUIET, on_checkpoint=kill_at(kill))
    assert not (tmp_path / "b" / "metrics.json").exists()
    seen = []
    resumed = train(config, tmp_path / "b", dataset=dataset, options=QUIET, resume=True,
                    on_checkpoint=lambda path, step: seen.append((path.parent.name, step)))
    resumed = resumed.to_json()

    if kill[0] == "fold-02":  # fold 1 was complete: skipped, not retrained
        assert all(name in ("fold-02", "final") for name, _ in seen)
    assert seen[0] == (kill[0], kill[1] + 2)  # continues after the last checkpoint
    assert resumed["folds"] == reference["folds"]
    for fold in ("fold-01", "fold-02"):
        a = load_checkpoint(tmp_path / "a" / fold / "last.pt")
        b = load_checkpoint(tmp_path / "b" / fold / "last.pt")
        assert a["step"] == b["step"] == 8
        for key in ("model", "trained_model") if recipe == "small" else ("model",):
            for name, tensor in a[key].items():
                assert torch.equal(tensor, b[key][name]), (key, name)


def test_unusable_backend_or_device_is_a_clear_error(tmp_path):
    with pytest.raises(SedError, match="backend 'nope'"):
        train(tiny_config(backend="nope"), tmp_path, dataset=random_dataset(), options=QUIET)
    if not torch.cuda.is_available():
        with pytest.raises(SedError, match="no CUDA GPU"):
            train(tiny_config(device="cuda"), tmp_path, dataset=random_dataset(), options=QUIET)
    assert not (tmp_path / "config.json").exists()


def test_resume_refuses_other_options(tmp_path):
    dataset = random_dataset()
    with pytest.raises(Killed):
        train(tiny_config(), tmp_path, dataset=dataset, options=QUIET,
              on_checkpoint=kill_at(("fold-01", 2)))
    with pytest.raises(SedError, match="lr"):
        train(tiny_config(lr=0.5), tmp_path, dataset=dataset, options=QUIET, resume=True)
    with pytest.raises(SedError, match="holds no run"):
        train(tiny_config(), tmp_path / "empty", dataset=dataset, options=QUIET, resume=True)


def test_resume_accepts_the_corpus_folder_by_another_path(tmp_path, monkeypatch):
    """The corpus given relative where it was absolute (or through a link) is the same run;
    another folder is not, and the message names both values."""
    corpus, other = tmp_path / "corpus", tmp_path / "other"
    corpus.mkdir(), other.mkdir()
    (tmp_path / "link").symlink_to(corpus)
    dataset, out = random_dataset(), tmp_path / "run"
    with pytest.raises(Killed):  # mid-fold: the resume also checks fold-01/last.pt
        train(tiny_config(data=str(corpus)), out, dataset=dataset, options=QUIET,
              on_checkpoint=kill_at(("fold-01", 2)))
    with pytest.raises(SedError, match=r"data \(saved '.*corpus', now '.*other'\)"):
        train(tiny_config(data=str(other)), out, dataset=dataset, options=QUIET, resume=True)
    monkeypatch.chdir(tmp_path)
    resumed = train(tiny_config(data="link"), out, dataset=dataset, options=QUIET,
                    resume=True).to_json()
    reference = train(tiny_config(data=str(corpus)), tmp_path / "uninterrupted",
                      dataset=dataset, options=QUIET).to_json()
    assert resumed["folds"] == reference["folds"]


def test_the_training_loop_checks_the_kept_heap_after_every_step(tmp_path, monkeypatch):
    import sed_model.fold as fold_module

    calls = []
    monkeypatch.setattr(fold_module, "bound_kept_memory", lambda: calls.append(1) or False)
    config = tiny_config()
    train(config, tmp_path / "run", dataset=random_dataset(), options=QUIET)
    # 8 steps on each of the 2 folds and 8 for the final model on every speaker
    assert len(calls) == 3 * config.recipe.steps
