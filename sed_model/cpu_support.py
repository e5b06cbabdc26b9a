"""What this CPU's PyTorch build can run, probed once per process.

oneDNN's bfloat16 LSTM exists only on CPUs with AVX-512 (AVX512-BF16 or its emulation on
AVX-512 cores); on an AVX2-only CPU every bf16 LSTM call fails deep inside training with
"could not create a primitive descriptor". The probe runs one tiny LSTM step instead of
guessing from CPU flags, so it follows whatever the installed torch supports.
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def bf16_lstm_supported() -> bool:
    """Whether a bf16 ``nn.LSTM`` forward and backward run on this CPU under autocast."""
    lstm = torch.nn.LSTM(2, 2, batch_first=True)
    x = torch.zeros(1, 2, 2)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = lstm(x)
        out.float().sum().backward()
    except RuntimeError:
        return False
    return True


def bf16_lstm_missing_message() -> str:
    """The one-line explanation for a ``--precision bf16`` run this CPU cannot do."""
    capability = torch.backends.cpu.get_cpu_capability()
    return (
        "precision bf16 on the CPU needs oneDNN's bfloat16 LSTM, which this CPU lacks (it "
        f"needs AVX-512; torch reports {capability}); use --precision fp32 here, or bf16 on "
        "a CUDA GPU"
    )
