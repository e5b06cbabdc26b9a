"""Worker processes that stop with the command that started them.

``compare --jobs N`` trains folds, and feature extraction reads audio, in worker processes
of a :class:`concurrent.futures.ProcessPoolExecutor`. A worker finishes the task it holds
whatever happens to its parent, so a command stopped by ``kill PID``, a scheduler's time
limit or the out-of-memory killer would leave its workers training folds on their own for
minutes, writing checkpoints into the run folder that a later ``--resume`` of the same run
trains into too. :func:`exit_with_parent`, given to the pool as its initializer, ends the
worker as soon as its parent process is gone; a fold it was training keeps its last
checkpoint (written atomically), and ``--resume`` continues from there.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from multiprocessing.connection import wait

PARENT_GONE_EXIT_CODE = 3


def exit_with_parent() -> None:
    """In a multiprocessing worker: a daemon thread that waits on the parent process and ends
    this process (exit code :data:`PARENT_GONE_EXIT_CODE`) when the parent ends. Does nothing
    in a process that multiprocessing did not start."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def wait_for_parent() -> None:
        wait([parent.sentinel])
        os._exit(PARENT_GONE_EXIT_CODE)  # no clean-up: the parent that would collect it is gone

    threading.Thread(target=wait_for_parent, name="exit-with-parent", daemon=True).start()
