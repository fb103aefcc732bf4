import dataclasses

import pytest

from recfunnel.testing.ctr import CONFORMANCE_TRAINER, CTRModelConformance, baseline_auc


def test_lr_cannot_learn_the_planted_interactions():
    # the bar the model conformance tests measure against must itself be near chance
    assert baseline_auc("cross") < 0.6
    assert baseline_auc("sequence") < 0.6


class TestDeepFM(CTRModelConformance):
    model_name = "deepfm"


class TestDeepFMInBfloat16(TestDeepFM):
    """The whole conformance with the training forward pass under bfloat16 autocast."""

    trainer = dataclasses.replace(CONFORMANCE_TRAINER, precision="bf16")


class TestDeepFMWithEmbeddingBagPooling(TestDeepFM):
    """The same conformance on the ATen lookup (off CPU, or not float32), with bags pooled by
    ``embedding_bag``, the path for large bag vocabularies."""

    @pytest.fixture(autouse=True)
    def _large_bag_path(self, monkeypatch):
        from recfunnel.layers import embedding

        monkeypatch.setattr(embedding, "DENSE_BAG_MAX_VOCAB", 0)
        monkeypatch.setattr(embedding, "can_fuse", lambda table: False)  # the ATen path, not the fused kernel

    def test_the_embedding_bag_path_is_the_one_taken(self):
        from recfunnel.stages.rank.models import build_model
        from recfunnel.testing.ctr import make_planted_ctr

        schema, _ = make_planted_ctr(self.task, n=64)
        assert schema.bags and not build_model(self.model_name, schema, self.params).embeddings.dense_bags
