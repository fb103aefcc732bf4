"""Attention and recurrent blocks of the behaviour-sequence rankers, checked on hand-made inputs."""

from __future__ import annotations

import pytest
import torch

from recfunnel.layers.attention import (
    BilinearTargetAttention,
    MultiHeadTargetAttention,
    TargetAttention,
    TransformerBlock,
    masked_softmax,
)
from recfunnel.layers.sequence import (
    AUGRU,
    AUGRUCell,
    TimeAwareLSTM,
    chronological_intervals,
    chronological_order,
    gather_steps,
    run_packed,
    split_sessions,
)
from recfunnel.stages.rank.models import build_model
from recfunnel.testing.ctr import make_planted_ctr
from recfunnel.training.trainer import torch_threads


@pytest.fixture(autouse=True)
def _seeded_single_thread():
    # one thread: these tensors are tiny, and on a shared machine intra-op threads only wait
    torch.manual_seed(0)
    with torch_threads(1):
        yield


def _keys_and_mask(n: int = 5, length: int = 6, dim: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.arange(length) < torch.tensor([6, 3, 1, 4, 0])[:n, None]  # last row: no history
    keys = torch.randn(n, length, dim) * mask.unsqueeze(-1)
    return keys, mask


@pytest.mark.parametrize("make", [
    lambda: TargetAttention(4, (8,), "dice"),
    lambda: TargetAttention(4, (8,), "prelu", normalize=True),
    lambda: BilinearTargetAttention(4, 4),
    lambda: MultiHeadTargetAttention(4, 4, heads=2),
], ids=["din", "din-softmax", "bilinear", "multi-head"])
def test_target_attention_ignores_padding(make):
    layer = make().eval()
    keys, mask = _keys_and_mask()
    query = torch.randn(5, 4)
    out = layer(query, keys, mask)
    noisy = torch.where(mask.unsqueeze(-1), keys, torch.randn_like(keys) * 100)
    torch.testing.assert_close(layer(query, noisy, mask), out)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[4], torch.zeros_like(out[4]))  # no history: nothing pooled


def test_din_attention_keeps_interest_intensity():
    # no softmax (DIN §4.3): two copies of a behaviour weigh twice as much as one
    layer = TargetAttention(4, (8,), "prelu").eval()
    query, key = torch.randn(1, 4), torch.randn(1, 1, 4)
    one = layer(query, torch.cat([key, torch.zeros(1, 1, 4)], 1), torch.tensor([[True, False]]))
    two = layer(query, torch.cat([key, key], 1), torch.tensor([[True, True]]))
    torch.testing.assert_close(two, 2 * one)


def test_masked_softmax_and_transformer_block_padding():
    scores = torch.randn(3, 4)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True], [False] * 4])
    weights = masked_softmax(scores, mask)
    torch.testing.assert_close(weights.sum(1), torch.tensor([1.0, 1.0, 0.0]))
    assert (weights[~mask] == 0).all()
    block = TransformerBlock(8, heads=2).eval()
    x = torch.randn(3, 4, 8)
    out = block(x, mask)
    assert torch.isfinite(out).all() and (out[~mask] == 0).all()
    noisy = torch.where(mask.unsqueeze(-1), x, torch.randn_like(x) * 100)
    torch.testing.assert_close(block(noisy, mask), out)


def test_augru_with_zero_attention_keeps_the_state():
    cell = AUGRUCell(4, 3)
    x, h = torch.randn(5, 4), torch.randn(5, 3)
    torch.testing.assert_close(cell(x, h, torch.zeros(5)), h)
    assert not torch.allclose(cell(x, h, torch.ones(5)), h)
    # in a sequence: a zero-attention step and padding both leave the state where it was
    layer = AUGRU(4, 3)
    xs = torch.randn(1, 4, 4).expand(2, 4, 4)
    attention = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.9, 0.9]])
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    final = layer(xs, attention, mask)
    torch.testing.assert_close(final[0], final[1])


