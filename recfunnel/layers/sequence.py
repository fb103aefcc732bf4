"""Recurrent blocks and helpers for behaviour sequences (DIEN, DSIN, the time-aware LSTM).

Sequences are stored newest first and padded at the end (see
:mod:`recfunnel.layers.inputs`); recurrent models read them oldest -> newest, so
:func:`chronological_order` turns every row into oldest-first, left-aligned
order once. Every loop here runs over time steps with all rows at once, and a
row's state stops changing at its padding, so its final state is the state
after its newest behaviour whatever the batch's longest row is.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from recfunnel.layers.inputs import TensorBatch


def behaviour_ages(batch: TensorBatch) -> torch.Tensor:
    """(N, L) float seconds between each behaviour and the request; zeros when the batch has none.

    Without ages every behaviour counts as just now: one session, no time gaps.
    """
    if batch.sequence_age is not None:
        return batch.sequence_age
    ids = next(iter(batch.sequences.values()))
    return torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)


def chronological_order(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices that put each row's real behaviours oldest first, then its padding.

    Args:
        mask: (N, L) bool, true at real behaviours of a newest-first sequence.

    Returns:
        ``index`` (N, L) int64 for :func:`gather_steps`, the (N, L) mask in the new
        order (true at the first ``length`` slots), ``lengths`` (N,) int64.

    Examples:
        >>> index, mask, lengths = chronological_order(torch.tensor([[True, True, True, False]]))
        >>> index.tolist(), mask.tolist(), lengths.tolist()
        ([[2, 1, 0, 3]], [[True, True, True, False]], [3])
    """
    length = mask.shape[1]
    pos = torch.arange(length, device=mask.device)
    # the oldest real behaviour has the largest newest-first index; padding sorts after all of them
    key = torch.where(mask, length - 1 - pos, length + pos)
    index = torch.argsort(key, dim=1)
    lengths = mask.sum(1)
    return index, pos < lengths.unsqueeze(1), lengths


