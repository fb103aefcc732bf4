from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recfunnel.data.samplers import (
    PopularityNegativeSampler,
    UniformNegativeSampler,
    exposed_not_clicked,
)
from recfunnel.errors import DataError


def test_uniform_shape_range_and_seed():
    a = UniformNegativeSampler(50, seed=3).sample(np.arange(4), 6)
    b = UniformNegativeSampler(50, seed=3).sample(np.arange(4), 6)
    assert a.shape == (4, 6) and a.dtype == np.int64
    assert (a >= 0).all() and (a < 50).all()
    np.testing.assert_array_equal(a, b)
    assert UniformNegativeSampler(5).sample(np.zeros(0, np.int64), 3).shape == (0, 3)


def test_exclusion_is_respected():
    n_users, n_items = 3, 10
    dense = np.zeros((n_users, n_items))
    dense[0, :8] = 1  # user 0 may only get items 8 and 9
    dense[1, ::2] = 1  # user 1 only odd items
    exclude = sp.csr_matrix(dense)
    for sampler in (UniformNegativeSampler(n_items, seed=0),
                    PopularityNegativeSampler(np.arange(1, n_items + 1), seed=0)):
        out = sampler.sample(np.array([0, 1, 2, 0, -1]), 20, exclude=exclude)
        assert set(out[0]) <= {8, 9} and set(out[3]) <= {8, 9}
        assert (out[1] % 2 == 1).all()
        assert out.shape == (5, 20)


def test_exclusion_validates_shape():
    with pytest.raises(ValueError):
        UniformNegativeSampler(5).sample(np.array([0]), 2, exclude=sp.csr_matrix((1, 4)))
    with pytest.raises(ValueError):
        UniformNegativeSampler(5).sample(np.array([3]), 2, exclude=sp.csr_matrix((1, 5)))


def test_popularity_distribution():
    counts = np.array([0, 1, 16, 81])
    sampler = PopularityNegativeSampler(counts, alpha=0.75, seed=0)
    expected = np.array([0, 1, 8, 27]) / 36  # count ** 0.75
    np.testing.assert_allclose(sampler.probability_, expected)
    draws = sampler.sample(np.zeros(2000, np.int64), 10)
    freq = np.bincount(draws.ravel(), minlength=4) / draws.size
    assert freq[0] == 0
    np.testing.assert_allclose(freq, expected, atol=0.01)
    uniform = PopularityNegativeSampler(np.zeros(3), seed=0)
    np.testing.assert_allclose(uniform.probability_, [1 / 3] * 3)


def test_exposed_not_clicked():
    df = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "b", "c"],
            "item_id": ["x", "x", "y", "x", "z", "z"],
            "timestamp": [1, 2, 3, 4, 5, 6],
            "label": [0, 1, 0, 0, 1, 0],
        }
    )
    out = exposed_not_clicked(df)
    # (a, x) was clicked at another time: not a negative; (c, z) was clicked by someone else only
    assert list(zip(out["user_id"], out["item_id"], strict=True)) == [("a", "y"), ("b", "x"), ("c", "z")]
    assert isinstance(out.index, pd.RangeIndex)
    with pytest.raises(DataError, match="label"):
        exposed_not_clicked(df.drop(columns="label"))


def test_user_excluding_everything_keeps_draws():
    exclude = sp.csr_matrix(np.ones((1, 4)))
    out = UniformNegativeSampler(4, seed=0).sample(np.array([0]), 5, exclude=exclude)
    assert out.shape == (1, 5) and ((out >= 0) & (out < 4)).all()
