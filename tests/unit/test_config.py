import json

import pytest

from recfunnel.config import config_from_dict, config_to_dict, default_config, load_config
from recfunnel.errors import ConfigError
from recfunnel.stages.rank.neural import NeuralRankerConfig


def test_default_config_round_trips():
    cfg = default_config()
    assert config_from_dict(json.loads(json.dumps(config_to_dict(cfg)))) == cfg


def test_load_json_and_toml(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"channels": [{"kind": "popular", "quota": 50}], "rank_k": 20}))
    assert load_config(tmp_path / "c.json").rank_k == 20
    (tmp_path / "c.toml").write_text('retrieval_k = 77\n[[channels]]\nkind = "itemcf"\nquota = 10\n'
                                     '[channels.params]\nneighbours = 5\n')
    cfg = load_config(tmp_path / "c.toml")
    assert cfg.retrieval_k == 77 and cfg.channels[0].config.neighbours == 5


@pytest.mark.parametrize("raw, message", [
    ({"channels": []}, "at least one"),
    ({"channels": [{"kind": "nope"}]}, "unknown stage kind"),
    ({"channels": [{"kind": "itemcf", "params": {"bogus": 1}}]}, "unknown parameter"),
    ({"channels": [{"kind": "itemcf", "params": {"neighbours": "many"}}]}, "integer"),
    ({"channels": [{"kind": "popular"}], "colour": 1}, "unknown key"),
    ({"channels": [{"kind": "popular"}, {"kind": "popular"}]}, "unique"),
    ({"channels": [{"kind": "popular"}], "holdout_ratio": 1.5}, "holdout_ratio"),
])
def test_invalid_configs_say_what_is_wrong(raw, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_a_config_file_overrides_the_default_funnel_key_by_key(tmp_path):
    default = default_config()
    (tmp_path / "ranker.json").write_text(json.dumps({"ranker": {"kind": "neural", "params": {"model": "fm"}}}))
    cfg = load_config(tmp_path / "ranker.json")
    # the file's ranker entry replaces the default's whole entry: its own encoder defaults, not the
    # default ranker's shorter sequences; the trainer is the neural ranker's default either way
    assert cfg.ranker.config.model == "fm" and default.ranker.config.model != "fm"
    assert cfg.ranker.config.encoder == NeuralRankerConfig().encoder
    assert cfg.ranker.config.trainer == default.ranker.config.trainer
    assert cfg.channels == default.channels and cfg.reranker == default.reranker
    assert (cfg.retrieval_k, cfg.rank_k, cfg.history_length) == (
        default.retrieval_k, default.rank_k, default.history_length)
    # a stage that is not a table is still an error, a given list replaces the default's, and null
    # removes a stage
    (tmp_path / "lean.toml").write_text('ranker = "none"\n')
    with pytest.raises(ConfigError, match="ranker"):
        load_config(tmp_path / "lean.toml")
    (tmp_path / "lean.json").write_text(json.dumps({"channels": [{"kind": "popular"}], "ranker": None,
                                                    "reranker": None}))
    cfg = load_config(tmp_path / "lean.json")
    assert [s.kind for s in cfg.channels] == ["popular"] and cfg.ranker is None and cfg.reranker is None
    # a saved model's config (every key written out) loads back unchanged
    (tmp_path / "saved.json").write_text(json.dumps(config_to_dict(cfg)))
    assert load_config(tmp_path / "saved.json") == cfg
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ConfigError, match="must be a table"):
        load_config(tmp_path / "list.json")


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(tmp_path / "bad.json")


def test_a_nested_table_overrides_its_defaults_key_by_key():
    # the neural ranker's default trainer averages weights and makes every epoch 100 steps or more;
    # a config naming two trainer keys must keep those, not fall back to a bare TrainerConfig()
    raw = {"channels": [{"kind": "popular"}],
           "ranker": {"kind": "neural", "params": {"trainer": {"epochs": 8, "precision": "bf16"}}}}
    trainer = config_from_dict(raw).ranker.config.trainer
    default = config_from_dict({"channels": [{"kind": "popular"}],
                                "ranker": {"kind": "neural"}}).ranker.config.trainer
    assert (trainer.epochs, trainer.precision) == (8, "bf16")
    assert trainer.ema_decay == default.ema_decay == 0.99
    assert trainer.min_steps_per_epoch == default.min_steps_per_epoch == 100
    with pytest.raises(ConfigError, match="precision"):
        config_from_dict({**raw, "ranker": {"kind": "neural", "params": {"trainer": {"precision": "fp16"}}}})
    with pytest.raises(ConfigError, match="unknown parameter"):
        config_from_dict({**raw, "ranker": {"kind": "neural", "params": {"trainer": {"epoch": 8}}}})
