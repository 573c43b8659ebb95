"""A polite stop: SIGTERM (what ``timeout``, Slurm and Kubernetes send before they kill) handled as
Ctrl-C, so a long command stopped that way says what finished and how to resume, and writes what
it has, instead of dying mid-line. The signal is passed on as SIGINT, so whoever handles Ctrl-C
handles it: Python's ``KeyboardInterrupt`` in ``raysteal run``, Ray Tune's own graceful stop (last
experiment checkpoint) in ``raysteal tune``. Where SIGINT is ignored (a command started in the
background by a script: such a job starts with SIGINT ignored), ``KeyboardInterrupt`` is raised
directly, so SIGTERM still stops it politely.

``ray.init`` installs handlers of its own for SIGTERM (Python's ``sys.exit`` and the core worker's
crash reporter, which aborts the process); :func:`reclaim_sigterm`, called right after it, puts
ours back while a :func:`terminate_as_interrupt` block is open."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_OPEN_BLOCKS = [0]


def _interrupt(signum, frame) -> None:
    if callable(signal.getsignal(signal.SIGINT)):  # Python's KeyboardInterrupt, or Tune's graceful stop
        signal.raise_signal(signal.SIGINT)
        return
    # SIGINT ignored (a background job of a non-interactive shell, ``nohup raysteal run ... &``,
    # starts with SIGINT ignored) or left at the default: passing it on would do nothing, or kill
    raise KeyboardInterrupt


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM is handled as SIGINT (``KeyboardInterrupt`` in the main thread,
    unless something handles SIGINT otherwise); the previous
    handler comes back afterwards. Outside the main thread (where Python cannot set handlers) it
    changes nothing."""
    if not _in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    _OPEN_BLOCKS[0] += 1
    try:
        yield
    finally:
        _OPEN_BLOCKS[0] -= 1
        signal.signal(signal.SIGTERM, previous)


def reclaim_sigterm() -> None:
    """Inside a :func:`terminate_as_interrupt` block, make SIGTERM an interrupt again (after
    something, such as ``ray.init``, replaced the handler); elsewhere nothing."""
    if _OPEN_BLOCKS[0] and _in_main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
