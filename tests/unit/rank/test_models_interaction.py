"""Conformance of the feature-interaction ranking models on the planted "cross" task."""

import numpy as np
import pytest
import torch

from recfunnel.stages.rank.models import build_model
from recfunnel.testing.ctr import CTRModelConformance, make_planted_ctr
from recfunnel.training.trainer import predict_logits

# small enough that each model trains in about a second. Models whose only
# non-linearity is the MLP (FNN, Wide&Deep, YouTube, PPNet), IPNN, AFM and AutoInt keep their
# default widths: smaller ones stay on the plateau of the tiny initial embeddings
# too long for the conformance trainer's early stopping, for some initialisations.
SMALL = {"embed_dim": 8, "hidden": (64, 32)}


class TestFM(CTRModelConformance):
    model_name = "fm"
    params = {"embed_dim": 8}


class TestFFM(CTRModelConformance):
    model_name = "ffm"
    params = {"embed_dim": 4}


class TestFNN(CTRModelConformance):
    model_name = "fnn"
    params = {}


class TestIPNN(CTRModelConformance):
    model_name = "ipnn"
    params = {}


class TestOPNN(CTRModelConformance):
    model_name = "opnn"
    params = SMALL


class TestWideDeep(CTRModelConformance):
    model_name = "wide_deep"
    params = {}


class TestDCN(CTRModelConformance):
    model_name = "dcn"
    params = SMALL


class TestDCNv2(CTRModelConformance):
    model_name = "dcnv2"
    params = SMALL


class TestDCNv2LowRankMixture(CTRModelConformance):
    model_name = "dcnv2"
    params = {**SMALL, "low_rank": 4, "num_experts": 3, "structure": "stacked"}


class TestXDeepFM(CTRModelConformance):
    model_name = "xdeepfm"
    params = {**SMALL, "cin_layers": (32, 32)}


class TestNFM(CTRModelConformance):
    model_name = "nfm"
    params = SMALL


class TestAFM(CTRModelConformance):
    model_name = "afm"
    params = {}


class TestAutoInt(CTRModelConformance):
    model_name = "autoint"
    params = {}


class TestFiBiNET(CTRModelConformance):
    model_name = "fibinet"
    params = SMALL


class TestFiBiNETFieldAll(CTRModelConformance):
    model_name = "fibinet"
    params = {**SMALL, "bilinear_type": "field_all"}


class TestFiBiNETFieldEach(CTRModelConformance):
    model_name = "fibinet"
    params = {**SMALL, "bilinear_type": "field_each"}


class TestPPNet(CTRModelConformance):
    model_name = "ppnet"
    params = {}


class TestYouTubeWeightedLR(CTRModelConformance):
    model_name = "youtube_wlr"
    params = {}


def test_youtube_serving_odds_is_exp_of_logit():
    from recfunnel.stages.rank.models.youtube import YouTubeWeightedLR, serving_odds

    logits = torch.tensor([0.0, float(np.log(2.0)), -1.0])
    torch.testing.assert_close(YouTubeWeightedLR.serving_odds(logits), torch.exp(logits))
    np.testing.assert_allclose(serving_odds(logits.numpy()), [1.0, 2.0, np.exp(-1.0)], rtol=1e-6)


def test_ppnet_gates_do_not_train_the_main_embeddings():
    # the main embeddings reach the gates through a stop-gradient: a loss on the gates'
    # outputs alone leaves them without gradient, while the prior-field embeddings get one
    schema, batch = make_planted_ctr("cross", n=32)
    torch.manual_seed(0)
    model = build_model("ppnet", schema, {"embed_dim": 8, "hidden": (16,), "prior_fields": ["a", "noise"]})
    gate = model.tower.gates[0]
    with torch.no_grad():
        gate.net.net[-1].weight.normal_()  # gates start at exactly 1 with a zero last layer
    outputs = []
    gate.register_forward_hook(lambda module, args, out: outputs.append(out))
    model(batch)
    outputs[0].sum().backward()
    assert model.embeddings.table.weight.grad is None
    assert model.prior_embeddings.table.weight.grad.abs().sum() > 0


def test_ppnet_rejects_an_unknown_prior_field():
    schema, _ = make_planted_ctr("cross", n=8)
    with pytest.raises(KeyError):
        build_model("ppnet", schema, {"prior_fields": ["user_id"]})


def test_fnn_init_from_fm_copies_weights_and_vectors():
    schema, batch = make_planted_ctr("cross", n=16)
    fm = build_model("fm", schema, {"embed_dim": 4})
    with torch.no_grad():
        fm.embeddings.table.weight[:, -1].normal_()
    fnn = build_model("fnn", schema, {"embed_dim": 4, "hidden": (8,)})
    fnn.init_from_fm(fm)
    z = fnn.embeddings.fields(batch)
    torch.testing.assert_close(z[..., 1:], fm.embeddings.fields(batch))
    first_order = fm.embeddings.table.weight[batch.sparse[:, 0] + fm.embeddings.offsets[0], -1]
    torch.testing.assert_close(z[:, 0, 0], first_order)
    with pytest.raises(ValueError):
        fnn.init_from_fm(build_model("fm", schema, {"embed_dim": 8}))


@pytest.mark.parametrize(("name", "params"), [
    ("ffm", {}), ("dcnv2", {}), ("xdeepfm", {}), ("fibinet", {}), ("autoint", {}), ("nfm", {}),
    ("dcn", {"structure": "stacked"}), ("ipnn", {}), ("opnn", {})])
def test_models_score_a_batch_without_dense_columns(name, params):
    from dataclasses import replace

    schema, batch = make_planted_ctr("cross", n=8)
    schema = replace(schema, dense=())
    batch.dense = batch.dense[:, :0]
    model = build_model(name, schema, {"embed_dim": 4, "hidden": (8,), **params})
    scores = predict_logits(model, batch)
    assert scores.shape == (8,) and np.isfinite(scores).all()
