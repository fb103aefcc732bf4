"""Hand-computed cases for the feature-interaction layers and the LHUC gates."""

import itertools

import pytest
import torch

from recfunnel.layers.gates import GatedMLP, LHUCGate
from recfunnel.layers.interaction import (
    CIN,
    AttentionalPooling,
    BiInteraction,
    BilinearInteraction,
    CrossNetwork,
    CrossNetworkV2,
    FactorizationMachine,
    InnerProduct,
    OuterProduct,
    SENet,
    pair_indices,
)


@pytest.fixture
def emb() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(5, 4, 3, dtype=torch.float64)  # N=5 rows, F=4 fields, d=3


def pairs(n_fields):
    return list(itertools.combinations(range(n_fields), 2))


def test_pair_indices_enumerate_i_less_than_j_in_order():
    rows, cols = pair_indices(4)
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == pairs(4)


def test_fm_term_equals_the_explicit_pairwise_sum(emb):
    explicit = sum((emb[:, i] * emb[:, j]).sum(-1) for i, j in pairs(4))
    torch.testing.assert_close(FactorizationMachine()(emb), explicit)
    bi = sum(emb[:, i] * emb[:, j] for i, j in pairs(4))
    torch.testing.assert_close(BiInteraction()(emb), bi)


@pytest.mark.parametrize("layer", [FactorizationMachine(), BiInteraction()], ids=["fm", "bi-interaction"])
def test_fm_gradient_matches_the_explicit_pairwise_sum(emb, layer):
    # the hand-written backward against autograd of the O(F^2) definition, and gradcheck
    emb = emb.clone().requires_grad_()
    explicit_emb = emb.detach().clone().requires_grad_()
    upstream = torch.randn(layer(emb).shape, dtype=emb.dtype)
    explicit = sum(explicit_emb[:, i] * explicit_emb[:, j] for i, j in pairs(4))
    if layer.reduce_sum:
        explicit = explicit.sum(-1)
    (layer(emb) * upstream).sum().backward()
    (explicit * upstream).sum().backward()
    torch.testing.assert_close(emb.grad, explicit_emb.grad)
    assert torch.autograd.gradcheck(layer, (emb.detach().clone().requires_grad_(),))


def test_cross_layer_v1_on_a_tiny_example():
    net = CrossNetwork(2, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.5, -1.0]]))
        net.bias.copy_(torch.tensor([[0.1, 0.2]]))
    x0 = torch.tensor([[1.0, 2.0]])
    # x0 x0^T w = [1, 2] * (0.5 - 2) = [-1.5, -3]; + b + x0 = [-0.4, -0.8]
    torch.testing.assert_close(net(x0), torch.tensor([[-0.4, -0.8]]))


def test_cross_network_v1_matches_its_formula_over_layers():
    torch.manual_seed(1)
    net = CrossNetwork(3, 2)
    with torch.no_grad():
        net.bias.normal_()
    x0 = torch.randn(4, 3)
    x = x0
    for w, b in zip(net.weight, net.bias, strict=True):
        x = torch.stack([torch.outer(x0[n], x[n]) @ w for n in range(4)]) + b + x
    torch.testing.assert_close(net(x0), x)


def test_cross_network_v2_full_and_low_rank_match_their_formulas():
    torch.manual_seed(2)
    x0 = torch.randn(4, 5)
    full = CrossNetworkV2(5, 2)
    with torch.no_grad():
        full.bias.normal_()
    x = x0
    for w, b in zip(full.weight, full.bias, strict=True):
        x = x0 * (x @ w.T + b) + x
    torch.testing.assert_close(full(x0), x)

    one = CrossNetworkV2(5, 1, low_rank=2, num_experts=1)
    u, v, c, b = one.u[0, 0], one.v[0, 0], one.c[0, 0], one.bias[0]
    expected = x0 * (torch.tanh(torch.tanh(x0 @ v) @ c.T) @ u.T + b) + x0
    torch.testing.assert_close(one(x0), expected)
    mix = CrossNetworkV2(5, 3, low_rank=2, num_experts=4)
    assert mix(x0).shape == (4, 5)