def test_chronological_order_and_packed_rnn_are_per_row():
    mask = torch.tensor([[True, True, True, False], [True, False, False, False], [False] * 4])
    index, ordered, lengths = chronological_order(mask)
    assert index[0, :3].tolist() == [2, 1, 0] and index[1, 0] == 0
    assert lengths.tolist() == [3, 1, 0] and ordered.sum(1).tolist() == [3, 1, 0]
    x = gather_steps(torch.randn(3, 4, 2) * mask.unsqueeze(-1), index)
    gru = torch.nn.GRU(2, 3, batch_first=True)
    out = run_packed(gru, x, lengths)
    alone, _ = gru(x[:1, :3])
    torch.testing.assert_close(out[0, :3], alone[0])
    assert (out[0, 3] == 0).all() and (out[2] == 0).all()
    # whatever sits in the padding never reaches a real step's output, in either direction
    noisy = x + torch.randn_like(x) * (~ordered).unsqueeze(-1)
    torch.testing.assert_close(run_packed(gru, noisy, lengths), out)
    lstm = torch.nn.LSTM(2, 3, batch_first=True, bidirectional=True)
    both = run_packed(lstm, noisy, lengths)
    alone, _ = lstm(x[:1, :3])
    torch.testing.assert_close(both[0, :3], alone[0])
    assert (both[2] == 0).all()


def test_session_split_on_hand_made_ages():
    minute = 60.0
    # newest first: two behaviours a minute apart, a 2 h gap, three close ones, a 1 h gap, one more, padding
    age = torch.tensor([[1, 2, 122, 123, 125, 185, 0, 0],
                        [5, 100, 101, 0, 0, 0, 0, 0]], dtype=torch.float32) * minute
    mask = torch.tensor([[True] * 6 + [False] * 2, [True] * 3 + [False] * 5])
    sessions = split_sessions(age, mask, gap=30 * minute, max_sessions=3, max_session_length=2)
    assert sessions.mask[0].tolist() == [[True, True], [True, True], [True, False]]
    assert sessions.index[0].tolist() == [[0, 1], [2, 3], [5, 0]]  # position 4 exceeds the session length
    assert sessions.mask[1].tolist() == [[True, False], [True, True], [False, False]]
    assert sessions.index[1][:2].tolist() == [[0, 0], [1, 2]]
    # with only two sessions kept, the oldest one is dropped
    two = split_sessions(age, mask, gap=30 * minute, max_sessions=2, max_session_length=3)
    assert two.index[0].tolist() == [[0, 1, 0], [2, 3, 4]] and int(two.mask[0].sum()) == 5


def test_sim_hard_search_picks_only_same_category_behaviours():
    schema, batch = make_planted_ctr("sequence", n=200)
    model = build_model("sim", schema, {"embed_dim": 8, "hidden": (16,), "top_k": 3}).eval()
    behaviours, target = model.embeddings.sequences_and_targets(batch)
    mask = batch.sequence_mask
    index, selected = model.search(batch, behaviours, target, mask)
    category = batch.sequences["hist_category"]
    target_category = batch.sparse[:, schema.sparse_position("category")]
    picked = category.gather(1, index)
    assert (picked[selected] == target_category.unsqueeze(1).expand_as(picked)[selected]).all()
    same = (category == target_category.unsqueeze(1)) & mask
    # every row gets min(k, its same-category behaviours), the newest ones
    assert selected.sum(1).tolist() == same.sum(1).clamp(max=3).tolist()
    for row in range(20):
        newest = torch.nonzero(same[row]).ravel()[:3].tolist()
        assert index[row][selected[row]].tolist() == newest


def _step_by_step(cell_step, n_steps, state, mask):
    """The reference loop: the cell's one-step forward at each t, padding keeping the state."""
    for t in range(n_steps):
        new = cell_step(t, state)
        keep = mask[:, t].unsqueeze(-1)
        state = tuple(torch.where(keep, a, b) for a, b in zip(new, state, strict=True))
    return state


