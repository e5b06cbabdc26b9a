"""The small-corpus recipe's pieces (schedule, loss, weight EMA, dropout), the paper presets
left as Table 1, speaker normalisation in a fold, seeds and the paired comparison."""

import dataclasses
import math

import numpy as np
import pytest
import scipy.stats
import torch
from test_trainer import random_dataset, tiny_config
from torch.nn import functional as F

from sed_model import optim
from sed_model.baseline import speaker_standardized
from sed_model.checkpoint import load_checkpoint, normalizer_from_checkpoint
from sed_model.config import TrainConfig, make_config
from sed_model.errors import SedError
from sed_model.model import DenseLSTMAttention
from sed_model.recipes import PRESETS
from sed_model.runtime import RunOptions
from sed_model.seeds import seed_configs, summarize_seeds
from sed_model.stats import paired_comparison
from sed_model.trainer import train

QUIET = RunOptions(progress=False)  # no progress bars in tests


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test here on one torch thread (the shared fixture of conftest.py)."""


def test_paper_presets_stay_table_1():
    for name, cells, lr, batch in (("enterface", (512, 256), 1e-3, 128),
                                   ("iemocap", (256, 256), 1e-4, 64)):
        p = PRESETS[name].recipe
        assert (p.cells, p.lr, p.batch_size, p.betas, p.weight_decay) == (
            cells, lr, batch, (0.9, 0.7), 1e-4)
        assert (p.optimizer, p.schedule, p.clip_norm, p.class_balanced, p.ema_decay) == (
            "adam", "constant", None, False, None)
        assert p.input_dropout == p.layer_dropout == p.head_dropout == p.label_smoothing == 0
    config = make_config(preset="iemocap")
    assert isinstance(optim.make_optimizer(torch.nn.Linear(2, 2), config.recipe), torch.optim.Adam)
    assert optim.averaged_model(torch.nn.Linear(2, 2), config.recipe) is None


def test_small_preset_is_the_default_for_real_corpora():
    from sed_model.recipes import default_preset

    assert default_preset("emodb") == default_preset("csv") == "small"
    assert default_preset("demo") == "demo"
    assert make_config(preset="small").recipe.validation_speakers == 0
    assert make_config(preset="small").recipe.epochs == 40  # the length its inner folds preferred
    assert make_config(corpus="ravdess").preset == "small" and make_config().preset == "demo"


def test_cosine_schedule_warms_up_then_decays_to_zero():
    config = make_config(preset="small", lr=1e-2, warmup=0.1)
    rates = [optim.learning_rate(config.recipe, step, 100) for step in range(100)]
    assert rates[0] == pytest.approx(1e-3) and rates[9] == pytest.approx(1e-2)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))  # non-increasing after warm-up
    assert rates[-1] < 1e-5
    middle = 10 + 45  # halfway through the decay
    assert rates[middle] == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    paper = make_config(preset="iemocap")
    assert {optim.learning_rate(paper.recipe, s, 100) for s in (0, 50, 99)} == {1e-4}


def test_class_weights_balance_the_classes_and_the_loss_uses_them():
    labels = np.array([0] * 6 + [1] * 2 + [3])  # class 2 absent
    weights = optim.class_weights(labels, 4, balanced=True)
    np.testing.assert_allclose(weights.numpy(), [9 / 18, 9 / 6, 0, 9 / 3], rtol=1e-6)
    assert float(weights[labels].mean()) == pytest.approx(1.0)  # mean 1 over the utterances
    assert optim.class_weights(labels, 4, balanced=False) is None
    logits, targets = torch.randn(9, 4), torch.as_tensor(labels)
    expected = F.cross_entropy(logits, targets, weight=weights, reduction="none").sum()
    assert optim.summed_loss(logits, targets, weights, 0.0) == pytest.approx(float(expected))
    plain = F.cross_entropy(logits, targets) * 9
    assert optim.summed_loss(logits, targets, None, 0.0) == pytest.approx(float(plain), rel=1e-6)


def test_dropout_is_off_in_eval_and_attention_reads_undropped_outputs():
    torch.manual_seed(0)
    model = DenseLSTMAttention(3, "feature", cells=(6, 5), backend="reference",
                               input_dropout=0.3, layer_dropout=0.5, head_dropout=0.5)
    plain = DenseLSTMAttention(3, "feature", cells=(6, 5), backend="reference")
    plain.load_state_dict(model.state_dict())  # dropout adds no parameters
    x, lengths = torch.randn(4, 7, 130), torch.tensor([7, 3, 1, 5])
    model.eval(), plain.eval()
    torch.testing.assert_close(model(x, lengths), plain(x, lengths))
    model.train()
    assert not torch.allclose(model(x, lengths), plain(x, lengths))
    assert model.hyperparameters()["layer_dropout"] == 0.5
    torch.manual_seed(1)
    h1 = model.lstm_outputs(x, lengths)[0]
    torch.manual_seed(1)
    dropped_input = model.input_dropout(x)
    torch.testing.assert_close(h1, model.lstms[0](dropped_input)[0])  # h_1 itself is not dropped


def test_small_recipe_run_keeps_the_ema_weights_and_speaker_statistics(tmp_path):
    dataset = random_dataset()
    config = tiny_config(preset="small", normalize="speaker", augment=("none",), steps=6,
                         eval_every=3)
    metrics = train(config, tmp_path, dataset=dataset, options=QUIET).to_json()
    saved = load_checkpoint(tmp_path / "fold-01" / "last.pt")
    assert saved["ema_updates"] == 6
    differs = [not torch.equal(saved["model"][k], saved["trained_model"][k])
               for k in saved["model"]]
    assert any(differs)  # "model" is the average, not the last weights
    normalizer = normalizer_from_checkpoint(saved)
    test_speakers = metrics["folds"][0]["test_speakers"]
    assert normalizer.mode == "speaker"
    assert set(normalizer.per_speaker) == set(dataset.speakers)  # the test speakers' too
    frames = [f for f, s in zip(dataset.features, dataset.speakers) if s == test_speakers[0]]
    normalized = np.concatenate([normalizer(f, test_speakers[0]) for f in frames])
    np.testing.assert_allclose(normalized.mean(axis=0), 0, atol=1e-4)  # its own statistics
    assert metrics["config"]["normalize"] == "speaker"


def test_seeds_share_the_folds_and_summaries_average_them(tmp_path):
    configs = seed_configs(tiny_config(seed=5), 3)
    assert [c.seed for c in configs] == [5, 6, 7]
    assert {c.folds_seed for c in configs} == {5}
    dataset = random_dataset()
    runs = [train(dataclasses.replace(c, folds="2"), tmp_path / str(c.seed), dataset=dataset,
                  options=QUIET) for c in configs[:2]]
    assert [f.test_speakers for f in runs[0].folds] == [f.test_speakers for f in runs[1].folds]
    summary = summarize_seeds(runs)
    assert summary.seeds == [5, 6]
    assert summary.pooled_uar == [r.summary["final"].pooled["uar"] for r in runs]
    expected = np.mean([[f.final.uar for f in r.folds] for r in runs], axis=0)
    np.testing.assert_allclose(summary.fold_uar, expected)


def test_paired_comparison_matches_scipy_and_brackets_the_mean():
    rng = np.random.default_rng(0)
    b = rng.uniform(0.5, 0.8, 10)
    a = b + rng.normal(0.03, 0.02, 10)
    result = paired_comparison("a", a, "b", b)
    assert result.mean_difference == pytest.approx(float(np.mean(a - b)))
    assert result.ci_low < result.mean_difference < result.ci_high
    assert result.wilcoxon_p == pytest.approx(scipy.stats.wilcoxon(a - b).pvalue)
    assert result.wins + result.losses == 10 and result.n_folds == 10
    same = paired_comparison("a", b, "b", b)
    assert same.wilcoxon_p is None and same.mean_difference == 0 == same.ci_low
    with pytest.raises(ValueError, match="equally long"):
        paired_comparison("a", a[:3], "b", b)


def test_speaker_standardized_functionals_use_each_speakers_own_statistics():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(8, 3)) * np.array([1, 5, 0])  # last column constant
    speakers = np.array(["a"] * 5 + ["b"] * 3)
    Z = speaker_standardized(X + (speakers == "b")[:, None] * 100, speakers)
    for s in "ab":
        np.testing.assert_allclose(Z[speakers == s][:, :2].mean(axis=0), 0, atol=1e-12)
        np.testing.assert_allclose(Z[speakers == s][:, :2].std(axis=0), 1, atol=1e-12)
    assert np.all(Z[:, 2] == 0)


def test_bad_recipe_values_are_clear_errors():
    with pytest.raises(SedError, match="head_dropout must be in"):
        make_config(preset="small", head_dropout=1.0)
    with pytest.raises(SedError, match="normalize must be one of global, speaker"):
        make_config(normalize="utterance")


def test_runs_saved_before_the_recipe_changed_resume_as_they_trained():
    from sed_model.config import changed_options

    # small at 20 epochs, with no augmentation under speaker: config.json records both
    for old in (make_config(corpus="emodb", preset="small", epochs=20),
                make_config(corpus="emodb", preset="small", epochs=20, normalize="speaker",
                            augment=("none",))):
        saved = old.to_json()
        resumed = TrainConfig.from_json(saved)
        assert resumed.recipe.epochs == 20 and resumed.recipe.augment == old.recipe.augment
        assert changed_options(saved, resumed) == []
