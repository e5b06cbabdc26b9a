"""scripts/measure_edge_quiet.py: the leading and trailing quiet of recordings."""

import numpy as np
import pytest
import soundfile
from fixtures_corpora import make_ravdess_tree, tone
from script_loader import load_script

RATE = 16000


def padded_tone(lead_s: float, speech_s: float, trail_s: float) -> np.ndarray:
    """A tone with ``lead_s`` and ``trail_s`` of faint noise (60 dB under it) around it."""
    rng = np.random.default_rng(0)
    quiet = lambda s: 3e-4 * rng.standard_normal(int(s * RATE)).astype(np.float32)  # noqa: E731
    return np.concatenate([quiet(lead_s), tone(speech_s, RATE), quiet(trail_s)])


@pytest.mark.parametrize("lead_s, trail_s", [(0.5, 0.3), (0.0, 0.0), (0.0, 1.2), (0.73, 0.0)])
def test_the_quiet_at_both_ends_is_measured_to_a_frame(lead_s, trail_s):
    script = load_script("measure_edge_quiet")
    first, last = script.edge_quiet_s(padded_tone(lead_s, 1.0, trail_s), RATE, below_db=40)
    # a frame is 25 ms: one that overlaps the tone by any part counts as heard
    assert first == pytest.approx(lead_s, abs=0.03)
    assert last == pytest.approx(trail_s, abs=0.03)


def test_a_higher_threshold_counts_louder_frames_as_quiet():
    script = load_script("measure_edge_quiet")
    samples = np.concatenate([0.01 * tone(0.4, RATE), tone(0.6, RATE)])  # 40 dB softer start
    assert script.edge_quiet_s(samples, RATE, below_db=60)[0] == pytest.approx(0.0, abs=0.03)
    assert script.edge_quiet_s(samples, RATE, below_db=30)[0] == pytest.approx(0.4, abs=0.03)


def test_the_command_reports_a_corpus_tree(tmp_path, capsys):
    root = make_ravdess_tree(tmp_path / "ravdess")
    path = next(root.glob("Actor_01/03-01-01-*.wav"))
    soundfile.write(path, padded_tone(0.5, 0.5, 0.8), RATE, subtype="PCM_16")
    load_script("measure_edge_quiet").main(["--corpus", "ravdess", "--data", str(root)])
    line = capsys.readouterr().out.strip()
    assert line.startswith("ravdess: 16 files")
    assert "1 files end in more than 0.5 s" in line  # the padded one; the tones end heard
    assert "trailing quiet median 0.00 s" in line
