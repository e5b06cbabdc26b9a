"""Shared pieces of the Triton kernels: launch configurations and dtype plumbing.

Launch configurations (block sizes, warps, how many programs share the steps of one row)
are chosen by :func:`time_attention_config` and :func:`feature_attention_config` only, so
that tuning on a GPU changes these two functions and nothing else. Both are plain
heuristics from the tile sizes a program holds in registers; they are not tuned yet.
``triton.autotune`` is not used: it cannot run under the interpreter, which is how the
kernels are tested on a machine without a GPU.

Interpreter notes (``TRITON_INTERPRET=1``, set before ``triton`` is imported): the kernels
then run on CPU tensors, one program after the other, with NumPy doing the arithmetic.
NumPy has no bfloat16, so ``tl.dot`` on bfloat16 tiles gives wrong numbers there; under the
interpreter (and only there) the feature-attention kernels cast bfloat16 tiles to float32
before ``tl.dot``. On a GPU the bfloat16 dot stays bfloat16 (tensor cores, fp32 accumulate).
The interpreter also rounds fp32 -> bfloat16 conversions wrongly (it truncates, and its
round-to-nearest mode mishandles the carry), so under the interpreter bfloat16 outputs are
written in fp32 and rounded by torch (:func:`kernel_output_dtype`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from sed_kernels._launch import accumulator_dtype

# Register budget of one (BLOCK_T, BLOCK_H) tile of the time-attention kernels, in elements.
_TIME_TILE_ELEMENTS = 8192
# A row's steps are split across programs only in pieces of at least this many blocks.
_MIN_BLOCKS_PER_SPLIT = 4
# Programs per streaming multiprocessor the split heuristics aim for.
_PROGRAMS_PER_SM = 2
# Upper bound of the fp32 partials of each of dW and dV in the feature-attention backward:
# small enough to stay in L2 (60 MB on an H200, 50 MB on an H100, 40 MB on an A100).
_MAX_WEIGHT_PARTIAL_BYTES = 8 * 2**20


def interpreter_active() -> bool:
    """True when Triton runs kernels through its CPU interpreter (``TRITON_INTERPRET=1``)."""
    knobs = getattr(triton, "knobs", None)  # triton >= 3.4; older versions read the variable
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_device(h: torch.Tensor) -> None:
    """Raise a clear error when the Triton backend cannot run on ``h``'s device."""
    if h.device.type == "cuda" or interpreter_active():
        return
    raise RuntimeError(
        f"sed_kernels.triton: the Triton backend needs CUDA tensors, got h on {h.device}; "
        "to run it on CPU tensors set TRITON_INTERPRET=1 in the environment before triton "
        "is imported (slow, for testing only)."
    )


def on_device(h: torch.Tensor) -> contextlib.AbstractContextManager:
    """Make ``h``'s GPU current for a launch: Triton launches go to the current device, so
    tensors on another GPU would otherwise be read through the wrong context (an illegal
    address). A no-op for CPU tensors (the interpreter) and when it is current already."""
    if h.device.type != "cuda":
        return contextlib.nullcontext()
    return torch.cuda.device(h.device)


@contextlib.contextmanager
def explain_resource_errors(function: str, **sizes: object):
    """Re-raise Triton's out-of-resources launch error with the op, sizes and a way out."""
    try:
        yield
    except triton.OutOfResources as error:
        shown = ", ".join(f"{name}={value}" for name, value in sizes.items())
        raise RuntimeError(
            f"sed_kernels.triton.{function}: the kernel does not fit this GPU for {shown} "
            f"({error}). The feature-attention kernels hold the whole attention dim d_a per "
            "block of steps in shared memory, which bounds d_a (on an H100: 1024 for "
            "fp16/bf16/fp32, 512 for fp64; less on GPUs with less shared memory); use "
            "backend='cuda' or backend='reference' for larger sizes."
        ) from error


def precise_math(dtype: torch.dtype) -> bool:
    """Whether kernels on ``dtype`` use the correctly rounded/libdevice ``exp``, ``log`` and
    division (:func:`exp`, :func:`log`, :func:`div`): fp32 and fp64 inputs, on a GPU.

    On a GPU ``tl.exp(x)`` compiles to ``ex2.approx.f32(x * log2(e))``: the rounding of the
    product alone gives a relative error of about ``|x| * 2^-24``, i.e. up to ~1e-6 for the
    score ranges of a softmax (|x| ~ 20), plus 2 ulp of ``ex2.approx``; ``tl.log`` is
    ``lg2.approx`` and ``/`` is ``div.full.f32`` (2 ulp). The fp32 tests' tolerance (2e-6
    relative) was set under the interpreter's exact NumPy, and the sums over T * H terms
    multiply per-element errors, so fp32 uses libdevice's ``expf``/``logf`` (at most 2 ulp
    over the whole range, CUDA Math API) and ``div.rn.f32`` (0.5 ulp): the per-element error
    then stays ~2^-22 ~ 2.4e-7, as under the interpreter up to a small factor. bf16/fp16
    inputs keep the fast forms: their 2^-8 / 2^-11 rounding dwarfs these errors. Under the
    interpreter the plain forms are exact NumPy already (libdevice does not run there).
    """
    return dtype in (torch.float32, torch.float64) and not interpreter_active()


