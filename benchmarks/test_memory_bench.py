"""The memory benchmark (``memory_bench.py``) run by the suite: a synthetic store trained on
by two processes. The table's sizes (1, 10 and 100 hours) are run with the script itself
(its docstring); here the sizes are small: 0.01 hours under ``--benchmark-disable`` (smoke),
0.5 hours otherwise."""

from __future__ import annotations

import memory_bench


def test_memory_benchmark_measures_each_case(settings, tmp_path):
    hours = 0.01 if settings.sizes == "smoke" else 0.5
    steps = 2 if settings.sizes == "smoke" else 10
    report = memory_bench.main(["--hours", str(hours), "--steps", str(steps), "--warmup", "1",
                                "--in-memory-hours", str(hours), "--store-dir", str(tmp_path),
                                "--json", str(tmp_path / "memory.json")])
    (build,) = report["builds"]
    assert build["frames"] == int(hours * memory_bench.FRAMES_PER_HOUR)
    assert build["bytes"] > build["frames"] * 130 * 4
    assert [c["in_memory"] for c in report["cases"]] == [False, True]
    for case in report["cases"]:
        assert len(case["processes"]) == 2 and case["peak_total_rss_mib"] > 0
        assert all(p["steps_per_s"] > 0 and p["peak_rss_mib"] > 0 for p in case["processes"])
    assert not list(tmp_path.glob("synthetic-*"))  # the stores are removed afterwards
    assert "| store |" in memory_bench.markdown_table(report)