def test_augru_sequence_equals_stepping_the_cell_values_and_gradients():
    # the layer computes the input side of every step in one product; same numbers as one cell call per step
    layer = AUGRU(4, 3).double()
    x = torch.randn(5, 6, 4, dtype=torch.float64, requires_grad=True)
    attention = torch.rand(5, 6, dtype=torch.float64, requires_grad=True)
    _, mask = _keys_and_mask()
    out = layer(x, attention, mask)
    ref_x, ref_attention = x.detach().clone().requires_grad_(), attention.detach().clone().requires_grad_()
    (ref,) = _step_by_step(lambda t, st: (layer.cell(ref_x[:, t], st[0], ref_attention[:, t]),), 6,
                           (torch.zeros(5, 3, dtype=torch.float64),), mask)
    torch.testing.assert_close(out, ref)
    probe = torch.randn(5, 3, dtype=torch.float64)
    grads = torch.autograd.grad((out * probe).sum(), [x, attention, *layer.parameters()])
    ref_grads = torch.autograd.grad((ref * probe).sum(), [ref_x, ref_attention, *layer.parameters()])
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_time_lstm_sequence_equals_stepping_the_cell_values_and_gradients():
    layer = TimeAwareLSTM(4, 3).double()
    x = torch.randn(5, 6, 4, dtype=torch.float64, requires_grad=True)
    interval = torch.rand(5, 6, dtype=torch.float64) * 1000
    request_gap = torch.rand(5, 6, dtype=torch.float64) * 5000
    _, mask = _keys_and_mask()
    out = layer(x, interval, request_gap, mask)
    ref_x = x.detach().clone().requires_grad_()
    zeros = torch.zeros(5, 3, dtype=torch.float64)
    ref = _step_by_step(lambda t, st: layer.cell(ref_x[:, t], interval[:, t], request_gap[:, t], st), 6,
                        (zeros, zeros, zeros), mask)[0]
    torch.testing.assert_close(out, ref)
    probe = torch.randn(5, 3, dtype=torch.float64)
    grads = torch.autograd.grad((out * probe).sum(), [x, *layer.parameters()])
    ref_grads = torch.autograd.grad((ref * probe).sum(), [ref_x, *layer.parameters()])
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_time_lstm_interval_gate_reads_the_time_between_behaviours():
    layer = TimeAwareLSTM(4, 6)
    x = torch.randn(1, 5, 4)
    mask = torch.ones(2, 5, dtype=torch.bool)
    request_gap = torch.linspace(5000, 100, 5).expand(2, 5)
    interval = torch.tensor([[0, 60, 60, 60, 60], [0, 60, 86400, 60, 60]], dtype=torch.float32)
    out = layer(x.expand(2, 5, 4), interval, request_gap, mask)
    assert not torch.allclose(out[0], out[1])
    same = layer(x.expand(2, 5, 4), interval[:1].expand(2, 5), request_gap, mask)
    torch.testing.assert_close(same[0], same[1])
    # intervals from oldest-first ages
    ages = torch.tensor([[300.0, 200.0, 50.0, 0.0]])
    gaps = chronological_intervals(ages, torch.tensor([[True, True, True, False]]))
    assert gaps.tolist() == [[0.0, 100.0, 150.0, 0.0]]


def test_time_lstm_model_reads_sequence_age():
    schema, batch = make_planted_ctr("sequence", n=16)
    model = build_model("time_lstm", schema, {"embed_dim": 8, "hidden": (16,), "lstm_dim": 8}).eval()
    with torch.no_grad():
        before = model(batch)
        batch.sequence_age = batch.sequence_age * 10
        after = model(batch)
    assert not torch.allclose(before, after)


def test_dien_auxiliary_loss_is_positive_and_trains():
    schema, batch = make_planted_ctr("sequence", n=256)
    model = build_model("dien", schema, {"embed_dim": 8, "hidden": (16,), "alpha": 0.5})
    model.train()

    def aux_loss() -> torch.Tensor:
        torch.manual_seed(1)  # the same sampled negatives for both measurements
        model(batch)
        return model.auxiliary_loss(batch)

    first = aux_loss()
    assert first.ndim == 0 and torch.isfinite(first) and float(first.detach()) > 0
    assert model.auxiliary_loss(batch) is None  # consumed: never added twice
    with torch.no_grad():
        model.eval()
        model(batch)
    assert model.auxiliary_loss(batch) is None  # evaluation computes none
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(20):
        model(batch)
        loss = model.auxiliary_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(aux_loss().detach()) < 0.9 * float(first.detach())
