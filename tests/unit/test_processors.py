from __future__ import annotations

import math

import numpy as np
import pytest

from recfunnel.features.processors import (
    bayesian_smoothed_rate,
    bucketize,
    fit_beta_prior,
    log1p_count,
    quantile_boundaries,
    wilson_lower_bound,
)


def test_log1p_count():
    out = log1p_count(np.array([0, 1, 9, -2, np.nan]))
    assert out[:4] == pytest.approx([0.0, math.log(2), math.log(10), 0.0])
    assert np.isnan(out[4])


def test_quantile_boundaries_and_bucketize():
    x = np.array([1.0, 2, 3, 4, 5, 6, 7, 8, np.nan, np.inf])
    b = quantile_boundaries(x, 4)
    assert b.tolist() == [2.75, 4.5, 6.25]
    assert bucketize(np.array([np.nan, 0.0, 2.75, 3.0, 4.5, 100.0]), b).tolist() == [0, 1, 2, 2, 3, 4]
    assert bucketize(np.array([np.nan, 5.0]), np.zeros(0)).tolist() == [0, 1]


def test_quantile_boundaries_merge_repeated_values():
    x = np.array([0.0] * 90 + list(range(1, 11)))
    b = quantile_boundaries(x, 10)
    assert (np.diff(b) > 0).all() and len(b) < 9
    assert quantile_boundaries(np.array([np.nan]), 5).size == 0
    assert quantile_boundaries(np.array([1.0, 2.0]), 1).size == 0
    with pytest.raises(ValueError):
        quantile_boundaries(x, 0)


def test_fit_beta_prior_method_of_moments():
    # m = .5, v = .09, h = 2/20: rho = (.09/.25 - .1) / .9 = 13/45, strength = 45/13 - 1 = 32/13
    alpha, beta = fit_beta_prior(np.array([2, 8, 7]), np.array([10, 10, 0]))
    assert alpha == pytest.approx(16 / 13) and beta == pytest.approx(16 / 13)
    # m = .25, v = .0625 (trial-weighted), h = 2/40: rho = (1/3 - 1/20) / (19/20) = 17/57
    alpha, beta = fit_beta_prior(np.array([0, 10]), np.array([20, 20]))
    assert alpha + beta == pytest.approx(57 / 17 - 1) and alpha / (alpha + beta) == pytest.approx(0.25)


def test_fit_beta_prior_spread_within_binomial_noise_gives_strong_prior():
    # rates .1 .2 .3 out of 10 trials each are well within binomial noise of .2
    alpha, beta = fit_beta_prior(np.array([1, 2, 3]), np.array([10, 10, 10]))
    assert (alpha, beta) == pytest.approx((6.0, 24.0))


def test_fit_beta_prior_degenerate_cases():
    assert fit_beta_prior(np.array([0, 0]), np.array([0, 0])) == (1.0, 1.0)
    # zero variance: the prior is worth all 40 trials, mean .25
    alpha, beta = fit_beta_prior(np.array([5, 5]), np.array([20, 20]))
    assert alpha == pytest.approx(10.0) and beta == pytest.approx(30.0)
    # all rates 0: mean nudged to 1/(40+2), prior strength capped at the 40 trials
    alpha, beta = fit_beta_prior(np.array([0, 0]), np.array([20, 20]))
    assert alpha > 0 and beta > 0 and alpha + beta == pytest.approx(40.0)
    # rates 0 and 1 only: over-dispersed, weakest prior (strength 2)
    alpha, beta = fit_beta_prior(np.array([0, 3]), np.array([3, 3]))
    assert (alpha, beta) == pytest.approx((1.0, 1.0))


def test_smoothing_ranks_low_exposure_items_sensibly():
    # seed 000 Q&A 1: an item with 2 clicks in 2 impressions must not outrank one with 300 / 1000
    rates = np.linspace(0.05, 0.35, 50)
    successes = np.append(np.round(rates * 1000), [2, 300])
    trials = np.append(np.full(50, 1000), [2, 1000])
    alpha, beta = fit_beta_prior(successes, trials)
    smoothed = bayesian_smoothed_rate(successes, trials, alpha, beta)
    assert smoothed[-2] < smoothed[-1] and smoothed[-1] == pytest.approx(0.3, abs=0.01)
    wilson = wilson_lower_bound(np.array([1, 300]), np.array([1, 1000]))
    assert wilson[0] < wilson[1]


def test_bayesian_smoothed_rate_hand_values():
    out = bayesian_smoothed_rate(np.array([2, 0, 10]), np.array([2, 0, 10]), 1.0, 9.0)
    assert out.tolist() == pytest.approx([3 / 12, 1 / 10, 11 / 20])


def test_wilson_lower_bound_hand_values():
    # s=1, n=1: (1 + z²/2 - z * z/2) / (1 + z²) = 1 / (1 + 1.96²)
    # s=5, n=10: p=.5 -> (.5 + .19208 - 1.96 * sqrt(.025 + .0096040)) / 1.38416
    expected = [1 / (1 + 1.96**2), (0.5 + 0.19208 - 1.96 * math.sqrt(0.025 + 0.009604)) / 1.38416, 0.0, 0.0]
    got = wilson_lower_bound(np.array([1, 5, 0, 0]), np.array([1, 10, 0, 7]))
    assert got.tolist() == pytest.approx(expected)
