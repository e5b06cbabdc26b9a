"""Shared machinery of the benchmarks: sizes, device, timing and the traffic of an ideal kernel.

Sizes (``--bench-sizes`` or the environment variable ``SED_BENCH_SIZES``):

========== =================================================================================
``full``     the issue's sizes. Ops (B, T, H, d_a): (64, 500, 256, 256) the paper's IEMOCAP
             setting, (128, 300, 512, 512) wide, (16, 3000, 256, 256) long utterances (30 s).
             Model: the ``iemocap`` preset (cells [256, 256], batch 64) at T = 500 frames.
             Features: 64 generated files of 2 s.
``reduced``  CPU-sized. Ops: the paper's shape unchanged (the native-kernel issue reports it),
             the other two with a smaller batch: (32, 300, 512, 512) and (4, 3000, 256, 256).
             Model: the ``emodb-cpu`` preset (cells [128, 128], batch 32) at T = 200 frames
             (EmoDB's 2 s clips). Features: 16 generated files of 2 s.
``smoke``    tiny shapes, for ``--benchmark-disable`` runs (CI), where every benchmark runs its
             function once: they prove that each case runs and checks its result, nothing more.
             ``torch.compile`` runs in one case per suite (feature attention fwd+bwd, the
             ``feature`` model), as compiling every case would take minutes.
``auto``     (default) ``smoke`` under ``--benchmark-disable``, else ``full`` on CUDA and
             ``reduced`` on CPU.
========== =================================================================================

The device is CUDA when available, else CPU (``--bench-device`` / ``SED_BENCH_DEVICE``
override it). Ops run in float32, and on CUDA also in bfloat16.

Timing. Every case is warmed up first, outside the timed rounds (``torch.compile`` compiles
there). On CPU each round is one call, timed by wall clock. On CUDA each round is ``k`` calls
followed by one ``torch.cuda.synchronize()`` (pytest-benchmark's ``iterations=k``; the stored
time is per call), with ``k`` chosen so that a round lasts about a millisecond: so the time
counts the kernels' completion, not only their launch, without a synchronisation per call.
The number of rounds is chosen from the warm-up so that a case takes about ``min_time_s``,
with at least 3 rounds. The statistic reported is the median.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

SIZES = ("auto", "full", "reduced", "smoke")
DEVICES = ("auto", "cpu", "cuda")
SIZES_ENV = "SED_BENCH_SIZES"
DEVICE_ENV = "SED_BENCH_DEVICE"

MIN_ROUNDS = 3
MAX_ROUNDS = 200
GPU_ROUND_S = 1e-3  # a CUDA round lasts about this long (k calls, one synchronisation)
MAX_CALLS_PER_ROUND = 100


@dataclass(frozen=True)
class OpShape:
    """One shape of the attention ops: h is (batch, steps, hidden), d_a the attention width."""

    label: str
    batch: int
    steps: int
    hidden: int
    attention: int

    @property
    def id(self) -> str:
        return f"{self.label}-{self.batch}x{self.steps}x{self.hidden}x{self.attention}"


@dataclass(frozen=True)
class ModelSize:
    """One training step's sizes; cells, batch, lr and Adam settings come from ``preset``."""

    preset: str
    frames: int
    n_classes: int
    cells: tuple[int, ...] | None = None  # None: the preset's cells
    batch: int | None = None  # None: the preset's batch size


@dataclass(frozen=True)
class FeatureSize:
    """The generated corpus for the openSMILE extraction benchmark."""

    files: int
    seconds: float
    sampling_rate: int = 16_000


PAPER_SHAPE = OpShape("paper", 64, 500, 256, 256)
OP_SHAPES = {
    "full": (PAPER_SHAPE, OpShape("wide", 128, 300, 512, 512), OpShape("long", 16, 3000, 256, 256)),
    "reduced": (
        PAPER_SHAPE,
        OpShape("wide", 32, 300, 512, 512),
        OpShape("long", 4, 3000, 256, 256),
    ),
    "smoke": (OpShape("tiny", 5, 37, 48, 40),),
}
MODEL_SIZES = {
    "full": ModelSize("iemocap", frames=500, n_classes=5),
    "reduced": ModelSize("emodb-cpu", frames=200, n_classes=7),
    "smoke": ModelSize("demo", frames=23, n_classes=4, cells=(16, 16), batch=4),
}
FEATURE_SIZES = {
    "full": FeatureSize(files=64, seconds=2.0),
    "reduced": FeatureSize(files=16, seconds=2.0),
    "smoke": FeatureSize(files=2, seconds=0.5),
}
MIN_TIME_S = {"full": 2.0, "reduced": 1.0, "smoke": 0.0}


@dataclass(frozen=True)
class Settings:
    """What this benchmark run measures; resolved once from the command line and environment."""

    sizes: str  # "full", "reduced" or "smoke"
    device: torch.device
    disabled: bool  # --benchmark-disable: each benchmark function runs once, untimed

    @property
    def op_shapes(self) -> tuple[OpShape, ...]:
        return OP_SHAPES[self.sizes]

    @property
    def dtypes(self) -> tuple[torch.dtype, ...]:
        return (torch.float32, torch.bfloat16) if self.device.type == "cuda" else (torch.float32,)

    @property
    def model(self) -> ModelSize:
        return MODEL_SIZES[self.sizes]

    @property
    def features(self) -> FeatureSize:
        return FEATURE_SIZES[self.sizes]

    @property
    def min_time_s(self) -> float:
        return MIN_TIME_S[self.sizes]


