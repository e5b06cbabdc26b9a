"""Ratio tables from a pytest-benchmark JSON file of ``pytest benchmarks/``.

Usage::

    pytest benchmarks/ --benchmark-json=results.json
    python benchmarks/report.py results.json             # aligned text
    python benchmarks/report.py results.json --markdown  # the tables of benchmarks/RESULTS.md
    python -m benchmarks.report results.json              # the same, as a module

Every time is the median over the timed rounds (per call). Speed-ups compare cases of one
group (ops: op, pass, shape, dtype; model: variant): ``vs eager`` = reference time / this
time, ``vs compile`` = torch.compile time / this time, so above 1 is faster. ``IQR %`` is
the interquartile range of the rounds over the median: the noise of the run. ``GB/s`` is the
ideal traffic (each input read once, each output written once; see test_ops_bench.py) per
second, ``% copy`` that as a fraction of a large device copy measured in the same run,
``GFLOP/s`` the matrix-product FLOPs of feature attention per second (12 N H d_a for
forward+backward), ``% mm`` that as a fraction of a large ``torch.mm`` measured in the same
run, ``peak MiB`` the CUDA
memory peak of one call (inputs included; CUDA runs only).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from sed_model.tables import render_table

BACKEND_ORDER = (
    "reference",
    "compile",
    "cpu",
    "cpu-avx512",
    "cpu-avx2",
    "cpu-baseline",
    "cuda",
    "triton",
)
OP_COLUMNS = (
    "op",
    "pass",
    "B×T×H×d_a",
    "dtype",
    "backend",
    "median ms",
    "IQR %",
    "vs eager",
    "vs compile",
    "GB/s",
    "% copy",
    "GFLOP/s",
    "% mm",
    "peak MiB",
)
MODEL_COLUMNS = (
    "variant",
    "backend",
    "median ms",
    "IQR %",
    "vs eager",
    "vs compile",
    "steps/s",
    "peak MiB",
)
FEATURE_COLUMNS = ("case", "workers", "files", "median s", "utt/s", "audio s/s")


class ReportError(Exception):
    """A problem with the input file, reported as one line."""


def load(path: Path) -> dict:
    """The parsed JSON of a pytest-benchmark result file."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ReportError(f"{path}: cannot read it ({error})") from None
    except json.JSONDecodeError as error:
        raise ReportError(f"{path}: not JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ReportError(
            f"{path}: not a pytest-benchmark result (expected an object with a 'benchmarks' list, "
            "as written by --benchmark-json)"
        )
    return data


def _median(bench: dict) -> float | None:
    stats = bench.get("stats") or {}
    return stats.get("median")


def _spread(bench: dict) -> str:
    """Interquartile range of the rounds as a percentage of the median: the run's noise."""
    stats = bench.get("stats") or {}
    if stats.get("iqr") is None or not stats.get("median"):
        return "–"
    return f"{100 * stats['iqr'] / stats['median']:.0f}"


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or not denominator:
        return "–"
    return f"{numerator / denominator:.2f}×"


def _backend_key(backend: str) -> tuple[int, str]:
    return (
        BACKEND_ORDER.index(backend) if backend in BACKEND_ORDER else len(BACKEND_ORDER),
        backend,
    )


def _mib(value: int | None) -> str:
    return "–" if value is None else f"{value / 2**20:,.0f}"


def _by_suite(data: dict, suite: str) -> list[dict]:
    return [b for b in data["benchmarks"] if (b.get("extra_info") or {}).get("suite") == suite]


def op_rows(data: dict) -> list[list[str]]:
    """One row per ops case, grouped by (op, pass, shape, dtype), backends in a fixed order."""
    groups: dict[tuple, dict[str, dict]] = {}
    for bench in _by_suite(data, "ops"):
        info = bench["extra_info"]
        key = (info["op"], info["pass"], tuple(info["shape"]), info["dtype"])
        groups.setdefault(key, {})[info["backend"]] = bench
    rows = []
    for (op, pass_, shape, dtype), cases in groups.items():
        eager = _median(cases["reference"]) if "reference" in cases else None
        compiled = _median(cases["compile"]) if "compile" in cases else None
        for backend in sorted(cases, key=_backend_key):
            bench = cases[backend]
            info, median = bench["extra_info"], _median(bench)
            fraction = info.get("fraction_of_copy")
            of_matmul = info.get("fraction_of_matmul")
            rows.append(
                [
                    op.removesuffix("_attention"),
                    pass_,
                    "×".join(map(str, shape)),
                    dtype,
                    backend,
                    _fmt(None if median is None else median * 1e3, 3),
                    _spread(bench),
                    _ratio(eager, median),
                    _ratio(compiled, median),
                    _fmt(info.get("GBps"), 1),
                    "–" if fraction is None else f"{100 * fraction:.0f}%",
                    _fmt(info.get("GFLOPps"), 1),
                    "–" if of_matmul is None else f"{100 * of_matmul:.0f}%",
                    _mib(info.get("peak_memory_bytes")),
                ]
            )
    return rows


def model_rows(data: dict) -> list[list[str]]:
    groups: dict[str, dict[str, dict]] = {}
    for bench in _by_suite(data, "model"):
        info = bench["extra_info"]
        groups.setdefault(info["variant"], {})[info["backend"]] = bench
    rows = []
    for variant, cases in groups.items():
        eager = _median(cases["reference"]) if "reference" in cases else None
        compiled = _median(cases["compile"]) if "compile" in cases else None
        for backend in sorted(cases, key=_backend_key):
            bench = cases[backend]
            median = _median(bench)
            rows.append(
                [
                    variant,
                    backend,
                    _fmt(None if median is None else median * 1e3, 1),
                    _spread(bench),
                    _ratio(eager, median),
                    _ratio(compiled, median),
                    _fmt(bench["extra_info"].get("steps_per_s"), 2),
                    _mib(bench["extra_info"].get("peak_memory_bytes")),
                ]
            )
    return rows


