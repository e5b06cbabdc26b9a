"""Training-time augmentation (crop, mask) and its nested selection by inner speaker folds."""

import json

import numpy as np
import pytest
import torch
from test_trainer import random_dataset, tiny_config

from sed_model import augment, selection
from sed_model.augment import augment_batch, augmentation_rng, mask_spans, random_crop
from sed_model.config import TrainConfig, comparable_json
from sed_model.errors import SedError
from sed_model.trainer import dataset_folds, train


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test here on one torch thread (the shared fixture of conftest.py)."""


def padded_batch(lengths, features=130, seed=0):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    x = torch.randn(len(lengths), int(lengths.max()), features, generator=generator)
    for b, n in enumerate(lengths.tolist()):
        x[b, n:] = 0  # padding, as Split.batch makes it
    return x, lengths


@pytest.mark.parametrize("lengths", [[1], [50, 30, 1, 10], [200, 199, 7], [2, 2]])
def test_crop_keeps_a_contiguous_segment_of_80_to_100_percent(lengths):
    x, full = padded_batch(lengths)
    for seed in range(20):
        cropped, kept = random_crop(x, full, np.random.default_rng(seed))
        assert cropped.shape[1] == int(kept.max())
        for b, (n, k) in enumerate(zip(full.tolist(), kept.tolist())):
            assert max(1, round(augment.CROP_MIN * n)) <= k <= n
            starts = [s for s in range(n - k + 1) if torch.equal(x[b, s : s + k], cropped[b, :k])]
            assert starts, f"row {b}: the crop is not a segment of the utterance"
            assert not cropped[b, k:].any()  # zero padding after the segment


def test_crop_draws_vary_the_length():
    x, full = padded_batch([100] * 64)
    _, kept = random_crop(x, full, np.random.default_rng(0))
    assert len(set(kept.tolist())) > 5 and kept.min() >= 80


@pytest.mark.parametrize("lengths", [[1], [50, 30, 1, 10], [120, 3]])
def test_mask_zeroes_spans_of_valid_frames_only(lengths):
    x, full = padded_batch(lengths)
    before = x.clone()
    masked = mask_spans(x, full, np.random.default_rng(4))
    assert torch.equal(x, before)  # the input is left as it was
    changed = masked != x
    assert (masked[changed] == 0).all()
    for b, n in enumerate(full.tolist()):
        assert not changed[b, n:].any()  # padding untouched
        frames = changed[b, :n].all(dim=1).sum().item()  # whole frames masked (time masks)
        assert frames <= augment.TIME_MASKS * int(augment.TIME_MASK_SHARE * n)
        assert frames < n  # the time masks never cover a whole utterance
        features = changed[b, :n].all(dim=0).sum().item()  # whole features masked
        assert features <= augment.FEATURE_MASKS * augment.FEATURE_MASK_WIDTH


def test_mask_masks_something_on_long_utterances():
    x, full = padded_batch([200] * 8)
    masked = mask_spans(x, full, np.random.default_rng(0))
    assert (masked != x).any(dim=(1, 2)).sum() >= 6


def test_no_augmentation_draws_nothing_and_returns_the_batch():
    x, full = padded_batch([5, 3])

    def factory():
        raise AssertionError("no augmentation must draw no random numbers")

    out, lengths = augment_batch(x, full, (), factory)
    assert out is x and lengths is full


def test_draws_depend_on_seed_fold_and_step_only():
    x, full = padded_batch([40, 33, 12])
    names = ("crop", "mask")
    a = augment_batch(x, full, names, lambda: augmentation_rng(1, 2, 3))
    b = augment_batch(x, full, names, lambda: augmentation_rng(1, 2, 3))
    c = augment_batch(x, full, names, lambda: augmentation_rng(1, 2, 4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not (torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]))


def test_augment_options_are_checked_and_canonical():
    assert TrainConfig(augment=("mask", "crop")).augment == ("crop", "mask")
    assert TrainConfig().augment == () and TrainConfig(preset="small").augment == ()
    assert selection.candidate_config(TrainConfig(), "mask+crop").augment == ("crop", "mask")
    for bad in (dict(augment=("warp",)), dict(augment=("mask", "mask")),
                dict(augment_candidates=("none",)), dict(augment_candidates=("none", "warp")),
                dict(augment_candidates=("none", "none")), dict(inner_folds=1),
                dict(augment=("mask",), augment_candidates=("none", "crop"))):
        with pytest.raises(SedError):
            TrainConfig(**bad)


def test_a_config_saved_before_augmentation_existed_still_resumes():
    saved = TrainConfig(preset="small").to_json()
    for key in ("augment", "augment_candidates", "inner_folds"):
        del saved[key]
    assert comparable_json(saved) == TrainConfig(preset="small").to_json()


def test_augmented_training_differs_and_is_reproducible(tmp_path):
    dataset = random_dataset()
    runs = [train(tiny_config(augment=augment_names, steps=4), tmp_path / f"run{i}",
                  dataset=dataset, progress=False, final_model=False)
            for i, augment_names in enumerate([(), ("crop", "mask"), ("crop", "mask")])]
    losses = [[p["train_loss"] for p in run["folds"][0]["history"]] for run in runs]
    assert losses[1] == losses[2]  # the same seed augments the same way
    assert losses[0] != losses[1]
    assert runs[1]["folds"][0]["augment"] == ["crop", "mask"]


def test_inner_folds_split_only_the_training_speakers():
    dataset = random_dataset(speakers=("s1", "s2", "s3", "s4", "s5", "s6"))
    config = tiny_config(folds="3")
    speakers = np.array(dataset.speakers)
    for fold in dataset_folds(dataset, config.folds, 0, validation_speakers=1):
        inner = selection.inner_folds(dataset, fold, 2, seed=0)
        assert len(inner) == 2
        outside = set(fold.test) | set(fold.validation)
        for f in inner:
            assert not (set(f.train) | set(f.test)) & outside
            assert not set(speakers[list(f.train)]) & set(speakers[list(f.test)])
        assert sorted(i for f in inner for i in f.test) == sorted(fold.train)


def test_nested_selection_chooses_the_best_inner_candidate_and_resumes(tmp_path, monkeypatch):
    dataset = random_dataset(speakers=("s1", "s2", "s3", "s4", "s5", "s6"))
    config = tiny_config(folds="2", steps=4, augment_candidates=("none", "mask+crop"),
                         inner_folds=2)
    metrics = train(config, tmp_path, dataset=dataset, progress=False)
    chosen = []
    for index, fold in enumerate(metrics["folds"]):
        picked = fold["augment_selection"]
        assert set(picked["scores"]) == {"none", "mask+crop"} and picked["inner_folds"] == 2
        best = max(picked["scores"].values())
        first_best = next(c for c, s in picked["scores"].items() if s == best)
        assert picked["chosen"] == first_best
        assert fold["augment"] == list(augment.candidate_augment(first_best))
        for candidate in picked["scores"]:  # the inner runs' pooled UAR is the score
            inner_dir = tmp_path / f"fold-{index + 1:02d}" / "inner" / candidate
            confusion = sum(np.array(json.loads((d / "metrics.json").read_text())
                                     ["final"]["confusion"]) for d in inner_dir.iterdir())
            recall = np.diag(confusion) / confusion.sum(axis=1)
            assert picked["scores"][candidate] == pytest.approx(np.nanmean(recall))
        chosen.append(picked["chosen"])
    majority = max(config.augment_candidates, key=chosen.count)
    assert metrics["final_model"]["augment"] == list(augment.candidate_augment(majority))

    # resumed after fold 2's outer training was lost: its inner runs are read back
    (tmp_path / "fold-02" / "metrics.json").unlink()
    calls = []
    real_train_fold = selection.train_fold
    monkeypatch.setattr(selection, "train_fold",
                        lambda *a, **k: calls.append(a) or real_train_fold(*a, **k))
    again = train(config, tmp_path, dataset=dataset, progress=False, resume=True)
    assert calls == []
    assert again["folds"][1]["augment_selection"] == metrics["folds"][1]["augment_selection"]
    assert again["summary"] == metrics["summary"]
