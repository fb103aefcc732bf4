import numpy as np
import pytest
import torch

from recfunnel.evaluation.metrics import auc, gauc
from recfunnel.stages.rank.models import build_model
from recfunnel.testing.ctr import make_planted_ctr, split
from recfunnel.training.trainer import (
    Trainer,
    TrainerConfig,
    _batches,
    load_state,
    predict_logits,
)

FAST = TrainerConfig(epochs=3, batch_size=256, learning_rate=5e-3, threads=1)


def _fit(cfg=FAST, name="deepfm"):
    schema, batch = make_planted_ctr("cross", n=2000)
    train, valid = split(batch)
    torch.manual_seed(cfg.seed)
    model = build_model(name, schema, {"embed_dim": 8, "hidden": (32,)})
    history = Trainer(cfg).fit(model, train, valid)
    return model, valid, history


def test_training_is_deterministic_for_a_seed():
    a, valid, ha = _fit()
    b, _, hb = _fit()
    np.testing.assert_array_equal(predict_logits(a, valid), predict_logits(b, valid))
    assert ha.train_loss == hb.train_loss


def test_best_epoch_weights_are_restored_and_checkpoints_load_safely(tmp_path):
    cfg = TrainerConfig(epochs=4, batch_size=256, learning_rate=5e-3, threads=1, patience=4,
                        checkpoint_dir=str(tmp_path))
    model, valid, history = _fit(cfg)
    final_auc = auc(valid.label.numpy() > 0.5, predict_logits(model, valid))
    assert final_auc == pytest.approx(max(history.valid_auc), abs=1e-9)
    assert history.best_epoch == int(np.argmax(history.valid_auc))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "epoch-1.pt", "epoch-2.pt", "epoch-3.pt",
                                                          "epoch-4.pt"]
    restored = load_state(build_model("deepfm", model.schema, {"embed_dim": 8, "hidden": (32,)}),
                          tmp_path / "best.pt")
    np.testing.assert_array_equal(predict_logits(restored, valid), predict_logits(model, valid))


def test_early_stopping_stops_when_validation_auc_stops_improving():
    # a huge learning rate makes validation AUC fall after the first epoch
    cfg = TrainerConfig(epochs=10, batch_size=64, learning_rate=1.0, threads=1, patience=1)
    _, _, history = _fit(cfg)
    assert len(history.train_loss) < 10


@pytest.mark.parametrize("sizes, batch_size, seed", [
    (np.random.default_rng(0).integers(1, 9, 50), 32, 0),
    # the last group in shuffled order spans a multiple of the batch size: there is no group start
    # after it to cut at (this raised an IndexError in the default funnel's list-wise training)
    (np.array([40, 45, 50]), 32, 0),
    (np.array([3, 70]), 32, 1),
    # fewer rows than one batch (60 users x 20 items): torch.arange(batch_size, n) raised
    (np.array([5, 3, 4]), 1024, 0),
    (np.array([32]), 32, 0),
])
def test_grouped_batches_never_split_a_group(sizes, batch_size, seed):
    group = torch.as_tensor(np.repeat(np.arange(len(sizes)), sizes))
    for s in range(seed, seed + 5):  # several shuffles, so a long group lands last
        batches = _batches(len(group), batch_size, torch.Generator().manual_seed(s), group, keep_groups=True)
        assert sorted(torch.cat(batches).tolist()) == list(range(len(group)))
        owner = {}
        for j, idx in enumerate(batches):
            for g in group[idx].unique().tolist():
                assert owner.setdefault(g, j) == j


def test_list_wise_training_learns_and_needs_groups():
    schema, batch = make_planted_ctr("cross", n=2000)
    train, valid = split(batch)
    model = build_model("deepfm", schema, {"embed_dim": 8, "hidden": (32,)})
    Trainer(TrainerConfig(epochs=8, batch_size=100, learning_rate=1e-2, loss="softmax", threads=1)).fit(
        model, train, valid)
    assert auc(valid.label.numpy() > 0.5, predict_logits(model, valid)) > 0.7
    train.group = None
    with pytest.raises(ValueError, match="group"):
        Trainer(TrainerConfig(loss="bpr")).fit(model, train, valid)


@pytest.mark.parametrize("loss, metric, expected", [
    ("softmax", "auto", "gauc"), ("bpr", "auto", "gauc"), ("bce", "auto", "auc"),
    ("bce", "gauc", "gauc"), ("softmax", "auc", "auc")])
def test_early_stopping_compares_the_validation_metric_the_loss_calls_for(loss, metric, expected):
    schema, batch = make_planted_ctr("cross", n=2000)
    train, valid = split(batch)
    torch.manual_seed(0)
    model = build_model("deepfm", schema, {"embed_dim": 8, "hidden": (32,)})
    cfg = TrainerConfig(epochs=1, batch_size=100, learning_rate=1e-2, loss=loss, validation_metric=metric,
                        threads=1)
    history = Trainer(cfg).fit(model, train, valid)
    assert history.valid_metric == expected
    scores, positive = predict_logits(model, valid), valid.label.numpy() > 0.5
    by_group, pooled = gauc(valid.group.numpy(), positive, scores), auc(positive, scores)
    assert abs(by_group - pooled) > 1e-3  # the two differ here, so the check below can tell them apart
    assert history.valid_auc == [pytest.approx(by_group if expected == "gauc" else pooled, abs=1e-9)]


