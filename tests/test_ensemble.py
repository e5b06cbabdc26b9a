"""Ensembles over seeds: the folds' saved test probabilities averaged (sed_model.ensemble)."""

import numpy as np
import pytest
from test_trainer import random_dataset, tiny_config

from sed_model.compare import check_ensemble_size
from sed_model.compare import ensemble_label as label
from sed_model.ensemble import (
    PREDICTIONS_FILE,
    members_per_ensemble,
    save_predictions,
    seed_ensemble,
)
from sed_model.errors import SedError
from sed_model.metrics import classification_report
from sed_model.runtime import RunOptions
from sed_model.trainer import train

CLASSES = ("a", "b")


def write_run(run_dir, folds):
    for k, (probabilities, labels, utterances) in enumerate(folds):
        save_predictions(run_dir / f"fold-{k + 1:02d}", np.array(probabilities),
                         np.array(labels), utterances)
    return run_dir


def test_the_ensemble_takes_the_class_of_the_mean_probability(tmp_path):
    labels = [0, 1, 1]
    # seed 0 wrong on utterance 1, the mean right on all
    one = write_run(tmp_path / "s0", [([[0.6, 0.4], [0.9, 0.1], [0.4, 0.6]], labels, [0, 1, 2])])
    two = write_run(tmp_path / "s1",
                    [([[0.55, 0.45], [0.05, 0.95], [0.1, 0.9]], labels, [0, 1, 2])])
    ensemble = seed_ensemble([one, two], [0, 1], ["fold 1/1"], [["x"]], CLASSES)
    expected = classification_report(labels, [0, 1, 1], CLASSES)
    assert ensemble.fold_uar == [expected["uar"]] == [1.0]
    assert ensemble.pooled_uar == [1.0] and ensemble.seeds == [0, 1]
    single = classification_report(labels, [0, 0, 1], CLASSES)["uar"]
    assert single < ensemble.fold_uar[0]


def test_disjoint_ensembles_of_k_seeds_get_a_mean_and_a_spread(tmp_path):
    """--ensemble-size 2 on 4 seeds: the ensembles {0, 1} and {2, 3}, in seed order, each
    pooled over the folds; fold UAR and recall are their mean."""
    labels = [0, 1]
    right, wrong, unsure = [[0.9, 0.1], [0.1, 0.9]], [[0.1, 0.9], [0.9, 0.1]], [[0.5, 0.5]] * 2
    runs = [write_run(tmp_path / f"s{k}", [(p, labels, [0, 1])])
            for k, p in enumerate([right, unsure, wrong, unsure])]
    ensembles = seed_ensemble(runs, [0, 1, 2, 3], ["f"], [["x"]], CLASSES, size=2)
    assert ensembles.pooled_uar == [1.0, 0.0] and ensembles.fold_uar == [0.5]
    assert ensembles.recall == {"a": 0.5, "b": 0.5} and members_per_ensemble(ensembles) == 2
    assert label("feature", ensembles) == "Feature, 2 ensembles of 2 seeds"
    one = seed_ensemble(runs, [0, 1, 2, 3], ["f"], [["x"]], CLASSES)
    assert len(one.pooled_uar) == 1 and members_per_ensemble(one) == 4
    assert label("feature", one) == "Feature, ensemble of 4 seeds"
    with pytest.raises(ValueError, match="ensembles of 3"):
        seed_ensemble(runs, [0, 1, 2, 3], ["f"], [["x"]], CLASSES, size=3)


@pytest.mark.parametrize("size", [1, 3, 5])
def test_an_ensemble_size_that_does_not_divide_the_seeds_is_refused(size):
    with pytest.raises(SedError, match=f"--ensemble-size {size} does not split --seeds 4"):
        check_ensemble_size(size, 4)
    check_ensemble_size(None, 4)
    check_ensemble_size(2, 4)


def test_missing_or_mismatched_predictions(tmp_path):
    one = write_run(tmp_path / "s0", [([[0.6, 0.4]], [0], [0])])
    two = write_run(tmp_path / "s1", [([[0.6, 0.4]], [0], [5])])
    assert seed_ensemble([one, tmp_path / "none"], [0, 1], ["f"], [["x"]], CLASSES) is None
    with pytest.raises(ValueError, match="same folds"):
        seed_ensemble([one, two], [0, 1], ["f"], [["x"]], CLASSES)


def test_a_fold_saves_its_final_models_test_probabilities(tmp_path, one_torch_thread):
    dataset = random_dataset()
    result = train(tiny_config(), tmp_path, dataset=dataset, options=RunOptions(progress=False),
                   final_model=False)
    for k, fold in enumerate(result.folds):
        saved = np.load(tmp_path / f"fold-{k + 1:02d}" / PREDICTIONS_FILE)
        assert saved["probabilities"].shape == (fold.n_test, len(dataset.classes))
        np.testing.assert_allclose(saved["probabilities"].sum(axis=1), 1, rtol=1e-5)
        again = classification_report(saved["labels"], saved["probabilities"].argmax(axis=1),
                                      dataset.classes)
        assert again == fold.final.report
