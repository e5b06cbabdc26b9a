"""Speech activity and bad audio in predict (issue 33, points 1 and 2): no emotion without
speech, speech shares per window and file, NaN/Inf refused per file, loud floats and clipping
said per file."""

import csv
import json
import sys
import warnings

import numpy as np
import pytest
import soundfile
from fixtures_corpora import tone

import sed_model
from sed_model import predict, vad
from sed_model.errors import AudioError, SedError
from sed_model.features import extract_frames, load_audio

RATE = 16_000


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test here on one torch thread (the shared fixture of conftest.py)."""


@pytest.fixture(autouse=True)
def _warnings_on_stderr(monkeypatch):
    """Warnings printed as the command prints them (pytest would otherwise collect them)."""
    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    monkeypatch.setattr(warnings, "showwarning", show)
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # run_main sets it
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        yield


@pytest.fixture(scope="module")
def model():
    return sed_model.load_model("emodb")


def write(path, signal, subtype="FLOAT"):
    soundfile.write(path, np.asarray(signal, dtype=np.float32), RATE, subtype=subtype)
    return path


def silence(seconds):
    return np.zeros(int(seconds * RATE), dtype=np.float32)


def speech_between_silences(tmp_path):
    """3 s of silence, 2 s of a voiced tone (speech to the opensmile rule), 3 s of silence."""
    return write(tmp_path / "mixed.wav", np.concatenate([silence(3), tone(2.0), silence(3)]))


def run_json(args, capsys):
    with pytest.raises(SystemExit) if "--expect-exit" in args else _nothing() as raised:
        predict.main([a for a in args if a != "--expect-exit"] + ["--json"])
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err, raised


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# --------------------------------------------------------------------------- no speech
def test_two_seconds_of_digital_silence_answer_no_speech(tmp_path, capsys):
    path = write(tmp_path / "silence.wav", silence(2.0), subtype="PCM_16")
    [result], err, _ = run_json([str(path)], capsys)
    assert result["label"] is None and result["probabilities"] == {}
    assert result["speech"] == 0.0
    assert any("no speech found" in w for w in result["warnings"])
    assert "warning: " in err and "silence.wav: no speech found" in err
    predict.main([str(path)])
    assert "silence.wav: no speech" in capsys.readouterr().out


def test_without_a_detector_silence_is_classified(model, tmp_path):
    path = write(tmp_path / "silence.wav", silence(2.0))
    result = model.predict(path, vad="none")[0]
    assert result.label in model.class_names and result.speech is None


def test_windows_without_speech_get_no_emotion_and_the_file_the_mean_of_the_rest(model,
                                                                                 tmp_path):
    result = model.predict(speech_between_silences(tmp_path), window=2.0, hop=1.0)[0]
    silent = [s for s in result.segments if s.end <= 3.0 or s.start >= 5.0]
    spoken = [s for s in result.segments if s.label is not None]
    assert silent and all(s.label is None and s.probabilities == {} and s.speech < 0.05
                          for s in silent)
    assert spoken and all(s.speech > 0.4 for s in spoken)
    mean = np.mean([[s.probabilities[c] for c in model.class_names] for s in spoken], axis=0)
    np.testing.assert_allclose([result.probabilities[c] for c in model.class_names], mean)
    assert result.label == model.class_names[int(np.argmax(mean))]
    assert result.speech == pytest.approx(2.0 / 8.0, abs=0.05)
    assert sum(result.shares.values()) == pytest.approx(1.0)


def test_a_stream_gives_the_timeline_its_speech_labels(model, tmp_path):
    signal = np.concatenate([silence(3), tone(2.0), silence(3)])
    offline = model.predict(write(tmp_path / "mixed.wav", signal), window=2.0, hop=1.0)[0]
    chunks = np.array_split(signal, 37)
    streamed = list(model.stream(chunks, RATE, window=2.0, hop=1.0))
    assert [(s.start, s.end, s.label, s.speech) for s in streamed] == [
        (s.start, s.end, s.label, s.speech) for s in offline.segments]
    assert any(s.label is None for s in streamed) and any(s.label for s in streamed)


def test_a_whole_file_has_a_speech_share(model, tmp_path):
    result = model.predict(speech_between_silences(tmp_path))[0]
    assert result.label in model.class_names
    assert result.speech == pytest.approx(0.25, abs=0.05)
    assert result.segments is None and result.warnings == []


def test_label_null_in_json_and_empty_in_csv(tmp_path, capsys):
    path = speech_between_silences(tmp_path)
    out = tmp_path / "s.csv"
    [result], _, _ = run_json([str(path), "--window", "2", "--hop", "1", "--csv", str(out),
                               "--no-progress"], capsys)
    labels = [s["label"] for s in result["segments"]]
    assert labels[0] is None and labels[-1] is None and any(labels)
    assert all("speech" in s for s in result["segments"])
    rows = list(csv.DictReader(open(out)))
    assert [r["label"] or None for r in rows] == labels
    assert rows[0]["speech"] == "0.0000" and rows[0]["anger"] == ""
    spoken = next(r for r in rows if r["label"])
    assert float(spoken["speech"]) > 0 and float(spoken[spoken["label"]]) > 0


def test_the_timeline_plot_shades_windows_without_speech(model, tmp_path):
    from sed_model.plots import plot_timeline, shade_silence

    results = model.predict([speech_between_silences(tmp_path),
                             write(tmp_path / "quiet.wav", silence(3.0))],
                            window=2.0, hop=1.0, with_waveform=True)
    assert results[1].label is None
    out = tmp_path / "timeline.png"
    plot_timeline(results, out)
    assert out.stat().st_size > 10_000

    class Axis:
        def __init__(self):
            self.spans = []

        def axvspan(self, low, high, **_):
            self.spans.append((low, high))

    axis = Axis()
    silent = sum(s.label is None for s in results[0].segments)
    assert shade_silence(results[0].segments, [axis]) == silent == len(axis.spans) > 0
    assert axis.spans[0] == (0.5, 1.5)  # one hop around the first window's centre


# ------------------------------------------------------------------------- bad audio
def test_nan_samples_exit_2_naming_the_file_and_the_others_are_classified(tmp_path, capsys):
    signal = tone(1.0)
    signal[100:200] = np.nan
    signal[300] = np.inf
    bad = write(tmp_path / "nan.wav", signal)
    good = write(tmp_path / "good.wav", tone(1.0))
    printed, err, raised = run_json([str(bad), str(good), "--expect-exit"], capsys)
    assert raised.value.code == 2
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {bad}: 101 of 16000 samples are NaN or infinite; expected "
                      "finite audio samples"]
    assert printed[0]["error"] == errors[0].removeprefix("error: ")
    assert printed[1]["label"] is not None and "numpy" not in err


def test_nan_samples_are_refused_by_the_decoder_too(tmp_path):
    signal = tone(0.5)
    signal[-1] = np.nan
    with pytest.raises(AudioError, match=r"nan\.wav: 1 of 8000 samples"):
        load_audio(write(tmp_path / "nan.wav", signal))


def test_float_samples_far_outside_full_scale_are_warned_with_the_peak(tmp_path, capsys):
    loud = write(tmp_path / "loud.wav", tone(1.0) * 1e6)
    [result], err, _ = run_json([str(loud)], capsys)
    peak = float(np.max(np.abs(tone(1.0) * 1e6)))
    assert f"warning: {loud}: peak amplitude {peak:.4g}, far outside [-1, 1]" in err
    assert result["label"] is not None and "peak amplitude" in result["warnings"][0]


def test_clipping_is_said_per_file(tmp_path, capsys):
    clipped = write(tmp_path / "clipped.wav", np.clip(tone(1.0) * 10, -1, 1), "PCM_16")
    clean = write(tmp_path / "clean.wav", tone(1.0), "PCM_16")
    results, err, _ = run_json([str(clipped), str(clean)], capsys)
    assert results[0]["clipping"] > 0.1 and results[1]["clipping"] == 0.0
    assert f"warning: {clipped}: clipped: " in err and str(clean) not in err
    assert results[1]["warnings"] == []


# ------------------------------------------------------------------------ detectors
def test_fill_gaps_fills_short_pauses_only():
    speech = np.zeros(100, dtype=bool)
    speech[10:20] = speech[30:40] = speech[70:80] = True  # gaps of 10 and 30 frames
    filled = vad.fill_gaps(speech, frames=20)
    assert filled[10:40].all() and not filled[40:70].any() and not filled[:10].any()


def test_the_frame_rule_reads_voicing_and_loudness():
    frames = extract_frames(np.concatenate([silence(1.0), tone(1.0)]), RATE)
    speech = vad.FrameRule().speech(frames)
    assert not speech[:90].any() and speech[110:190].mean() > 0.9


def test_a_span_has_speech_from_min_speech_seconds():
    track = vad.SpeechTrack(vad.FrameRule())
    frames = np.zeros((300, 130), dtype=np.float32)
    frames[100:120, vad.VOICING_COLUMN] = frames[100:120, vad.LOUDNESS_COLUMN] = 1.0
    track.add_frames(0.0, frames)
    assert track.seconds() == pytest.approx((0.2, 3.0))
    assert not track.has_speech() and track.fraction(1.0, 1.2) == pytest.approx(1.0)
    frames[120:130, vad.VOICING_COLUMN] = frames[120:130, vad.LOUDNESS_COLUMN] = 1.0
    track.add_frames(0.0, frames)
    assert track.has_speech() and track.has_speech(0.9, 1.4) and not track.has_speech(2, 3)


@pytest.mark.parametrize("name", ["silero", "webrtc"])
def test_signal_detectors_find_no_speech_in_silence_and_stream_like_whole(name, tmp_path):
    pytest.importorskip(vad.EXTRAS[name][0])
    detector = vad.make_detector(name)
    signal = np.concatenate([silence(1.0), tone(1.0)])
    whole = detector.speech(signal, RATE)
    detector.reset()
    streamed = np.concatenate([detector.feed(b, RATE) for b in np.array_split(signal, 7)])
    np.testing.assert_array_equal(whole, streamed)
    assert not whole[:90].any()
    model = sed_model.load_model("emodb")
    assert model.predict(write(tmp_path / "s.wav", silence(2.0)), vad=name)[0].label is None


def test_a_missing_detector_package_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "webrtcvad", None)
    with pytest.raises(SedError, match="webrtcvad-wheels"):
        vad.make_detector("webrtc")
    with pytest.raises(SedError, match="unknown"):
        vad.make_detector("energy")
