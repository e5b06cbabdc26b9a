"""scripts/paired_runs.py: one variant of two compare folders against each other, per fold."""

import json
from pathlib import Path

import numpy as np
import pytest
from script_loader import load_script

RESULTS = Path(__file__).resolve().parents[1] / "results"
MEAN_STD = RESULTS / "ravdess-emobox-global-utterance-norm"  # feature, utterance_norm mean_std
NONE = RESULTS / "ravdess-emobox-global"  # the same folds, utterance_norm none


def _fold_uar(folder, key="summaries"):
    return np.asarray(json.loads((folder / "comparison.json").read_text())[key]["feature"]
                      ["fold_uar"])


def test_a_against_b_is_the_paired_difference_of_their_fold_uars(capsys):
    script = load_script("paired_runs")
    single, ensemble = script.paired_runs(MEAN_STD, NONE, "feature")
    differences = _fold_uar(MEAN_STD) - _fold_uar(NONE)
    assert single.mean_difference == pytest.approx(differences.mean())
    assert (single.wins, single.losses) == (int((differences > 0).sum()),
                                            int((differences < 0).sum()))
    assert ensemble.mean_difference == pytest.approx(
        (_fold_uar(MEAN_STD, "ensembles") - _fold_uar(NONE, "ensembles")).mean())
    out = capsys.readouterr().out
    assert "UAR 0.637 +- 0.010 over 3 seed(s)" in out and "ensemble of 3 seeds 0.687" in out


def test_other_folds_a_missing_variant_and_a_folder_without_a_comparison_are_errors(
        tmp_path, capsys):
    script = load_script("paired_runs")
    cases = [([str(MEAN_STD), str(RESULTS / "emodb-global")], "test other speakers"),
             ([str(MEAN_STD), str(NONE), "--variant", "lstm"], "variant lstm was not trained"),
             ([str(tmp_path), str(NONE)], "no comparison.json")]
    for argv, message in cases:
        with pytest.raises(SystemExit) as stop:
            script.main(argv)
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
