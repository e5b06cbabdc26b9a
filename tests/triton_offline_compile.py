"""Compile every Triton kernel of sed_kernels for a CUDA GPU on a machine without one.

A mock Triton driver reports a CUDA target (compute capability ``--arch``, default 90) and
each ``kernel[grid](...)`` launch becomes a compile-only warm-up, so the package's own
``forward``/``backward`` launchers pick the arguments, block sizes and constexprs exactly as
they would on a GPU (with 132 SMs, an H100/H200). For each kernel it records the registers,
spill bytes and stack frame that ``ptxas -v`` reports for Triton's PTX, and Triton's own
shared-memory figure. Nothing is executed: this is a resource check, not a correctness test.

    python tests/triton_offline_compile.py --arch 90 --cases paper,wide \\
        --dtypes float32,bfloat16 [--json FILE] [--dump DIR]

Run it in its own process: it replaces Triton's active driver and ``JITFunction.__getitem__``
for the whole interpreter, and must not run with ``TRITON_INTERPRET=1``. Adapted from
``/work/shared/gpu/offline_compile.py``. ``tests/test_triton_offline_compile.py`` runs it
for sm_90 and sm_80 and checks the figures; exit status 2 means that this Triton cannot
target CUDA offline (no NVIDIA backend or no ptxas), with the reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types

CASES = {  # (B, T, H, d_a)
    "paper": (64, 500, 256, 256),
    "wide": (128, 300, 512, 512),
    "long": (16, 3000, 256, 256),
    "big": (8, 64, 1024, 1024),
    "small": (3, 37, 37, 19),
}
NUM_SMS = 132  # H100 SXM / H200
# Opt-in shared memory per block (cudaDevAttrMaxSharedMemoryPerBlockOptin).
SHARED_LIMIT = {90: 227 * 1024, 80: 163 * 1024}
UNSUPPORTED = 2  # exit status: this Triton cannot target CUDA offline


def _unsupported(reason: str) -> None:
    print(f"offline compile unsupported: {reason}", file=sys.stderr)
    sys.exit(UNSUPPORTED)


def _ptxas_candidates(arch: int) -> list[str]:
    import triton

    bin_dir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    # Triton 3.9's PTX needs the ptxas-blackwell it ships for sm_90a; the plain one may do
    # for older targets; the system one (CUDA toolkit) last.
    names = ["ptxas-blackwell", "ptxas"] if arch >= 90 else ["ptxas", "ptxas-blackwell"]
    found = [os.path.join(bin_dir, n) for n in names if os.path.isfile(os.path.join(bin_dir, n))]
    system = shutil.which("ptxas")
    return found + ([system] if system else [])


def _triton_ptxas(arch: int) -> tuple[list[str], list[str], str]:
    """(ptxas paths to try, flags, --gpu-name) as Triton's own make_cubin uses them."""
    flags = ["-lineinfo", "-v", "--regAllocOptLevel=2"]
    try:
        from triton.backends.nvidia import compiler

        gpu = compiler.sm_arch_from_capability(arch)
        first = [compiler.get_ptxas(arch).path]
    except Exception:  # noqa: BLE001  (other Triton versions: the same by hand)
        gpu, first = (f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"), []
    return first + [p for p in _ptxas_candidates(arch) if p not in first], flags, gpu


def ptxas_figures(ptx: str, arch: int) -> dict:
    """Registers, spill stores/loads and stack of the one kernel in ``ptx``, from ptxas -v
    run as Triton runs it when it builds the cubin (same binary, flags and target)."""
    candidates, flags, gpu = _triton_ptxas(arch)
    errors = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        for ptxas in candidates:
            result = subprocess.run([ptxas, *flags, f"--gpu-name={gpu}", path, "-o", path + ".o"],
                                    capture_output=True, text=True)
            if result.returncode == 0:
                log = result.stderr

                def number(pattern: str) -> int:
                    match = re.search(pattern, log)
                    return int(match.group(1)) if match else 0

                return dict(regs=number(r"Used (\d+) registers"),
                            spill_stores=number(r"(\d+) bytes spill stores"),
                            spill_loads=number(r"(\d+) bytes spill loads"),
                            stack=number(r"(\d+) bytes stack frame"),
                            ptxas=os.path.basename(ptxas))
            errors.append(f"{ptxas}: {result.stderr.strip()[:300]}")
    raise RuntimeError("no ptxas accepted the PTX: " + " | ".join(errors))


def install_mock_driver(arch: int) -> list:
    """Make Triton compile for CUDA ``arch`` without a GPU; returns the launch record."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        _unsupported("TRITON_INTERPRET=1 is set (run without it)")
    try:
        import torch
        import triton
        import triton.backends.nvidia.compiler  # noqa: F401  (the CUDA backend is installed)
        from triton.backends.compiler import GPUTarget
        from triton.runtime.driver import driver
        from triton.runtime.jit import JITFunction
    except Exception as error:  # noqa: BLE001
        _unsupported(f"triton's NVIDIA backend does not import ({error!r})")
    if not _ptxas_candidates(arch):
        _unsupported("no ptxas (neither in triton's wheel nor on PATH)")

    class MockDriver:
        target = GPUTarget("cuda", arch, 32)

        def get_current_target(self):
            return self.target

        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

        def get_device_interface(self):
            return torch.cuda

        def get_active_torch_device(self):
            return torch.device("cpu")

        def get_benchmarker(self):
            raise RuntimeError("no benchmarking offline")

        def is_active(self):
            return True

    try:
        driver.set_active(MockDriver())
    except Exception as error:  # noqa: BLE001
        _unsupported(f"this triton has no settable driver ({error!r})")
    torch.cuda.get_device_properties = lambda device=None: types.SimpleNamespace(
        multi_processor_count=NUM_SMS)
    record = []

    class Launcher:
        def __init__(self, fn, grid):
            self.fn, self.grid = fn, grid

        def __call__(self, *args, **kwargs):
            kernel = self.fn.run(*args, grid=self.grid, warmup=True, **kwargs)
            record.append((self.fn.__name__, self.grid, kernel, kwargs))
            return kernel

    JITFunction.__getitem__ = lambda self, grid: Launcher(self, grid)
    return record


def run_case(record: list, arch: int, label: str, dtype_name: str, dump: str | None) -> list:
    import torch

    from sed_kernels.triton import _utils
    from sed_kernels.triton import feature_attention as fa
    from sed_kernels.triton import time_attention as ta

    ta.check_device = fa.check_device = lambda h: None  # CPU tensors stand in for CUDA ones
    batch, steps, hidden, attention = CASES[label]
    dtype = getattr(torch, dtype_name)
    device = torch.device("cuda")  # for the launch heuristics only
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(batch, steps, hidden, generator=gen).to(dtype)
    lengths = torch.full((batch,), steps, dtype=torch.int64)
    q = torch.randn(batch, hidden, generator=gen).to(dtype)
    grad = torch.randn(batch, hidden, generator=gen).to(dtype)
    W = torch.randn(attention, hidden, generator=gen).to(dtype)
    V = torch.randn(hidden, attention, generator=gen).to(dtype)
    record.clear()
    configs = {}
    for name, call in [
        ("time", lambda: ta.backward(grad, h, q, lengths, *ta.forward(
            h, q, lengths, configs.setdefault("time", _utils.time_attention_config(
                batch, steps, hidden, dtype, device))), configs["time"])),
        ("time_split", lambda: ta.backward(grad, h, q, lengths, *ta.forward(
            h, q, lengths, configs.setdefault("split", _utils.TimeAttentionConfig(
                configs["time"].block_t, configs["time"].block_h,
                configs["time"].block_t * 4, configs["time"].num_warps))), configs["split"])),
        ("feature_fwd", lambda: fa.forward(h, W, V, lengths, _utils.feature_attention_config(
            batch, steps, hidden, attention, dtype, device, backward=False))),
        ("feature_bwd", lambda: fa.backward(grad, h, W, V, lengths,
                                            _utils.feature_attention_config(
            batch, steps, hidden, attention, dtype, device, backward=True))),
    ]:
        first = len(record)
        try:
            call()
        except Exception as error:  # noqa: BLE001
            record.append((f"<{name} launch>", None, None, {"error": repr(error)[:2000]}))
        record[first:] = [(n + ("[split]" if name == "time_split" else ""), *rest)
                          for n, *rest in record[first:]]
    rows = []
    for kernel_name, grid, kernel, kwargs in record:
        row = dict(arch=arch, case=label, dtype=dtype_name, kernel=kernel_name)
        if kernel is None:
            rows.append(dict(row, error=kwargs["error"]))
            continue
        try:
            figures = ptxas_figures(kernel.asm["ptx"], arch)
        except Exception as error:  # noqa: BLE001
            rows.append(dict(row, error=repr(error)[:2000]))
            continue
        metadata = kernel.metadata
        rows.append(dict(row, grid=list(grid), num_warps=metadata.num_warps,
                         num_stages=metadata.num_stages, shared=metadata.shared,
                         shared_limit=SHARED_LIMIT.get(arch), **figures,
                         constexprs={k: str(v) for k, v in kwargs.items() if k.isupper()}))
        if dump:
            os.makedirs(dump, exist_ok=True)
            stem = os.path.join(dump, f"sm{arch}_{label}_{dtype_name}_{kernel_name}")
            for ext in ("ttgir", "ptx"):
                if ext in kernel.asm:
                    with open(f"{stem}.{ext}", "w") as f:
                        f.write(kernel.asm[ext])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--cases", default="paper,wide")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument("--dump", help="keep each kernel's TTGIR and PTX in this folder")
    args = parser.parse_args(argv)
    os.environ.setdefault("TRITON_CACHE_DIR",
                          os.path.join(tempfile.gettempdir(), "sed-offline-triton-cache"))
    record = install_mock_driver(args.arch)
    rows = []
    for label in args.cases.split(","):
        for dtype_name in args.dtypes.split(","):
            rows += run_case(record, args.arch, label, dtype_name, args.dump)
    for row in rows:
        if "error" in row:
            print(f"sm_{row['arch']} {row['case']:6} {row['dtype']:9} {row['kernel']}: "
                  f"FAILED {row['error'][:300]}")
        else:
            print(f"sm_{row['arch']} {row['case']:6} {row['dtype']:9} {row['kernel']:38} "
                  f"regs {row['regs']:3}  spill {row['spill_stores']}/{row['spill_loads']} B  "
                  f"stack {row['stack']} B  smem {row['shared']} B  warps {row['num_warps']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
