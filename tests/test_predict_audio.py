"""Any audio format, timelines of long recordings in bounded memory, the predict command and
the bundled pretrained model (issue 13, points 2, 3 and 4)."""

import csv
import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile
from fixtures_corpora import EMODB_DATA, tone, write_wav
from script_loader import load_script
from test_trainer import random_dataset, tiny_config

import sed_model
from sed_model import predict
from sed_model.audio import open_audio
from sed_model.checkpoint import load_checkpoint
from sed_model.errors import SedError
from sed_model.features import load_audio
from sed_model.pretrained import bundled_path
from sed_model.recipes import utterance_norms
from sed_model.runtime import RunOptions
from sed_model.trainer import train
from sed_model.windows import count_windows, iter_windows

QUIET = RunOptions(progress=False)  # no progress bars in tests

ROOT = Path(__file__).resolve().parents[1]
EMODB_CLASSES = ["anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"]
needs_emodb = pytest.mark.skipif(not EMODB_DATA.is_dir(),
                                 reason=f"EmoDB clips not present at {EMODB_DATA}")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test here on one torch thread (the shared fixture of conftest.py)."""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(tiny_config(), out, dataset=random_dataset(), options=QUIET)
    return out


def write_compressed(path: Path, signal: np.ndarray, rate: int, codec: str) -> Path:
    """Encode (n, 2) float32 with PyAV (FFmpeg): an mp3 or an m4a (aac) file."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout="stereo")
        planar = np.ascontiguousarray(signal.T, dtype=np.float32)  # (2, n)
        step = 1152 if codec == "libmp3lame" else 1024
        for start in range(0, planar.shape[1], step):
            frame = av.AudioFrame.from_ndarray(planar[:, start:start + step], format="fltp",
                                               layout="stereo")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


# ---------------------------------------------------------------------------- any audio
@pytest.mark.parametrize("suffix,codec", [(".mp3", "libmp3lame"), (".m4a", "aac")])
def test_stereo_44k_compressed_files_decode_to_mono(tmp_path, suffix, codec):
    stereo = tone(1.0, sample_rate=44_100, channels=2)  # channels differ
    path = write_compressed(tmp_path / f"a{suffix}", stereo, 44_100, codec)
    stream = open_audio(path)
    assert stream.decoder == "pyav" and stream.sample_rate == 44_100
    signal, rate = load_audio(path)
    assert rate == 44_100 and signal.ndim == 1 and signal.dtype == np.float32
    assert abs(len(signal) - 44_100) < 0.1 * 44_100  # encoder padding at most
    mono = stereo.mean(axis=1)
    # the codec delays the signal by a few hundred samples: compare the best alignment
    best = max(np.corrcoef(signal[d:d + 30_000], mono[:30_000])[0, 1] for d in range(0, 3000, 1))
    assert best > 0.95


def test_flac_ogg_and_a_video_track_decode_the_same_signal(tmp_path):
    import av

    signal = tone(0.5, sample_rate=48_000, channels=2)
    for suffix in (".flac", ".ogg"):
        soundfile.write(tmp_path / f"a{suffix}", signal, 48_000)
        decoded, rate = load_audio(tmp_path / f"a{suffix}")
        assert rate == 48_000 and decoded.shape == (24_000,)
        np.testing.assert_allclose(decoded, signal.mean(axis=1), atol=0.05)
    video = write_compressed(tmp_path / "clip.mp4", signal, 48_000, "aac")
    assert av.open(str(video)).streams.audio  # an mp4 container: decoded as a video file
    assert open_audio(video).decoder == "pyav" and load_audio(video)[1] == 48_000


