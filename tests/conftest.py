"""Test configuration shared by the whole suite.

Without a GPU, the Triton kernels run on CPU tensors through Triton's interpreter. The
interpreter must be chosen before ``sed_kernels.triton`` is imported, so it is set here,
before any test module imports the package.
"""

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
