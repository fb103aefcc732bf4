"""The platform simulator: determinism, schemas, and the behaviours it must show."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from recfunnel.data.dataset import build_training_data
from recfunnel.data.simulator import EXPOSURE_SCHEMA, Oracle, SimulatorConfig, simulate
from recfunnel.errors import ConfigError, DataError

TINY = SimulatorConfig(n_users=300, n_items=3_000, n_days=6, n_authors=200, n_categories=8,
                       n_sub_categories=3, latent_dim=8, content_dim=6, rows_per_part=4_000, seed=7)
TARGET = 30_003  # not a multiple of the slate size: the last slate is cut


def _exposures(out: Path) -> pd.DataFrame:
    parts = sorted((out / "exposures").glob("part-*.parquet"))
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("sim")
    summary = simulate(TINY, out, progress=False, target_exposures=TARGET)
    return out, summary


@pytest.fixture(scope="module")
def exposures(sim) -> pd.DataFrame:
    return _exposures(sim[0])


@pytest.fixture(scope="module")
def items(sim) -> pd.DataFrame:
    return pd.read_parquet(sim[0] / "items.parquet")


@pytest.fixture(scope="module")
def oracle(sim) -> Oracle:
    return Oracle.load(sim[0])


def test_same_config_gives_identical_outputs(sim, exposures, tmp_path):
    out, _ = sim
    again = simulate(TINY, tmp_path / "again", progress=False, target_exposures=TARGET)
    pd.testing.assert_frame_equal(_exposures(again.out_dir), exposures)
    for name in ("interactions.parquet", "items.parquet", "users.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(out / name), pd.read_parquet(again.out_dir / name))
        assert (out / name).read_bytes() == (again.out_dir / name).read_bytes()
    for part in sorted((out / "exposures").iterdir()):
        assert part.read_bytes() == (again.out_dir / "exposures" / part.name).read_bytes()
    assert (out / "oracle.npz").read_bytes() == (again.out_dir / "oracle.npz").read_bytes()


def test_another_seed_gives_another_log(exposures, tmp_path):
    other = simulate(SimulatorConfig(**{**TINY.to_dict(), "seed": 8}), tmp_path, progress=False,
                     target_exposures=TARGET)
    assert not _exposures(other.out_dir)[["user_id", "item_id"]].equals(exposures[["user_id", "item_id"]])


def test_output_layout_and_schemas(sim, exposures, items):
    out, summary = sim
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["users.parquet", "items.parquet", "exposures", "interactions.parquet", "oracle.npz", "oracle.json",
         "simulator.json"])
    assert summary.n_exposures == len(exposures) == TARGET
    assert summary.n_parts == len(list((out / "exposures").iterdir())) > 1
    for part in (out / "exposures").iterdir():
        assert pq.read_schema(part).remove_metadata().equals(EXPOSURE_SCHEMA)
    assert pq.read_schema(out / "interactions.parquet").remove_metadata().equals(EXPOSURE_SCHEMA)

    users = pd.read_parquet(out / "users.parquet")
    assert list(users.columns) == ["user_id", "age_group", "gender", "city", "device"]
    assert users["user_id"].tolist() == [f"u{i}" for i in range(TINY.n_users)]
    assert all(pd.api.types.is_string_dtype(users[c]) for c in users.columns)

    content = [f"content_{j}" for j in range(TINY.content_dim)]
    assert list(items.columns) == ["item_id", "category", "sub_category", "author_id", "item_type", "promoted",
                                   "commerce_card", "publish_time", "duration", *content]
    assert "quality" not in items.columns
    assert items["item_id"].tolist() == [f"i{i}" for i in range(TINY.n_items)]
    assert set(items["item_type"]) == {"image", "video"}
    assert items["publish_time"].dtype == np.int64
    assert all(items[c].dtype == np.float32 for c in content)
    assert set(items["promoted"]) <= {0, 1} and set(items["commerce_card"]) <= {0, 1}
    assert items["author_id"].str.fullmatch(r"a\d+").all()
    assert (items["sub_category"].str.split("_").str[0] == items["category"]).all()

    manifest = json.loads((out / "simulator.json").read_text())
    assert SimulatorConfig.from_dict(manifest["config"]) == TINY
    assert manifest["counts"]["n_exposures"] == TARGET
    assert manifest["counts"]["n_clicks"] == summary.n_clicks
    with np.load(out / "oracle.npz", allow_pickle=False) as z:
        assert "item_quality" in z.files


def test_sessions_and_timestamps(exposures):
    s = TINY.exposures_per_session
    positions = exposures.groupby("session_id")["position"].agg(["min", "max", "size"])
    assert (positions["min"] == 0).all()
    assert (positions["max"] == positions["size"] - 1).all()
    assert (positions["size"].iloc[:-1] == s).all()  # only the last slate is cut by the target
    assert exposures.groupby("session_id")["item_id"].nunique().equals(positions["size"])
    assert exposures.groupby("session_id")["user_id"].nunique().eq(1).all()
    assert exposures.groupby("session_id")["timestamp"].apply(lambda t: t.is_monotonic_increasing).all()
    starts = exposures.groupby("session_id")["timestamp"].min()
    assert starts.is_monotonic_increasing  # the log is in time order of sessions
    day = (exposures["timestamp"] - TINY.start_time) // 86_400
    assert day.min() == 0 and day.max() >= TINY.n_days - 1
    hour = (exposures["timestamp"] - TINY.start_time) % 86_400 // 3600
    assert (hour.between(19, 22)).mean() > 3 * (hour.between(2, 5)).mean()  # evenings busy, nights quiet


def test_interactions_are_the_clicked_exposures(sim, exposures):
    interactions = pd.read_parquet(sim[0] / "interactions.parquet")
    clicked = exposures[exposures["label"] == 1].reset_index(drop=True)
    pd.testing.assert_frame_equal(interactions, clicked)
    assert (interactions["label"] == 1).all()
    assert sim[1].n_clicks == len(interactions) > 0


def test_actions_follow_clicks_and_watch_time_is_video_only(exposures, items):
    unclicked = exposures[exposures["label"] == 0]
    for name in ("like", "collect", "share", "comment", "conversion"):
        assert (unclicked[name] == 0).all()
        assert exposures[name].sum() > 0
    assert (unclicked["watch_time"] == 0).all()
    frame = exposures.merge(items[["item_id", "item_type", "commerce_card", "duration"]], on="item_id")
    assert (frame.loc[frame["item_type"] == "image", "watch_time"] == 0).all()
    videos = frame[(frame["item_type"] == "video") & (frame["label"] == 1)]
    assert (videos["watch_time"] > 0).all()
    assert (videos["watch_time"] <= videos["duration"] + 1e-3).all()
    assert (frame.loc[frame["commerce_card"] == 0, "conversion"] == 0).all()


def test_clicks_show_position_bias(exposures, tmp_path):
    ctr = exposures.groupby("position")["label"].mean()
    assert ctr[0] > ctr[4]
    # with the slate in random order, position alone explains the drop: examine(0) / examine(4) = 5
    shuffled = SimulatorConfig(**{**TINY.to_dict(), "policy_rank_noise": 1e6})
    log = _exposures(simulate(shuffled, tmp_path, progress=False, target_exposures=TARGET).out_dir)
    ctr = log.groupby("position")["label"].mean()
    assert 2.5 < ctr[0] / ctr[4] < 10


def test_clicked_items_are_more_relevant(exposures, oracle):
    relevance = oracle.relevance(exposures["user_id"].to_numpy(), exposures["item_id"].to_numpy(),
                                 exposures["timestamp"].to_numpy())
    assert ((relevance >= 0) & (relevance <= 1)).all()
    clicked = exposures["label"].to_numpy() == 1
    assert relevance[clicked].mean() > 1.5 * relevance[~clicked].mean()
    # the log's clicks are calibrated against the oracle: expected clicks ~ observed clicks
    examine = (1.0 + exposures["position"].to_numpy()) ** -TINY.position_bias_exponent
    expected = (examine * relevance).sum()
    assert abs(clicked.sum() - expected) < 5 * np.sqrt(expected)


def test_items_are_exposed_only_after_publication(exposures, items):
    published = items.set_index("item_id")["publish_time"]
    assert (exposures["timestamp"].to_numpy() >= published.loc[exposures["item_id"]].to_numpy()).all()


def test_new_items_appear_over_the_days(exposures, items):
    published_day = (items["publish_time"] - TINY.start_time) // 86_400
    assert (published_day < 0).sum() == TINY.n_initial_items
    new_per_day = published_day[published_day >= 0].value_counts().sort_index()
    assert new_per_day.index.tolist() == list(range(TINY.n_days))
    assert (new_per_day - TINY.new_items_per_day).abs().max() <= 1
    frame = exposures.merge(items[["item_id", "publish_time"]], on="item_id")
    frame["day"] = (frame["timestamp"] - TINY.start_time) // 86_400
    new_share = (frame["publish_time"] >= TINY.start_time).groupby(frame["day"]).mean()
    assert new_share.iloc[0] < new_share.iloc[-1]
    exposed_new = frame.loc[frame["publish_time"] >= TINY.start_time, "publish_time"]
    assert ((exposed_new - TINY.start_time) // 86_400).nunique() >= TINY.n_days - 1


def test_popularity_is_heavy_tailed(exposures):
    counts = np.sort(exposures["item_id"].value_counts().to_numpy())[::-1]
    top = counts[: max(1, len(counts) // 100)].sum() / counts.sum()
    assert top > 0.1  # the top 1% of exposed items take over 10% of exposures
    assert counts[0] > 20 * np.median(counts)


def test_oracle_round_trips(sim, oracle, tmp_path):
    oracle.save(tmp_path)
    again = Oracle.load(tmp_path)
    assert again.coefficients == oracle.coefficients
    for name, array in oracle.arrays.items():
        np.testing.assert_array_equal(again.arrays[name], array)
    users = np.array(["u0", "u5", "u299"])
    items = np.array(["i0", "i17", "i2999"])
    np.testing.assert_array_equal(again.relevance(users, items), oracle.relevance(users, items))
    assert oracle.n_users == TINY.n_users and oracle.n_items == TINY.n_items
    assert oracle.end_time == TINY.end_time


def test_oracle_top_items(oracle, items):
    top = oracle.top_items("u3", 10)
    assert len(top.item_ids) == 10 and np.all(np.diff(top.relevance) <= 0)
    np.testing.assert_allclose(oracle.relevance(["u3"] * 10, top.item_ids), top.relevance)
    everything = oracle.relevance(["u3"] * len(items), items["item_id"].to_numpy())
    assert top.relevance[0] == pytest.approx(everything.max())
    candidates = items["item_id"].to_numpy()[:50]
    restricted = oracle.top_items("u3", 5, candidates=candidates)
    assert set(restricted.item_ids) <= set(candidates)
    early = oracle.top_items("u3", 10_000, timestamp=TINY.start_time)
    assert len(early.item_ids) == TINY.n_initial_items  # unpublished items are not recommendable


def test_oracle_refuses_unknown_ids(oracle):
    with pytest.raises(DataError):
        oracle.relevance(["u0"], ["i999999"])
    with pytest.raises(DataError):
        oracle.relevance(["user0"], ["i0"])
    with pytest.raises(DataError):
        oracle.relevance(["u00"], ["i0"])


def test_outputs_load_as_training_data(sim):
    out, summary = sim
    data = build_training_data(
        pd.read_parquet(out / "interactions.parquet"),
        pd.read_parquet(out / "users.parquet").set_index("user_id"),
        pd.read_parquet(out / "items.parquet").set_index("item_id"),
    )
    assert len(data.interactions) == summary.n_clicks
    assert data.n_items == TINY.n_items and data.n_users == TINY.n_users


def test_invalid_config_and_output_dir(sim, tmp_path):
    with pytest.raises(ConfigError):
        SimulatorConfig(n_users=0)
    with pytest.raises(ConfigError):
        SimulatorConfig(policy_interest_share=0.8, policy_fresh_share=0.3)
    with pytest.raises(ConfigError):
        SimulatorConfig(n_items=10, exposures_per_session=10)
    with pytest.raises(ConfigError):
        SimulatorConfig.from_dict({"n_userz": 3})
    with pytest.raises(ConfigError):
        simulate(TINY, sim[0], progress=False, target_exposures=10)  # not empty
    small = SimulatorConfig(n_users=20, n_items=200, n_days=2, n_authors=5, rows_per_part=100)
    simulate(small, tmp_path, progress=False, target_exposures=1_000)
    summary = simulate(small, tmp_path, progress=False, target_exposures=200, overwrite=True)
    assert len(list((tmp_path / "exposures").iterdir())) == summary.n_parts == 2
