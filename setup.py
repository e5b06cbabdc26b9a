"""Build of the native kernels in ``csrc/``; project metadata lives in ``pyproject.toml``.

Two pybind11 extension modules, compiled with ninja (parallel, incremental) and without
torch: the kernels take raw pointers, sizes, strides and the CUDA stream handle, so neither
module links libtorch and a build survives a torch upgrade.

- ``sed_kernels._cpu`` (always): C++17 + OpenMP. ``csrc/cpu/kernels.cpp`` is compiled once
  per instruction set (x86-64: AVX-512, AVX2+FMA, baseline SSE2; other machines: baseline)
  and the module picks the best one the running CPU supports, so no ``-march=native`` is
  needed and the build runs on any CPU of the architecture.
- ``sed_kernels._cuda`` (when ``nvcc`` is on PATH or in ``$CUDA_HOME/bin``): CUDA C++ for
  the architectures in ``SED_KERNELS_CUDA_ARCH`` (plus PTX of the highest, for newer GPUs),
  linked against the static CUDA runtime, so it needs only the NVIDIA driver at run time.
  A machine without a GPU still compiles it.

Environment variables:

- ``SED_KERNELS_BUILD_CUDA``: ``0`` skips the CUDA module, ``1`` requires it (error when nvcc
  is missing or the CUDA compile fails); unset builds it when nvcc is found and, if that
  compile fails, warns and installs the rest.
- ``SED_KERNELS_CUDA_ARCH``: compute capabilities, ``;`` or ``,`` separated, e.g. ``80;90``
  (the default) or ``80;86;89;90``.
- ``SED_KERNELS_CXXFLAGS``: extra flags for compiling and linking the C++ code (e.g.
  ``-O1 -g -fsanitize=address`` for a sanitizer build).
- ``MAX_JOBS``: parallel compile jobs (default: the number of CPUs).
- ``CXX``: the C++ compiler (default: the one Python was built with); also nvcc's host compiler.

Development: ``pip install -e .`` or ``python setup.py build_ext --inplace``; ninja rebuilds
only what changed (build files in ``build/``).
"""

from __future__ import annotations

import concurrent.futures
import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent.resolve()
CPU_MODULE = "sed_kernels._cpu"
CUDA_MODULE = "sed_kernels._cuda"
DEFAULT_CUDA_ARCHS = "80;90"
PTXAS_REPORT = "_cuda_ptxas.txt"  # written next to sed_kernels._cuda

# Flags of each CPU instruction-set variant of csrc/cpu/kernels.cpp (see csrc/cpu/kernels.h).
X86_ISA_FLAGS = {
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c"],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "baseline": [],
}

CPU_SOURCES = ["csrc/cpu/bindings.cpp", "csrc/cpu/kernels.cpp"]
CPU_HEADERS = ["csrc/cpu/kernels.h", "csrc/cpu/simd.h", "csrc/common/pointers.h"]
CUDA_SOURCES = [
    "csrc/cuda/bindings.cpp",
    "csrc/cuda/time_attention.cu",
    "csrc/cuda/feature_attention.cu",
]
CUDA_HEADERS = ["csrc/cuda/launchers.h", "csrc/cuda/common.cuh", "csrc/common/pointers.h"]


class BuildError(RuntimeError):
    """A native build step failed; the message says which and how to change it."""


def build_cuda_mode() -> str:
    """'skip', 'force' or 'auto' from SED_KERNELS_BUILD_CUDA."""
    value = os.environ.get("SED_KERNELS_BUILD_CUDA", "").strip()
    modes = {"": "auto", "0": "skip", "1": "force"}
    if value not in modes:
        raise BuildError(f"SED_KERNELS_BUILD_CUDA is {value!r}; expected 0, 1 or unset")
    return modes[value]


def find_nvcc() -> Path | None:
    """nvcc on PATH, else in $CUDA_HOME/bin (or $CUDA_PATH/bin)."""
    found = shutil.which("nvcc")
    if found:
        return Path(found)
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(variable)
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return Path(home) / "bin" / "nvcc"
    return None


