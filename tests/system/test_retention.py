"""`recfunnel serve --event-retention-days`: the event log is compacted at start-up, before the replay."""

import time

import pytest

from recfunnel.config import config_from_dict
from recfunnel.errors import ConfigError
from recfunnel.pipeline.offline.fit import fit_funnel
from recfunnel.serving.app import create_app
from recfunnel.serving.settings import ServingSettings
from recfunnel.storage.events import Event, PublishedItem
from recfunnel.storage.stores import open_event_store
from recfunnel.testing.synthetic import make_planted_data

DAY = 86_400


def test_old_events_are_dropped_at_start_up_and_items_and_new_events_kept(tmp_path):
    data = make_planted_data(n_users_per_group=10, n_groups=2, items_per_group=10, seed=0)
    cfg = config_from_dict({"channels": [{"kind": "popular", "quota": 10}], "retrieval_k": 10})
    fit_funnel(data, cfg, progress=False).save(tmp_path / "v1")
    url = f"sqlite:///{tmp_path / 'events.db'}"
    now = int(time.time())
    store = open_event_store(url)
    store.append([Event("old", "u00001", "i00001", "click", now - 40 * DAY),
                  Event("new", "u00001", "i00002", "click", now - 1 * DAY)])
    store.append_items([PublishedItem("fresh-item", now - 50 * DAY, {})])
    store.close()

    service = create_app(ServingSettings(model_dir=tmp_path / "v1", events_url=url,
                                         event_retention_days=30)).state.service
    try:
        assert [e.event_id for e in service.store.scan()] == ["new"]
        kinds = [type(r).__name__ for r in service.store.scan_all()]
        assert kinds.count("PublishedItem") == 1  # items are never dropped by age
    finally:
        service.close()
    with pytest.raises(ConfigError, match="event_retention_days"):
        ServingSettings(model_dir=tmp_path / "v1", event_retention_days=0)
