"""The MLP and its block input layer against plain nn.Linear on the concatenated input."""

import pytest
import torch
from torch import nn

from recfunnel.layers.mlp import MLP, BlockLinear


def test_block_linear_is_a_linear_layer_over_the_concatenation():
    torch.manual_seed(0)
    layer = BlockLinear((3, 2), 4).double()
    reference = nn.Linear(5, 4).double()
    with torch.no_grad():
        reference.weight.copy_(torch.cat([w.t() for w in layer.weights], 1))  # stored input-major
        reference.bias.copy_(layer.bias)
    emb = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    dense = torch.randn(6, 2, dtype=torch.float64)
    ref_emb = emb.detach().clone().requires_grad_()
    out, ref = layer((emb, dense)), reference(torch.cat([ref_emb, dense], 1))
    torch.testing.assert_close(out, ref)
    probe = torch.randn(6, 4, dtype=torch.float64)
    (out * probe).sum().backward()
    (ref * probe).sum().backward()
    torch.testing.assert_close(emb.grad, ref_emb.grad)
    torch.testing.assert_close(torch.cat([w.grad.t() for w in layer.weights], 1), reference.weight.grad)
    torch.testing.assert_close(layer.bias.grad, reference.bias.grad)
    assert dense.grad is None  # a block without requires_grad gets no input gradient computed


def test_block_linear_initialises_like_linear_over_the_total_width():
    torch.manual_seed(0)
    layer = BlockLinear((300, 100), 500)
    bound = 1 / 400 ** 0.5
    for w in (*layer.weights, layer.bias):
        assert w.abs().max() <= bound
        assert w.abs().max() > 0.9 * bound  # uniform over the whole range, not a narrower one
    assert [tuple(w.shape) for w in layer.weights] == [(300, 500), (100, 500)]


def test_block_linear_skips_empty_blocks_and_checks_the_count():
    layer = BlockLinear((2, 0), 3)
    x = torch.randn(4, 2)
    torch.testing.assert_close(layer((x, torch.zeros(4, 0))), x @ layer.weights[0] + layer.bias)
    only_empty = BlockLinear((0,), 3)
    torch.testing.assert_close(only_empty((torch.zeros(4, 0),)), only_empty.bias.expand(4, 3))
    with pytest.raises(ValueError, match="2 input blocks"):
        layer((x,))
    with pytest.raises(ValueError, match="non-negative"):
        BlockLinear((), 3)


def test_block_mlp_equals_the_mlp_over_the_concatenation():
    torch.manual_seed(0)
    blocks = MLP((3, 2), (8, 4), 1).double()
    plain = MLP(5, (8, 4), 1).double()
    with torch.no_grad():
        first = blocks.net[0]
        plain.net[0].weight.copy_(torch.cat([w.t() for w in first.weights], 1))
        plain.net[0].bias.copy_(first.bias)
        for a, b in zip(blocks.net[1:].parameters(), plain.net[1:].parameters(), strict=True):
            b.copy_(a)
    x = torch.randn(7, 5, dtype=torch.float64)
    torch.testing.assert_close(blocks((x[:, :3], x[:, 3:])), plain(x))
    with pytest.raises(TypeError, match="blocks"):
        blocks(x)
    with pytest.raises(ValueError, match="at least one layer"):
        MLP((3, 2), ())


def test_in_place_relu_keeps_gradients_right():
    torch.manual_seed(0)
    mlp = MLP(4, (6, 5), 1, batch_norm=True).double()
    x = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: mlp(t), (x,))


@pytest.mark.parametrize("blocks", [False, True])
def test_under_cpu_autocast_hidden_layers_run_in_bfloat16_and_the_output_layer_in_float32(blocks):
    torch.manual_seed(0)
    mlp = MLP((6, 3) if blocks else 9, (16, 8), 1)
    x = torch.randn(32, 9, requires_grad=True)
    inputs = (x[:, :6], x[:, 6:]) if blocks else x
    reference = mlp(inputs)
    seen = []
    hook = mlp.net[2].register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mlp(inputs)
    hook.remove()
    assert seen == [torch.bfloat16]  # the second hidden layer's product
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference, atol=0.05, rtol=0.05)  # bfloat16 rounding only
    out.sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in mlp.parameters())