@triton.jit
def exp(x, PRECISE: tl.constexpr):
    """exp(x): libdevice ``exp`` when PRECISE (see :func:`precise_math`), else ``tl.exp``."""
    if PRECISE:
        return libdevice.exp(x)
    else:
        return tl.exp(x)


@triton.jit
def log(x, PRECISE: tl.constexpr):
    """log(x): libdevice ``log`` when PRECISE, else ``tl.log``."""
    if PRECISE:
        return libdevice.log(x)
    else:
        return tl.log(x)


@triton.jit
def div(x, y, PRECISE: tl.constexpr):
    """x / y: round-to-nearest ``div.rn`` when PRECISE, else Triton's ``/`` (2 ulp in fp32)."""
    if PRECISE:
        return tl.div_rn(x, y)
    else:
        return x / y


_TL_DTYPES = {
    torch.float16: tl.float16,
    torch.bfloat16: tl.bfloat16,
    torch.float32: tl.float32,
    torch.float64: tl.float64,
}


def triton_dtype(dtype: torch.dtype) -> tl.dtype:
    """The ``triton.language`` dtype of a torch floating dtype."""
    return _TL_DTYPES[dtype]


def dot_operand_dtype(dtype: torch.dtype) -> tl.dtype:
    """Dtype in which ``tl.dot`` operands are fed: the input dtype, except bfloat16 under the
    interpreter, where NumPy cannot multiply bfloat16 and float32 is used instead."""
    if dtype == torch.bfloat16 and interpreter_active():
        return tl.float32
    return triton_dtype(dtype)


