"""Worker processes end when the command that started them is killed (sed_model.workers)."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from sed_model.workers import exit_with_parent

POOL_SCRIPT = textwrap.dedent("""
    import multiprocessing
    import os
    import sys
    import time
    from concurrent.futures import ProcessPoolExecutor

    from sed_model.workers import exit_with_parent


    def long_task(pid_file):
        with open(pid_file + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(pid_file + ".tmp", pid_file)
        time.sleep(120)


    if __name__ == "__main__":
        initializer = exit_with_parent if sys.argv[2] == "watch" else None
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=initializer) as pool:
            pool.submit(long_task, sys.argv[1])
            time.sleep(120)
""")


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _worker_after_parent_killed(tmp_path: Path, mode: str) -> int:
    """Start a pool whose worker sleeps in a task, SIGKILL the pool's process, and return the
    worker's pid."""
    script, pid_file = tmp_path / "pool.py", tmp_path / "worker.pid"
    script.write_text(POOL_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file), mode], cwd=tmp_path)
    try:
        assert _wait_for(pid_file.exists, 60), "the worker never started its task"
        worker = int(pid_file.read_text())
        assert _running(worker)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(30)
    return worker


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states in /proc")
def test_a_worker_ends_when_its_parent_is_killed(tmp_path):
    worker = _worker_after_parent_killed(tmp_path, "watch")
    assert _wait_for(lambda: not _running(worker), 10), "the worker outlived its parent"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states in /proc")
def test_without_the_watch_the_worker_outlives_its_parent(tmp_path):
    """The failure the watch prevents: a plain pool's busy worker goes on alone."""
    worker = _worker_after_parent_killed(tmp_path, "plain")
    try:
        time.sleep(2)
        assert _running(worker)
    finally:
        os.kill(worker, signal.SIGKILL)


def test_outside_a_multiprocessing_worker_it_starts_no_watch():
    exit_with_parent()  # the test process has no multiprocessing parent
    assert "exit-with-parent" not in {t.name for t in threading.enumerate()}
