"""Child processes: the one worker command line, and children that cannot outlive the harness process that started them.

A runner killed with -9 gets no chance to clean up, so its children must arrange their
own end: the kernel sends them SIGKILL when their parent dies (``PR_SET_PDEATHSIG``).
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

from harness.paths import PROJECT_ROOT

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Call in a child (e.g. a pool initializer or ``preexec_fn``): SIGKILL it when its parent dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:   # not glibc Linux: nothing to arrange
        return
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:
        # The parent died between fork and prctl: the signal will never come.
        os._exit(1)


def quiet_child() -> None:
    """A pool child of the runner: dies with it, and leaves Ctrl-C to the runner.

    The terminal sends SIGINT to the whole foreground group; the runner stops its pools
    itself, so the children ignoring it avoids a traceback from each of them.
    """
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# The backends' worker: every caller (executors, ensembles' test-time augmentation,
# export) spells its command line through these two, so it exists once.
WORKER_MODULE = "backends.worker"


def worker_command(*args: str) -> list[str]:
    """``python -m backends.worker ARGS...`` with this interpreter."""
    return [sys.executable, "-m", WORKER_MODULE, *map(str, args)]


def worker_env() -> dict:
    """This process's environment with the project on ``PYTHONPATH`` (the worker imports ``backends``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env