def test_cin_shapes_and_first_layer_formula(emb):
    emb = emb.float()
    cin = CIN(4, (6, 4, 2), split_half=True)
    assert cin.output_dim == 3 + 2 + 2 and cin(emb).shape == (5, 7)
    full = CIN(4, (6, 4), split_half=False)
    assert full.output_dim == 10 and full(emb).shape == (5, 10)
    with pytest.raises(ValueError):
        CIN(4, (5, 4), split_half=True)
    one = CIN(4, (3,), split_half=False)
    w = one.convs[0].weight.squeeze(-1).view(3, 4, 4)  # W^{1,h}_{ij}
    x1 = torch.einsum("hij,nid,njd->nhd", w, emb, emb)
    torch.testing.assert_close(one(emb), x1.sum(-1))


def test_inner_and_outer_products(emb):
    inner = InnerProduct()(emb)
    assert inner.shape == (5, 6)
    torch.testing.assert_close(inner, torch.stack([(emb[:, i] * emb[:, j]).sum(-1) for i, j in pairs(4)], 1))
    outer = OuterProduct(3, 2).double()
    # superposition: sum over all (i, j) of <K, f_i f_j^T> = f_Σ^T K f_Σ
    explicit = sum(torch.einsum("ni,uij,nj->nu", emb[:, i], outer.kernel, emb[:, j])
                   for i in range(4) for j in range(4))
    torch.testing.assert_close(outer(emb), explicit)


def test_attentional_pooling_weights_are_a_distribution(emb):
    layer = AttentionalPooling(3, 8).double()
    out, weights = layer(emb, return_weights=True)
    assert out.shape == (5, 3) and weights.shape == (5, 6)
    torch.testing.assert_close(weights.sum(1), torch.ones(5, dtype=torch.float64))
    with torch.no_grad():
        layer.attention[-1].weight.zero_()  # equal scores: the mean of the pairwise products
    mean = torch.stack([emb[:, i] * emb[:, j] for i, j in pairs(4)], 1).mean(1)
    torch.testing.assert_close(layer(emb), mean)


def test_senet_weights_shape_range_and_reweighting(emb):
    se = SENet(4, reduction_ratio=2).double()
    a = se.weights(emb)
    assert a.shape == (5, 4) and (a >= 0).all()
    torch.testing.assert_close(se(emb), emb * a.unsqueeze(-1))


@pytest.mark.parametrize("kind", ["field_all", "field_each", "field_interaction"])
def test_bilinear_variants(emb, kind):
    layer = BilinearInteraction(4, 3, kind).double()
    out = layer(emb)
    assert out.shape == (5, 6, 3)
    for p, (i, j) in enumerate(pairs(4)):
        w = {"field_all": 0, "field_each": i, "field_interaction": p}[kind]
        torch.testing.assert_close(out[:, p], (emb[:, i] @ layer.weight[w]) * emb[:, j])
    n_weights = {"field_all": 1, "field_each": 3, "field_interaction": 6}[kind]
    assert layer.weight.shape == (n_weights, 3, 3)


def test_lhuc_gate_is_in_0_2_and_starts_at_1():
    torch.manual_seed(3)
    gate = LHUCGate(6, 4, hidden=8)
    x = torch.randn(10, 6) * 5
    torch.testing.assert_close(gate(x), torch.ones(10, 4))
    with torch.no_grad():
        for p in gate.parameters():
            p.normal_(std=0.5)  # saturation would round to exactly 0 or 2 in float32
    g = gate(x)
    assert g.shape == (10, 4) and (g > 0).all() and (g < 2).all()
    tower = GatedMLP(5, 6, (8, 4), output_dim=1, gate_hidden=8)
    assert tower(torch.randn(10, 5), x).shape == (10, 1)
