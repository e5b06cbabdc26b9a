"""The deployment model of a run (model.pt), loading models by name, folder or file, and the
normalisation of new recordings (issue 13, points 1 and 5)."""

import numpy as np
import pytest
import torch
from fixtures_corpora import write_wav
from test_trainer import Killed, kill_at, random_dataset, tiny_config

import sed_model
from sed_model.api import fold_checkpoints, resolve_checkpoints
from sed_model.checkpoint import load_checkpoint
from sed_model.errors import SedError
from sed_model.features import extract_frames, load_audio
from sed_model.runtime import RunOptions
from sed_model.trainer import TRAINING_STATE_KEYS, final_model_steps, train

QUIET = RunOptions(progress=False)  # no progress bars in tests


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test here on one torch thread (the shared fixture of conftest.py)."""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-fold run with its deployment model."""
    out = tmp_path_factory.mktemp("run")
    return out, train(tiny_config(), out, dataset=random_dataset(), options=QUIET).to_json()


@pytest.fixture(scope="module")
def speaker_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("speaker-run")
    train(tiny_config(normalize="speaker"), out, dataset=random_dataset(), options=QUIET)
    return out


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    root = tmp_path_factory.mktemp("wav")
    return [write_wav(root / f"{i}.wav", seconds=1.5, sample_rate=16_000, frequency=f)
            for i, f in enumerate((140.0, 260.0))]


# ------------------------------------------------------------------- the final model
def test_the_run_trains_a_deployment_model_on_every_utterance(run):
    out, metrics = run
    model = load_checkpoint(out / "model.pt")  # weights_only=True
    assert not set(TRAINING_STATE_KEYS) & set(model), "model.pt keeps no optimizer state"
    for key in ("model", "hyperparameters", "class_names", "normalizer", "config", "fold"):
        assert key in model
    assert model["fold"]["test_speakers"] == [] and model["step"] == 8
    fold = load_checkpoint(out / "fold-01" / "last.pt")
    assert set(fold) - set(model) == set(TRAINING_STATE_KEYS) & set(fold)  # EMA keys if any
    assert {"optimizer", "rng"} <= set(fold)
    assert metrics["final_model"] == {"file": "model.pt", "n_train": 36, "steps": 8,
                                      "rule": "the run's 8 steps (no validation speakers)",
                                      "augment": []}
    assert (out / "model.pt").stat().st_size < (out / "fold-01" / "last.pt").stat().st_size
    # trained on all 36 utterances: other weights than either fold's
    assert not torch.equal(model["model"]["head.0.weight"], fold["model"]["head.0.weight"])


def test_no_final_model(tmp_path):
    metrics = train(tiny_config(), tmp_path, dataset=random_dataset(), options=QUIET,
                    final_model=False).to_json()
    assert metrics["final_model"] is None and not (tmp_path / "model.pt").exists()
    with pytest.raises(SedError, match="no model.pt .*--ensemble"):
        sed_model.load_model(tmp_path)
    assert len(sed_model.load_model(tmp_path, ensemble=True).members) == 2


def test_with_validation_speakers_the_final_length_is_the_median_selected_epoch(tmp_path):
    dataset = random_dataset()
    metrics = train(tiny_config(folds="loso", validation_speakers=1), tmp_path, dataset=dataset,
                    options=QUIET).to_json()
    # each fold trains on 2 of the 4 speakers (18 utterances, 3 steps per epoch of 8)
    epochs = [f["selected"]["step"] / 3 for f in metrics["folds"]]
    expected = max(1, round(float(np.median(epochs)) * 5))  # 36 utterances: 5 steps per epoch
    assert metrics["final_model"]["steps"] == expected
    assert load_checkpoint(tmp_path / "model.pt")["step"] == expected
    assert "median selected epoch" in metrics["final_model"]["rule"]


def test_final_model_steps_without_validation_keep_the_recipe():
    config = tiny_config(steps=None, epochs=3)
    same, rule = final_model_steps(config, random_dataset(), [], [])
    assert same is config and rule == "the run's 3 epochs (no validation speakers)"


def test_a_killed_final_model_resumes_to_the_same_weights(tmp_path, run):
    reference, _ = run
    dataset = random_dataset()
    with pytest.raises(Killed):
        train(tiny_config(), tmp_path, dataset=dataset, options=QUIET,
              on_checkpoint=kill_at(("final", 4)))
    assert not (tmp_path / "model.pt").exists()
    seen = []
    train(tiny_config(), tmp_path, dataset=dataset, options=QUIET, resume=True,
          on_checkpoint=lambda path, step: seen.append((path.parent.name, step)))
    assert seen == [("final", 6), ("final", 8)]  # folds skipped, final continued
    a, b = load_checkpoint(reference / "model.pt"), load_checkpoint(tmp_path / "model.pt")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    seen.clear()
    train(tiny_config(), tmp_path, dataset=dataset, options=QUIET, resume=True,
          on_checkpoint=lambda path, step: seen.append(path))
    assert seen == []  # everything done: nothing retrained


