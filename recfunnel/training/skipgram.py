"""Skip-gram with negative sampling (SGNS) over item sequences.

The objective of word2vec (Mikolov et al., NeurIPS 2013, eq. 4), used on item
sequences by Item2Vec (Barkan & Koenigstein, 2016), on random walks by DeepWalk
and node2vec, and by EGES (Wang et al., KDD 2018, eq. 8) with side information:
for each (centre ``c``, context ``o``) pair within ``window`` positions of a
sequence and ``K`` negatives ``n_k`` drawn from the unigram distribution raised
to 0.75,

    loss = -log sigmoid(h_c . z_o) - sum_k log sigmoid(-h_c . z_{n_k})

``h`` is the input ("centre") representation, ``z`` the output ("context")
embedding. The input representation is an encoder passed in (STYLE principle 3):

* :class:`ItemEmbedding`: one free vector per item (Item2Vec, DeepWalk, node2vec);
* :class:`SideInfoEmbedding`: EGES, an attention-weighted sum of the item-id
  embedding and one embedding per side-information column, with per-item
  weights ``softmax(a_v)`` (Wang et al. 2018, eq. 5-6).

:func:`train_skipgram` owns the optimiser and the data pipeline: per epoch it
shuffles the sequences, subsamples frequent items (word2vec's ``t``), builds the
window pairs vectorised in chunks of sequences, and steps Adam, SparseAdam or
word2vec's plain SGD (closed-form gradients) on mini-batches. Randomness comes from one numpy Generator and one torch
Generator, both seeded from ``config.seed``; the global torch RNG is left alone.
``torch.set_num_threads`` is the caller's business.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from recfunnel.data.graph import Sequences
from recfunnel.errors import ConfigError
from recfunnel.training.progress import progress_enabled

#: tokens per chunk of sequences whose window pairs are built at once (bounds pair memory)
_CHUNK_TOKENS = 1 << 20


@dataclass(frozen=True)
class SkipGramConfig:
    """Options of :func:`train_skipgram`.

    Attributes:
        dim: embedding size.
        window: context positions on each side of the centre. As in word2vec the window
            is dynamic: a context ``o`` positions away is used with probability
            ``(window - o + 1) / window`` (drawn per pair), so near items count more.
        negatives: negatives per positive pair, drawn from counts ** 0.75.
        epochs: passes over the sequences.
        batch_size: positive pairs per optimiser step.
        learning_rate: step size; None picks the optimiser's default (below).
        optimizer: "adam" (dense, default rate 0.01) or "sparse_adam" (sparse
            gradients, lazy moments, default rate 0.01) step on the batch-mean loss
            through autograd. "sgd" is word2vec's update (Mikolov et al. 2013; the C tool
            and gensim): plain SGD on the summed pair losses with a per-pair rate
            (default 0.025) decaying linearly to 1e-4 of it, gradients of the SGNS loss
            taken in closed form; it is about twice as fast per pair and its cost does
            not grow with the catalogue. Dense Adam updates every row at every step
            (O(n_items * dim)), so beyond ~10^5 items use "sgd" or "sparse_adam". On
            ML-100K the dense-Adam vectors retrieve clearly better (recall@50 0.26-0.29
            against 0.15-0.21 for "sgd" / "sparse_adam" in our runs), hence the default.
        subsample: word2vec's frequent-item threshold ``t``: an item with frequency
            ``f`` is kept with probability ``min(1, sqrt(t / f) + t / f)`` each epoch;
            0 disables it. On a catalogue of a few hundred items every item is
            "frequent", so use 0 there.
        seed: seeds the numpy and torch generators.
    """

    dim: int = 32
    window: int = 5
    negatives: int = 5
    epochs: int = 5
    batch_size: int = 1024
    learning_rate: float | None = None
    optimizer: Literal["adam", "sparse_adam", "sgd"] = "adam"
    subsample: float = 1e-3
    seed: int = 0

    @property
    def step_size(self) -> float:
        """The learning rate in effect."""
        if self.learning_rate is not None:
            return self.learning_rate
        return 0.025 if self.optimizer == "sgd" else 0.01

    def validate(self, where: str = "skipgram") -> None:
        """Raise :class:`~recfunnel.errors.ConfigError` on an invalid option."""
        for name in ("dim", "window", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}: {name} must be >= 1, got {getattr(self, name)}")
        if self.negatives < 0:
            raise ConfigError(f"{where}: negatives must be >= 0, got {self.negatives}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ConfigError(f"{where}: learning_rate must be > 0 or null, got {self.learning_rate}")
        if self.optimizer not in ("sgd", "sparse_adam", "adam"):
            raise ConfigError(f"{where}: optimizer must be 'sgd', 'sparse_adam' or 'adam', got '{self.optimizer}'")
        if not self.subsample >= 0:
            raise ConfigError(f"{where}: subsample must be >= 0, got {self.subsample}")


@dataclass(frozen=True)
class SideInformation:
    """Encoded side information of every item, for :class:`SideInfoEmbedding`.

    Attributes:
        names: column names, one per side-information field.
        codes: per column, (n_items, L_j) int64 vocabulary indices (L_j = 1 for a
            categorical column, the longest list for a multi-value one); 0 = missing.
        vocab_sizes: per column, the embedding table size (largest code + 1 or more).
    """

    names: tuple[str, ...]
    codes: tuple[np.ndarray, ...]
    vocab_sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        if not (len(self.names) == len(self.codes) == len(self.vocab_sizes)):
            raise ValueError("SideInformation names, codes and vocab_sizes differ in length")
        for name, codes, size in zip(self.names, self.codes, self.vocab_sizes, strict=True):
            if codes.ndim != 2 or (codes.size and (codes.min() < 0 or codes.max() >= size)):
                raise ValueError(f"SideInformation column '{name}' needs (n_items, L) codes in [0, {size})")


def _uniform_init(weight: torch.Tensor, generator: torch.Generator) -> None:
    # word2vec's input initialisation: U(-0.5 / dim, 0.5 / dim)
    bound = 0.5 / weight.shape[1]
    with torch.no_grad():
        weight.uniform_(-bound, bound, generator=generator)


class ItemEmbedding(nn.Module):
    """One free input vector per item.

    Args:
        n_items: table size.
        dim: vector size.
        sparse: sparse gradients (for SparseAdam).
    """

    def __init__(self, n_items: int, dim: int, sparse: bool = True):
        super().__init__()
        self.embedding = nn.Embedding(n_items, dim, sparse=sparse)

    def initialise(self, generator: torch.Generator) -> None:
        _uniform_init(self.embedding.weight, generator)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """(B,) int64 items -> (B, dim) input vectors."""
        return self.embedding(items)


class SideInfoEmbedding(nn.Module):
    """EGES input: ``H_v = sum_j softmax(a_v)_j W_j[s_j(v)]`` (Wang et al. 2018, eq. 5).

    Slot ``j = 0`` is the item id, slots ``1..m`` the side-information columns; a
    multi-value column contributes the mean of its values' embeddings. ``a_v`` is a
    learned per-item row of ``m + 1`` logits (the paper's ``e^{a_v^j}`` weights), so
    the softmax keeps every weight positive. Missing columns of an item (code 0 only)
    are masked out of its softmax.

    Args:
        n_items: number of items.
        dim: vector size.
        side: encoded side information of the ``n_items`` items.
        sparse: sparse gradients (for SparseAdam).
    """

    def __init__(self, n_items: int, dim: int, side: SideInformation, sparse: bool = True):
        super().__init__()
        self.item = nn.Embedding(n_items, dim, sparse=sparse)
        self.columns = nn.ModuleList([
            nn.EmbeddingBag(size, dim, mode="mean", padding_idx=0, sparse=sparse) for size in side.vocab_sizes
        ])
        self.attention = nn.Embedding(n_items, len(side.codes) + 1, sparse=sparse)
        for j, codes in enumerate(side.codes):
            self.register_buffer(f"codes_{j}", torch.from_numpy(np.ascontiguousarray(codes, np.int64)))

    def initialise(self, generator: torch.Generator) -> None:
        _uniform_init(self.item.weight, generator)
        for bag in self.columns:
            _uniform_init(bag.weight, generator)
            with torch.no_grad():
                bag.weight[0].zero_()  # padding
        with torch.no_grad():
            self.attention.weight.zero_()  # uniform weights to start with

    def _codes(self, j: int) -> torch.Tensor:
        return getattr(self, f"codes_{j}")

    def side_vectors(self, codes: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-column side embeddings of N items and which columns are present.

        Args:
            codes: per column (at least one), (N, L_j) int64 codes (0 = missing).

        Returns:
            ((N, m, dim) embeddings, (N, m) bool presence).
        """
        vectors = [bag(c) for bag, c in zip(self.columns, codes, strict=True)]
        present = [(c > 0).any(dim=1) for c in codes]
        return torch.stack(vectors, dim=1), torch.stack(present, dim=1)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """(B,) int64 items -> (B, dim) ``H_v``."""
        if len(self.columns) == 0:  # no side information: the id embedding alone (DeepWalk)
            return self.item(items)
        side, present = self.side_vectors([self._codes(j)[items] for j in range(len(self.columns))])
        slots = torch.cat([self.item(items).unsqueeze(1), side], dim=1)  # (B, m + 1, dim)
        mask = torch.cat([torch.ones_like(present[:, :1]), present], dim=1)
        weight = torch.softmax(self.attention(items).masked_fill(~mask, float("-inf")), dim=1)
        return (weight.unsqueeze(-1) * slots).sum(dim=1)


class SkipGramModel(nn.Module):
    """An input encoder (centres) and an output embedding (contexts).

    Args:
        encoder: maps (B,) items to (B, dim) input vectors (:class:`ItemEmbedding` or
            :class:`SideInfoEmbedding`); must have ``initialise(generator)``.
        n_items: output table size.
        dim: vector size.
        sparse: sparse gradients of the output table.
    """

    def __init__(self, encoder: nn.Module, n_items: int, dim: int, sparse: bool = True):
        super().__init__()
        self.encoder = encoder
        self.context = nn.Embedding(n_items, dim, sparse=sparse)

    def initialise(self, generator: torch.Generator) -> None:
        self.encoder.initialise(generator)
        with torch.no_grad():
            self.context.weight.zero_()  # word2vec starts the output vectors at zero

    def forward(self, centres: torch.Tensor, contexts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) centres and (B, 1 + K) contexts -> ((B, dim) h, (B, 1 + K, dim) z)."""
        return self.encoder(centres), self.context(contexts)


def sgns_loss(centre: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """Mean negative-sampling loss.

    Args:
        centre: (B, dim) input vectors h_c.
        context: (B, 1 + K, dim) output vectors: the positive first, then K negatives.

    Returns:
        scalar ``mean_b [-log sig(h.z_pos) - sum_k log sig(-h.z_k)]``.
    """
    logits = torch.bmm(context, centre.unsqueeze(-1)).squeeze(-1)  # (B, 1 + K)
    sign = torch.ones_like(logits)
    sign[:, 1:] = -1.0
    return -nn.functional.logsigmoid(sign * logits).sum(dim=1).mean()


def window_pairs(sequences: Sequences, window: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(centre, context) pairs within ``window`` positions, both directions, vectorised.

    A pair ``o`` positions apart is kept with probability ``(window - o + 1) / window``
    (word2vec's dynamic window, drawn per pair); pairs of an item with itself are dropped.

    Args:
        sequences: S sequences.
        window: largest distance.
        rng: numpy generator.

    Returns:
        (centres (P,), contexts (P,)) int64.

    >>> seqs = Sequences(np.array([1, 2, 3, 9]), np.array([0, 3, 4]))
    >>> c, o = window_pairs(seqs, 1, np.random.default_rng(0))
    >>> sorted(zip(c.tolist(), o.tolist()))
    [(1, 2), (2, 1), (2, 3), (3, 2)]
    """
    items = sequences.items
    seq = sequences.sequence_index
    centres, contexts = [], []
    for offset in range(1, window + 1):  # a loop over distances; each is vectorised over tokens
        left = np.arange(max(len(items) - offset, 0))
        keep = seq[left] == seq[left + offset]
        if offset > 1:
            keep &= rng.random(len(left)) < (window - offset + 1) / window
        a, b = items[left[keep]], items[left[keep] + offset]
        distinct = a != b
        centres += [a[distinct], b[distinct]]
        contexts += [b[distinct], a[distinct]]
    if not centres:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(centres), np.concatenate(contexts)


@dataclass
class SkipGramResult:
    """What :func:`train_skipgram` reports.

    Attributes:
        losses: mean loss of each epoch.
        centre_counts: (n_items,) int64 how many pairs had each item as centre over
            training; items at 0 never received a gradient (their id vectors are untrained).
    """

    losses: list[float] = field(default_factory=list)
    centre_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _sgd_step(model: SkipGramModel, centres: torch.Tensor, targets: torch.Tensor, lr: float) -> float:
    """One word2vec update on a batch; returns the summed loss.

    With ``g = label - sigmoid(h . z)`` (label 1 for the positive, 0 for negatives)
    the negative gradients of the pair loss are ``g h`` for ``z`` and ``sum_k g_k z_k``
    for ``h`` (the C tool's ``neu1e``, taken before ``z`` moves). Plain item tables are
    updated with ``index_add_``; any other encoder gets ``dL/dh`` through autograd.
    """
    plain = isinstance(model.encoder, ItemEmbedding)
    flat = targets.reshape(-1)
    with torch.no_grad():
        z = model.context.weight.index_select(0, flat).view(*targets.shape, -1)  # (B, 1 + K, dim)
    if plain:
        with torch.no_grad():
            h = model.encoder.embedding.weight.index_select(0, centres)
    else:
        h = model.encoder(centres)
    with torch.no_grad():
        hd = h.detach()
        logits = (z * hd.unsqueeze(1)).sum(-1)
        sign = torch.ones_like(logits)
        sign[:, 1:] = -1.0
        loss = -nn.functional.logsigmoid(sign * logits).sum()
        g = (sign > 0).to(logits.dtype) - torch.sigmoid(logits)  # (B, 1 + K)
        ascent_h = (g.unsqueeze(-1) * z).sum(dim=1)
        model.context.weight.index_add_(0, flat, (g.unsqueeze(-1) * hd.unsqueeze(1)).view(len(flat), -1), alpha=lr)
        if plain:
            model.encoder.embedding.weight.index_add_(0, centres, ascent_h, alpha=lr)
    if not plain:
        h.backward(-ascent_h)
        with torch.no_grad():
            for param in model.encoder.parameters():
                if param.grad is not None:
                    param.add_(param.grad, alpha=-lr)
                    param.grad = None
    return float(loss)


def train_skipgram(
    model: SkipGramModel,
    sequences: Sequences,
    config: SkipGramConfig,
    *,
    progress: bool | None = None,
) -> SkipGramResult:
    """Fit ``model`` with SGNS on the window pairs of ``sequences``.

    Args:
        model: the model to train in place; its parameters are (re-)initialised from
            ``config.seed`` first. With "adam" its embeddings must be dense
            (``sparse=False``), with "sparse_adam" sparse.
        sequences: item sequences (sessions or walks); items index ``model.context``.
        config: training options.
        progress: show a tqdm bar over mini-batches (None: inside
            :func:`~recfunnel.training.progress.show_progress`, as a funnel fit sets it).

    Returns:
        per-epoch mean pair losses and the number of pairs each item was the centre of.

    >>> seqs = Sequences(np.array([0, 1, 0, 1, 2, 3, 2, 3]), np.array([0, 4, 8]))
    >>> model = SkipGramModel(ItemEmbedding(4, 8, sparse=False), 4, 8, sparse=False)
    >>> result = train_skipgram(model, seqs, SkipGramConfig(dim=8, window=1, epochs=2, batch_size=4, subsample=0))
    >>> len(result.losses), result.centre_counts.tolist()
    (2, [6, 6, 6, 6])
    """
    config.validate()
    sparse = any(getattr(m, "sparse", False) for m in model.modules())
    if config.optimizer == "adam" and sparse:
        raise ConfigError("skipgram: optimizer 'adam' needs dense embeddings (sparse=False); "
                          "use 'sparse_adam' or 'sgd' with sparse ones")
    if config.optimizer == "sparse_adam" and not all(
            m.sparse for m in model.modules() if isinstance(m, nn.Embedding | nn.EmbeddingBag)):
        raise ConfigError("skipgram: optimizer 'sparse_adam' needs sparse embeddings (sparse=True)")
    n_items = model.context.num_embeddings
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model.initialise(generator)
    model.train()

    counts = np.bincount(sequences.items, minlength=n_items).astype(np.float64)
    total = counts.sum()
    # negatives ~ count ** 0.75 (Mikolov et al. 2013, §2.2), drawn by inverse CDF
    noise_cdf = np.cumsum(counts ** 0.75)
    keep_prob = np.ones(n_items)
    if config.subsample > 0 and total > 0:
        # word2vec's subsampling of frequent tokens (the C implementation's formula)
        ratio = config.subsample / np.maximum(counts / total, 1e-12)
        keep_prob = np.minimum(1.0, np.sqrt(ratio) + ratio)

    lr = config.step_size
    optimiser: torch.optim.Optimizer | None = None
    if config.optimizer == "sparse_adam":
        optimiser = torch.optim.SparseAdam(list(model.parameters()), lr=lr)
    elif config.optimizer == "adam":
        optimiser = torch.optim.Adam(model.parameters(), lr=lr)

    result = SkipGramResult(centre_counts=np.zeros(n_items, np.int64))
    if n_items == 0 or len(sequences) == 0 or noise_cdf[-1] <= 0:
        return result
    if progress is None:
        progress = progress_enabled()
    bar = tqdm(desc="skip-gram", unit="batch", disable=not progress, leave=False)
    for epoch in range(config.epochs):  # loops over epochs, chunks and batches only
        shuffled = sequences.take(rng.permutation(len(sequences)))
        if config.subsample > 0:
            shuffled = shuffled.keep(rng.random(len(shuffled.items)) < keep_prob[shuffled.items])
        n_tokens = max(len(shuffled.items), 1)
        ends = np.searchsorted(shuffled.indptr, np.arange(_CHUNK_TOKENS, n_tokens, _CHUNK_TOKENS))
        bounds = np.unique(np.r_[0, ends, len(shuffled)])
        epoch_loss, epoch_pairs = 0.0, 0
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            centres, contexts = window_pairs(shuffled.take(np.arange(lo, hi)), config.window, rng)
            perm = rng.permutation(len(centres))
            centres, contexts = centres[perm], contexts[perm]
            result.centre_counts += np.bincount(centres, minlength=n_items)
            chunk_start, chunk_tokens = shuffled.indptr[lo], shuffled.indptr[hi] - shuffled.indptr[lo]
            for start in range(0, len(centres), config.batch_size):
                c = centres[start:start + config.batch_size]
                u = rng.random((len(c), config.negatives)) * noise_cdf[-1]
                negatives = np.minimum(np.searchsorted(noise_cdf, u, side="right"), n_items - 1)
                targets = np.concatenate([contexts[start:start + config.batch_size, None], negatives], axis=1)
                c_t, targets_t = torch.from_numpy(c), torch.from_numpy(targets)
                if optimiser is None:
                    # word2vec's linear decay over all training, floored at 1e-4 of the start rate
                    done = (epoch + (chunk_start + chunk_tokens * start / len(centres)) / n_tokens) / config.epochs
                    epoch_loss += _sgd_step(model, c_t, targets_t, lr * max(1.0 - done, 1e-4))
                else:
                    h, z = model(c_t, targets_t)
                    loss = sgns_loss(h, z)
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
                    epoch_loss += float(loss.detach()) * len(c)
                epoch_pairs += len(c)
                bar.update(1)
        result.losses.append(epoch_loss / epoch_pairs if epoch_pairs else math.nan)
    bar.close()
    model.eval()
    return result


__all__ = [
    "ItemEmbedding", "SideInfoEmbedding", "SideInformation", "SkipGramConfig", "SkipGramModel",
    "SkipGramResult", "sgns_loss", "train_skipgram", "window_pairs",
]
