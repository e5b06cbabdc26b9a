"""Test configuration shared by the whole suite.

Without a GPU, the Triton kernels run on CPU tensors through Triton's interpreter. The
interpreter must be chosen before ``sed_kernels.triton`` is imported, so it is set here,
before any test module imports the package.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
