"""Where and how a model runs: the device, the attention backend, the arithmetic precision
and, for the training commands, the memory allocator.

Shared by training, ``evaluate`` and ``predict``. Each option has one checking function here
that raises a :class:`SedError` naming the option and what is usable.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

import sed_kernels

from . import cpu_support
from .errors import SedError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class RunOptions:
    """How a run does its work, not what it computes (never part of ``config.json``):
    progress bars, feature-extraction processes, whether an unusable audio file stops the run
    (``strict``) or is skipped with a warning, and the feature cache folder."""

    progress: bool = True
    workers: int | None = None
    strict: bool = False
    cache_dir: str | Path | None = None

    def data(self, progress: bool | None = None) -> dict:
        """The keyword arguments of :func:`sed_model.data.load_dataset` (``progress`` as
        given, else this run's)."""
        return {"workers": self.workers, "strict": self.strict, "cache_dir": self.cache_dir,
                "progress": self.progress if progress is None else progress}


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SedError("device 'cuda' requested but torch sees no CUDA GPU; use --device cpu")
    if name not in DEVICES:
        raise SedError(f"device must be auto, cpu or cuda; got {name!r}")
    return torch.device(name)


def check_backend(backend: str, device: torch.device) -> None:
    """:class:`SedError` unless ``backend`` is ``auto`` or usable for tensors on ``device``."""
    usable = sed_kernels.available_backends(device)
    if backend != "auto" and backend not in usable:
        raise SedError(f"attention backend {backend!r} is not usable on {device.type} here; "
                       f"expected auto or one of {', '.join(usable)}")


def check_precision(precision: str, device: torch.device | None = None) -> torch.dtype | None:
    """Validate ``--precision`` and return its ``torch.autocast`` dtype (None: plain fp32).

    This is the one place that decides whether a precision is usable. Without ``device``
    only the name is checked (a configuration is validated before the device is known);
    with it, the precision must also run there. bf16 runs on CUDA and on the CPU (CPU
    autocast supports bfloat16; useful to check a bf16 run on a laptop, rarely faster).
    fp16 is CUDA only: it needs a gradient scaler and CPU float16 kernels are slow or
    missing, so on the CPU it is an error; so is bf16 on a CPU without oneDNN's bf16 LSTM
    (AVX2-only CPUs, see :mod:`sed_model.cpu_support`).
    """
    if precision not in PRECISIONS:
        raise SedError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if device is not None and precision == "fp16" and device.type != "cuda":
        raise SedError("precision fp16 needs a CUDA GPU (it trains with a gradient scaler); "
                       "on the CPU use --precision fp32 (or bf16 where the CPU supports it)")
    if (device is not None and precision == "bf16" and device.type == "cpu"
            and not cpu_support.bf16_lstm_supported()):
        raise SedError(cpu_support.bf16_lstm_missing_message())
    return PRECISIONS[precision]


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``precision`` on ``device``; a no-op context for fp32."""
    dtype = check_precision(precision, device)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
KEPT_FREED_BYTES = 256 << 20
# glibc's own ceiling on its dynamic mmap threshold (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
# systems; it pairs it with twice that as trim threshold): where bound_kept_memory sets both
KERNEL_SERVED_BYTES = 32 << 20
# anonymous memory of a training process above which the kept heap is handed back
KEPT_HEAP_BUDGET = 2 << 30
_kept = False  # whether keep_freed_memory is in force in this process


def _mallopt():
    if not sys.platform.startswith("linux"):
        return None
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return mallopt


def keep_freed_memory(limit: int = KEPT_FREED_BYTES) -> bool:
    """Let glibc's malloc keep freed blocks of up to ``limit`` bytes for reuse instead of
    handing them back to the kernel. True when set (Linux with glibc); elsewhere a no-op that
    returns False.

    PyTorch's CPU tensors come from malloc. By default glibc serves large blocks with ``mmap``
    and unmaps them when they are freed, so every training step maps its activations and
    gradients again and the kernel zero-fills each new page. On the ``small`` recipe
    (batch 32, 200 frames, cells 64,64, one thread) that is about 15-20% of a training step
    (system time and page faults; a fold of the ``lstm`` variant trains about 19% faster with
    this set). Keeping the pages in the heap is what jemalloc or tcmalloc do (PyTorch's CPU
    performance guide recommends one of them); this needs neither. The training commands
    (``train``, ``compare`` and its worker processes) call it once at start-up; importing the
    package never changes the allocator.

    glibc's heap reuses a freed block only for a request that fits in it. Where every batch has
    the same shape (EmoDB's 2-second clips) the heap stops growing after a few steps; where the
    batches' lengths vary it fragments and grows step after step (nEMO, cells 128,128: 4 GB
    after 400 steps, 8 GB in a long search). :func:`bound_kept_memory`, called by the training
    loop, undoes this setting once the process passes :data:`KEPT_HEAP_BUDGET`.
    """
    global _kept
    mallopt = _mallopt()
    if mallopt is None:
        return False
    _kept = bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))
    return _kept


def anonymous_memory() -> int | None:
    """This process's resident anonymous memory in bytes (``RssAnon``; None off Linux)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def bound_kept_memory(budget: int = KEPT_HEAP_BUDGET) -> bool:
    """Where :func:`keep_freed_memory` is in force and this process holds more than ``budget``
    bytes of anonymous memory: serve large blocks with ``mmap`` again (glibc's largest default
    threshold, :data:`KERNEL_SERVED_BYTES`) and hand the heap's free pages back to the kernel
    (``malloc_trim``), so the heap grows no more than under glibc's defaults (a 400-step nEMO
    probe, cells 128,128: 1.9 GB at the end, against 4.0 GB kept and 0.8 GB with glibc's
    defaults from the start). True when it did that (once per process);
    otherwise it only reads ``/proc/self/status``, cheap enough to call every step."""
    global _kept
    if not _kept:
        return False
    used = anonymous_memory()
    if used is None or used <= budget:
        return False
    mallopt = _mallopt()
    mallopt(_M_MMAP_THRESHOLD, KERNEL_SERVED_BYTES)
    mallopt(_M_TRIM_THRESHOLD, 2 * KERNEL_SERVED_BYTES)
    ctypes.CDLL(None).malloc_trim(0)
    _kept = False
    return True
