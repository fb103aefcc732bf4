"""Numeric feature processors: log counts, quantile buckets, smoothed rates.

Raw rates are misleading for low-exposure items: an item clicked 2 times out
of 2 impressions has a "CTR" of 1.0 and, used as a feature, outranks an item
with 300 clicks out of 1,000. Bayesian smoothing (shrink towards a Beta prior
fitted on all items) and the Wilson lower bound (a pessimistic estimate that
grows with the evidence) both fix this; see seed 000, Q&A 1.
"""

from __future__ import annotations

import numpy as np

#: the prior never counts for more pseudo-trials than this floor when the data is very dispersed
_MIN_PRIOR_STRENGTH = 2.0


def log1p_count(x: np.ndarray) -> np.ndarray:
    """``log(1 + x)`` of counts, negatives clipped to 0; NaN stays NaN.

    Args:
        x: (N,) counts.

    Returns:
        (N,) float64.

    >>> log1p_count(np.array([0, np.e - 1, -3])).round(6).tolist()
    [0.0, 1.0, 0.0]
    """
    x = np.asarray(x, dtype=np.float64)
    return np.log1p(np.clip(x, 0.0, None))


def quantile_boundaries(x: np.ndarray, n_buckets: int) -> np.ndarray:
    """Inner bucket boundaries at the quantiles of ``x`` (NaN and inf ignored).

    Repeated quantiles (many equal values) are merged, so fewer than
    ``n_buckets - 1`` boundaries may come back.

    Args:
        x: (N,) values.
        n_buckets: the wanted number of real buckets (>= 1).

    Returns:
        (<= n_buckets - 1,) float64, strictly increasing; empty when ``x`` has no finite value.

    >>> quantile_boundaries(np.arange(1.0, 9.0), 4).tolist()
    [2.75, 4.5, 6.25]
    """
    if n_buckets < 1:
        raise ValueError(f"n_buckets must be >= 1, got {n_buckets}")
    x = np.asarray(x, dtype=np.float64)
    finite = x[np.isfinite(x)]
    if len(finite) == 0 or n_buckets == 1:
        return np.zeros(0, np.float64)
    qs = np.quantile(finite, np.linspace(0.0, 1.0, n_buckets + 1)[1:-1])
    return np.unique(qs)


