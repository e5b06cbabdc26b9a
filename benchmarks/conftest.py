"""Options, settings and shared fixtures of the benchmarks (see ``harness`` for the sizes).

Run ``pytest benchmarks/`` (all cases, timed), ``pytest benchmarks/ --benchmark-disable``
(each case once, tiny shapes: a smoke test) or, for the table,
``pytest benchmarks/ --benchmark-json=FILE.json && python benchmarks/report.py FILE.json``.

The Triton interpreter is never switched on here: it is a correctness tool, not a backend
to time (``tests/conftest.py`` turns it on for the tests only).
"""

from __future__ import annotations

import os
import platform

import harness
import pytest
import torch

SETTINGS = pytest.StashKey[harness.Settings]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sed benchmarks")
    group.addoption(
        "--bench-sizes",
        dest="bench_sizes",
        choices=harness.SIZES,
        default=None,
        help="full, reduced (CPU-sized), smoke (tiny) or auto (default; also "
        f"${harness.SIZES_ENV}): "
        "smoke under --benchmark-disable, else full on CUDA and reduced on CPU",
    )
    group.addoption(
        "--bench-device",
        dest="bench_device",
        choices=harness.DEVICES,
        default=None,
        help=f"cpu, cuda or auto (default; also ${harness.DEVICE_ENV}): CUDA when available",
    )


def pytest_configure(config: pytest.Config) -> None:
    from sed_kernels._native import shadowed_extensions

    # A benchmark run without a backend that the installed package has would compare
    # nothing against eager and torch.compile, and say so only in a warning.
    missing = shadowed_extensions()
    if missing:
        raise pytest.UsageError("benchmarks: " + "\nbenchmarks: ".join(missing))
    config.stash[SETTINGS] = harness.resolve_settings(config)
    # torch.compile's inductor calls a deprecated torch.jit helper; not ours to fix.
    config.addinivalue_line(
        "filterwarnings", "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"
    )


def pytest_report_header(config: pytest.Config) -> str:
    settings = config.stash[SETTINGS]
    return (
        f"sed benchmarks: sizes={settings.sizes} device={settings.device.type} "
        f"threads={torch.get_num_threads()}"
    )


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Versions and sizes beside pytest-benchmark's own machine description in the JSON."""
    settings = config.stash[SETTINGS]
    machine_info["sed_bench"] = {
        "sizes": settings.sizes,
        "device": settings.device.type,
        "device_name": (
            torch.cuda.get_device_name(settings.device)
            if settings.device.type == "cuda"
            else _cpu_model()
        ),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "opensmile": _version("opensmile"),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        # Other work on the machine makes timings noisy; the load at the end of the run shows it.
        "load_average": [round(load, 2) for load in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
        "cpu_instruction_sets": _cpu_instruction_sets(),
        "cpu_backend_variants": harness.cpu_isas(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def _cpu_instruction_sets() -> list[str]:
    """The vector instruction sets that /proc/cpuinfo lists (the CPU differs between machines)."""
    wanted = ("avx512f", "avx512bw", "avx512vl", "avx512_bf16", "amx_bf16", "avx2", "fma")
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next(
                (line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), []
            )
    except OSError:
        return []
    return [flag for flag in wanted if flag in flags]


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    settings = metafunc.config.stash[SETTINGS]
    if "op_shape" in metafunc.fixturenames:
        shapes = settings.op_shapes
        metafunc.parametrize("op_shape", shapes, ids=[shape.id for shape in shapes])
    if "dtype" in metafunc.fixturenames:
        metafunc.parametrize("dtype", settings.dtypes, ids=harness.as_id)


@pytest.fixture(scope="session")
def settings(pytestconfig: pytest.Config) -> harness.Settings:
    return pytestconfig.stash[SETTINGS]


@pytest.fixture(scope="session")
def copy_bandwidth(settings: harness.Settings) -> float | None:
    """Bytes/s of a large device-to-device copy in this run (None under --benchmark-disable)."""
    if settings.disabled:
        return None
    return harness.copy_bandwidth(settings.device)


@pytest.fixture(scope="session")
def matmul_rate(settings: harness.Settings) -> float | None:
    """FLOP/s of a large torch.mm in this run (None under --benchmark-disable)."""
    if settings.disabled:
        return None
    return harness.matmul_rate(settings.device)
