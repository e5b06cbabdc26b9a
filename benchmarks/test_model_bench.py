"""One training step of each model variant: forward, cross-entropy, backward, Adam step.

Sizes (``harness.MODEL_SIZES``): full = the ``iemocap`` preset (cells [256, 256], batch 64) at
T = 500 frames of 130 features; reduced (CPU) = the ``emodb-cpu`` preset (cells [128, 128],
batch 32) at T = 200 frames. Adam with the preset's lr, betas (0.9, 0.7) and weight decay.
Valid lengths are drawn uniformly from [T/2, T] with the longest row at T (seed 0).

Backends: ``reference`` (``DenseLSTMAttention(backend="reference")``, eager), ``compile``
(``torch.compile`` of that model, default inductor; compiled in the warm-up after
``torch._dynamo.reset()``; the optimizer step stays eager), and each usable fused backend
(the model's ``backend=``; ``triton`` not on CPU, where it would be the interpreter). The
``lstm`` and ``general`` variants have no attention op, so only ``reference`` and ``compile``
run for them.
"""

from __future__ import annotations

import harness
import pytest
import torch
from torch import nn

import sed_kernels

VARIANTS = ("lstm", "general", "time", "feature")
FUSED = ("cpu", "cuda", "triton")
BACKENDS = ("reference", "compile", *FUSED)


def make_batch(
    size: harness.ModelSize, batch: int, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """x (B, T, 130), lengths (B,), labels (B,)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, size.frames, 130, generator=generator)
    lengths = torch.randint(
        max(1, size.frames // 2), size.frames + 1, (batch,), generator=generator
    )
    lengths[0] = size.frames
    labels = torch.randint(0, size.n_classes, (batch,), generator=generator)
    return x.to(device), lengths.to(device), labels.to(device)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_train_step(benchmark, settings, variant, backend):
    from sed_model.model import DenseLSTMAttention
    from sed_model.recipes import get_preset

    device = settings.device
    if backend in FUSED:
        if variant not in ("time", "feature"):
            pytest.skip(f"variant {variant!r} has no attention op: a fused backend changes nothing")
        if backend == "triton" and device.type == "cpu":
            pytest.skip(
                "triton on CPU is Triton's interpreter, a correctness tool: not benchmarked"
            )
        usable = sed_kernels.available_backends(device)
        if backend not in usable:
            pytest.skip(
                f"backend {backend!r} is not usable for {device.type} tensors here "
                f"(usable: {', '.join(usable)})"
            )
    if backend == "compile" and settings.sizes == "smoke" and variant != "feature":
        pytest.skip(harness.SMOKE_COMPILE_SKIP)

    size = settings.model
    preset = get_preset(size.preset).recipe
    cells = size.cells or preset.cells
    batch = size.batch or preset.batch_size
    torch.manual_seed(0)
    model = DenseLSTMAttention(
        size.n_classes,
        variant=variant,
        cells=cells,
        attention_dim=preset.attention_dim,
        dense=preset.dense,
        backend="reference" if backend == "compile" else backend,
    ).to(device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=preset.lr, betas=preset.betas, weight_decay=preset.weight_decay
    )
    forward = model
    if backend == "compile":
        torch._dynamo.reset()
        forward = torch.compile(model)
    x, lengths, labels = make_batch(size, batch, device)
    loss_fn = nn.CrossEntropyLoss()

    def train_step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(forward(x, lengths), labels)
        loss.backward()
        optimizer.step()
        return loss.detach()

    benchmark.extra_info.update(
        suite="model",
        variant=variant,
        backend=backend,
        preset=size.preset,
        cells=list(cells),
        batch=batch,
        frames=size.frames,
        device=device.type,
        sizes=settings.sizes,
    )
    loss = train_step()  # the first warm-up call (compiles)
    assert torch.isfinite(loss), (
        f"{variant}/{backend}: the loss of a training step is {loss.item()}"
    )
    median = harness.measure(
        benchmark, train_step, settings, warmup_calls=2 if backend == "compile" else 1
    )
    if median is not None:
        benchmark.extra_info["steps_per_s"] = 1.0 / median
        benchmark.extra_info.update(harness.peak_memory(train_step, device))