def kernel_output_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype in which a kernel writes an output of ``dtype``: ``dtype`` itself, except
    bfloat16 under the interpreter (fp32, rounded to bfloat16 by torch afterwards)."""
    if dtype == torch.bfloat16 and interpreter_active():
        return torch.float32
    return dtype


def _num_programs_target(device: torch.device) -> int:
    """How many programs fill the device; 1 under the interpreter (programs run one by one)."""
    if device.type != "cuda":
        return 1
    return _PROGRAMS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count


def _steps_per_split(batch: int, steps: int, block_t: int, device: torch.device,
                     max_programs: int | None = None) -> int:
    """Steps of a row handled by one program (a multiple of ``block_t``).

    Rows are split along T only when the batch alone cannot fill the device (long
    utterances, small batches); each split then covers at least ``_MIN_BLOCKS_PER_SPLIT``
    blocks of steps.
    """
    target = _num_programs_target(device)
    if max_programs is not None:
        target = min(target, max_programs)
    splits = min(triton.cdiv(target, batch), triton.cdiv(steps, _MIN_BLOCKS_PER_SPLIT * block_t))
    splits = max(1, splits)
    return triton.cdiv(triton.cdiv(steps, splits), block_t) * block_t


@dataclasses.dataclass(frozen=True)
class TimeAttentionConfig:
    """Launch configuration of the time-attention kernels.

    One program handles ``steps_per_split`` consecutive steps of one row with all ``H``
    features at once (``block_h >= H``, the score needs the whole dot product), walking
    them in blocks of ``block_t`` steps. ``steps_per_split >= T`` means one program per row.
    """

    block_t: int
    block_h: int
    steps_per_split: int
    num_warps: int

    def num_splits(self, steps: int) -> int:
        return triton.cdiv(steps, self.steps_per_split)


def time_attention_config(batch: int, steps: int, hidden: int, dtype: torch.dtype,
                          device: torch.device) -> TimeAttentionConfig:
    """Heuristic launch configuration of the time-attention kernels (not tuned yet)."""
    block_h = triton.next_power_of_2(hidden)
    tile_elements = _TIME_TILE_ELEMENTS // (2 if dtype == torch.float64 else 1)
    block_t = max(2, min(64, tile_elements // block_h))
    num_warps = 4 if block_t * block_h <= 4096 else 8
    return TimeAttentionConfig(
        block_t=block_t,
        block_h=block_h,
        steps_per_split=_steps_per_split(batch, steps, block_t, device),
        num_warps=num_warps,
    )


@dataclasses.dataclass(frozen=True)
class FeatureAttentionConfig:
    """Launch configuration of the feature-attention kernels.

    One program handles ``steps_per_split`` consecutive steps of one row in blocks of
    ``block_t`` steps. The feature axis H is walked in chunks of ``block_n`` features (both
    as the reduction axis of ``W h`` and as the output axis of ``V u``); the attention axis
    d_a is held whole (``block_da >= d_a``). ``tl.dot`` needs every block size >= 16.
    ``num_stages`` is Triton's software-pipelining depth of the chunk loops.
    """

    block_t: int
    block_n: int
    block_da: int
    steps_per_split: int
    num_warps: int
    num_stages: int = 2
    weight_splits: int | None = None  # backward: the dW/dV kernel's splits (None: heuristic)
    # fp32 only: tl.dot in TF32 on tensor cores (10-bit mantissa operands, fp32 accumulate)
    # instead of IEEE fp32 FMA. Off unless asked: here or SED_KERNELS_TRITON_TF32=1.
    tf32: bool = False

    def num_splits(self, steps: int) -> int:
        return triton.cdiv(steps, self.steps_per_split)


@dataclasses.dataclass(frozen=True)
class WeightGradConfig:
    """Launch configuration of the dW/dV kernel of the feature-attention backward: output
    tiles of (block_m, block_n), steps in blocks of block_k, the batch rows split
    round-robin over ``splits`` programs per tile (one fp32 partial per split)."""

    block_m: int
    block_n: int
    block_k: int
    splits: int
    num_warps: int = 4
    num_stages: int = 2


def weight_grad_config(batch: int, rows: int, cols: int, dtype: torch.dtype,
                       device: torch.device, splits: int | None = None) -> WeightGradConfig:
    """Heuristic configuration of the dW/dV kernel (not tuned yet): 64 x 64 tiles (smaller
    for small matrices), and as many splits of the batch as fill the device, bounded by
    ``_MAX_WEIGHT_PARTIAL_BYTES`` of partials (which stay in L2) and by the batch."""
    block_m = min(64, max(16, triton.next_power_of_2(rows)))
    block_n = min(64, max(16, triton.next_power_of_2(cols)))
    block_k = 16 if dtype == torch.float64 else 32
    if splits is None:
        tiles = triton.cdiv(rows, block_m) * triton.cdiv(cols, block_n)
        partial_bytes = rows * cols * torch.finfo(accumulator_dtype(dtype)).bits // 8
        splits = triton.cdiv(_num_programs_target(device), tiles)
        splits = min(splits, max(1, _MAX_WEIGHT_PARTIAL_BYTES // partial_bytes))
    return WeightGradConfig(block_m, block_n, block_k, max(1, min(splits, batch)))


def feature_attention_config(batch: int, steps: int, hidden: int, attention_dim: int,
                             dtype: torch.dtype, device: torch.device,
                             backward: bool) -> FeatureAttentionConfig:
    """Heuristic launch configuration of the feature-attention kernels (not tuned yet).

    ``block_da`` covers d_a. The (block_t, block_da) tiles of ``u`` (and ``du``, ``dz`` in
    backward) and the (block_n, block_da) tiles of W, V and the dW/dV partials live in
    registers and shared memory, so ``block_t``, ``block_n`` and the pipelining depth shrink
    as the tile width in bytes grows (``width``: d_a in fp16 elements; fp32 counts twice,
    fp64 four times). The thresholds come from compiling for sm_90 and sm_80 without a GPU
    (``tests/triton_offline_compile.py``: ptxas register and spill counts, no timing): the
    forward spills nothing up to d_a = 512; the restructured backward (no dW/dV tiles in its
    loops) spills nothing at the paper (H = d_a = 256) and wide (512) shapes in fp32 and
    bf16 with one pipelining stage and 4 warps up to d_a = 256, 8 above.
    """
    block_da = max(16, triton.next_power_of_2(attention_dim))
    width = block_da * torch.finfo(dtype).bits // 16
    if backward:
        # No software pipelining: with 2 stages the bf16 backward spilled at d_a = 256.
        block_t, block_n, num_stages = 16, 16, 1
    else:
        block_t, block_n = (32, 32) if width <= 256 else ((32, 16) if width <= 512 else (16, 16))
        num_stages = 1 if width >= 1024 else 2
    block_n = min(block_n, max(16, triton.next_power_of_2(hidden)))
    num_warps = 8 if block_da >= 128 else 4
    if backward and block_da <= 256:
        # With 8 warps the (16, BLOCK_N = 16) products replicate their operands across warps:
        # the bf16 backward needed 255 registers and spilled at d_a = 256 (4 warps: 220).
        num_warps = 4
    return FeatureAttentionConfig(
        block_t=block_t,
        block_n=block_n,
        block_da=block_da,
        steps_per_split=_steps_per_split(batch, steps, block_t, device),
        num_warps=num_warps,
        num_stages=num_stages,
        tf32=dtype == torch.float32 and os.environ.get("SED_KERNELS_TRITON_TF32") == "1",
    )
