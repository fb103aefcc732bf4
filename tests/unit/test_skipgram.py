"""Skip-gram with negative sampling: pairs, the word2vec update, planted co-occurrence, EGES input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from recfunnel.data.graph import Sequences
from recfunnel.errors import ConfigError
from recfunnel.training.skipgram import (
    ItemEmbedding,
    SideInfoEmbedding,
    SideInformation,
    SkipGramConfig,
    SkipGramModel,
    _sgd_step,
    sgns_loss,
    train_skipgram,
    window_pairs,
)

N_GROUPS, PER_GROUP = 2, 8


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # two intra-op threads on a busy two-core machine make tiny steps 10x slower
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _planted_sequences(n_sequences: int = 120, length: int = 8, seed: int = 0) -> Sequences:
    """Sequences that each stay within one group of items (group g = items g*8 .. g*8+7)."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, N_GROUPS, n_sequences)
    items = group[:, None] * PER_GROUP + rng.integers(0, PER_GROUP, (n_sequences, length))
    return Sequences(items.ravel(), np.arange(0, n_sequences * length + 1, length))


def _group_separation(vectors: np.ndarray) -> np.ndarray:
    """Per item: mean cosine to its own group minus mean cosine to the other group."""
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cos = v @ v.T
    group = np.arange(len(v)) // PER_GROUP
    same = (group[:, None] == group[None, :]) & ~np.eye(len(v), dtype=bool)
    other = group[:, None] != group[None, :]
    return (cos * same).sum(1) / same.sum(1) - (cos * other).sum(1) / other.sum(1)


def test_window_pairs_stay_within_sequences_and_distance() -> None:
    seqs = Sequences(np.array([0, 1, 2, 3, 4, 5, 6]), np.array([0, 4, 7]))
    centres, contexts = window_pairs(seqs, 2, np.random.default_rng(0))
    position = np.arange(7)  # item i sits at position i
    sequence = np.array([0, 0, 0, 0, 1, 1, 1])
    assert (sequence[centres] == sequence[contexts]).all()
    distance = np.abs(position[centres] - position[contexts])
    assert set(distance.tolist()) <= {1, 2}
    assert (distance == 1).sum() == 2 * 5  # every adjacent pair, both directions
    # pairs of an item with itself carry no signal and are dropped
    c, _ = window_pairs(Sequences(np.array([3, 3, 3]), np.array([0, 3])), 2, np.random.default_rng(0))
    assert len(c) == 0


def test_dynamic_window_keeps_far_pairs_less_often() -> None:
    seqs = Sequences(np.tile(np.arange(50), 200), np.arange(0, 10_001, 50))
    centres, contexts = window_pairs(seqs, 4, np.random.default_rng(0))
    distance = np.abs(centres - contexts)
    per_offset = np.bincount(distance, minlength=5)[1:] / (2 * 200 * (50 - np.arange(1, 5)))
    np.testing.assert_allclose(per_offset, (4 - np.arange(4)) / 4, atol=0.02)


def test_sgns_loss_by_hand() -> None:
    h = torch.tensor([[1.0, 0.0]])
    z = torch.tensor([[[2.0, 0.0], [-1.0, 0.0]]])  # positive logit 2, negative logit -1
    expected = -np.log(1 / (1 + np.exp(-2.0))) - np.log(1 / (1 + np.exp(-1.0)))
    assert float(sgns_loss(h, z)) == pytest.approx(expected, rel=1e-6)


class _WrappedEmbedding(nn.Module):
    """An encoder that is not an ItemEmbedding, so the SGD step goes through autograd."""

    def __init__(self, n: int, dim: int):
        super().__init__()
        self.inner = nn.Embedding(n, dim, sparse=True)

    def initialise(self, generator: torch.Generator) -> None:
        with torch.no_grad():
            self.inner.weight.uniform_(-0.5, 0.5, generator=generator)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return self.inner(items)


def test_closed_form_sgd_step_matches_autograd() -> None:
    n, dim, lr = 6, 4, 0.1
    centres = torch.tensor([0, 1, 0, 5])
    targets = torch.tensor([[1, 2, 3], [0, 4, 4], [2, 1, 5], [3, 0, 1]])
    plain = SkipGramModel(ItemEmbedding(n, dim), n, dim)
    wrapped = SkipGramModel(_WrappedEmbedding(n, dim), n, dim)
    reference = SkipGramModel(_WrappedEmbedding(n, dim), n, dim, sparse=False)
    for model in (plain, wrapped, reference):
        model.initialise(torch.Generator().manual_seed(0))
        with torch.no_grad():
            model.context.weight.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        wrapped.encoder.inner.weight.copy_(plain.encoder.embedding.weight)
        reference.encoder.inner.weight.copy_(plain.encoder.embedding.weight)
    _sgd_step(plain, centres, targets, lr)
    _sgd_step(wrapped, centres, targets, lr)
    # plain SGD on the summed loss with autograd
    h, z = reference(centres, targets)
    (sgns_loss(h, z) * len(centres)).backward()
    with torch.no_grad():
        for param in reference.parameters():
            param -= lr * param.grad.to_dense()
    for model in (plain, wrapped):
        encoder_weight = model.encoder.embedding.weight if model is plain else model.encoder.inner.weight
        torch.testing.assert_close(encoder_weight, reference.encoder.inner.weight)
        torch.testing.assert_close(model.context.weight, reference.context.weight)