# ------------------------------------------------------------------------ load_model
def test_load_model_takes_a_run_folder_a_file_or_an_ensemble(run, wavs):
    out, _ = run
    assert resolve_checkpoints(out)[0] == [out / "model.pt"]
    assert resolve_checkpoints(out / "fold-02" / "best.pt")[0] == [out / "fold-02" / "best.pt"]
    assert fold_checkpoints(out) == [out / "fold-01" / "last.pt", out / "fold-02" / "last.pt"]
    deployed = sed_model.load_model(out, device="cpu")
    ensemble = sed_model.load_model(out, ensemble=True, device="cpu")
    a = sed_model.load_model(out / "fold-01" / "last.pt").predict(wavs[0])[0]
    b = sed_model.load_model(out / "fold-02" / "last.pt").predict(wavs[0])[0]
    both = ensemble.predict(wavs[0])[0]
    for c in both.probabilities:
        assert both.probabilities[c] == pytest.approx(
            (a.probabilities[c] + b.probabilities[c]) / 2, abs=1e-6)
    result = deployed.predict(wavs)
    assert [r.file for r in result] == list(map(str, wavs))
    assert result[0].label in deployed.class_names and result[0].segments is None
    assert sum(result[0].probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert result[0].to_dict()["duration"] == pytest.approx(1.5)


def test_a_seeds_folder_deploys_its_seeds_models_as_one_ensemble(run, wavs, tmp_path):
    out, _ = run  # seed 3; a second seed beside it, as train --seeds 2 lays them out
    dataset = random_dataset()
    (tmp_path / "seed-3").symlink_to(out, target_is_directory=True)
    train(tiny_config(seed=4), tmp_path / "seed-4", dataset=dataset, options=QUIET)
    paths, description = resolve_checkpoints(tmp_path)
    assert paths == [tmp_path / "seed-3" / "model.pt", tmp_path / "seed-4" / "model.pt"]
    assert "2 seeds" in description
    ensemble = sed_model.load_model(tmp_path, device="cpu")
    assert len(ensemble.members) == 2
    a = sed_model.load_model(out, device="cpu").predict(wavs[1])[0].probabilities
    b = sed_model.load_model(tmp_path / "seed-4", device="cpu").predict(wavs[1])[0].probabilities
    both = ensemble.predict(wavs[1])[0].probabilities
    assert a != b
    for c in both:
        assert both[c] == pytest.approx((a[c] + b[c]) / 2, abs=1e-6)
    assert len(sed_model.load_model(tmp_path, ensemble=True).members) == 4  # 2 seeds x 2 folds
    (tmp_path / "seed-4" / "model.pt").unlink()
    with pytest.raises(SedError, match="seed-4 has no model.pt .*--ensemble"):
        sed_model.load_model(tmp_path)


def test_load_model_errors_say_what_is_accepted(run, tmp_path):
    out, _ = run
    with pytest.raises(SedError, match="neither a bundled model"):
        sed_model.load_model(tmp_path / "nothing")
    with pytest.raises(SedError, match="--ensemble needs a run folder"):
        sed_model.load_model(out / "model.pt", ensemble=True)
    with pytest.raises(SedError, match="no completed folds"):
        sed_model.load_model(tmp_path, ensemble=True)


def test_errors_report_gives_the_bad_file_one_line_and_classifies_the_rest(run, wavs, tmp_path):
    out, _ = run
    model = sed_model.load_model(out)
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"not audio at all" * 50)
    results = model.predict([wavs[0], junk, tmp_path / "missing.flac"], errors="report")
    assert results[0].error is None and results[0].label is not None
    assert str(junk) in results[1].error and "cannot decode" in results[1].error
    assert "missing.flac" in results[2].error and results[2].to_dict().keys() == {"file", "error"}
    with pytest.raises(SedError, match="junk.mp3"):
        model.predict([wavs[0], junk])


# -------------------------------------------------------------- normalisation of new files
def own_statistics_probabilities(model, path):
    """The speaker model's prediction for ``path`` normalised by hand with its own stats."""
    frames = extract_frames(*load_audio(path)).astype(np.float64)
    x = (frames - frames.mean(axis=0)) / np.where(frames.std(axis=0) < 1e-6, 1, frames.std(axis=0))
    member = model.members[0]
    logits = member.model(torch.from_numpy(x.astype(np.float32))[None], torch.tensor([len(x)]))
    return torch.softmax(logits, dim=1)[0].detach().numpy()


def test_a_speaker_model_normalises_each_file_with_its_own_statistics(speaker_run, wavs):
    model = sed_model.load_model(speaker_run / "model.pt")
    assert model.members[0].normalizer.mode == "speaker"
    result = model.predict(wavs[0])[0]
    expected = own_statistics_probabilities(model, wavs[0])
    np.testing.assert_allclose(list(result.probabilities.values()), expected, atol=1e-5)
    # one window over the whole file: the statistics pass sees the same frames
    windowed = model.predict(wavs[0], window=10.0)[0]
    assert len(windowed.segments) == 1
    np.testing.assert_allclose(list(windowed.probabilities.values()), expected, atol=1e-5)


def test_same_speaker_pools_the_statistics_of_the_files(speaker_run, wavs):
    model = sed_model.load_model(speaker_run / "model.pt")
    alone = model.predict(wavs)
    pooled = model.predict(wavs, same_speaker=True)
    assert alone[0].probabilities != pooled[0].probabilities
    frames = [extract_frames(*load_audio(w)) for w in wavs]
    normalised = model.members[0].normalizer.new_speaker(frames)  # the pooled statistics
    member = model.members[0].model
    logits = member(torch.from_numpy(normalised[1])[None], torch.tensor([len(normalised[1])]))
    expected = torch.softmax(logits, dim=1)[0].detach().numpy()
    np.testing.assert_allclose(list(pooled[1].probabilities.values()), expected, atol=1e-5)
    windowed = model.predict(wavs, same_speaker=True, window=1.0, hop=0.5)
    assert [len(r.segments) for r in windowed] == [2, 2]  # [0, 1] and the tail [0.5, 1.5]


def test_a_global_model_uses_its_training_statistics_whatever_the_files(run, wavs):
    model = sed_model.load_model(run[0])
    alone = model.predict(wavs)
    pooled = model.predict(wavs, same_speaker=True)
    for a, b in zip(alone, pooled):  # equal up to the padding of a batch of two
        np.testing.assert_allclose(list(a.probabilities.values()), list(b.probabilities.values()),
                                   atol=1e-5)
