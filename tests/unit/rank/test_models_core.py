from recfunnel.testing.ctr import CTRModelConformance, baseline_auc


def test_lr_cannot_learn_the_planted_interactions():
    # the bar the model conformance tests measure against must itself be near chance
    assert baseline_auc("cross") < 0.6
    assert baseline_auc("sequence") < 0.6


class TestDeepFM(CTRModelConformance):
    model_name = "deepfm"
