"""The training commands' allocator setting: freed tensor memory is reused, not unmapped."""

import platform
import subprocess
import sys

import pytest

# Allocates and frees a 64 MiB tensor 20 times and prints the process's minor page faults
# during the loop: without the setting glibc serves blocks above its dynamic mmap threshold
# (at most 32 MiB) with mmap and unmaps them when freed, so each round faults fresh pages in
# (16384 of 4 KiB); with it the same pages come back once the heap has grown.
PROBE = """
import resource, sys, torch
from sed_model.runtime import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
for _ in range(8):  # the heap settles in a few rounds
    torch.ones(16 << 20).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(16 << 20).sum()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                          timeout=120, check=True)
    kept, faults = done.stdout.split()
    return kept, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc's mallopt is Linux/glibc only; elsewhere the setting is a no-op")
def test_keep_freed_memory_stops_refaulting_freed_tensors():
    kept, faults_kept = _faults("keep")
    _, faults_default = _faults("default")
    assert kept == "True"
    # glibc's default maps every round afresh: at least one fault per round (16384 with 4 KiB
    # pages, 32 where the kernel backs the block with 2 MiB transparent huge pages)
    assert faults_default >= 20
    assert faults_kept < faults_default / 10


def test_keep_freed_memory_is_a_no_op_off_linux(monkeypatch):
    from sed_model import runtime

    monkeypatch.setattr(runtime.sys, "platform", "darwin")
    assert runtime.keep_freed_memory() is False
