import json

import pytest

from recfunnel.config import config_from_dict, config_to_dict, default_config, load_config
from recfunnel.errors import ConfigError


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


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(tmp_path / "bad.json")
