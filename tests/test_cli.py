"""End to end on a small slice of the synthetic demo corpus: train, evaluate, predict,
compare, baseline, through the importable functions and once through the command line."""

import argparse
import json
import subprocess
import sys

import pytest
from fixtures_corpora import make_csv_tree, write_wav

from sed_model import baseline, cli, compare, evaluate, predict, train
from sed_model.config import make_config
from sed_model.errors import SedError
from sed_model.evaluate import evaluate_checkpoint
from sed_model.predict import predict_files
from sed_model.recipes import SPACES
from sed_model.runtime import RunOptions
from sed_model.trainer import train as train_run

pytestmark = pytest.mark.usefixtures("outside_source_tree")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test here on one torch thread (the shared fixture of conftest.py)."""


TINY = ["--set", "steps=3", "--set", "eval_every=3", "--set", "cells=8,8", "--device", "cpu",
        "--workers", "1", "--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """A feature-variant run on the manifest (2 speaker-grouped folds)."""
    manifest, _ = corpus
    out = tmp_path_factory.mktemp("run")
    config = make_config(corpus="csv", data=str(manifest), variant="feature", folds="2",
                         steps=3, eval_every=3, cells=(8, 8), device="cpu")
    return out, train_run(config, out, options=RunOptions(progress=False, workers=1)).to_json()


@pytest.mark.slow
def test_train_writes_the_run_folder(trained):
    out, metrics = trained
    for name in ("best.pt", "metrics.json", "curves.png", "confusion.png", "fold-02/best.pt"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["classes"] == ["angry", "happy", "neutral", "sad"]
    assert saved["summary"]["final"]["pooled"]["n"] == 32
    assert set(saved["summary"]) == {"final", "best"}


@pytest.mark.slow
def test_evaluate_and_predict(trained, corpus, capsys):
    out, metrics = trained
    manifest, _ = corpus
    tested = metrics["folds"][0]["test_speakers"]
    report = evaluate_checkpoint(out / "best.pt", "csv", manifest, speakers=tested, workers=1,
                                 progress=False)
    assert report["n"] == 8 * len(tested) and report["n_from_training_speakers"] == 0
    assert 0.0 <= report["uar"] <= 1.0

    evaluate.main(["--checkpoint", str(out / "best.pt"), "--corpus", "csv", "--data",
                   str(manifest), "--json", "--workers", "1"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["n"] == 32 and printed["n_from_training_speakers"] == 8 * (4 - len(tested))

    wavs = sorted((manifest.parent / "audio").glob("*.wav"))[:2]
    results = predict_files(out / "best.pt", wavs, with_attention=True)
    assert [r["label"] in metrics["classes"] for r in results] == [True, True]
    assert sum(results[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert results[0]["weights"][0].shape[1] == 8  # (T, H_1) feature weights

    plot = out / "attention.png"
    predict.main(["--checkpoint", str(out / "best.pt"), *map(str, wavs), "--json",
                  "--plot-attention", str(plot)])
    assert [r["file"] for r in json.loads(capsys.readouterr().out)] == list(map(str, wavs))
    assert plot.stat().st_size > 0


@pytest.mark.slow
def test_compare_and_baseline(corpus, tmp_path, capsys):
    manifest, _ = corpus
    compare.main(["--corpus", "csv", "--data", str(manifest), "--folds", "2", *TINY,
                  "--variants", "lstm,time", "--out-dir", str(tmp_path / "cmp"),
                  "--markdown", str(tmp_path / "table.md")])
    table = (tmp_path / "table.md").read_text()
    assert "| LSTM |" in table and "| Time |" in table and "| Feature |" not in table
    assert "Final models" in table and "Best held-out UAR" in table
    assert "| SVM (functionals) |" in table and "- LSTM - SVM (functionals):" in table
    assert "normalize global" in table
    assert (tmp_path / "cmp" / "curves.png").is_file()
    capsys.readouterr()

    baseline.main(["--corpus", "csv", "--data", str(manifest), "--folds", "2", "--workers", "1",
                   "--no-progress", "--json", str(tmp_path / "svm.json")])
    assert "UAR" in capsys.readouterr().out
    svm = json.loads((tmp_path / "svm.json").read_text())
    assert len(svm["folds"]) == 2 and svm["summary"]["final"]["pooled"]["n"] == 32


def test_a_resumed_compare_reads_the_svm_back_unless_made_otherwise(corpus, tmp_path, capsys,
                                                                   monkeypatch):
    """--resume keeps baseline.json when its folds, seed, normalisation and tuning are the
    run's (the tuned SVM costs minutes on a real corpus); a different tuning refits."""
    manifest, _ = corpus
    common = ["--corpus", "csv", "--data", str(manifest), "--folds", "2", *TINY,
              "--variants", "lstm", "--out-dir", str(tmp_path / "c")]
    compare.main(common)
    first = json.loads((tmp_path / "c" / "comparison.json").read_text())["summaries"]["svm"]
    fitted = []
    real = compare.run_baseline
    monkeypatch.setattr(compare, "run_baseline", lambda *a, **k: fitted.append(k) or real(*a, **k))
    capsys.readouterr()
    compare.main([*common, "--resume"])
    assert fitted == [] and "SVM: read back from" in capsys.readouterr().out
    again = json.loads((tmp_path / "c" / "comparison.json").read_text())["summaries"]["svm"]
    assert again == first
    compare.main([*common, "--resume", "--svm-tune"])
    assert len(fitted) == 1 and fitted[0]["tune"].inner_folds == 3
    assert json.loads((tmp_path / "c" / "baseline.json").read_text())["tuning"]["inner_folds"] == 3
    (tmp_path / "c" / "baseline.json").write_text("{")  # damaged: fitted again, no error
    compare.main([*common, "--resume"])
    assert len(fitted) == 2 and fitted[1]["tune"] is False


