"""Smoke run of ``predict_startup.py`` in the benchmark suite: one round of ``python -m
sed_model.predict`` on a 2-second file and of ``python -c "import torch, opensmile"``. The
timed table (median of 3, side by side) is in RESULTS.md."""

from __future__ import annotations

from pathlib import Path

import predict_startup


def test_predict_startup_smoke(tmp_path: Path):
    times = predict_startup.measure(predict_startup.generated_clip(tmp_path), rounds=1)
    assert times.output.startswith(str(tmp_path / "voiced.wav") + ": ")
    assert len(times.predict) == len(times.floor) == 1 and times.ratio > 0
    assert times.row("this checkout").startswith("| this checkout | ")