def cuda_home(nvcc: Path) -> Path:
    """The CUDA toolkit root of ``nvcc``: $CUDA_HOME, else what nvcc reports (it may be a
    wrapper script outside the toolkit), else nvcc's grandparent directory."""
    if os.environ.get("CUDA_HOME"):
        return Path(os.environ["CUDA_HOME"])
    dry_run = subprocess.run(
        [str(nvcc), "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
        capture_output=True,
        text=True,
    )
    for line in (dry_run.stdout + dry_run.stderr).splitlines():
        if line.startswith("#$ TOP="):
            return Path(line.removeprefix("#$ TOP=").strip()).resolve()
    return nvcc.parent.parent


def cuda_archs() -> list[str]:
    """Compute capabilities from SED_KERNELS_CUDA_ARCH, e.g. ['80', '90']."""
    value = os.environ.get("SED_KERNELS_CUDA_ARCH", DEFAULT_CUDA_ARCHS)
    archs = [a.strip().removeprefix("sm_") for a in value.replace(",", ";").split(";") if a.strip()]
    bad = [a for a in archs if not (a[:-1].isdigit() if a.endswith("a") else a.isdigit())]
    if not archs or bad:
        raise BuildError(
            f"SED_KERNELS_CUDA_ARCH is {value!r}; expected compute capabilities such as '80;90'"
        )
    return archs


def find_ninja() -> str | None:
    """The ninja executable: on PATH (pip's build environment puts it there) or the package's."""
    found = shutil.which("ninja")
    if found:
        return found
    try:
        import ninja  # noqa: PLC0415  (build requirement; optional for setup.py build_ext)
    except ImportError:
        return None
    candidate = Path(ninja.BIN_DIR) / "ninja"
    return str(candidate) if candidate.is_file() else None


def cxx_compiler() -> list[str]:
    return shlex.split(os.environ.get("CXX") or sysconfig.get_config_var("CXX") or "c++")


@dataclass
class Step:
    """One command of the build: compile or link ``inputs`` into ``output``."""

    rule: str  # "cxx", "nvcc" or "link"
    output: Path
    inputs: list[Path]
    flags: list[str] = field(default_factory=list)


@dataclass
class ModulePlan:
    name: str
    steps: list[Step]
    optional: bool  # failure warns instead of stopping the install

    @property
    def library(self) -> Path:
        return self.steps[-1].output


class NinjaBuildExt(build_ext):
    """Compiles csrc/ with ninja (per-object flags, parallel, incremental), torch-free."""

    def run(self) -> None:
        super().run()
        if not self.inplace:
            self.copy_into_source_tree()

    def copy_into_source_tree(self) -> None:
        """Put the built modules beside the package sources too, as ``--inplace`` does.

        A user who installed with ``pip install .`` and works from the checkout's root imports
        ``sed_kernels`` from the source tree (the working directory comes first on
        ``sys.path``); without the compiled modules there, every fused CPU/CUDA backend
        would be missing.
        """
        for ext in self.extensions:
            built = Path(self.get_ext_fullpath(ext.name))
            self.inplace = True
            try:
                target = ROOT / self.get_ext_fullpath(ext.name)  # relative to the checkout
            finally:
                self.inplace = False
            if not built.exists() or not target.parent.is_dir():
                continue
            try:  # a new file renamed into place: a process that has the old one loaded keeps it
                partial = target.with_name(target.name + ".partial")
                shutil.copy2(built, partial)
                os.replace(partial, target)
                print(f"copied {built.name} into the source tree ({target.parent})")
            except OSError as error:
                print(f"WARNING: could not copy {built.name} to {target}: {error}", file=sys.stderr)

    def build_extensions(self) -> None:
        build_dir = Path(self.build_temp).resolve() / "sed_kernels"
        build_dir.mkdir(parents=True, exist_ok=True)
        self.cxx = cxx_compiler()
        plans = []
        for ext in self.extensions:
            library = Path(self.get_ext_fullpath(ext.name)).resolve()
            library.parent.mkdir(parents=True, exist_ok=True)
            if ext.name == CPU_MODULE:
                plans.append(self.cpu_plan(build_dir / "cpu", library))
            elif ext.name == CUDA_MODULE:
                plans.append(self.cuda_plan(build_dir / "cuda", library))
        self.run_plans(build_dir, plans)
        self.write_ptxas_report(plans)

    def write_ptxas_report(self, plans: list[ModulePlan]) -> None:
        """PTXAS_REPORT next to the CUDA module: the ptxas -v output of its compiles
        (registers, spill bytes, shared memory per kernel; read by the tests)."""
        for plan in plans:
            if plan.name != CUDA_MODULE or plan.name not in {e.name for e in self.extensions}:
                continue
            logs = [Path(f"{s.output}.ptxas.txt") for s in plan.steps if s.rule == "nvcc"]
            text = "".join(p.read_text() for p in logs if p.is_file())
            (plan.library.parent / PTXAS_REPORT).write_text(text)

    def copy_extensions_to_source(self) -> None:  # --inplace, editable installs
        super().copy_extensions_to_source()
        report = Path(self.build_lib) / "sed_kernels" / PTXAS_REPORT
        if report.is_file() and CUDA_MODULE in {e.name for e in self.extensions}:
            shutil.copyfile(report, ROOT / "sed_kernels" / PTXAS_REPORT)

    # -- what to build ---------------------------------------------------------------------
    def common_cxx_flags(self) -> list[str]:
        import pybind11  # noqa: PLC0415  (build requirement)

        return [
            "-std=c++17",
            "-O3",
            "-fPIC",
            "-fvisibility=hidden",
            # Each product and sum rounded as written, as in the eager formulas: a fused
            # multiply-add in a cancelling difference (the softmax backward's da - sum(a * da))
            # gave 3x eager's dW error in the AVX2 build, none in the SSE2 one.
            "-ffp-contract=off",
            "-DNDEBUG",
            "-Wall",
            "-Wextra",
            f"-I{sysconfig.get_paths()['include']}",
            f"-I{pybind11.get_include()}",
            *shlex.split(os.environ.get("SED_KERNELS_CXXFLAGS", "")),
        ]

    def link_flags(self) -> list[str]:
        flags = ["-shared"]
        if sys.platform == "darwin":
            flags += ["-undefined", "dynamic_lookup"]
        return flags + shlex.split(os.environ.get("SED_KERNELS_CXXFLAGS", ""))

    def openmp_flags(self, build_dir: Path) -> list[str]:
        """-fopenmp if the compiler accepts it; else warn (the kernels then run on one thread)."""
        probe = build_dir / "openmp_probe.cpp"
        probe.write_text(
            "#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n"
        )
        result = subprocess.run(
            [*self.cxx, "-fopenmp", str(probe), "-o", str(build_dir / "openmp_probe")],
            capture_output=True,
            text=True,
        )
        if result.returncode == 0:
            return ["-fopenmp"]
        print(
            f"WARNING: {' '.join(self.cxx)} does not accept -fopenmp "
            f"({result.stderr.strip()[:300]});"
            " building sed_kernels._cpu without OpenMP: its kernels will use one thread.",
            file=sys.stderr,
        )
        return []

    def cpu_plan(self, build_dir: Path, library: Path) -> ModulePlan:
        build_dir.mkdir(parents=True, exist_ok=True)
        openmp = self.openmp_flags(build_dir)
        flags = self.common_cxx_flags() + openmp
        x86 = platform.machine().lower() in ("x86_64", "amd64")
        isas = X86_ISA_FLAGS if x86 else {"baseline": []}
        steps = [Step("cxx", build_dir / "bindings.o", [ROOT / "csrc/cpu/bindings.cpp"], flags)]
        for isa, isa_flags in isas.items():
            steps.append(
                Step(
                    "cxx",
                    build_dir / f"kernels_{isa}.o",
                    [ROOT / "csrc/cpu/kernels.cpp"],
                    [*flags, f"-DSED_CPU_ISA={isa}", *isa_flags],
                )
            )
        objects = [step.output for step in steps]
        steps.append(Step("link", library, objects, self.link_flags() + openmp))
        return ModulePlan(CPU_MODULE, steps, optional=False)

    def cuda_plan(self, build_dir: Path, library: Path) -> ModulePlan:
        build_dir.mkdir(parents=True, exist_ok=True)
        nvcc = find_nvcc()
        toolkit = cuda_home(nvcc)
        archs = cuda_archs()
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
        highest = max(archs, key=lambda a: int(a.rstrip("a")))
        gencode.append(f"-gencode=arch=compute_{highest},code=compute_{highest}")
        host_flags = "-fPIC,-fvisibility=hidden"
        nvcc_flags = [
            "-std=c++17",
            "-O3",
            "-lineinfo",
            f"-Xcompiler={host_flags}",
            "--threads=0",
            *gencode,
        ]
        if os.environ.get("CXX"):
            nvcc_flags.append(f"-ccbin={self.cxx[0]}")
        nvcc_flags.append("-Xptxas=-v")  # per-kernel registers/spills/smem: see PTXAS_REPORT
        self.nvcc = str(nvcc)
        steps = [
            Step("cxx", build_dir / "bindings.o", [ROOT / "csrc/cuda/bindings.cpp"],
                 self.common_cxx_flags()),
            Step("nvcc", build_dir / "time_attention.o", [ROOT / "csrc/cuda/time_attention.cu"],
                 nvcc_flags),
            Step("nvcc", build_dir / "feature_attention.o",
                 [ROOT / "csrc/cuda/feature_attention.cu"], nvcc_flags),
        ]  # fmt: skip
        targets = sorted((toolkit / "targets").glob("*/lib"))
        lib_dirs = [toolkit / "lib64", toolkit / "lib", *targets]
        link = self.link_flags()
        link += [f"-L{d}" for d in lib_dirs if d.is_dir()]
        link += ["-lcudart_static", "-ldl", "-lrt", "-lpthread"]
        steps.append(Step("link", library, [s.output for s in steps], link))
        return ModulePlan(CUDA_MODULE, steps, optional=build_cuda_mode() == "auto")

    # -- running it ------------------------------------------------------------------------
    def command(self, step: Step) -> list[str]:
        inputs = [str(p) for p in step.inputs]
        if step.rule == "cxx":
            return [*self.cxx, *step.flags, "-c", *inputs, "-o", str(step.output)]
        if step.rule == "nvcc":
            # ptxas -v output goes to <object>.ptxas.txt; other compiler output shows as usual.
            log = shlex.quote(f"{step.output}.ptxas.txt")
            script = (f'"$@" 2> {log}; status=$?; '
                      f"grep -v -e '^ptxas info' -e 'bytes stack frame' {log} >&2; exit $status")
            return ["sh", "-c", script, "nvcc", self.nvcc, *step.flags, "-c", *inputs, "-o",
                    str(step.output)]
        return [*self.cxx, *inputs, "-o", str(step.output), *step.flags]

    def run_plans(self, build_dir: Path, plans: list[ModulePlan]) -> None:
        jobs = int(os.environ.get("MAX_JOBS") or os.cpu_count() or 1)
        ninja = find_ninja()
        if ninja is not None:
            steps = [(self.command(step), step) for plan in plans for step in plan.steps]
            write_ninja_file(build_dir / "build.ninja", steps)
            # -k 0: keep going, so that an optional module's failure does not stop the others;
            # then ninja, now up to date for everything that built, says which module failed.
            subprocess.run([ninja, "-C", str(build_dir), "-k", "0", "-j", str(jobs)])
            built = {
                plan.name: subprocess.run(
                    [ninja, "-C", str(build_dir), str(plan.library)], capture_output=True
                ).returncode
                == 0
                for plan in plans
            }
        else:
            built = {plan.name: self.run_without_ninja(plan, jobs) for plan in plans}
        for plan in plans:
            if built[plan.name]:
                continue
            if not plan.optional:
                raise BuildError(
                    f"building {plan.name} failed (compiler output above); see setup.py for the "
                    "environment variables that change the build"
                )
            print(
                f"WARNING: building {plan.name} failed (compiler output above); installing without "
                "it. Set SED_KERNELS_BUILD_CUDA=0 to skip it or =1 to make this an error.",
                file=sys.stderr,
            )
            self.extensions = [e for e in self.extensions if e.name != plan.name]

    def run_without_ninja(self, plan: ModulePlan, jobs: int) -> bool:
        print(f"ninja not found: compiling {plan.name} without it (no incremental rebuilds)")
        compiles = [s for s in plan.steps if s.rule != "link"]
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            codes = list(pool.map(lambda s: subprocess.run(self.command(s)).returncode, compiles))
        if any(codes):
            return False
        return subprocess.run(self.command(plan.steps[-1])).returncode == 0


def write_ninja_file(path: Path, commands: list[tuple[list[str], Step]]) -> None:
    """One ninja build edge per step, with compiler-generated header dependencies."""

    def escape(p: Path) -> str:
        return str(p).replace("$", "$$").replace(" ", "$ ").replace(":", "$:")

    lines = ["ninja_required_version = 1.3", ""]
    for rule in ("cxx", "nvcc", "link"):
        lines += [f"rule {rule}", "  command = $cmd", f"  description = {rule.upper()} $out"]
        if rule != "link":  # compilers write the headers they read to $out.d
            lines += ["  depfile = $out.d", "  deps = gcc"]
        lines.append("")
    for command, step in commands:
        if step.rule == "cxx":
            command = [*command, "-MMD", "-MF", f"{step.output}.d"]
        elif step.rule == "nvcc":
            command = [*command, "-MD", "-MF", f"{step.output}.d"]
        inputs = " ".join(escape(p) for p in step.inputs)
        lines.append(f"build {escape(step.output)}: {step.rule} {inputs}")
        lines.append(f"  cmd = {shlex.join(command).replace('$', '$$')}")
        lines.append("")
    text = "\n".join(lines)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def extensions() -> list[Extension]:
    """The modules to build; the sources are compiled by NinjaBuildExt, not setuptools."""
    modules = [Extension(CPU_MODULE, sources=CPU_SOURCES, depends=CPU_HEADERS)]
    mode = build_cuda_mode()
    if mode != "skip":
        if find_nvcc() is not None:
            modules.append(Extension(CUDA_MODULE, sources=CUDA_SOURCES, depends=CUDA_HEADERS))
        elif mode == "force":
            raise BuildError(
                "SED_KERNELS_BUILD_CUDA=1 but nvcc was found neither on PATH nor in "
                "$CUDA_HOME/bin; install the CUDA toolkit or unset the variable"
            )
        else:
            print("nvcc not found (PATH, $CUDA_HOME/bin): building without sed_kernels._cuda")
    return modules


if __name__ == "__main__":  # as pip and setuptools run it; tests import find_nvcc from here
    setup(ext_modules=extensions(), cmdclass={"build_ext": NinjaBuildExt})
