#!/usr/bin/env bash
# One-shot check of the GPU kernels on a bare GPU machine, in under 8 minutes:
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh            # on the GPU machine
#   bash benchmarks/gpu_check.sh --dry-run                # the same stages on the CPU (CI)
#
# Stages: env -> build the extensions in place -> kernel tests on CUDA tensors (Triton
# compiled, the cuda backend, every dtype) -> real Triton registers/spills/smem ->
# compute-sanitizer memcheck + racecheck of a short cuda-backend run (where the host
# supports it; it says when not) -> op benchmarks at full size (paper shape) against eager
# and torch.compile, with the copy bandwidth and bf16/fp32 matmul rates of this run ->
# summary. Everything goes under $OUT (default /tmp/sed-gpu-check): env.txt, build.log,
# cuda_ptxas.txt, tests.log, tests_sync_checks.log, resources.log, sanitizer.log,
# roofline.json, bench_*.json (pytest-benchmark), bench.log, stages.txt, summary.txt.
#
# Needs python3 with torch, triton, pytest, pytest-xdist (optional), pytest-benchmark,
# hypothesis, pybind11, ninja; nvcc for the cuda backend. No network, no audio stack: only
# the kernel test files run. --dry-run: CPU tensors (Triton's interpreter), reduced sizes,
# a subset of the tests; it checks that the script and its helpers work, not the kernels'
# speed. Every stage has its own time limit and the script goes on after a failing stage;
# the exit status is 1 when a stage failed.
set -u -o pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-${TMPDIR:-/tmp}/sed-gpu-check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/sed-gpu-check-triton-cache}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the in-place build of this checkout
START=$(date +%s)
FAILED=""
: > "$OUT/stages.txt"

stage() {  # stage NAME: prints and records the stage start
  STAGE=$1
  STAGE_START=$(date +%s)
  echo "=== [$(date +%T), $(( STAGE_START - START )) s] $STAGE"
}
done_stage() {  # done_stage STATUS
  local took=$(( $(date +%s) - STAGE_START ))
  [ "$1" -eq 0 ] || FAILED="$FAILED $STAGE"
  echo "$STAGE $( [ "$1" -eq 0 ] && echo ok || echo "FAILED($1)" ) ${took}s" >> "$OUT/stages.txt"
}
have() { command -v "$1" > /dev/null 2>&1; }

if [ $DRY = 1 ]; then
  export GPU_CHECK_DEVICE=cpu TRITON_INTERPRET=1
  XDIST=()
  echo "dry run: CPU tensors, Triton interpreter, reduced sizes"
else
  if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA device visible to torch: run with --dry-run on a CPU machine"; exit 2
  fi
  XDIST=()
  $PY -c "import xdist" 2> /dev/null && XDIST=(-n "${JOBS:-8}")
fi

# ---------------------------------------------------------------------------------- env
stage env
{ have nvidia-smi && nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total \
    --format=csv,noheader
  $PY -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch',
torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)"
  have nvcc && nvcc --version | tail -1
  echo "host: $(uname -r), $(nproc) CPUs"; } 2>&1 | tee "$OUT/env.txt"
done_stage 0

# -------------------------------------------------------------------------------- build
stage build
ARCH=${SED_KERNELS_CUDA_ARCH:-}
if [ -z "$ARCH" ] && have nvidia-smi; then
  ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '. ')
fi
BUILD_CUDA=$( [ $DRY = 1 ] && echo "" || echo 1 )  # dry run: CUDA module if nvcc is there
SED_KERNELS_CUDA_ARCH=${ARCH:-80;90} SED_KERNELS_BUILD_CUDA=$BUILD_CUDA MAX_JOBS=$(nproc) \
  timeout 240 $PY setup.py -q build_ext --inplace > "$OUT/build.log" 2>&1
status=$?
if [ $status -ne 0 ]; then
  echo "BUILD FAILED ($status)" | tee -a "$OUT/build.log"; tail -30 "$OUT/build.log"
fi
cp sed_kernels/_cuda_ptxas.txt "$OUT/cuda_ptxas.txt" 2> /dev/null
$PY -c "import torch, sed_kernels as s; d = 'cpu' if '$DRY' == '1' else 'cuda'
print('backends for', d, ':', s.available_backends(torch.device(d)))" 2>&1 | tee -a "$OUT/build.log"
done_stage $status

# -------------------------------------------------------------------------------- tests
stage "kernel tests"
if [ $DRY = 1 ]; then
  TESTS=(tests/test_triton_kernels.py tests/test_gpu_kernels.py tests/test_ops.py)
  SELECT=(-k "(test_triton_kernels and split and float32 and 37) or test_gpu_kernels or \
(test_ops and float32 and 3x7x37x19 and not bad_input)")
  LIMIT=150
else
  TESTS=(tests/test_triton_kernels.py tests/test_ops.py tests/test_fuzz_kernels.py
         tests/test_gpu_kernels.py)
  SELECT=(-k "not test_bad_input_is_named")
  LIMIT=200
