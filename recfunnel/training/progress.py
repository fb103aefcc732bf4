"""Whether long training steps show progress bars, for the duration of a fit.

:func:`~recfunnel.pipeline.offline.fit.fit_funnel` runs its stages inside
``show_progress(progress)``; trainers deep inside a stage (the skip-gram trainer of the
embedding channels, implicit's ALS and BPR) ask :func:`progress_enabled` instead of
taking a flag through every ``fit(data)`` signature. A context variable, like
``torch.no_grad``: it is scoped to the ``with`` block and to the thread (or task)
that entered it, so a fit in one thread never turns on bars in another.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_SHOW: contextvars.ContextVar[bool] = contextvars.ContextVar("recfunnel_show_progress", default=False)


def progress_enabled() -> bool:
    """True inside ``show_progress(True)``."""
    return _SHOW.get()


@contextlib.contextmanager
def show_progress(enabled: bool = True) -> Iterator[None]:
    """Show (or hide) the trainers' progress bars inside the block.

    >>> with show_progress():
    ...     progress_enabled()
    True
    >>> progress_enabled()
    False
    """
    token = _SHOW.set(bool(enabled))
    try:
        yield
    finally:
        _SHOW.reset(token)