def test_the_decoder_reads_long_files_in_blocks(tmp_path):
    path = write_wav(tmp_path / "long.wav", seconds=60.0, sample_rate=16_000)
    blocks = list(open_audio(path).blocks(10.0))
    assert [len(b) for b in blocks] == [160_000] * 6
    mp3 = write_compressed(tmp_path / "long.mp3", tone(25.0, 16_000, channels=2), 16_000,
                           "libmp3lame")
    sizes = [len(b) for b in open_audio(mp3).blocks(10.0)]
    assert sizes[:2] == [160_000, 160_000] and len(sizes) == 3


# ------------------------------------------------------------------------------ windows
@pytest.mark.parametrize("n", [3, 10, 11, 23, 25, 40])
def test_windows_cover_the_recording_with_full_length_windows(n):
    signal = np.arange(n, dtype=np.float32)
    blocks = [signal[i:i + 3] for i in range(0, n, 3)]
    windows = list(iter_windows(blocks, 1, 10.0, 5.0))
    assert len(windows) == count_windows(n, 1, 10.0, 5.0)
    starts = [s for s, _ in windows]
    for start, samples in windows:
        np.testing.assert_array_equal(samples, signal[start:start + len(samples)])
        assert len(samples) == min(n, 10)
    assert starts[0] == 0 and starts[-1] + len(windows[-1][1]) == n
    assert all(b - a <= 5 for a, b in zip(starts, starts[1:]))  # no gap between windows


def peak_bytes(model, path, **options):
    tracemalloc.start()
    try:
        return model.predict(path, **options)[0], tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_60_second_file_gives_a_timeline_csv_and_plot_in_bounded_memory(run, tmp_path,
                                                                          monkeypatch):
    path = write_wav(tmp_path / "minute.wav", seconds=60.0, sample_rate=16_000)
    third = write_wav(tmp_path / "third.wav", seconds=20.0, sample_rate=16_000)
    model = sed_model.load_model(run)
    monkeypatch.setattr(sed_model.api, "WINDOW_BATCH", 2)  # memory: one block + 2 windows
    options = dict(window=4.0, hop=4.0, with_waveform=True)
    model.predict(write_wav(tmp_path / "warm.wav", seconds=5.0), **options)  # one-time setup
    _, short_peak = peak_bytes(model, third, **options)
    result, peak = peak_bytes(model, path, **options)
    assert peak < 1.2 * short_peak, f"{peak} bytes for 60 s, {short_peak} for 20 s"
    assert len(result.segments) == 15 and result.duration == pytest.approx(60.0)
    assert (result.segments[0].start, result.segments[-1].end) == (0.0, 60.0)
    mean = np.mean([list(s.probabilities.values()) for s in result.segments], axis=0)
    np.testing.assert_allclose(list(result.probabilities.values()), mean, atol=1e-6)
    assert sum(result.shares.values()) == pytest.approx(1.0)

    out = tmp_path / "timeline.png"
    predict.main(["--checkpoint", str(run), str(third), "--window", "4", "--hop", "4",
                  "--csv", str(tmp_path / "s.csv"), "--plot-timeline", str(out),
                  "--no-progress"])
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert len(rows) == 5 and rows[-1]["end"] == "20.000"
    assert set(rows[0]) == {"file", "start", "end", "label", "speech", *model.class_names}
    assert out.stat().st_size > 10_000


def test_window_options_are_checked(run, tmp_path, capsys):
    model = sed_model.load_model(run)
    wav = write_wav(tmp_path / "a.wav", seconds=1.0)
    with pytest.raises(SedError, match="positive"):
        model.predict(wav, window=-1.0)
    with pytest.raises(SedError, match="a hop needs a window"):
        model.predict(wav, hop=1.0)
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--checkpoint", str(run), str(wav), "--plot-timeline", "t.png"])
    assert exit_info.value.code == 2 and "needs --window" in capsys.readouterr().err


