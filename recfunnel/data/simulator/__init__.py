"""A synthetic note/video feed platform with ground truth.

``simulate(config, out_dir)`` writes users, items (with content vectors), a
session-by-session exposure log with clicks and post-click actions, the clicked
interactions, and the hidden parameters; :class:`Oracle` answers the true
relevance of any (user, item) pair, which MovieLens-style logs cannot. The
generative model is documented in ``docs/simulator.md``.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as out:
...     summary = simulate(SimulatorConfig(n_users=40, n_items=400, n_days=2, n_authors=10), out,
...                        progress=False, target_exposures=500)
...     oracle = Oracle.load(out)
>>> summary.n_exposures, bool(0.0 <= oracle.relevance(["u0"], ["i0"])[0] <= 1.0)
(500, True)
"""

from __future__ import annotations

from recfunnel.data.simulator.config import START_TIME, SimulatorConfig
from recfunnel.data.simulator.generate import EXPOSURE_SCHEMA, SimulationSummary, simulate
from recfunnel.data.simulator.oracle import Oracle, TopItems

__all__ = [
    "EXPOSURE_SCHEMA",
    "START_TIME",
    "Oracle",
    "SimulationSummary",
    "SimulatorConfig",
    "TopItems",
    "simulate",
]
