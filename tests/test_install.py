"""``pip install .`` as a new user runs it, then everything from the checkout's root.

Python started in the checkout imports ``sed_kernels`` from the source tree, not from the
installed package: the build must leave the compiled modules there too, and when they are
missing anyway the benchmarks must refuse to run instead of timing no fused backend.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

# What a fresh clone holds: no build outputs, no compiled modules, no caches.
IGNORED = shutil.ignore_patterns(
    ".git",
    "build",
    "dist",
    "*.egg-info",
    "*.so",
    "__pycache__",
    ".pytest_cache",
    ".hypothesis",
    ".benchmarks",
    "runs",
    ".venv",
    "venv",
)


@pytest.fixture(scope="module")
def installed_copy(tmp_path_factory):
    """A clean copy of the checkout, installed with ``pip install .`` into a new environment.

    The environment sees this one's packages (torch and the rest are not downloaded again)
    behind its own;
    the build itself runs with pip's default build isolation. The CUDA module is skipped to
    keep the test short: it is built and loaded the same way.
    """
    base = tmp_path_factory.mktemp("install")
    source = base / "checkout"
    shutil.copytree(ROOT, source, ignore=IGNORED)
    environment = base / "env"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # This environment's packages (torch, ...) after the new one's own.
    Path(site, "outer-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {**os.environ, "SED_KERNELS_BUILD_CUDA": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--ignore-installed", "-q", "."],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return source, python


def run_from(root: Path, python: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), *args], cwd=root, capture_output=True, text=True, timeout=600
    )


def test_the_checkout_root_imports_the_compiled_kernels(installed_copy):
    source, python = installed_copy
    code = (
        "import sed_kernels, sed_kernels.cpu as cpu; "
        "print(sed_kernels.__file__); print(','.join(sed_kernels.available_backends('cpu')))"
    )
    done = run_from(source, python, "-W", "error::RuntimeWarning", "-c", code)
    assert done.returncode == 0, done.stderr
    location, backends = done.stdout.split()
    assert Path(location).is_relative_to(source), "expected the source tree to be imported"
    assert "cpu" in backends.split(",")


def test_benchmarks_refuse_to_run_without_an_installed_backend(installed_copy):
    source, python = installed_copy
    for module in (source / "sed_kernels").glob("_cpu.*"):
        module.unlink()  # as in a checkout that was never built in place
    done = run_from(
        source,
        python,
        "-m",
        "pytest",
        "benchmarks/",
        "--collect-only",
        "-q",
        "-p",
        "no:cacheprovider",
    )
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "benchmarks: sed_kernels._cpu is installed" in output, output
    assert "pip install ." in output


def test_the_installed_package_ships_the_bundled_model(installed_copy, tmp_path):
    source, python = installed_copy
    code = "from sed_model.pretrained import bundled_path; print(bundled_path('emodb'))"
    done = run_from(tmp_path, python, "-c", code)  # outside the checkout: the installed copy
    assert done.returncode == 0, done.stderr
    installed = Path(done.stdout.strip())
    assert not installed.is_relative_to(source) and installed.stat().st_size > 100_000
