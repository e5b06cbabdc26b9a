"""Tests of the timing and settings logic in ``harness.py`` (no benchmark fixture, no device).

The CUDA timing path cannot run on a machine without a GPU, so its round logic is checked
here with a stand-in for the device synchronisation.
"""

from __future__ import annotations

import types

import harness
import pytest
import torch


class FakeBenchmark:
    """Records what ``measure`` asks pytest-benchmark for, and runs it like pedantic does."""

    def __init__(self, median: float = 0.5):
        self.calls = []
        self.stats = types.SimpleNamespace(stats=types.SimpleNamespace(median=median))

    def pedantic(self, target, rounds=1, iterations=1, **_):
        self.calls.append((rounds, iterations))
        for _ in range(rounds * iterations):
            target()


def test_cuda_rounds_synchronise_once_per_round(monkeypatch):
    synchronised_after = []
    calls = 0

    def fn():
        nonlocal calls
        calls += 1

    monkeypatch.setattr(harness, "synchronize", lambda device: synchronised_after.append(calls))
    target = harness._synchronizing_every(fn, 4, torch.device("cuda"))
    for _ in range(12):
        target()
    assert synchronised_after == [4, 8, 12]


def test_measure_picks_calls_and_rounds_from_the_warm_up(monkeypatch):
    monkeypatch.setattr(harness, "synchronize", lambda device: None)
    clock = iter([0.0, 1e-4, 0.0, 1e-4])  # two warm-up calls of 100 us each
    monkeypatch.setattr(harness.time, "perf_counter", lambda: next(clock))
    settings = harness.Settings(sizes="full", device=torch.device("cuda"), disabled=False)
    benchmark = FakeBenchmark(median=1e-4)
    assert harness.measure(benchmark, lambda: None, settings, warmup_calls=2) == 1e-4
    # 1 ms per round -> 10 calls per round; 2 s per case -> 200 rounds (the maximum).
    assert benchmark.calls == [(harness.MAX_ROUNDS, 10)]


def test_measure_on_cpu_times_single_calls_with_at_least_three_rounds(monkeypatch):
    clock = iter([0.0, 2.0])  # one warm-up call of 2 s
    monkeypatch.setattr(harness.time, "perf_counter", lambda: next(clock))
    settings = harness.Settings(sizes="reduced", device=torch.device("cpu"), disabled=False)
    benchmark = FakeBenchmark()
    harness.measure(benchmark, lambda: None, settings)
    assert benchmark.calls == [(harness.MIN_ROUNDS, 1)]


def test_disabled_runs_the_function_once_untimed():
    runs = []
    settings = harness.Settings(sizes="smoke", device=torch.device("cpu"), disabled=True)
    benchmark = FakeBenchmark()
    assert harness.measure(benchmark, lambda: runs.append(1), settings) is None
    assert runs == [1] and benchmark.calls == [(1, 1)]


class FakeConfig:
    def __init__(self, **options):
        self.options = options

    def getoption(self, name, default=None):
        return self.options.get(name, default)


@pytest.mark.parametrize(
    ("options", "env", "expected"),
    [
        ({"benchmark_disable": True}, None, "smoke"),
        ({}, None, "reduced"),  # this machine has no GPU
        ({"bench_sizes": "full", "benchmark_disable": True}, None, "full"),
        ({}, "full", "full"),
        ({"bench_sizes": "smoke"}, "full", "smoke"),  # the option wins over the variable
    ],
)
def test_sizes_resolution(monkeypatch, options, env, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(harness.DEVICE_ENV, raising=False)
    if env is None:
        monkeypatch.delenv(harness.SIZES_ENV, raising=False)
    else:
        monkeypatch.setenv(harness.SIZES_ENV, env)
    settings = harness.resolve_settings(FakeConfig(**options))
    assert settings.sizes == expected and settings.device.type == "cpu"
    assert harness.PAPER_SHAPE in settings.op_shapes or expected == "smoke"


def test_bad_environment_value_is_a_usage_error(monkeypatch):
    monkeypatch.setenv(harness.SIZES_ENV, "huge")
    with pytest.raises(
        pytest.UsageError, match=r"SED_BENCH_SIZES \(environment\) is 'huge'; expected one of"
    ):
        harness.resolve_settings(FakeConfig())
