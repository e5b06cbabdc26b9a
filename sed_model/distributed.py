"""Data-parallel training across processes: ``torchrun --nproc-per-node N -m sed_model.train``.

A single process (no ``WORLD_SIZE`` in the environment, or ``WORLD_SIZE=1``) is the world of
one: every helper here then does nothing, so the trainer has one code path.

Choices (the paper trains on one GPU and says nothing about these):

* Process group: NCCL when the run trains on CUDA (each rank takes GPU ``LOCAL_RANK``), gloo
  on the CPU. torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous.
* Batches: every rank builds the same global batch (the batch order is a function of the
  seed, the fold and the epoch) and takes a disjoint contiguous shard of it
  (:func:`shard`). Each rank's loss is its shard's summed cross-entropy divided by the
  *global* batch size and multiplied by the world size; DDP averages the gradients over
  ranks, so the gradient is that of the global batch's mean loss — the same step as a
  single process with the same batch size and seed, up to floating-point summation order.
  A rank whose shard is empty (a last batch smaller than the world) runs its forward pass
  on one row with the loss multiplied by 0, so it still joins the gradient all-reduce.
* Evaluation is sharded too: each rank predicts every ``world``-th evaluation batch and the
  predictions are summed across ranks, so every rank holds the same, complete metrics.
* Files: only rank 0 extracts features first (the others wait on a barrier, then read the
  cache), writes checkpoints, JSON, plots and prints progress. Resuming reads ``last.pt``
  on every rank, so the run folder must be on a file system all ranks see.
* Collective timeout: 2 hours, not NCCL's 10 minutes: the other ranks wait in a collective
  while rank 0 extracts the features of a whole corpus on a cold cache.
* A user error on rank 0 (bad data, existing run folder) is sent to the other ranks
  (:func:`main_first`), so all of them stop with the same message instead of hanging.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

from .errors import SedError

T = TypeVar("T")
COLLECTIVE_TIMEOUT = timedelta(hours=2)  # covers rank 0's feature extraction on a cold cache


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that writes files and prints.

    Before the process group is joined, torchrun's ``RANK`` tells (so the command line can
    print before training starts)."""
    if dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


def launched_distributed() -> bool:
    """Whether torchrun (or another launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device) -> torch.device:
    """Join the process group torchrun describes; returns the device this rank trains on.

    Does nothing in a single process. On CUDA each rank uses GPU ``LOCAL_RANK``.
    """
    if not launched_distributed() or dist.is_initialized():
        return device
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise SedError(f"LOCAL_RANK {local_rank} but torch sees {torch.cuda.device_count()} "
                           f"GPU(s); start at most that many processes per node")
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank),
                                timeout=COLLECTIVE_TIMEOUT)
        return torch.device("cuda", local_rank)
    dist.init_process_group("gloo", timeout=COLLECTIVE_TIMEOUT)
    return device


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shard(indices: np.ndarray, rank_: int | None = None, world: int | None = None) -> np.ndarray:
    """This rank's contiguous, disjoint part of the global batch ``indices``.

    The shards of all ranks concatenate to ``indices``; sizes differ by at most one.
    """
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    return np.array_split(np.asarray(indices), world)[rank_]


def main_first(work: Callable[[], T], *, then_others: bool = False) -> T | None:
    """Run ``work`` on rank 0 first; a :class:`SedError` there is raised on every rank.

    ``then_others=True``: the other ranks run ``work`` after rank 0 succeeded (feature
    extraction: rank 0 fills the cache, the others read it); otherwise they return None.
    """
    if not dist.is_initialized():
        return work()
    result, message = None, [None]
    if is_main():
        try:
            result = work()
        except SedError as exc:
            message = [str(exc)]
    dist.broadcast_object_list(message, src=0)
    if message[0] is not None:
        if is_main():
            raise SedError(message[0])
        raise SedError(f"(rank 0) {message[0]}")
    if not is_main() and then_others:
        result = work()
    return result


def sum_across_ranks(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of ``values`` over all ranks (in place; returns it).

    NCCL reduces CUDA tensors only: a CPU tensor makes a round trip through this rank's GPU.
    """
    if not dist.is_initialized():
        return values
    if dist.get_backend() == "nccl" and values.device.type != "cuda":
        on_gpu = values.cuda()
        dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
        values.copy_(on_gpu.cpu())
    else:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values
