"""Smoke run of ``vad_bench.py`` (speech detectors' frame F1 and cost) in the benchmark suite:
a few short files of three conditions, every detector whose package is installed. The full
table (``python benchmarks/vad_bench.py``) is in RESULTS.md."""

from __future__ import annotations

import re

import vad_bench


def test_vad_bench_smoke(capsys):
    table = vad_bench.main(["--files", "1", "--seconds", "6", "--conditions", "clean",
                            "white0", "music"])
    rows = [line for line in table.splitlines()[2:] if line.startswith("| ")]
    assert any(row.startswith("| opensmile ") for row in rows)  # needs no extra package
    for row in rows:
        scores = [float(v) for v in re.findall(r"\b[01]\.\d{3}\b", row)]
        assert len(scores) >= 5 and all(0.0 <= v <= 1.0 for v in scores), row
    assert "test set: 3 files" in capsys.readouterr().out