def test_compare_says_what_the_per_fold_searches_chose(corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(SPACES, "tiny", {"lr": ("1e-2", "3e-2"), "steps": ("2", "3")})
    manifest, _ = corpus
    compare.main(["--corpus", "csv", "--data", str(manifest), "--folds", "2", *TINY,
                  "--variants", "lstm", "--no-baseline", "--set", "search_trials=2",
                  "--set", "search_space=tiny", "--set", "inner_folds=2",
                  "--out-dir", str(tmp_path / "c")])
    saved = json.loads((tmp_path / "c" / "comparison.json").read_text())
    runs = [json.loads((tmp_path / "c" / "lstm" / f"fold-0{i}" / "metrics.json").read_text())
            for i in (1, 2)]
    found = saved["searches"]["lstm"]
    assert found["fold_runs"] == 2 and found["inner_uar_chosen"] == pytest.approx(
        sum(r["search"]["inner_uar"] for r in runs) / 2)
    assert found["kept_recipe"] == sum(r["search"]["chosen"] == r["search"]["trials"][0]["setting"]
                                       for r in runs)
    assert found["inner_uar_chosen"] >= found["inner_uar_recipe"]  # the recipe is a candidate
    assert compare.Comparison.from_json(saved).searches["lstm"].fold_runs == 2
    table = (tmp_path / "c" / "table.md").read_text()
    assert "Recipe chosen per fold on inner folds (2 settings searched): LSTM: the recipe as " \
           f"given kept on {found['kept_recipe']} of 2 fold runs" in table


@pytest.mark.slow
def test_seeds_and_the_paired_comparison_with_the_baseline(corpus, tmp_path, capsys):
    manifest, _ = corpus
    data = ["--corpus", "csv", "--data", str(manifest), "--folds", "2"]
    train.main([*data, *TINY, "--seeds", "2", "--normalize", "speaker", "--seed", "4",
                "--out-dir", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert "over 2 seeds" in out and "seed 4:" in out and "seed 5:" in out
    assert f"--checkpoint {tmp_path / 's'} FILE" in out  # the seeds' models deploy together
    seeds = json.loads((tmp_path / "s" / "seeds.json").read_text())
    assert seeds["runs"] == ["seed-4", "seed-5"] and len(seeds["summary"]["fold_uar"]) == 2
    assert json.loads((tmp_path / "s" / "seed-5" / "config.json").read_text())["split_seed"] == 4

    baseline.main([*data, "--seed", "4", "--normalize", "speaker", "--workers", "1",
                   "--no-progress", "--against", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert "normalize speaker" in out and "feature (2 seeds) - SVM:" in out and "Wilcoxon" in out
    with pytest.raises(SystemExit):  # other folds: refused, naming them
        baseline.main([*data, "--seed", "9", "--workers", "1", "--no-progress",
                       "--against", str(tmp_path / "s")])
    assert "are not the SVM's" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_resumes_with_more_variants_and_keeps_the_finished_runs(corpus, tmp_path, capsys):
    manifest, _ = corpus
    common = ["--corpus", "csv", "--data", str(manifest), "--folds", "2", *TINY, "--no-baseline",
              "--out-dir", str(tmp_path / "c")]
    base = [*common, "--seeds", "2"]
    compare.main([*base, "--variants", "lstm"])
    first = (tmp_path / "c" / "lstm" / "seed-0" / "metrics.json").read_text()
    compare.main([*base, "--variants", "lstm,time", "--resume"])
    assert (tmp_path / "c" / "lstm" / "seed-0" / "metrics.json").read_text() == first
    saved = json.loads((tmp_path / "c" / "comparison.json").read_text())
    assert set(saved["summaries"]) == {"lstm", "time"} and saved["seeds"] == 2
    capsys.readouterr()
    with pytest.raises(SystemExit):
        compare.main([*common, "--seeds", "3", "--variants", "lstm", "--resume"])
    assert "made with --seeds 2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        compare.main([*base, "--variants", "lstm", "--resume", "--ensemble-size", "3"])
    assert exit_info.value.code == 2
    assert "error: --ensemble-size 3 does not split --seeds 2" in capsys.readouterr().err


def _fold_results(run_dir):
    """Every fold's metrics.json of a run, without the wall-clock fields."""
    return [json.loads(p.read_text()) for p in sorted(run_dir.glob("fold-*/metrics.json"))]


@pytest.mark.slow
def test_compare_with_jobs_trains_fold_by_fold_the_same_runs(corpus, tmp_path, capfd):
    """--jobs 2 hands single folds to worker processes (the SVM runs meanwhile): every fold,
    run and table equals the one-process comparison's, and a resumed comparison retrains only
    a lost fold."""
    manifest, _ = corpus
    common = ["--corpus", "csv", "--data", str(manifest), "--folds", "2", *TINY,
              "--set", "steps=16", "--set", "eval_every=8", "--seeds", "2",
              "--variants", "lstm,time"]
    compare.main([*common, "--out-dir", str(tmp_path / "one")])
    capfd.readouterr()
    compare.main([*common, "--jobs", "2", "--out-dir", str(tmp_path / "two")])
    out = capfd.readouterr().out  # the workers' fold lines too
    assert out.count(", trained)") == 8 and "lstm: UAR" in out and "time: UAR" in out
    for run in ("lstm/seed-0", "lstm/seed-1", "time/seed-0", "time/seed-1"):
        one, two = tmp_path / "one" / run, tmp_path / "two" / run
        assert len(_fold_results(two)) == 2
        assert _fold_results(two) == _fold_results(one), run
        assert (json.loads((two / "metrics.json").read_text())["summary"]
                == json.loads((one / "metrics.json").read_text())["summary"])
    one = json.loads((tmp_path / "one" / "comparison.json").read_text())
    two = json.loads((tmp_path / "two" / "comparison.json").read_text())
    assert two["summaries"] == one["summaries"] and two["paired"] == one["paired"]
    assert "svm" in two["summaries"]  # the SVM ran here while the workers trained
    assert two["ensembles"] == one["ensembles"] and set(one["ensembles"]) == {"lstm", "time"}
    assert "LSTM, ensemble of 2 seeds" in (tmp_path / "one" / "table.md").read_text()
    assert any(p["a"] == "Time, ensemble of 2 seeds" and p["b"] == "SVM (functionals)"
               for p in one["paired"])

    lost = tmp_path / "two" / "time" / "seed-1" / "fold-02"
    for path in lost.iterdir():
        path.unlink()
    compare.main([*common, "--jobs", "2", "--resume", "--out-dir", str(tmp_path / "two")])
    out = capfd.readouterr().out
    assert out.count("done before, skipped") == 7 and out.count(", trained)") == 1
    assert _fold_results(lost.parent) == _fold_results(tmp_path / "one" / "time" / "seed-1")


@pytest.mark.slow
def test_predict_attention_of_a_variant_without_attention(corpus, tmp_path, capsys):
    manifest, _ = corpus
    train.main(["--corpus", "csv", "--data", str(manifest), "--folds", "holdout", "--variant",
                "general", *TINY, "--out-dir", str(tmp_path / "g")])
    wav = next((manifest.parent / "audio").glob("*.wav"))
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--checkpoint", str(tmp_path / "g" / "best.pt"), str(wav),
                      "--plot-attention", str(tmp_path / "a.png")])
    assert exit_info.value.code == 2
    assert "'general' has no attention" in capsys.readouterr().err


@pytest.mark.slow
def test_command_line_train_and_a_bad_data_path(corpus, tmp_path):
    manifest, env = corpus
    done = subprocess.run(
        [sys.executable, "-m", "sed_model.train", "--corpus", "csv", "--data", str(manifest),
         "--folds", "holdout", *TINY, "--out-dir", str(tmp_path / "cli")],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "UAR" in done.stdout and (tmp_path / "cli" / "best.pt").is_file()

    bad = subprocess.run(
        [sys.executable, "-m", "sed_model.train", "--corpus", "emodb", "--data",
         str(tmp_path / "no-such-folder")],
        env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ") and "no-such-folder" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("module", [train, evaluate, predict, compare, baseline])
def test_help_explains_every_option(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    parser = module.build_parser()
    text = capsys.readouterr().out
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:  # a deprecated alias, hidden on purpose
            continue
        assert action.help, f"{module.__name__}: option {action.option_strings} has no help"
        for option in action.option_strings:
            assert option in text


def test_list_options_take_several_words_or_the_comma_form(capsys):
    parse = compare.build_parser().parse_args
    assert parse(["--variants", "lstm", "time"]).variants == ("lstm", "time")
    assert parse(["--variants", "lstm,time", "feature"]).variants == ("lstm", "time", "feature")
    assert parse([]).variants == ("lstm", "general", "time", "feature")
    with pytest.raises(SystemExit) as exit_info:
        parse(["--variants", "lstm,dense"])
    assert exit_info.value.code == 2 and "invalid choice: 'dense'" in capsys.readouterr().err
    speakers = evaluate.build_parser().parse_args(
        ["--checkpoint", "best.pt", "--corpus", "demo", "--speakers", "03,08", "10"]).speakers
    assert speakers == ("03", "08", "10")


def test_augment_none_turns_the_small_recipes_augmentation_off():
    parse = train.build_parser().parse_args
    corpus = ["--corpus", "emodb", "--data", "emodb-folder"]

    def augment(*options):
        return cli.config_from_args(parse([*corpus, *options])).recipe.augment

    assert augment() == ("speed", "shift")
    assert augment("--set", "augment=none") == ()
    assert augment("--normalize", "speaker") == ("speed",)
    assert augment("--normalize", "speaker", "--set", "augment=none") == ()
    with pytest.raises(SedError, match="unknown augmentation 'warp'"):
        augment("--set", "augment=warp")


def write_fold_csv(path, folds: list[list[str]]):
    path.write_text("speaker,fold\n" + "".join(f"{s},{k}\n" for k, speakers in
                                               enumerate(folds, start=1) for s in speakers))
    return path


@pytest.mark.slow
def test_official_folds_on_train_resume_evaluate_and_baseline(corpus, tmp_path, capsys):
    manifest, _ = corpus
    listed = [["spk1", "spk3"], ["spk2", "spk4"]]
    folds = str(write_fold_csv(tmp_path / "folds.csv", listed))
    data = ["--corpus", "csv", "--data", str(manifest), "--folds", folds]
    out = tmp_path / "run"
    train.main([*data, *TINY, "--normalize", "speaker", "--out-dir", str(out)])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["config"]["folds"] == folds  # as given: --resume reads it back
    assert [f["test_speakers"] for f in saved["folds"]] == listed
    assert saved["label_spread"] == {"speakers": 4, "single_label_speakers": 0, "warned": False}
    train.main(["--out-dir", str(out), "--resume", "--no-progress", "--workers", "1"])
    assert "UAR" in capsys.readouterr().out

    evaluate.main(["--checkpoint", str(out), "--corpus", "csv", "--data", str(manifest),
                   "--folds", folds, "--json", "--workers", "1"])
    scored = json.loads(capsys.readouterr().out)
    assert [r["speakers"] for r in scored["per_fold"]] == listed
    assert scored["n_from_training_speakers"] == 0 and scored["pooled"]["n"] == 32
    fold_uars = [f["final"]["uar"] for f in saved["folds"]]  # no validation speakers here
    assert [r["uar"] for r in scored["per_fold"]] == pytest.approx(fold_uars, abs=1e-9)

    baseline.main([*data, "--workers", "1", "--no-progress", "--tune", "--inner-folds", "2",
                   "--json", str(tmp_path / "svm.json")])
    svm = json.loads((tmp_path / "svm.json").read_text())
    assert svm["protocol"] == folds and [f["test_speakers"] for f in svm["folds"]] == listed
    for fold in svm["folds"]:  # inner folds of the two training speakers only
        inner = sorted(s for test in fold["C_selection"]["inner_test_speakers"] for s in test)
        assert inner == sorted({"spk1", "spk2", "spk3", "spk4"} - set(fold["test_speakers"]))
        assert fold["C"] == fold["C_selection"]["chosen"]
        assert len(fold["C_selection"]["inner_uar"]) == len(svm["tuning"]["grid"])


@pytest.mark.slow
def test_a_bad_fold_file_exits_2_with_one_error_line(corpus, tmp_path, capsys):
    manifest, _ = corpus
    bad = tmp_path / "folds.csv"
    bad.write_text("speaker,group\nspk1,1\n")
    missing = write_fold_csv(tmp_path / "missing.csv", [["spk1"], ["spk9"]])
    runs = [(train, [*TINY, "--out-dir", str(tmp_path / "r")]),
            (baseline, ["--workers", "1", "--no-progress"])]
    for module, options in runs:
        for path, expected in ((bad, "no column fold"), (missing, "speaker 'spk9'")):
            with pytest.raises(SystemExit) as exit_info:
                module.main(["--corpus", "csv", "--data", str(manifest), "--folds", str(path),
                             *options])
            err = capsys.readouterr().err
            assert exit_info.value.code == 2 and err.startswith("error: fold file "), err
            assert expected in err and str(path) in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_the_label_spread_warning_where_most_speakers_have_one_label(corpus, tmp_path):
    _, env = corpus
    rows = []
    for speaker, labels in {"ann": ["calm", "tense"], "ben": ["calm"] * 2, "cy": ["tense"] * 2,
                            "dee": ["calm"] * 2}.items():
        for i, label in enumerate(labels):
            rows.append(f"audio/{speaker}_{i}.wav,{label},{speaker},")
            write_wav(tmp_path / "audio" / f"{speaker}_{i}.wav", frequency=150 + 40 * i)
    manifest = make_csv_tree(tmp_path, rows=rows)
    command = [sys.executable, "-m", "sed_model.baseline", "--corpus", "csv", "--data",
               str(manifest), "--folds", "2", "--workers", "1", "--no-progress"]
    done = subprocess.run([*command, "--normalize", "speaker", "--json", str(tmp_path / "s.json")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "single label" in line]
    assert warned == ["warning: 3 of 4 speakers have a single label; --normalize speaker "
                      "z-scores every speaker with its own statistics, which removes the emotion "
                      "together with the speaker (consider --normalize global)"]
    saved = json.loads((tmp_path / "s.json").read_text())["label_spread"]
    assert saved == {"speakers": 4, "single_label_speakers": 3, "warned": True}
    quiet = subprocess.run([*command, "--json", str(tmp_path / "g.json")],
                           env=env, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and "single label" not in quiet.stderr
    assert json.loads((tmp_path / "g.json").read_text())["label_spread"]["warned"] is False
