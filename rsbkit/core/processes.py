"""Child processes that end with the process that started them.

``rsbkit run`` starts papermill, papermill starts a Jupyter kernel, the kernel may start torchrun and loader
workers. Killed with SIGKILL (what ``subprocess.run``'s timeout, a cluster's hard limit or the OOM killer sends),
a parent runs no clean-up: without help its papermill would be re-parented to PID 1 and its kernel would go on
training, unseen, and slow whatever runs next. Each child rsbkit starts therefore asks the kernel (Linux's
``PR_SET_PDEATHSIG``) for a signal when its parent dies: papermill and torchrun get SIGTERM and end; a Jupyter
kernel ends within a second of its papermill (ipykernel polls its parent, ``JPY_PARENT_PID``), and torch's loader
workers end with their process. Elsewhere than Linux there is no such signal and nothing changes.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from typing import Optional

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(sig: int = signal.SIGTERM) -> Optional[Callable[[], None]]:
    """A ``preexec_fn`` for :class:`subprocess.Popen` that has the child sent `sig` when the thread that started it
    ends (with its process); None where the platform has no such request. The thread that calls Popen must outlive
    the child (it does when it waits for it)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child may not import or allocate much
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl: nothing would signal us
            os.kill(os.getpid(), sig)

    return preexec