def model_caption(data: dict) -> str | None:
    benches = _by_suite(data, "model")
    if not benches:
        return None
    info = benches[0]["extra_info"]
    return (
        "one training step (forward, backward, Adam): "
        f"preset {info['preset']}, cells {info['cells']}, "
        f"batch {info['batch']}, T = {info['frames']} frames of 130 features, {info['device']}"
    )


def feature_rows(data: dict) -> list[list[str]]:
    rows = []
    for bench in _by_suite(data, "features"):
        info, median = bench["extra_info"], _median(bench)
        rows.append(
            [
                info["case"],
                str(info["workers"]),
                f"{info['files']} × {info['seconds_per_file']:g} s",
                _fmt(median, 3),
                _fmt(info.get("utterances_per_s"), 1),
                _fmt(info.get("audio_s_per_s"), 1),
            ]
        )
    return rows


def machine_lines(data: dict) -> list[str]:
    machine = data.get("machine_info") or {}
    sed = machine.get("sed_bench") or {}
    commit = data.get("commit_info") or {}
    lines = []
    if sed:
        lines.append(
            f"device: {sed.get('device')} ({sed.get('device_name')}), {sed.get('cpu_count')} CPUs, "
            f"{sed.get('torch_threads')} torch threads, {sed.get('memory_gib')} GiB RAM, "
            f"{sed.get('os')}"
        )
        lines.append(
            f"sizes: {sed.get('sizes')}; python {machine.get('python_version')}, "
            f"torch {sed.get('torch')}, "
            f"triton {sed.get('triton')}, opensmile {sed.get('opensmile')}"
        )
    if commit or data.get("datetime"):
        dirty = " (with uncommitted changes)" if commit.get("dirty") else ""
        lines.append(
            f"date: {data.get('datetime', '?')}; commit {str(commit.get('id', '?'))[:10]}{dirty}"
        )
    if sed.get("load_average"):
        lines.append(
            f"load average (1, 5, 15 min) when the file was written: {sed['load_average']}"
        )
    ops = _by_suite(data, "ops")
    copy = next((b["extra_info"]["copy_GBps"] for b in ops if "copy_GBps" in b["extra_info"]), None)
    if copy is not None:
        lines.append(f"device copy bandwidth in this run: {copy:.1f} GB/s (read + write)")
    matmul = next(
        (b["extra_info"]["matmul_GFLOPps"] for b in ops if "matmul_GFLOPps" in b["extra_info"]),
        None,
    )
    if matmul is not None:
        lines.append(f"torch.mm rate in this run: {matmul:.1f} GFLOP/s")
    if sed.get("cpu_instruction_sets"):
        lines.append(
            f"CPU instruction sets: {', '.join(sed['cpu_instruction_sets'])}; cpu backend "
            f"variants run: {', '.join(sed.get('cpu_backend_variants') or [])}"
        )
    return lines


def table(columns: Sequence[str], rows: list[list[str]], *, markdown: bool) -> str:
    """Aligned text or Markdown; columns empty in every row (e.g. CUDA memory on CPU) are left
    out."""
    kept = [i for i in range(len(columns)) if any(row[i] != "–" for row in rows)]
    columns = [columns[i] for i in kept]
    rows = [[row[i] for i in kept] for row in rows]
    numeric = [i for i in range(len(columns)) if all(_is_numeric(row[i]) for row in rows)]
    return render_table(columns, rows, markdown=markdown, rule=True, right_aligned=numeric)


def _is_numeric(cell: str) -> bool:
    return cell == "–" or cell.replace(",", "").replace(".", "", 1).rstrip("×%").isdigit()


def render(data: dict, *, markdown: bool = False) -> str:
    """The report: machine lines, then the ops, model and features tables present in ``data``."""
    heading = (lambda text: f"### {text}") if markdown else (lambda text: f"== {text} ==")
    parts = []
    machine = machine_lines(data)
    if machine:
        parts.append("\n".join(f"- {line}" if markdown else line for line in machine))
    sections = [
        ("Attention ops", OP_COLUMNS, op_rows(data), None),
        ("Model training step", MODEL_COLUMNS, model_rows(data), model_caption(data)),
        ("openSMILE feature extraction", FEATURE_COLUMNS, feature_rows(data), None),
    ]
    if not any(rows for _, _, rows, _ in sections):
        raise ReportError(
            "the file holds no benchmark of benchmarks/ (no 'suite' in any extra_info)"
        )
    for title, columns, rows, caption in sections:
        if not rows:
            continue
        block = [heading(title)]
        if caption:
            block.append(caption)
        block.append(table(columns, rows, markdown=markdown))
        parts.append("\n\n".join(block) if markdown else "\n".join(block))
    return "\n\n".join(parts) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/report.py",
        description="Ratio tables (speed-ups against eager and torch.compile) from "
        "pytest-benchmark JSON.",
    )
    parser.add_argument("json_file", type=Path, help="file written by pytest --benchmark-json=FILE")
    parser.add_argument("--markdown", action="store_true", help="Markdown tables (for RESULTS.md)")
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(render(load(args.json_file), markdown=args.markdown))
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
