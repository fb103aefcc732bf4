"""The behaviour-sequence rankers (DIN, DIEN, BST, DSIN, SIM, time-aware LSTM) on the planted sequence task."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recfunnel.stages.rank.models import build_model
from recfunnel.testing.ctr import CTRModelConformance, make_planted_ctr
from recfunnel.training.trainer import predict_logits, torch_threads

SMALL = {"embed_dim": 8, "hidden": (64, 32)}

MODELS = {
    "din": SMALL,
    "dien": SMALL,
    "bst": SMALL,
    "dsin": {**SMALL, "max_sessions": 4, "max_session_length": 4},
    "sim": {**SMALL, "top_k": 4},
    "time_lstm": {**SMALL, "lstm_dim": 16},
}


@pytest.fixture(autouse=True)
def _seeded_single_thread():
    # the conformance mixin builds the model before the trainer seeds torch: seed here, so the
    # initialisation (and the outcome) does not depend on which tests ran before in the process;
    # one thread, as the trainer uses, also for scoring (tiny tensors: extra threads only wait)
    torch.manual_seed(0)
    with torch_threads(1):
        yield


class TestDIN(CTRModelConformance):
    model_name = "din"
    task = "sequence"
    params = MODELS["din"]


class TestDIEN(CTRModelConformance):
    model_name = "dien"
    task = "sequence"
    params = MODELS["dien"]


class TestBST(CTRModelConformance):
    model_name = "bst"
    task = "sequence"
    params = MODELS["bst"]


class TestBSTFlattened(TestBST):
    """The paper's pooling: the transformer outputs concatenated."""

    params = {**MODELS["bst"], "pooling": "flatten"}


class TestDSIN(CTRModelConformance):
    model_name = "dsin"
    task = "sequence"
    params = MODELS["dsin"]


class TestSIMHardSearch(CTRModelConformance):
    model_name = "sim"
    task = "sequence"
    params = MODELS["sim"]


class TestSIMSoftSearch(CTRModelConformance):
    model_name = "sim"
    task = "sequence"
    params = {**MODELS["sim"], "search": "soft"}


class TestTimeAwareLSTM(CTRModelConformance):
    model_name = "time_lstm"
    task = "sequence"
    params = MODELS["time_lstm"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_padding_and_empty_histories(name):
    schema, batch = make_planted_ctr("sequence", n=32)
    batch.sequences["hist_item_id"][:4] = 0  # four users without any history
    model = build_model(name, schema, MODELS[name]).eval()
    scores = predict_logits(model, batch)
    assert np.isfinite(scores).all()
    # whatever sits at padded slots of the other sequences and of the ages is ignored
    pad = batch.sequences["hist_item_id"] == 0
    noisy = batch.select(slice(0, len(batch)))
    noisy.sequences["hist_category"] = torch.where(pad, 3, noisy.sequences["hist_category"])
    noisy.sequence_age = torch.where(pad, 1e6, noisy.sequence_age)
    np.testing.assert_allclose(predict_logits(model, noisy), scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_needs_a_behaviour_sequence(name):
    schema, _ = make_planted_ctr("cross", n=8)
    with pytest.raises(ValueError, match="behaviour sequence"):
        build_model(name, schema, MODELS[name])


def test_bad_options_are_rejected():
    schema, _ = make_planted_ctr("sequence", n=8)
    with pytest.raises(ValueError, match="divisible"):
        build_model("bst", schema, {**SMALL, "heads": 5})
    with pytest.raises(ValueError, match="search"):
        build_model("sim", schema, {**SMALL, "search": "fuzzy"})
    with pytest.raises(ValueError, match="category sequence"):
        build_model("sim", schema, {**SMALL, "category_sequence": "hist_item_id"})


def test_dien_runs_its_extractor_once_per_distinct_history_with_the_same_scores(monkeypatch):
    import recfunnel.stages.rank.models.dien as dien_module
    from recfunnel.layers.sequence import distinct_rows

    schema, batch = make_planted_ctr("sequence", n=12)
    # a request's candidates: each of 4 users' rows repeated over 25 candidates with different targets
    rows = batch.select(torch.arange(4).repeat_interleave(25))
    rows.sparse = rows.sparse[torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))]
    rows.sequences["hist_item_id"][:25] = 0  # one user without history
    model = build_model("dien", schema, MODELS["dien"]).eval()
    calls = []
    extractor_forward = model.extractor.forward
    monkeypatch.setattr(model.extractor, "forward", lambda x, *a: calls.append(x.shape[0]) or extractor_forward(x, *a))
    deduplicated = predict_logits(model, rows)
    assert calls == [4]  # four histories, not 100 rows
    monkeypatch.setattr(dien_module, "distinct_rows", lambda *tensors: None)
    every_row = predict_logits(model, rows)
    assert calls[-1] == 100
    np.testing.assert_allclose(deduplicated, every_row, rtol=1e-6, atol=1e-6)
    assert distinct_rows(torch.arange(6).reshape(3, 2)) is None  # nothing repeats: nothing to gain