fi
timeout $LIMIT $PY -m pytest -q -p no:cacheprovider "${XDIST[@]}" --maxfail=50 -rfEs \
  "${SELECT[@]}" "${TESTS[@]}" > "$OUT/tests.log" 2>&1
status=$?
tail -15 "$OUT/tests.log"
# The CUDA-lengths error cases of test_bad_input_is_named need the synchronous value check,
# which the op skips on CUDA unless asked (one sync per call).
SED_KERNELS_SYNC_CHECKS=1 timeout 60 $PY -m pytest -q -p no:cacheprovider -rfE \
  -k test_bad_input_is_named tests/test_ops.py > "$OUT/tests_sync_checks.log" 2>&1
sync_status=$?
tail -2 "$OUT/tests_sync_checks.log"
done_stage $(( status || sync_status ))

# ------------------------------------------------------- Triton registers/spills/smem
stage "triton resources"
if [ $DRY = 1 ]; then  # the offline compile (mock sm_90 driver), one small case
  env -u TRITON_INTERPRET timeout 120 $PY tests/triton_offline_compile.py --arch 90 \
    --cases small --dtypes float32 > "$OUT/resources.log" 2>&1
else
  timeout 120 $PY benchmarks/gpu_check.py resources > "$OUT/resources.log" 2>&1
fi
status=$?
grep -v -i warn "$OUT/resources.log" | tail -30
done_stage $status

# ----------------------------------------------------------------------- sanitizer
stage compute-sanitizer
{
  if [ $DRY = 1 ]; then
    echo "=== compute-sanitizer: not run (dry run, no GPU); the driver on CPU tensors:"
    BACKENDS=triton timeout 120 $PY benchmarks/gpu_check.py sanitize
  elif ! have compute-sanitizer; then
    echo "=== compute-sanitizer: not installed on this host; the driver without it:"
    BACKENDS=cuda timeout 60 $PY benchmarks/gpu_check.py sanitize
  elif ! timeout 60 compute-sanitizer --tool memcheck $PY -c \
      "import torch; torch.zeros(1, device='cuda'); torch.cuda.synchronize()" \
      > "$OUT/sanitizer_probe.log" 2>&1; then
    echo "=== compute-sanitizer: unsupported on this host ($(tail -1 "$OUT/sanitizer_probe.log"))"
    BACKENDS=cuda timeout 60 $PY benchmarks/gpu_check.py sanitize
  else
    for tool in memcheck racecheck; do
      extra=(); [ $tool = racecheck ] && extra=(--racecheck-report hazard)
      PYTORCH_NO_CUDA_MEMORY_CACHING=1 BACKENDS=cuda timeout 120 compute-sanitizer \
        --tool $tool "${extra[@]}" --print-limit 20 --error-exitcode 9 \
        $PY benchmarks/gpu_check.py sanitize > "$OUT/sanitizer_$tool.log" 2>&1
      rc=$?
      tail -6 "$OUT/sanitizer_$tool.log"
      verdict="FAILED (exit $rc, sanitizer_$tool.log)"; [ $rc -eq 0 ] && verdict=clean
      echo "=== $tool: $verdict"
    done
  fi
} 2>&1 | tee "$OUT/sanitizer.log"
! grep -q "FAILED\|non-finite" "$OUT/sanitizer.log"
done_stage $?

# ------------------------------------------------------------------------ benchmarks
stage "benchmarks (ceilings, eager, torch.compile, fused)"
timeout 60 $PY benchmarks/gpu_check.py roofline "$OUT/roofline.json" 2>&1 | tail -1
status=$?
if [ $DRY = 1 ]; then
  SIZES=(--bench-sizes smoke --bench-device cpu); PAPER=(-k "not compile")
  COMPILE=(-k "compile and feature_attention and fwd+bwd")
else
  SIZES=(--bench-sizes full --bench-device cuda); PAPER=(-k "paper and not compile")
  COMPILE=(-k "paper and compile")
fi
timeout 150 $PY -m pytest -q -p no:cacheprovider benchmarks/test_ops_bench.py "${SIZES[@]}" \
  "${PAPER[@]}" --benchmark-json="$OUT/bench_ops.json" > "$OUT/bench.log" 2>&1
status=$(( status || $? ))
# torch.compile compiles for 5-30 s a case: its own run and time limit, after the others.
timeout 150 $PY -m pytest -q -p no:cacheprovider benchmarks/test_ops_bench.py "${SIZES[@]}" \
  "${COMPILE[@]}" --benchmark-json="$OUT/bench_compile.json" >> "$OUT/bench.log" 2>&1
status=$(( status || $? ))
grep -E "passed|failed|error" "$OUT/bench.log" | tail -3
done_stage $status

# ------------------------------------------------------------------------------ summary
stage summary
echo "total $(( $(date +%s) - START )) s" >> "$OUT/stages.txt"
$PY benchmarks/gpu_check.py summary "$OUT"
echo "results under $OUT; failed stages:${FAILED:- none}"
[ -z "$FAILED" ]
