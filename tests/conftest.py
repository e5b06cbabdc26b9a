"""Test configuration shared by the whole suite.

Without a GPU, the Triton kernels run on CPU tensors through Triton's interpreter. The
interpreter must be chosen before ``sed_kernels.triton`` is imported, so it is set here,
before any test module imports the package.
"""

import csv
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def outside_source_tree(tmp_path, monkeypatch):
    """Run from a folder outside the checkout.

    ``python -m sed_model.train`` subprocesses put their working directory first on
    ``sys.path``; started from the checkout they would import the source tree, which has no
    compiled kernels unless it was built in place, instead of the installed package.
    """
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread, and much faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """32 demo files (4 speakers x 4 emotions x 2) in a CSV manifest with their own feature
    cache; yields the manifest and an environment for command-line subprocesses."""
    from sed_model.corpora import demo

    root = tmp_path_factory.mktemp("demo")
    demo.generate(root / "audio", utterances_per_cell=2)
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "speaker"])
        for name, speaker, emotion in demo.expected_files(utterances_per_cell=2):
            writer.writerow([f"audio/{name}", emotion, speaker])
    env = {**os.environ, "SED_MODEL_CACHE": str(root / "cache"),
           "OMP_NUM_THREADS": "1"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SED_MODEL_CACHE", str(root / "cache"))
        yield manifest, env


# ------------------------------------------------------------------------------ kernel tests
# Modules whose tests run kernels: every fresh allocation is NaN-poisoned while they run, and
# a test parametrized with a kernel_checks.Backend runs the cpu backend's instruction-set
# variant that the parameter names.
KERNEL_TEST_MODULES = {
    "test_ops", "test_fuzz_kernels", "test_native_build", "test_triton_kernels", "test_gpu_kernels"
}


def pytest_make_parametrize_id(config, val, argname):
    from kernel_checks import Backend

    return val.id if isinstance(val, Backend) else None


@pytest.fixture(autouse=True)
def kernel_test_environment(request):
    if request.module.__name__ not in KERNEL_TEST_MODULES:
        yield
        return
    import contextlib

    from kernel_checks import instruction_set, poisoned_allocations

    callspec = getattr(request.node, "callspec", None)
    isa = getattr(callspec.params.get("backend") if callspec else None, "isa", None)
    with contextlib.ExitStack() as stack:
        if isa is not None:
            stack.enter_context(instruction_set(isa))
        stack.enter_context(poisoned_allocations())
        yield