def _choice(config: pytest.Config, option: str, env: str, allowed: tuple[str, ...]) -> str:
    value = config.getoption(option) or os.environ.get(env) or "auto"
    if value not in allowed:
        source = (
            f"{env} (environment)"
            if not config.getoption(option)
            else f"--{option.replace('_', '-')}"
        )
        raise pytest.UsageError(f"{source} is {value!r}; expected one of {', '.join(allowed)}")
    return value


def resolve_settings(config: pytest.Config) -> Settings:
    """The run's settings from ``--bench-sizes``/``--bench-device`` or their environment
    variables."""
    disabled = bool(config.getoption("benchmark_disable", False))
    device_name = _choice(config, "bench_device", DEVICE_ENV, DEVICES)
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    elif device_name == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--bench-device cuda was asked for, but torch sees no CUDA device")
    sizes = _choice(config, "bench_sizes", SIZES_ENV, SIZES)
    if sizes == "auto":
        sizes = "smoke" if disabled else ("full" if device_name == "cuda" else "reduced")
    return Settings(sizes=sizes, device=torch.device(device_name), disabled=disabled)


# ----------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _synchronizing_every(
    fn: Callable[[], object], calls: int, device: torch.device
) -> Callable[[], object]:
    """``fn`` that synchronises the device after every ``calls``-th call (one timed round)."""
    count = 0

    def target():
        nonlocal count
        result = fn()
        count += 1
        if count % calls == 0:
            synchronize(device)
        return result

    return target


def measure(
    benchmark, fn: Callable[[], object], settings: Settings, *, warmup_calls: int = 1
) -> float | None:
    """Time ``fn()`` with pytest-benchmark (see the module docstring); the median seconds per call.

    Returns None under ``--benchmark-disable``, where ``fn`` runs once, untimed.
    """
    device = settings.device
    if settings.disabled:
        benchmark.pedantic(fn)
        synchronize(device)
        return None
    estimate = math.inf
    for _ in range(max(1, warmup_calls)):
        start = time.perf_counter()
        fn()
        synchronize(device)
        estimate = time.perf_counter() - start
    estimate = max(estimate, 1e-7)
    calls = 1
    if device.type == "cuda":
        calls = min(MAX_CALLS_PER_ROUND, max(1, math.ceil(GPU_ROUND_S / estimate)))
    rounds = min(MAX_ROUNDS, max(MIN_ROUNDS, math.ceil(settings.min_time_s / (estimate * calls))))
    target = _synchronizing_every(fn, calls, device) if device.type == "cuda" else fn
    benchmark.pedantic(target, rounds=rounds, iterations=calls)
    synchronize(device)
    return benchmark.stats.stats.median


def peak_memory(fn: Callable[[], object], device: torch.device) -> dict[str, int]:
    """CUDA memory of one call: ``peak_memory_bytes`` (max allocated, inputs included) and
    ``peak_extra_bytes`` (the part above what was allocated before the call). Empty on CPU."""
    if device.type != "cuda":
        return {}
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    result = fn()
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del result
    return {"peak_memory_bytes": peak, "peak_extra_bytes": peak - before}


def copy_bandwidth(device: torch.device, *, rounds: int = 10) -> float:
    """Bytes per second of a large device-to-device ``copy_`` (read + write), timed like
    ``measure``.

    The buffer (1 GiB on CUDA, 256 MiB on CPU) is far larger than any cache, so this is the
    memory bandwidth a streaming kernel can reach on this device in this run.
    """
    nbytes = (1 << 30) if device.type == "cuda" else (256 << 20)
    source = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    target = torch.empty_like(source)
    times = []
    for _ in range(rounds + 1):  # the first copy is warm-up (page faults, allocator)
        synchronize(device)
        start = time.perf_counter()
        target.copy_(source)
        synchronize(device)
        times.append(time.perf_counter() - start)
    times = sorted(times[1:])
    return 2 * nbytes / times[len(times) // 2]


def matmul_rate(device: torch.device, *, rounds: int = 10) -> float:
    """FLOP/s of a large ``torch.mm``: fp32 2048^3 on CPU, bf16 8192^3 on CUDA.

    The rate this device reaches on matrix products in this run (2 FLOPs per multiply-add),
    the ceiling for feature attention's GEMM-shaped work.
    """
    size, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (2048, torch.float32)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device, dtype)
    b = torch.randn(size, size, generator=generator).to(device, dtype)
    times = []
    for _ in range(rounds + 1):  # the first product is warm-up
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        times.append(time.perf_counter() - start)
    times = sorted(times[1:])
    return 2 * size**3 / times[len(times) // 2]


def cpu_isas() -> list[str]:
    """Instruction-set variants of the ``cpu`` backend that this build and CPU run, best first."""
    from sed_kernels import cpu

    return cpu.extension.available_isas() if cpu.AVAILABLE else []


def split_variant(backend: str) -> tuple[str, str | None]:
    """``"cpu-avx2"`` -> ``("cpu", "avx2")``; other backend names pass with no variant."""
    name, _, isa = backend.partition("-")
    return (name, isa) if name == "cpu" and isa else (backend, None)


def cpu_instruction_set(isa: str | None):
    """Run the ``cpu`` backend's kernels for ``isa`` inside the block (None: leave as is)."""
    from sed_kernels import cpu

    return cpu.instruction_set(isa)


SMOKE_COMPILE_SKIP = (
    "smoke sizes: torch.compile runs in one case per suite only (it compiles for 5-30 s a case)"
)


def as_id(value: object) -> str:
    """Short test ids for parameters (dtypes without the ``torch.`` prefix)."""
    return str(value).removeprefix("torch.")
