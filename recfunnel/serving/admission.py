"""Admission control: a request that cannot be answered within its budget is refused at once.

Under overload a request waits for a worker before any stage runs. The budget of
:class:`~recfunnel.pipeline.online.runners.BudgetedRun` counts from the request's
arrival (the service passes it), so the stages see what is left; but when what is
left is less than what a request usually costs, running it only delays the
requests behind it, and its answer would come after the budget anyway. Those
requests get ``503`` with ``Retry-After`` instead (the client can retry elsewhere or
later), and the rest are answered in time.

The usual cost is an exponentially weighted mean of the handling time of the
requests served (from the handler's start to the answer), so it follows the model
and the machine without tuning.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class Admission:
    """Whether a request may start, from its arrival time and the usual cost of a request.

    Args:
        budget_s: the end-to-end budget.
        smoothing: weight of the newest observation in the cost's moving average.
        enabled: False admits every request (the budget still bounds the stages).

    >>> a = Admission(budget_s=0.1)
    >>> a.refusal(arrived=0.0, now=0.05) is None  # no cost known yet: admitted
    True
    >>> a.observe(0.03)
    >>> a.refusal(arrived=0.0, now=0.05) is None  # 50 ms left, a request costs 30 ms
    True
    >>> a.refusal(arrived=0.0, now=0.08)  # 20 ms left
    'cannot answer within the budget: 20 ms of 100 ms left, a request takes about 30 ms'
    """

    budget_s: float
    smoothing: float = 0.1
    enabled: bool = True

    def __post_init__(self) -> None:
        self._cost: float | None = None
        self._lock = threading.Lock()

    @property
    def cost(self) -> float | None:
        """The usual handling time of a request, seconds (None before the first one)."""
        return self._cost

    def observe(self, seconds: float) -> None:
        """Count the handling time of one answered request."""
        with self._lock:
            self._cost = seconds if self._cost is None else self._cost + self.smoothing * (seconds - self._cost)

    def refusal(self, arrived: float, now: float) -> str | None:
        """Why a request that arrived at ``arrived`` may not start at ``now`` (None: it may)."""
        cost = self._cost
        if not self.enabled or cost is None:
            return None
        left = arrived + self.budget_s - now
        if left >= cost:
            return None
        return (f"cannot answer within the budget: {max(left, 0.0) * 1e3:.0f} ms of {self.budget_s * 1e3:.0f} ms "
                f"left, a request takes about {cost * 1e3:.0f} ms")