@pytest.mark.parametrize("optimizer", ["sgd", "sparse_adam", "adam"])
def test_learns_planted_cooccurrence(optimizer: str) -> None:
    n = N_GROUPS * PER_GROUP
    sparse = optimizer != "adam"
    model = SkipGramModel(ItemEmbedding(n, 16, sparse), n, 16, sparse)
    config = SkipGramConfig(dim=16, window=3, epochs=8, batch_size=128, subsample=0, optimizer=optimizer)
    result = train_skipgram(model, _planted_sequences(), config)
    assert result.losses[-1] < result.losses[0]
    separation = _group_separation(model.encoder.embedding.weight.detach().numpy())
    assert (separation > 0.2).all()


def test_training_is_seeded() -> None:
    def vectors(seed: int) -> np.ndarray:
        model = SkipGramModel(ItemEmbedding(16, 8, sparse=False), 16, 8, sparse=False)
        train_skipgram(model, _planted_sequences(40), SkipGramConfig(dim=8, epochs=2, batch_size=64, seed=seed))
        return model.encoder.embedding.weight.detach().numpy().copy()

    np.testing.assert_array_equal(vectors(3), vectors(3))
    assert not np.array_equal(vectors(3), vectors(4))


def test_untrained_items_are_reported() -> None:
    model = SkipGramModel(ItemEmbedding(5, 4), 5, 4)
    seqs = Sequences(np.array([0, 1, 0, 1, 4]), np.array([0, 4, 5]))  # item 4 alone, 2 and 3 absent
    result = train_skipgram(model, seqs, SkipGramConfig(dim=4, epochs=1, subsample=0, optimizer="sgd"))
    assert (result.centre_counts > 0).tolist() == [True, True, False, False, False]


def _side(n: int) -> SideInformation:
    # column "category": item's group (codes 2, 3); column "tags": up to two tags, item 0 has none
    group = np.arange(n) // PER_GROUP
    tags = np.stack([2 + group, np.where(np.arange(n) % 2 == 0, 4, 0)], axis=1)
    tags[0] = 0
    return SideInformation(("category", "tags"), ((2 + group)[:, None], tags), (4, 5))


def test_side_info_embedding_starts_as_the_mean_of_present_slots() -> None:
    n, dim = 2 * PER_GROUP, 4
    encoder = SideInfoEmbedding(n, dim, _side(n))
    encoder.initialise(torch.Generator().manual_seed(0))
    items = torch.tensor([0, 1, 2])
    out = encoder(items)
    side = _side(n)
    for row, item in enumerate(items.tolist()):
        slots = [encoder.item.weight[item], encoder.columns[0].weight[side.codes[0][item, 0]]]
        tags = [t for t in side.codes[1][item] if t > 0]
        if tags:  # item 0 has no tags: its tag slot is masked out of the softmax
            slots.append(encoder.columns[1].weight[tags].mean(dim=0))
        torch.testing.assert_close(out[row], torch.stack(slots).mean(dim=0))


@pytest.mark.parametrize("optimizer", ["sgd", "sparse_adam", "adam"])
def test_side_info_model_learns_planted_cooccurrence(optimizer: str) -> None:
    n = N_GROUPS * PER_GROUP
    sparse = optimizer != "adam"
    encoder = SideInfoEmbedding(n, 16, _side(n), sparse)
    model = SkipGramModel(encoder, n, 16, sparse)
    config = SkipGramConfig(dim=16, window=3, epochs=6, batch_size=128, subsample=0, optimizer=optimizer)
    result = train_skipgram(model, _planted_sequences(), config)
    assert result.losses[-1] < result.losses[0]
    with torch.no_grad():
        vectors = encoder(torch.arange(n)).numpy()
    assert (_group_separation(vectors) > 0.2).all()
    assert encoder.attention.weight.detach().abs().sum() > 0  # the per-item weights moved


@pytest.mark.parametrize("options", [
    {"dim": 0}, {"window": 0}, {"negatives": -1}, {"epochs": 0}, {"batch_size": 0},
    {"learning_rate": 0.0}, {"optimizer": "rmsprop"}, {"subsample": -1.0},
])
def test_invalid_configs_are_rejected(options: dict) -> None:
    with pytest.raises(ConfigError):
        SkipGramConfig(**options).validate()


def test_optimizer_and_embedding_sparsity_must_agree() -> None:
    seqs = _planted_sequences(4)
    with pytest.raises(ConfigError, match="dense"):
        train_skipgram(SkipGramModel(ItemEmbedding(16, 4), 16, 4), seqs, SkipGramConfig(dim=4, optimizer="adam"))
    dense = SkipGramModel(ItemEmbedding(16, 4, sparse=False), 16, 4, sparse=False)
    with pytest.raises(ConfigError, match="sparse"):
        train_skipgram(dense, seqs, SkipGramConfig(dim=4, optimizer="sparse_adam"))


def test_default_step_sizes() -> None:
    assert SkipGramConfig().step_size == 0.01
    assert SkipGramConfig(optimizer="sgd").step_size == 0.025
    assert SkipGramConfig(optimizer="adam", learning_rate=0.5).step_size == 0.5