def test_group_auc_validation_is_blind_to_a_shift_per_group():
    """A group loss leaves each group's scores free up to a shift; GAUC must not see it, pooled AUC does."""
    schema, batch = make_planted_ctr("cross", n=2000)
    train, valid = split(batch)

    class Shifted(torch.nn.Module):  # the same model, with a large score offset per group
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, b):
            return self.inner(b) + 10.0 * torch.sin(b.group.float())

    torch.manual_seed(0)
    inner = build_model("deepfm", schema, {"embed_dim": 8, "hidden": (32,)})
    cfg = TrainerConfig(epochs=1, batch_size=100, learning_rate=1e-2, loss="softmax", threads=1)
    history = Trainer(cfg).fit(inner, train, valid)
    shifted = predict_logits(Shifted(inner), valid)
    positive = valid.label.numpy() > 0.5
    assert gauc(valid.group.numpy(), positive, shifted) == pytest.approx(history.valid_auc[0], abs=1e-6)
    assert auc(positive, shifted) < history.valid_auc[0] - 0.05


def test_group_auc_validation_falls_back_to_pooled_auc_when_no_group_has_both_classes():
    schema, batch = make_planted_ctr("cross", n=2000)
    train, valid = split(batch)
    valid.group = torch.arange(len(valid))  # one row per group: no group has a positive and a negative
    torch.manual_seed(0)
    model = build_model("deepfm", schema, {"embed_dim": 8, "hidden": (32,)})
    history = Trainer(TrainerConfig(epochs=1, batch_size=100, loss="softmax", threads=1)).fit(model, train, valid)
    assert history.valid_metric == "auc"
    assert history.valid_auc == [pytest.approx(auc(valid.label.numpy() > 0.5, predict_logits(model, valid)),
                                               abs=1e-9)]


def test_validation_metric_is_checked():
    schema, batch = make_planted_ctr("cross", n=500)
    train, valid = split(batch)
    model = build_model("deepfm", schema, {"embed_dim": 8, "hidden": (32,)})
    with pytest.raises(ValueError, match="validation_metric"):
        Trainer(TrainerConfig(validation_metric="ndcg")).fit(model, train, valid)
    valid.group = None
    with pytest.raises(ValueError, match="group"):
        Trainer(TrainerConfig(epochs=1, validation_metric="gauc", threads=1)).fit(model, train, valid)


def test_weight_averaging_follows_the_uniform_then_exponential_rule():
    from recfunnel.training.optim import WeightAverage

    model = torch.nn.BatchNorm1d(1)  # a float parameter and an integer buffer (num_batches_tracked)
    average = WeightAverage(model, 0.75)
    seen = [4.0, 8.0, 12.0, 0.0]
    with torch.no_grad():
        model.weight.fill_(100.0)
        model.num_batches_tracked.fill_(7)
    for value in seen:
        with torch.no_grad():
            model.weight.fill_(value)
        average.update()
    # t=0: copy -> 4; t=1: d=1/2 -> 6; t=2: d=2/3 -> 8; t=3: d=min(0.75, 3/4) -> 6
    assert float(average.module.weight.detach()) == pytest.approx(6.0)
    assert float(model.weight.detach()) == 0.0  # the trained model is read, never written
    assert int(average.module.num_batches_tracked) == 7  # integer buffers are copied, not averaged
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(model, 1.0)


def test_averaged_weights_are_the_ones_validated_kept_and_returned(tmp_path):
    cfg = TrainerConfig(epochs=8, batch_size=256, learning_rate=5e-3, threads=1, patience=8, ema_decay=0.9,
                        checkpoint_dir=str(tmp_path))
    model, valid, history = _fit(cfg)
    assert auc(valid.label.numpy() > 0.5, predict_logits(model, valid)) == pytest.approx(max(history.valid_auc),
                                                                                         abs=1e-9)
    restored = load_state(build_model("deepfm", model.schema, {"embed_dim": 8, "hidden": (32,)}),
                          tmp_path / "best.pt")
    np.testing.assert_array_equal(predict_logits(restored, valid), predict_logits(model, valid))
    raw, _, _ = _fit(TrainerConfig(epochs=3, batch_size=256, learning_rate=5e-3, threads=1, patience=3))
    assert not np.array_equal(predict_logits(raw, valid), predict_logits(model, valid))
    assert max(history.valid_auc) > 0.8  # the averaged model has learned the planted cross


def test_weight_averaging_rejects_a_decay_outside_zero_one():
    with pytest.raises(ValueError, match="ema_decay"):
        _fit(TrainerConfig(epochs=1, ema_decay=1.0))


def test_short_epochs_pass_over_the_rows_until_min_steps_per_epoch():
    schema, batch = make_planted_ctr("cross", n=2000)
    train, valid = split(batch)
    steps_per_pass = -(-len(train) // 512)

    def steps_taken(min_steps: int) -> int:
        torch.manual_seed(0)
        model = build_model("deepfm", schema, {"embed_dim": 8, "hidden": (32,)})
        seen = []
        model.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])) if m.training else None)
        Trainer(TrainerConfig(epochs=2, batch_size=512, threads=1, patience=2,
                              min_steps_per_epoch=min_steps)).fit(model, train, valid)
        assert sum(seen) % len(train) == 0  # whole passes: every row as often as every other
        return len(seen)

    assert steps_taken(0) == 2 * steps_per_pass
    passes = -(-10 // steps_per_pass)
    assert steps_taken(10) == 2 * passes * steps_per_pass
    assert steps_taken(1) == 2 * steps_per_pass  # one pass already has enough steps
    with pytest.raises(ValueError, match="min_steps_per_epoch"):
        _fit(TrainerConfig(epochs=1, min_steps_per_epoch=-1))


def test_the_neural_ranker_default_trains_at_least_100_steps_per_epoch():
    from recfunnel.stages.rank.neural import NeuralRankerConfig

    assert NeuralRankerConfig().trainer.min_steps_per_epoch == 100