def gather_steps(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[n, index[n, t], ...]`` for an (N, L, ...) tensor and (N, L) step indices."""
    idx = index.view(*index.shape, *([1] * (x.dim() - 2))).expand(*index.shape, *x.shape[2:])
    return x.gather(1, idx)


def distinct_rows(*tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Rows that repeat across ``tensors`` (integer (N, ...) tensors, compared row by row together).

    At serving, the candidates of one request share the user's behaviour sequence: what
    depends on the sequence alone (DIEN's interest extractor) is computed once per distinct
    row and broadcast back, exactly.

    Returns:
        ``(first, inverse)``: (U,) a row of each distinct value and (N,) the distinct value of
        each row, so ``f(x[first])[inverse] == f(x)`` for a row-wise ``f``; None when no
        row repeats (nothing to gain).

    >>> first, inverse = distinct_rows(torch.tensor([[1, 2], [3, 4], [1, 2]]))
    >>> torch.tensor([[1, 2], [3, 4], [1, 2]])[first][inverse].tolist()
    [[1, 2], [3, 4], [1, 2]]
    >>> len(first)
    2
    """
    rows = torch.cat([t.reshape(t.shape[0], -1).long() for t in tensors], 1)
    n = rows.shape[0]
    if n < 2:
        return None
    # one 64-bit hash per row (wrapping arithmetic), then a check that every row equals its
    # representative: a collision, however unlikely, falls back to computing every row
    weights = torch.randint(1, 2**62, (rows.shape[1],), generator=torch.Generator().manual_seed(7))
    key = (rows * weights).sum(1)
    unique, inverse = torch.unique(key, return_inverse=True)
    if len(unique) == n:
        return None
    first = torch.empty(len(unique), dtype=torch.long).scatter_(0, inverse, torch.arange(n))
    if not torch.equal(rows[first][inverse], rows):
        return None
    return first, inverse


def run_packed(rnn: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Run a batch-first ``nn.GRU`` / ``nn.LSTM`` over left-aligned variable-length sequences.

    A forward-only network runs over the padded batch as it is: its output at a real
    step depends only on the steps before it, and padding comes after every real
    step, so only the padding's outputs (zeroed below) differ. That is about 30%
    faster than packing, forward and backward. A bidirectional network is packed,
    so that each row's backward direction starts at its own newest step, not at the
    padding.

    Args:
        rnn: a ``batch_first`` recurrent module.
        x: (N, L, D) inputs, real steps first.
        lengths: (N,) real steps per row (0 allowed).

    Returns:
        (N, L, H * directions) outputs, zero at padding and for empty rows.
    """
    n, length, _ = x.shape
    if not rnn.bidirectional:
        out, _ = rnn(x)
    else:
        # pack_padded_sequence refuses empty rows: run them over one (ignored) step and zero them below
        packed = pack_padded_sequence(x, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
        out, _ = rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=length)
    valid = torch.arange(length, device=x.device).unsqueeze(0) < lengths.unsqueeze(1)
    return torch.where(valid.unsqueeze(-1), out, torch.zeros_like(out))


class AUGRUCell(nn.Module):
    """GRU with attentional update gate (DIEN, Zhou et al., 2019, eq. 14-15).

    u_t = sigmoid(W_u x_t + U_u h_{t-1} + b_u), r_t = sigmoid(W_r x_t + U_r h_{t-1} + b_r),
    h~_t = tanh(W_h x_t + r_t * (U_h h_{t-1}) + b_h),
    u'_t = a_t * u_t,  h_t = (1 - u'_t) * h_{t-1} + u'_t * h~_t.

    The attention score ``a_t`` scales the whole update gate, so a behaviour
    irrelevant to the target (a_t = 0) leaves the interest state untouched.

    Args:
        input_dim: width of ``x_t``.
        hidden_dim: width of ``h_t``.
    """

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.input_gates = nn.Linear(input_dim, 3 * hidden_dim)
        self.hidden_gates = nn.Linear(hidden_dim, 3 * hidden_dim)

    def forward(self, x: torch.Tensor, h: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """(N, D) input, (N, H) state, (N,) attention -> (N, H) new state."""
        return self.step(self.input_gates(x), h, attention)

    def step(self, input_gates: torch.Tensor, h: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """One step from the input's gate pre-activations ``input_gates(x)`` (N, 3H), computed ahead
        for every step of a sequence at once."""
        xu, xr, xn = input_gates.chunk(3, -1)
        hu, hr, hn = self.hidden_gates(h).chunk(3, -1)
        update = torch.sigmoid(xu + hu) * attention.unsqueeze(-1)
        reset = torch.sigmoid(xr + hr)
        candidate = torch.tanh(xn + reset * hn)
        return (1.0 - update) * h + update * candidate


class AUGRU(nn.Module):
    """An :class:`AUGRUCell` run over left-aligned sequences (loop over time, vectorised over rows).

    Args:
        input_dim: width of the inputs.
        hidden_dim: width of the state.
    """

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.cell = AUGRUCell(input_dim, hidden_dim)
        self.hidden_dim = hidden_dim

    def forward(self, x: torch.Tensor, attention: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, L, D) inputs, (N, L) attention, (N, L) mask -> (N, H) final state (zero for empty rows)."""
        h = x.new_zeros(x.shape[0], self.hidden_dim)
        # the input side of the gates for every step in one product, and the sequences cut into
        # steps once: indexing x[:, t] inside the loop costs a full-size zero tensor per step in
        # the backward pass (SelectBackward), which made DIEN's step quadratic in the length
        steps = zip(self.cell.input_gates(x).unbind(1), attention.unbind(1), mask.unsqueeze(-1).unbind(1),
                    strict=True)
        for gates, a, keep in steps:
            # padding leaves the state as it is, so the final state is the one after the newest behaviour
            h = torch.where(keep, self.cell.step(gates, h, a), h)
        return h


class TimeAwareLSTMCell(nn.Module):
    """LSTM cell with time-interval gates (seed 000 §4.3; Yu et al., IJCAI 2019, SLi-Rec).

    Time features (log-smoothed gaps, phi = tanh):
      d_k = phi(W_d log(1 + (t_k - t_{k-1})) + b_d)   interval since the previous behaviour,
      s_k = phi(W_s log(1 + (t_p - t_k)) + b_s)       gap between the behaviour and the request.
    Gates:
      f_k, i_k = sigmoid(x_k W + h_{k-1} U + b),  c~_k = phi(x_k W_c + h_{k-1} U_c + b_c),
      T_d = sigmoid(x_k W_xd + d_k W_dd + b),  T_s = sigmoid(x_k W_xs + s_k W_ss + b),
      c_k = f_k * T_d * c_{k-1} + i_k * T_s * c~_k,
      o_k = sigmoid(x_k W_xo + d_k W_do + s_k W_so + h_{k-1} W_ho + o_{k-1} W_oo + b_o),
      h_k = o_k * phi(c_k).

    T_d joins the forget gate (a long interval can forget more of the old memory),
    T_s the input gate (a behaviour long before the request can write less). The
    output gate's recurrent term o_{k-1} W_oo is the seed's formula.

    Args:
        input_dim: width of ``x_k``.
        hidden_dim: width of ``h_k`` and ``c_k``.
    """

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.interval_feature = nn.Linear(1, hidden_dim)
        self.request_gap_feature = nn.Linear(1, hidden_dim)
        # x_k feeds f, i, c~, T_d, T_s, o; h_{k-1} feeds f, i, c~, o
        self.input_gates = nn.Linear(input_dim, 6 * hidden_dim)
        self.hidden_gates = nn.Linear(hidden_dim, 4 * hidden_dim, bias=False)
        # d_k feeds T_d and o; s_k feeds T_s and o; o_{k-1} feeds o
        self.interval_gates = nn.Linear(hidden_dim, 2 * hidden_dim, bias=False)
        self.request_gap_gates = nn.Linear(hidden_dim, 2 * hidden_dim, bias=False)
        self.output_recurrence = nn.Linear(hidden_dim, hidden_dim, bias=False)
        # keep-the-memory start (Jozefowicz et al., 2015): bias the forget gate and the interval
        # gate, whose product decides how much memory survives a step, towards 1; at 0.5 * 0.5
        # the memory halves twice per step and only the last behaviour or two would be seen
        with torch.no_grad():
            self.input_gates.bias[:hidden_dim].fill_(1.0)
            self.input_gates.bias[3 * hidden_dim:4 * hidden_dim].fill_(1.0)

    def forward(self, x: torch.Tensor, interval: torch.Tensor, request_gap: torch.Tensor,
                state: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step.

        Args:
            x: (N, D) behaviour.
            interval: (N,) seconds since the previous behaviour (0 for the first).
            request_gap: (N,) seconds between the behaviour and the request.
            state: (h, c, o), each (N, H).

        Returns:
            the new (h, c, o).
        """
        return self.step(self.input_side(x, interval, request_gap), state)

    def input_side(self, x: torch.Tensor, interval: torch.Tensor, request_gap: torch.Tensor) -> torch.Tensor:
        """(..., 6H) the gates' pre-activations that do not depend on the state, for (..., D) behaviours
        and (...) intervals and request gaps: computed for every step of a sequence at once."""
        d = torch.tanh(self.interval_feature(torch.log1p(interval.clamp_min(0.0)).unsqueeze(-1)))
        s = torch.tanh(self.request_gap_feature(torch.log1p(request_gap.clamp_min(0.0)).unsqueeze(-1)))
        xf, xi, xc, xtd, xts, xo = self.input_gates(x).chunk(6, -1)
        dtd, do = self.interval_gates(d).chunk(2, -1)
        sts, so = self.request_gap_gates(s).chunk(2, -1)
        return torch.cat([xf, xi, xc, xtd + dtd, xts + sts, xo + do + so], -1)

    def step(self, input_side: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step from :meth:`input_side`'s (N, 6H) pre-activations and the (h, c, o) state."""
        h, c, o_prev = state
        xf, xi, xc, td, ts, xo = input_side.chunk(6, -1)
        hf, hi, hc, ho = self.hidden_gates(h).chunk(4, -1)
        forget = torch.sigmoid(xf + hf)
        write = torch.sigmoid(xi + hi)
        candidate = torch.tanh(xc + hc)
        interval_gate = torch.sigmoid(td)
        request_gap_gate = torch.sigmoid(ts)
        c = forget * interval_gate * c + write * request_gap_gate * candidate
        o = torch.sigmoid(xo + ho + self.output_recurrence(o_prev))
        return o * torch.tanh(c), c, o


class TimeAwareLSTM(nn.Module):
    """A :class:`TimeAwareLSTMCell` run oldest -> newest over left-aligned sequences.

    Args:
        input_dim: width of the behaviours.
        hidden_dim: width of the state.
    """

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.cell = TimeAwareLSTMCell(input_dim, hidden_dim)
        self.hidden_dim = hidden_dim

    def forward(self, x: torch.Tensor, interval: torch.Tensor, request_gap: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """(N, L, D) behaviours, (N, L) intervals and request gaps in seconds, (N, L) mask -> (N, H) final h."""
        zeros = x.new_zeros(x.shape[0], self.hidden_dim)
        state = (zeros, zeros, zeros)
        # the state-free part of every step in one pass, the sequence cut into steps once (indexing
        # [:, t] in the loop costs a full-size zero tensor per step in the backward pass)
        steps = zip(self.cell.input_side(x, interval, request_gap).unbind(1), mask.unsqueeze(-1).unbind(1),
                    strict=True)
        for input_side, keep in steps:
            new = self.cell.step(input_side, state)
            state = tuple(torch.where(keep, a, b) for a, b in zip(new, state, strict=True))
        return state[0]


def chronological_intervals(age: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Seconds between consecutive behaviours of an oldest-first (N, L) age tensor.

    interval_k = age_{k-1} - age_k (the previous behaviour is older), 0 for the
    first behaviour and at padding.
    """
    previous = torch.cat([age[:, :1], age[:, :-1]], 1)
    return torch.where(mask, (previous - age).clamp_min(0.0), torch.zeros_like(age))


class Sessions(NamedTuple):
    """Behaviours grouped into sessions, newest session first.

    Attributes:
        index: (N, K, T) int64 positions in the newest-first sequence (0 at empty slots).
        mask: (N, K, T) bool, true at real behaviours.
    """

    index: torch.Tensor
    mask: torch.Tensor


def split_sessions(age: torch.Tensor, mask: torch.Tensor, gap: float, max_sessions: int,
                   max_session_length: int) -> Sessions:
    """Cut a newest-first behaviour sequence into sessions where the time between behaviours exceeds ``gap``.

    DSIN §4.1: a new session starts where two adjacent behaviours are more than
    ``gap`` seconds apart (30 minutes in the paper). Session k = 0 is the newest;
    within a session behaviours keep their newest-first order. Sessions beyond
    ``max_sessions`` and behaviours beyond ``max_session_length`` in a session are
    dropped (the oldest ones). Vectorised: a cumulative sum of the breaks numbers
    the sessions, a cumulative max of the break positions gives each session's start.

    Args:
        age: (N, L) seconds before the request, non-decreasing over real behaviours.
        mask: (N, L) bool, true at real behaviours (real behaviours first).
        gap: seconds that separate two sessions.
        max_sessions: K.
        max_session_length: T.

    Examples:
        >>> age = torch.tensor([[10.0, 100.0, 4000.0, 4100.0, 9000.0, 0.0]])
        >>> s = split_sessions(age, age > 0, gap=1800.0, max_sessions=3, max_session_length=2)
        >>> s.index.tolist(), s.mask.tolist()
        ([[[0, 1], [2, 3], [4, 0]]], [[[True, True], [True, True], [True, False]]])
    """
    n, length = age.shape
    pos = torch.arange(length, device=age.device)
    gaps = age[:, 1:] - age[:, :-1]
    breaks = torch.cat([torch.zeros_like(mask[:, :1]), (gaps > gap) & mask[:, 1:]], 1)
    session = torch.cumsum(breaks.long(), 1)
    start = torch.cummax(torch.where(breaks, pos, torch.zeros_like(pos)), 1).values
    within = pos - start
    keep = mask & (session < max_sessions) & (within < max_session_length)
    slots = max_sessions * max_session_length
    # dropped behaviours all go to one extra slot that is cut off afterwards
    target = torch.where(keep, session * max_session_length + within, torch.full_like(session, slots))
    index = torch.zeros(n, slots + 1, dtype=torch.long, device=age.device)
    index.scatter_(1, target, pos.expand(n, length).contiguous())
    valid = torch.zeros(n, slots + 1, dtype=torch.bool, device=age.device)
    valid.scatter_(1, target, keep)
    shape = (n, max_sessions, max_session_length)
    valid = valid[:, :slots].reshape(shape)
    return Sessions(torch.where(valid, index[:, :slots].reshape(shape), 0), valid)


__all__ = ["AUGRU", "AUGRUCell", "Sessions", "TimeAwareLSTM", "TimeAwareLSTMCell", "behaviour_ages",
           "chronological_intervals", "chronological_order", "gather_steps", "run_packed", "split_sessions"]