def bucketize(x: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
    """Bucket index of each value: 0 for NaN, 1.. for real buckets.

    Bucket ``k >= 1`` holds ``boundaries[k-2] <= x < boundaries[k-1]``, so
    there are ``len(boundaries) + 2`` indices in all (NaN bucket included).

    Args:
        x: (N,) values.
        boundaries: (M,) increasing boundaries, e.g. from :func:`quantile_boundaries`.

    Returns:
        (N,) int64 in ``0..M+1``.

    >>> bucketize(np.array([np.nan, 0.5, 1.0, 1.5, 9.0]), np.array([1.0, 2.0])).tolist()
    [0, 1, 2, 2, 3]
    """
    x = np.asarray(x, dtype=np.float64)
    boundaries = np.asarray(boundaries, dtype=np.float64)
    buckets = np.searchsorted(boundaries, x, side="right").astype(np.int64) + 1
    buckets[np.isnan(x)] = 0
    return buckets


def fit_beta_prior(successes: np.ndarray, trials: np.ndarray) -> tuple[float, float]:
    """Beta(alpha, beta) prior of per-item rates by the method of moments.

    Items with few trials have noisy rates, so the moments are weighted by
    trials and the binomial noise is taken out (the beta-binomial moments):
    with ``p_i = s_i / n_i``, ``m = sum(s) / sum(n)``,
    ``v = sum(n_i (p_i - m)²) / sum(n)`` and ``h = (#items) / sum(n)``,
    the intra-class correlation ``rho = 1 / (alpha + beta + 1)`` solves
    ``v = m (1 - m) (rho + (1 - rho) h)``; then ``alpha + beta = 1 / rho - 1``
    and ``alpha = m (alpha + beta)``. Only items with ``trials > 0`` count.

    Robust cases: no item with trials -> (1, 1); a mean of exactly 0 or 1 is
    nudged inside (0, 1) by ``1 / (sum(n) + 2)``; the prior strength
    ``alpha + beta`` is clipped to ``[2, sum(n)]``. So rates that vary no more
    than binomial noise (zero variance included, where the formula gives
    infinity) get a prior worth all the data, and rates that vary as much as
    possible (all 0 or 1) get the weakest prior.

    Args:
        successes: (N,) clicks / conversions per item.
        trials: (N,) impressions per item.

    Returns:
        (alpha, beta), both > 0.

    >>> a, b = fit_beta_prior(np.array([2, 8]), np.array([10, 10]))
    >>> round(a, 6), round(b, 6)
    (1.230769, 1.230769)
    """
    successes = np.asarray(successes, dtype=np.float64)
    trials = np.asarray(trials, dtype=np.float64)
    if successes.shape != trials.shape:
        raise ValueError(f"successes {successes.shape} and trials {trials.shape} differ in shape")
    seen = trials > 0
    if not seen.any():
        return 1.0, 1.0
    n = trials[seen]
    rates = np.clip(successes[seen] / n, 0.0, 1.0)
    total = float(n.sum())
    raw_mean = float((n * rates).sum() / total)
    var = float((n * (rates - raw_mean) ** 2).sum() / total)
    eps = 1.0 / (total + 2.0)
    mean = float(np.clip(raw_mean, eps, 1.0 - eps))
    noise = len(n) / total
    max_strength = max(total, _MIN_PRIOR_STRENGTH)
    if noise >= 1.0:  # one trial per item: spread and noise cannot be told apart
        strength = _MIN_PRIOR_STRENGTH
    else:
        rho = (var / (mean * (1.0 - mean)) - noise) / (1.0 - noise)
        strength = max_strength if rho <= 0 else 1.0 / rho - 1.0
    strength = float(np.clip(strength, _MIN_PRIOR_STRENGTH, max_strength))
    return mean * strength, (1.0 - mean) * strength


def bayesian_smoothed_rate(
    successes: np.ndarray, trials: np.ndarray, alpha: float, beta: float
) -> np.ndarray:
    """Posterior mean rate ``(successes + alpha) / (trials + alpha + beta)``.

    Args:
        successes: (N,) successes.
        trials: (N,) trials.
        alpha, beta: Beta prior, e.g. from :func:`fit_beta_prior`.

    Returns:
        (N,) float64; items without trials get the prior mean.

    >>> bayesian_smoothed_rate(np.array([2, 0]), np.array([2, 0]), 1.0, 9.0).tolist()
    [0.25, 0.1]
    """
    successes = np.asarray(successes, dtype=np.float64)
    trials = np.asarray(trials, dtype=np.float64)
    return (successes + alpha) / (trials + alpha + beta)


def wilson_lower_bound(successes: np.ndarray, trials: np.ndarray, z: float = 1.96) -> np.ndarray:
    """Lower end of the Wilson score interval of a binomial rate; 0 when trials is 0.

    ``(p + z²/2n - z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)`` with ``p = s / n``
    (Wilson 1927; the 95% interval for the default ``z``).

    Args:
        successes: (N,) successes (clipped into ``[0, trials]``).
        trials: (N,) trials.
        z: normal quantile of the interval.

    Returns:
        (N,) float64 in [0, 1].

    >>> wilson_lower_bound(np.array([1, 0]), np.array([1, 0])).round(4).tolist()
    [0.2065, 0.0]
    """
    successes = np.asarray(successes, dtype=np.float64)
    trials = np.asarray(trials, dtype=np.float64)
    n = np.where(trials > 0, trials, 1.0)
    p = np.clip(successes / n, 0.0, 1.0)
    z2 = z * z
    centre = p + z2 / (2 * n)
    margin = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    bound = (centre - margin) / (1 + z2 / n)
    return np.where(trials > 0, np.clip(bound, 0.0, 1.0), 0.0)
