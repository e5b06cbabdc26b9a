"""Training-time augmentation (speed, shift, crop, mask, mixup); its nested selection by inner
folds is in test_selection.py."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from test_trainer import random_dataset, tiny_config

from sed_model import augment, selection
from sed_model.augment import (
    Mixup,
    SpeakerShift,
    augment_batch,
    augmentation_rng,
    mask_spans,
    mix_batch,
    random_crop,
)
from sed_model.config import TrainConfig, make_config
from sed_model.data import make_split
from sed_model.errors import SedError
from sed_model.features import FeatureConfig, Normalizer
from sed_model.features import cache as feature_cache
from sed_model.features.opensmile_frames import opensmile_version, speed_perturbed
from sed_model.runtime import RunOptions
from sed_model.trainer import train

QUIET = RunOptions(progress=False)  # no progress bars in tests


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


def test_no_augmentation_draws_nothing(tmp_path, monkeypatch):
    x, full = padded_batch([5, 3])
    out, lengths = augment_batch(x, full, (), None)
    assert out is x and lengths is full

    def no_draws(*args):
        raise AssertionError("a run without augmentation must draw no augmentation numbers")

    monkeypatch.setattr(augment, "augmentation_rng", no_draws)
    train(tiny_config(steps=2), tmp_path, dataset=random_dataset(), options=QUIET,
          final_model=False)


def test_draws_depend_on_seed_fold_and_step_only():
    x, full = padded_batch([40, 33, 12])
    names = ("crop", "mask")
    a = augment_batch(x, full, names, augmentation_rng(1, 2, 3))
    b = augment_batch(x, full, names, augmentation_rng(1, 2, 3))
    c = augment_batch(x, full, names, augmentation_rng(1, 2, 4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not (torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]))


def test_augment_options_are_checked_and_canonical():
    assert make_config(augment=("mask", "crop")).recipe.augment == ("crop", "mask")
    assert make_config(augment=("none",)).recipe.augment == ()
    candidate = selection.candidate_config(make_config(), {"augment": "mask+crop"})
    assert candidate.recipe.augment == ("crop", "mask")
    assert make_config(augment_candidates=("none", "speed+mask")).recipe.augment_candidates == (
        "none", "speed+mask")
    for bad in (dict(augment=("warp",)), dict(augment=("mask", "mask")),
                dict(augment_candidates=("none", "mask+mask")),
                dict(augment_candidates=("none",)), dict(augment_candidates=("none", "warp")),
                dict(augment_candidates=("none", "none")), dict(inner_folds=1),
                dict(augment=("mask",), augment_candidates=("none", "crop")),
                dict(augment=("none", "speed"))):
        with pytest.raises(SedError):
            make_config(**bad)


def test_the_small_recipe_augments_as_its_inner_folds_chose_and_the_others_do_not():
    small = dict(corpus="emodb", preset="small")
    assert make_config(**small).recipe.augment == ("speed", "shift")
    assert make_config(corpus="emodb").recipe.augment == ("speed", "shift")  # small: the default
    # shift: global only
    assert make_config(**small, normalize="speaker").recipe.augment == ("speed",)
    assert make_config(**small, augment=("none",)).recipe.augment == ()
    assert make_config(**small, augment=("mask",)).recipe.augment == ("mask",)
    nested = make_config(**small, augment_candidates=("speed", "speed+shift"))
    assert nested.recipe.augment == ()
    assert nested.recipe.augment_candidates == ("speed", "speed+shift")
    for preset in ("demo", "enterface", "iemocap", "emodb-cpu"):
        assert make_config(corpus="emodb", preset=preset).recipe.augment == ()
    assert make_config().recipe.augment == ()  # the demo corpus: the demo preset


def test_a_config_saved_before_augmentation_existed_resumes_without_it():
    saved = make_config(preset="small", augment=("none",)).flat()  # the older flat form
    for key in ("schema", "augment", "augment_candidates", "inner_folds"):
        saved.pop(key, None)
    # it trained without augmentation: the small preset's current default must not fill in
    resumed = TrainConfig.from_json(saved)
    assert resumed == make_config(preset="small", augment=("none",))
    assert resumed.recipe.augment == ()


@pytest.mark.parametrize("names", [("crop", "mask"), ("shift",), ("mixup",)])
def test_augmented_training_differs_and_is_reproducible(tmp_path, names):
    dataset = random_dataset()
    runs = [train(tiny_config(augment=augment_names, steps=4), tmp_path / f"run{i}",
                  dataset=dataset, options=QUIET, final_model=False)
            for i, augment_names in enumerate([(), names, names])]
    losses = [[p["train_loss"] for p in run.folds[0].history] for run in runs]
    assert losses[1] == losses[2]  # the same seed augments the same way
    assert losses[0] != losses[1]
    assert runs[1].folds[0].augment == list(names)


# ------------------------------------------------------------------------- mixup
def test_mixup_mixes_rows_with_a_permutation_and_keeps_the_longer_length():
    x, full = padded_batch([7, 3, 5, 6])
    mixed, lengths, mix = mix_batch(x, full, np.random.default_rng(4))
    partner = mix.partner
    assert sorted(partner.tolist()) == [0, 1, 2, 3] and partner.tolist() != [0, 1, 2, 3]
    assert 0.0 <= mix.lam <= 1.0
    torch.testing.assert_close(mixed, mix.lam * x + (1 - mix.lam) * x[partner])
    assert lengths.tolist() == [max(full[b], full[partner[b]]) for b in range(4)]
    for b in range(4):  # beyond both rows' frames, the mix stays padding
        assert (mixed[b, lengths[b]:] == 0).all()


def test_mixup_loss_mixes_the_two_labels_losses():
    logits = torch.randn(4, 3, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 1])
    mix = Mixup(lam=0.3, partner=torch.tensor([2, 0, 3, 1]))

    def summed(z, y):
        return torch.nn.functional.cross_entropy(z, y, reduction="sum")

    # every row's loss against the soft target lam e_a + (1 - lam) e_b
    soft = 0.3 * torch.nn.functional.one_hot(labels, 3) + 0.7 * torch.nn.functional.one_hot(
        labels[mix.partner], 3)
    expected = -(soft * logits.log_softmax(1)).sum()
    torch.testing.assert_close(mix.loss(summed, logits, labels), expected)


# ------------------------------------------------------------------------- speaker shift
def speakers_with_own_statistics(seed=0):
    """Raw frames of three speakers, each with its own per-feature mean and std."""
    rng = np.random.default_rng(seed)
    features, speakers = [], []
    for k, speaker in enumerate(("b", "a", "c")):  # not in sorted order
        mean, std = rng.normal(0, 5, 7), rng.uniform(0.2, 3.0, 7)
        for _ in range(4 + k):
            features.append(mean + std * rng.standard_normal((int(rng.integers(5, 40)), 7)))
            speakers.append(speaker)
    return features, speakers


def test_shift_gives_an_utterance_the_statistics_of_another_speaker():
    features, speakers = speakers_with_own_statistics()
    normalizer = Normalizer.fit(features, speakers, "global")
    shift, sources = SpeakerShift.fit(features, speakers, normalizer.mean, normalizer.std)
    order = sorted(set(speakers))
    assert [order[k] for k in sources] == speakers
    frames = {s: np.concatenate([x for x, t in zip(features, speakers) if t == s]) for s in order}
    for s, source in enumerate(order):
        z = torch.from_numpy(normalizer(frames[source]))  # (T, D) as the model sees it
        for t, target in enumerate(order):
            mapped = (shift.scale[s, t] * z + shift.offset[s, t]).double().numpy()
            raw = mapped * normalizer.std + normalizer.mean  # back to raw units
            np.testing.assert_allclose(raw.mean(0), frames[target].mean(0), atol=1e-4)
            np.testing.assert_allclose(raw.std(0), frames[target].std(0), rtol=1e-4)
        assert torch.equal(shift.scale[s, s], torch.ones(7))
        torch.testing.assert_close(shift.offset[s, s], torch.zeros(7), atol=1e-6, rtol=0)


def test_shift_of_a_feature_constant_over_one_speaker_stays_bounded():
    rng = np.random.default_rng(3)
    flat = np.column_stack([np.full(50, 7.0), rng.normal(0, 1, 50)])  # feature 0 constant
    spread = np.column_stack([rng.normal(7, 500, 50), rng.normal(0, 1, 50)])
    features, speakers = [flat[:25], flat[25:], spread[:25], spread[25:]], ["a", "a", "b", "b"]
    normalizer = Normalizer.fit(features, speakers, "global")
    shift, _ = SpeakerShift.fit(features, speakers, normalizer.mean, normalizer.std)
    # unclipped, a's constant feature (std floored to 1) would be stretched about 500 times
    assert shift.scale[0, 1, 0] == augment.MAX_SHIFT_SCALE
    assert shift.scale[1, 0, 0] == pytest.approx(1 / augment.MAX_SHIFT_SCALE)
    assert 0.5 < shift.scale[0, 1, 1] < 2  # an ordinary feature keeps its ratio
    # the mean still maps onto the other speaker's: a's frames land at b's mean of feature 0
    z = torch.from_numpy(normalizer(flat))
    mapped = (shift.scale[0, 1] * z + shift.offset[0, 1]).double().numpy()
    raw = mapped * normalizer.std + normalizer.mean
    np.testing.assert_allclose(raw[:, 0].mean(), spread[:, 0].mean(), rtol=1e-4)
    assert np.isfinite(shift.offset.numpy()).all()


@pytest.mark.parametrize("lengths", [[1], [9, 4, 1, 9], [3, 3]])
def test_shift_maps_valid_frames_only_to_another_speaker_or_keeps_them(lengths):
    features, speakers = speakers_with_own_statistics(seed=1)
    normalizer = Normalizer.fit(features, speakers, "global")
    shift, _ = SpeakerShift.fit(features, speakers, normalizer.mean, normalizer.std)
    x, full = padded_batch(lengths, features=7)
    for b, n in enumerate(lengths):
        x[b, n:] = 7.0  # padding must come out as it went in (NaN would hide a write)
    kept = changed = 0
    for step in range(40):
        sources = np.arange(len(lengths)) % 3
        out = shift(x, full, sources, augmentation_rng(0, 0, step))
        targets = shift.targets(sources, augmentation_rng(0, 0, step))
        for b, n in enumerate(lengths):
            assert (out[b, n:] == 7.0).all()
            s, t = sources[b], targets[b]
            expected = shift.scale[s, t] * x[b, :n] + shift.offset[s, t]
            torch.testing.assert_close(out[b, :n], expected, rtol=0, atol=0)
            kept, changed = kept + (s == t), changed + (s != t)
    share = kept / (kept + changed)
    assert 0.3 < share < 0.7  # SHIFT_KEEP = 0.5


def test_shift_with_one_training_speaker_keeps_every_row():
    features, _ = speakers_with_own_statistics()
    shift, sources = SpeakerShift.fit(features, ["a"] * len(features),
                                      np.zeros(7), np.ones(7))
    targets = shift.targets(sources, np.random.default_rng(0))
    assert (targets == sources).all()


def test_shift_is_refused_under_speaker_normalisation():
    assert make_config(augment=("shift", "speed")).recipe.augment == ("speed", "shift")
    for bad in (dict(augment=("shift",)), dict(augment_candidates=("none", "speed+shift"))):
        with pytest.raises(SedError, match="--normalize global"):
            make_config(normalize="speaker", **bad)


# ------------------------------------------------------------------ speed perturbation
@pytest.mark.parametrize("speed", [0.9, 1.1])
def test_speed_perturbation_changes_duration_and_pitch_together(speed):
    rate = 16000
    t = np.arange(rate) / rate
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    faster = speed_perturbed(tone, rate, speed)
    assert abs(len(faster) - rate / speed) <= 2
    spectrum = np.abs(np.fft.rfft(faster * np.hanning(len(faster))))
    peak = np.argmax(spectrum) * rate / len(faster)
    assert peak == pytest.approx(440 * speed, abs=3)
    assert speed_perturbed(tone, rate, 1.0) is tone


def test_unperturbed_features_keep_their_cache_keys():
    digest = "ab" * 32
    old_key = hashlib.sha256("|".join([digest, "frames", "ComParE_2016", "None",
                                       opensmile_version(), str(feature_cache.CACHE_FORMAT)])
                             .encode()).hexdigest()
    plain = feature_cache._cache_file(Path("/c"), "frames", FeatureConfig(), digest)
    assert plain.stem == old_key
    assert feature_cache._cache_file(Path("/c"), "frames", FeatureConfig(speed=1.1),
                                     digest) != plain
    with pytest.raises(SedError):
        FeatureConfig(speed=3.0)


def dataset_with_speeds():
    dataset = random_dataset()
    rng = np.random.default_rng(5)
    dataset.speed_features = {
        s: [(f[:: 2] + rng.standard_normal((len(f[::2]), 130)).astype(np.float32) * 0.1)
            if s > 1 else np.repeat(f, 2, axis=0) for f in dataset.features]
        for s in augment.SPEEDS}
    return dataset


def test_split_batches_take_the_speed_versions_asked_for():
    dataset = dataset_with_speeds()
    normalizer = Normalizer.fit(dataset.features, mode="global")
    split = make_split(dataset, [0, 1, 2], normalizer, augment.SPEEDS)
    x, lengths, _ = split.batch(np.array([0, 1, 2]), "cpu", np.array([0, 1, 2]))
    expected = [split.row(0), split.row(1, 1), split.row(2, 2)]
    assert lengths.tolist() == [len(e) for e in expected]
    for row, e in zip(x, expected):
        assert torch.equal(row[: len(e)], e) and not row[len(e):].any()
    np.testing.assert_allclose(split.row(1, 1).numpy(),
                               normalizer(dataset.speed_features[0.9][1]))  # original's stats
    with pytest.raises(SedError, match="speed"):
        make_split(random_dataset(), [0], normalizer, augment.SPEEDS)


def test_speed_augmented_training_uses_the_perturbed_versions(tmp_path):
    dataset = dataset_with_speeds()
    assert augment.needed_speeds((), ("none", "speed+crop")) == augment.SPEEDS
    assert augment.needed_speeds(("mask",), ("none", "crop")) == ()
    runs = [train(tiny_config(augment=names, steps=4), tmp_path / f"r{i}", dataset=dataset,
                  options=QUIET, final_model=False) for i, names in enumerate([(), ("speed",)])]
    losses = [[p["train_loss"] for p in r.folds[0].history] for r in runs]
    assert losses[0] != losses[1]
    with pytest.raises(SedError, match="speed"):
        train(tiny_config(augment=("speed",), steps=2), tmp_path / "none",
              dataset=random_dataset(), options=QUIET, final_model=False)
