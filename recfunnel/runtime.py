"""How many CPUs this process may use, and thread pools sized to match.

A container often sees the host's cores (``os.cpu_count()`` 64) while its cgroup
lets it run on two: torch, OpenMP (faiss, LightGBM) and numba then start a thread
per host core, and the threads wait on each other far more than they work (a fit
that takes a minute took twenty). :func:`available_cpus` reads the limits that
really apply: the CPU affinity mask and the cgroup CPU quota (v2 ``cpu.max``, v1
``cpu.cfs_quota_us``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

#: environment variables that size the thread pools of the libraries recfunnel uses
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup quota (None: no quota, or not readable)."""
    try:
        text = (root / "cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process can run on: the affinity mask, capped by the cgroup quota (at least 1)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat (None where unreadable)."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def idle_cpus(n_cpus: int, sample_seconds: float = 0.2) -> float:
    """How many of the machine's CPUs were idle over a short sample (``n_cpus`` where unknown).

    Measured machine-wide, before this process starts working, so it is the other
    processes' load that it sees.
    """
    import time

    first = _cpu_times()
    if first is None:
        return float(n_cpus)
    time.sleep(sample_seconds)
    second = _cpu_times()
    if second is None or second[1] <= first[1]:
        return float(n_cpus)
    machine = os.cpu_count() or n_cpus
    busy_share = (second[0] - first[0]) / (second[1] - first[1])
    return max(0.0, min(float(n_cpus), machine * (1.0 - busy_share)))


def threads_for_this_run() -> int:
    """The CPUs available (:func:`available_cpus`) less those other processes keep busy now.

    Two threads on two cores where another process holds one run 2.5x slower than one
    thread (torch's OpenMP threads wait on the one that is not scheduled: the default
    funnel's fit went from 35 s to 135 s, one thread took 45 s; BENCHMARKS.md).
    """
    n = available_cpus()
    if n == 1:
        return 1
    return max(1, min(n, int(idle_cpus(n) + 0.4)))


def configure_threads(n: int | None = None) -> int:
    """Size the thread pools to ``n`` CPUs (default :func:`threads_for_this_run`); returns ``n``.

    Sets the environment variables of :data:`THREAD_VARIABLES` that the user has not set
    (read by OpenMP, MKL, OpenBLAS and numba when they load), and torch's intra-op
    threads when torch is already imported. A variable the user set wins, so
    ``OMP_NUM_THREADS=1 recfunnel fit ...`` still means one thread.
    """
    import sys

    user_set = os.environ.get("OMP_NUM_THREADS", "")
    if user_set.isdigit() and int(user_set) > 0:
        n = int(user_set)
    elif n is None:
        n = threads_for_this_run()
    n = max(1, int(n))
    for name in THREAD_VARIABLES:
        # numba refuses more threads than the machine's CPUs
        value = min(n, os.cpu_count() or n) if name == "NUMBA_NUM_THREADS" else n
        os.environ.setdefault(name, str(value))
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
