"""Tests of ``benchmarks/report.py`` on a small hand-made pytest-benchmark JSON file.

They use no benchmark fixture, so they run the same with ``--benchmark-disable``.
"""

from __future__ import annotations

import json

import pytest
import report


def bench(median: float, **extra) -> dict:
    """One pytest-benchmark entry, with the keys that report.py reads."""
    return {
        "name": f"test_case[{extra.get('backend', extra.get('case'))}]",
        "stats": {"median": median, "min": median, "max": median, "iqr": median / 10, "rounds": 3},
        "extra_info": extra,
    }


def op(backend: str, median: float, **extra) -> dict:
    return bench(
        median,
        suite="ops",
        op="feature_attention",
        backend=backend,
        shape=[64, 500, 256, 256],
        dtype="float32",
        device="cpu",
        **{"pass": "fwd"},
        **extra,
    )


@pytest.fixture
def result_file(tmp_path):
    data = {
        "datetime": "2026-01-02T03:04:05",
        "commit_info": {"id": "0123456789abcdef", "dirty": False},
        "machine_info": {
            "python_version": "3.11.7",
            "sed_bench": {
                "device": "cpu",
                "device_name": "Test CPU",
                "cpu_count": 2,
                "torch_threads": 2,
                "memory_gib": 24.0,
                "os": "Linux",
                "sizes": "reduced",
                "torch": "2.13.0",
                "triton": "3.9.0",
                "opensmile": "2.6.0",
            },
        },
        "benchmarks": [
            op(
                "reference",
                0.010,
                GBps=2.0,
                fraction_of_copy=0.2,
                copy_GBps=10.0,
                GFLOPps=20.0,
                fraction_of_matmul=0.2,
                matmul_GFLOPps=100.0,
            ),
            op(
                "cpu",
                0.002,
                GBps=10.0,
                fraction_of_copy=1.0,
                copy_GBps=10.0,
                GFLOPps=100.0,
                fraction_of_matmul=1.0,
                matmul_GFLOPps=100.0,
            ),
            op(
                "compile",
                0.005,
                GBps=4.0,
                fraction_of_copy=0.4,
                copy_GBps=10.0,
                GFLOPps=40.0,
                fraction_of_matmul=0.4,
                matmul_GFLOPps=100.0,
            ),
            bench(
                0.5,
                suite="model",
                variant="feature",
                backend="reference",
                preset="emodb-cpu",
                cells=[128, 128],
                batch=32,
                frames=200,
                device="cpu",
                steps_per_s=2.0,
            ),
            bench(
                0.75,
                suite="model",
                variant="feature",
                backend="compile",
                preset="emodb-cpu",
                cells=[128, 128],
                batch=32,
                frames=200,
                device="cpu",
                steps_per_s=4 / 3,
            ),
            bench(
                0.25,
                suite="model",
                variant="feature",
                backend="cpu",
                preset="emodb-cpu",
                cells=[128, 128],
                batch=32,
                frames=200,
                device="cpu",
                steps_per_s=4.0,
            ),
            bench(
                4.0,
                suite="features",
                case="1 worker",
                workers=1,
                files=16,
                seconds_per_file=2.0,
                utterances_per_s=4.0,
                audio_s_per_s=8.0,
            ),
            {"name": "test_unrelated", "stats": {"median": 1.0}, "extra_info": {}},
        ],
    }
    path = tmp_path / "result.json"
    path.write_text(json.dumps(data))
    return path


def rows_of(text: str, first_cell: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith(f"| {first_cell} ")
    ]


def test_speedups_against_eager_and_compile(result_file, capsys):
    assert report.main([str(result_file), "--markdown"]) == 0
    text = capsys.readouterr().out
    rows = {
        row[4]: row for row in rows_of(text, "feature") if len(row) == len(report.OP_COLUMNS) - 1
    }
    # columns: op pass shape dtype backend median IQR% vs-eager vs-compile GB/s %copy GFLOP/s
    # %mm peak
    assert list(rows) == ["reference", "compile", "cpu"]  # fixed backend order
    assert rows["cpu"][5:13] == ["2.000", "10", "5.00×", "2.50×", "10.0", "100%", "100.0", "100%"]
    assert rows["reference"][7:9] == ["1.00×", "0.50×"]
    assert rows["compile"][7:9] == ["2.00×", "1.00×"]
    assert (
        len(rows["cpu"]) == len(report.OP_COLUMNS) - 1
    )  # no CUDA peak memory on CPU: column left out
    model = {
        row[1]: row for row in rows_of(text, "feature") if len(row) == len(report.MODEL_COLUMNS) - 1
    }
    assert list(model) == ["reference", "compile", "cpu"]
    assert model["cpu"][2:7] == ["250.0", "10", "2.00×", "3.00×", "4.00"]
    assert rows_of(text, "1 worker") == [["1 worker", "1", "16 × 2 s", "4.000", "4.0", "8.0"]]
    assert "cells [128, 128], batch 32, T = 200 frames" in text
    assert "commit 0123456789" in text and "Test CPU" in text and "10.0 GB/s" in text
    assert "torch.mm rate in this run: 100.0 GFLOP/s" in text


def test_cuda_peak_memory_column(result_file, capsys):
    data = json.loads(result_file.read_text())
    data["benchmarks"][1]["extra_info"]["peak_memory_bytes"] = 3 * 2**20
    result_file.write_text(json.dumps(data))
    assert report.main([str(result_file), "--markdown"]) == 0
    text = capsys.readouterr().out
    rows = {row[4]: row for row in rows_of(text, "feature") if len(row) == len(report.OP_COLUMNS)}
    assert rows["cpu"][-1] == "3" and rows["reference"][-1] == "–"


def test_plain_text_output_is_aligned(result_file, capsys):
    assert report.main([str(result_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("op "))
    table = lines[header : header + 5]
    assert "|" not in "".join(table)
    column = table[0].index("vs eager")
    assert [line[column : column + 5] for line in table[2:]] == ["1.00×", "2.00×", "5.00×"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("{not json", "not JSON"),
        ('{"benchmarks": 3}', "not a pytest-benchmark result"),
        (
            '{"benchmarks": [{"name": "x", "stats": {"median": 1}, "extra_info": {}}]}',
            "no benchmark of benchmarks/",
        ),
    ],
    ids=["missing", "not-json", "not-pytest-benchmark", "other-benchmarks"],
)
def test_bad_input_is_one_line_error(tmp_path, capsys, content, message):
    path = tmp_path / "input.json"
    if content is not None:
        path.write_text(content)
    assert report.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}") or err.startswith("error: the file")
    assert message in err and err.count("\n") == 1
