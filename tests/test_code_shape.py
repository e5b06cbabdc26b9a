"""The shape of the code: no function body longer than MAX_BODY_LINES lines.

Add a package to PACKAGES to hold it to the same limit. Triton kernels (``@triton.jit``)
are exempt: a kernel is one program, and splitting it into jitted helpers changes nothing a
reader gains from.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["sed_model", "sed_kernels"]  # folders under the repository root
MAX_BODY_LINES = 80


def is_triton_kernel(node: ast.FunctionDef) -> bool:
    return any("jit" in ast.unparse(decorator) for decorator in node.decorator_list)


def function_lengths(folder: Path):
    """(file:line name, body lines) of every function and method in ``folder``'s .py files;
    the body runs from its first statement (the docstring included) to its last line."""
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not is_triton_kernel(
                node
            ):
                where = f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
                yield where, node.end_lineno - node.body[0].lineno + 1


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_is_longer_than_the_limit(package):
    lengths = list(function_lengths(ROOT / package))
    assert lengths, f"no functions found in {package}"
    too_long = [f"{where}: {n} lines" for where, n in lengths if n > MAX_BODY_LINES]
    assert not too_long, f"function bodies over {MAX_BODY_LINES} lines:\n" + "\n".join(too_long)