# ---------------------------------------------------------------------- predict command
def test_predict_reports_a_bad_file_in_one_line_and_classifies_the_others(run, tmp_path,
                                                                           capsys):
    good = write_wav(tmp_path / "good.wav", seconds=1.0)
    bad = tmp_path / "bad.ogg"
    bad.write_bytes(b"OggS" + b"\0" * 200)
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--checkpoint", str(run), str(bad), str(good), "--json"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: ") and "bad.ogg" in errors[0]
    printed = json.loads(captured.out)
    assert printed[0]["file"] == str(bad) and "error" in printed[0]
    assert printed[1]["label"] in sed_model.load_model(run).class_names


# ----------------------------------------------------------------- the bundled model
def test_the_bundled_model_is_small_complete_and_described_by_its_results_file():
    path = bundled_path("emodb")
    checkpoint = load_checkpoint(path)  # weights_only=True
    assert list(checkpoint["class_names"]) == EMODB_CLASSES
    assert "optimizer" not in checkpoint and checkpoint["fold"]["test_speakers"] == []
    assert path.stat().st_size <= 2 * 1024 * 1024
    script = load_script("make_pretrained_emodb")
    results = script.saved_results()
    assert results["bytes"] == path.stat().st_size
    assert results["classes"] == EMODB_CLASSES and len(results["speakers"]) == 10
    assert checkpoint["config"]["preset"] == results["config"]["preset"]
    assert (checkpoint["hyperparameters"].get("utterance_norm", "none")
            == utterance_norms(results["config"].get("utterance_norm", "none"))[
                checkpoint["config"]["variant"]])
    assert script.card_in_readme() == script.render_card(results)  # README card up to date


def test_the_bundled_model_script_takes_any_recipe_field():
    script = load_script("make_pretrained_emodb")
    config = script.run_config(script.build_parser().parse_args(
        ["--set", "utterance_norm=none", "--set", "lr=1e-3"]))
    assert (config.recipe.utterance_norm, config.recipe.lr, config.folds) == ("none", 1e-3, "loso")
    default = script.run_config(script.build_parser().parse_args([]))
    assert default.recipe.utterance_norm_of("feature") == "mean_std"  # small under global


def test_the_bundled_model_card_names_no_local_folder():
    script = load_script("make_pretrained_emodb")
    command = script.portable_command(["--data", str(ROOT.parent / "shared" / "data" / "emodb"),
                                       "--set", "lr=1e-3", "--out-dir", "/tmp/pretrained"])
    assert command == ("python scripts/make_pretrained_emodb.py --data ../shared/data/emodb "
                       f"--set lr=1e-3 --out-dir {os.path.relpath('/tmp/pretrained', ROOT)}")
    assert not any(os.path.isabs(word) for word in script.saved_results()["command"].split())


def test_the_bundled_model_is_package_data():
    text = (ROOT / "pyproject.toml").read_text()  # (tomllib is Python 3.11+)
    section = text.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    assert 'sed_model = ["pretrained/*.pt"]' in section


@needs_emodb
def test_predict_without_a_checkpoint_uses_the_bundled_model_on_real_emodb(capsys):
    files = [EMODB_DATA / name for name in ("03a01Wa.wav", "08a01Lc.wav", "16b10Tb.wav")]
    files = [f for f in files if f.exists()]
    predict.main([*map(str, files), "--json"])
    captured = capsys.readouterr()
    assert "bundled pretrained model 'emodb'" in captured.err
    printed = json.loads(captured.out)
    assert [p["file"] for p in printed] == list(map(str, files))
    assert all(p["label"] in EMODB_CLASSES for p in printed)
    windowed = sed_model.load_model("emodb").predict(files[0], window=1.0, hop=0.5)[0]
    assert len(windowed.segments) == 3 and windowed.segments[-1].end == pytest.approx(2.0)


def test_the_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[0] in EMODB_CLASSES
    assert [line.split(":")[0] for line in lines[1:]] == [
        "0.0-2.0 s", "1.0-3.0 s", "2.0-4.0 s", "3.0-5.0 s", "4.0-6.0 s"]
