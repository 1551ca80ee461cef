"""Child processes that end when their parent does, however the parent dies.

A worker supervisor or a ``rescan --local`` run starts pool processes that each load
a model and take work. If the parent is SIGKILLed (an OOM kill, an operator's
``kill -9``), nothing tells them to stop: they were seen still scanning minutes later,
unsupervised, racing a restarted run for the same photos. So every pool process asks
the kernel to signal it when its parent dies (Linux ``PR_SET_PDEATHSIG``), and a
watchdog thread checks the parent's pid once a second as well: PDEATHSIG is tied to
the parent *thread* and absent outside Linux.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
WATCH_INTERVAL_S = 1.0
"""How often the watchdog thread compares the parent pid (the fallback for PDEATHSIG)."""


def end_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to this process as soon as ``parent_pid`` is no longer its parent.

    Call it first thing in a child process; ``parent_pid`` is the parent's
    ``os.getpid()``, passed down, so a parent that died before this call is caught too.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
                log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        except OSError as exc:
            log.warning("cannot set PR_SET_PDEATHSIG: %s", exc)
    if os.getppid() != parent_pid:  # the parent died before we could ask
        os.kill(os.getpid(), sig)
        return
    thread = threading.Thread(target=_watch, args=(parent_pid, sig), name="photosentry-parent-watch", daemon=True)
    thread.start()


def _watch(parent_pid: int, sig: int) -> None:
    stop = threading.Event()
    while not stop.wait(WATCH_INTERVAL_S):
        if os.getppid() != parent_pid:
            log.warning("parent process %d is gone; stopping", parent_pid)
            os.kill(os.getpid(), sig)
            if sig != signal.SIGKILL:
                stop.wait(30.0)  # a graceful stop has this long before the hard one
                os.kill(os.getpid(), signal.SIGKILL)
            return
