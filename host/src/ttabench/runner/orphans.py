"""Worker processes die with their parent: no orphan keeps computing (and holding memory)
after the driver is killed, however it is killed.

``die_with_parent(parent_pid)`` runs first in every worker process (a pool initializer):

- on Linux it asks the kernel to send the worker SIGKILL when its parent dies
  (``prctl(PR_SET_PDEATHSIG, SIGKILL)`` through ctypes), which covers ``kill -9``;
- everywhere it starts a daemon thread that checks every ``WATCH_SECONDS`` whether the parent
  is still ``parent_pid`` (an orphan is re-parented, so ``os.getppid()`` changes) and ends the
  process when it is not: the fallback where prctl is missing, or the parent died before the
  kernel request took effect;
- it ignores SIGINT: Ctrl-C in a terminal reaches the whole process group, and the driver
  decides what happens to the cells in flight (it kills the workers).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
WATCH_SECONDS = 0.5


def kernel_kills_on_parent_death() -> bool:
    """``prctl(PR_SET_PDEATHSIG, SIGKILL)`` for this process; False where unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(WATCH_SECONDS)
    os._exit(1)


def die_with_parent(parent_pid: int) -> None:
    """Make this (worker) process end when ``parent_pid`` is no longer its parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    kernel_kills_on_parent_death()
    if os.getppid() != parent_pid:  # the parent died before the request above
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), name="parent-watch", daemon=True).start()
