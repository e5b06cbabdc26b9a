"""The training commands' allocator setting: freed tensor memory is reused, not unmapped."""

import platform
import statistics
import subprocess
import sys

import pytest

# Allocates and frees a 64 MiB tensor round after round and prints the process's minor page
# faults in each round: without the setting glibc serves blocks above its dynamic mmap threshold
# (at most 32 MiB) with mmap and unmaps them when freed, so each round faults fresh pages in
# (16384 of 4 KiB); with it the same pages come back once the heap has grown. How many rounds
# the heap takes to stop growing varies from run to run (2 to 5 here, more on a busy machine),
# so the test compares the typical (median) round rather than a total.
PROBE = """
import resource, sys, torch
from sed_model.runtime import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
per_round = []
for _ in range(40):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 << 20).sum()
    per_round.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(kept, *per_round)
"""


def _median_faults_per_round(mode: str) -> tuple[str, float]:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                          timeout=120, check=True)
    kept, *per_round = done.stdout.split()
    return kept, statistics.median(int(faults) for faults in per_round)


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc's mallopt is Linux/glibc only; elsewhere the setting is a no-op")
def test_keep_freed_memory_stops_refaulting_freed_tensors():
    kept, faults_kept = _median_faults_per_round("keep")
    _, faults_default = _median_faults_per_round("default")
    assert kept == "True"
    # glibc's default maps every round afresh: at least one fault per round (16384 with 4 KiB
    # pages, 32 where the kernel backs the block with 2 MiB transparent huge pages)
    assert faults_default >= 1
    # with the setting most rounds reuse the heap's pages and fault none of them
    assert faults_kept < faults_default / 10


def test_keep_freed_memory_is_a_no_op_off_linux(monkeypatch):
    from sed_model import runtime

    monkeypatch.setattr(runtime.sys, "platform", "darwin")
    assert runtime.keep_freed_memory() is False


# Fills the heap with 16 blocks of 32 MiB, each followed by a small block that stays allocated
# (so the freed large blocks cannot merge into the heap's top and be trimmed), frees the large
# ones, and prints whether bound_kept_memory acted and the anonymous memory before and after.
FRAGMENTED_HEAP = """
import sys, torch
from sed_model import runtime
if sys.argv[1] == "keep":
    runtime.keep_freed_memory()
large, pins = [], []
for _ in range(16):
    large.append(torch.ones(8 << 20))
    pins.append(torch.ones(1024))
del large
before = runtime.anonymous_memory()
bounded = runtime.bound_kept_memory(budget=int(sys.argv[2]))
print(bounded, before, runtime.anonymous_memory(), runtime.bound_kept_memory(budget=0))
"""


def _bound(mode: str, budget: int) -> tuple[str, int, int, str]:
    done = subprocess.run([sys.executable, "-c", FRAGMENTED_HEAP, mode, str(budget)],
                          capture_output=True, text=True, timeout=120, check=True)
    bounded, before, after, again = done.stdout.split()
    return bounded, int(before), int(after), again


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc's mallopt and malloc_trim are Linux/glibc only")
def test_a_kept_heap_over_its_budget_is_handed_back_once():
    mib = 1 << 20
    bounded, before, after, again = _bound("keep", 64 * mib)
    assert bounded == "True"
    assert before > 300 * mib  # the freed blocks were kept (about 270 MiB of them here)
    assert after < before - 200 * mib  # and handed back
    assert again == "False"  # once per process: glibc's default ceiling is in force now
    # within its budget the heap is left alone
    bounded, before, after, _ = _bound("keep", 1 << 40)
    assert bounded == "False" and before > 300 * mib and after > before - 10 * mib
    # without keep_freed_memory there is nothing to bound
    bounded, before, _, _ = _bound("default", 0)
    assert bounded == "False" and before < 250 * mib
