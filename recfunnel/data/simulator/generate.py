"""The platform simulator: a synthetic note/video feed with known ground truth.

``simulate`` builds a hidden world (categories, users, authors, items), writes
the observable tables, then replays ``n_days`` of traffic: sessions of slates
chosen by a production-like exposure policy, clicks drawn from the oracle's true
relevance times a position bias, and post-click actions. Exposures are produced
and written per day and per block of sessions, so memory stays bounded however
long the log is. The model and its parameters are documented in
``docs/simulator.md``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from recfunnel.data.simulator.config import SECONDS_PER_DAY, SimulatorConfig
from recfunnel.data.simulator.oracle import (
    ITEM_PREFIX,
    ORACLE_ARRAYS,
    ORACLE_JSON,
    USER_PREFIX,
    Oracle,
    format_ids,
    sigmoid,
)
from recfunnel.errors import ConfigError
from recfunnel.storage.artifacts import atomic_write_text

FORMAT_VERSION = 1
USERS_FILE = "users.parquet"
ITEMS_FILE = "items.parquet"
EXPOSURES_DIR = "exposures"
INTERACTIONS_FILE = "interactions.parquet"
MANIFEST_FILE = "simulator.json"
AUTHOR_PREFIX = "a"

#: share of sessions starting in each local hour 0..23: a quiet night, a lunch
#: peak and the evening prime time of a lifestyle feed
HOURLY_TRAFFIC = np.array([
    3.5, 2.0, 1.2, 0.8, 0.6, 0.8, 1.8, 3.5, 4.5, 4.5, 4.5, 5.0,
    6.5, 6.0, 4.5, 4.2, 4.2, 4.5, 5.0, 6.0, 7.0, 7.5, 7.0, 5.5,
])

AGE_GROUPS = ("<18", "18-24", "25-34", "35-44", "45+")
AGE_PROBS = (0.08, 0.35, 0.35, 0.15, 0.07)
GENDERS = ("female", "male")
GENDER_PROBS = (0.7, 0.3)
CITIES = ("shanghai", "beijing", "guangzhou", "shenzhen", "chengdu", "hangzhou", "wuhan", "chongqing",
          "nanjing", "xian", "suzhou", "tianjin", "changsha", "zhengzhou", "qingdao", "other")
DEVICES = ("android", "ios", "pc")
DEVICE_PROBS = (0.5, 0.45, 0.05)
#: shift of the video taste by device: few people watch feed videos on a PC
DEVICE_VIDEO_SHIFT = (0.0, 0.0, -0.5)

EXPOSURE_SCHEMA = pa.schema([
    ("user_id", pa.string()),
    ("item_id", pa.string()),
    ("timestamp", pa.int64()),
    ("session_id", pa.int64()),
    ("position", pa.int16()),
    ("label", pa.int8()),
    ("like", pa.int8()),
    ("collect", pa.int8()),
    ("share", pa.int8()),
    ("comment", pa.int8()),
    ("watch_time", pa.float32()),
    ("conversion", pa.int8()),
])

_USER_BLOCK = 65_536  # users per block when building (block, n_categories) interest arrays
_ACTIONS = ("like", "collect", "share", "comment")


@dataclass(frozen=True)
class SimulationSummary:
    """What a simulation produced.

    Attributes:
        out_dir: the output directory.
        n_users / n_items / n_authors / n_days: sizes of the world.
        n_sessions / n_exposures / n_clicks: traffic totals; ``action_counts`` holds
            like / collect / share / comment / conversion totals.
        n_parts: files under ``exposures/``.
        wall_seconds: time ``simulate`` took.
        paths: name -> path of every output (users, items, exposures, interactions,
            oracle, oracle_json, manifest).
    """

    out_dir: Path
    n_users: int
    n_items: int
    n_authors: int
    n_days: int
    n_sessions: int
    n_exposures: int
    n_clicks: int
    n_parts: int
    wall_seconds: float
    action_counts: dict[str, int] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def ctr(self) -> float:
        """Clicks per exposure."""
        return self.n_clicks / max(self.n_exposures, 1)

    def __str__(self) -> str:
        return (f"{self.n_exposures:,} exposures in {self.n_sessions:,} sessions, {self.n_clicks:,} clicks "
                f"(CTR {self.ctr:.2%}); {self.n_users:,} users, {self.n_items:,} items, {self.n_days} days; "
                f"{self.n_parts} exposure files; {self.wall_seconds:.1f}s")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (paths as strings)."""
        return {
            "out_dir": str(self.out_dir), "n_users": self.n_users, "n_items": self.n_items,
            "n_authors": self.n_authors, "n_days": self.n_days, "n_sessions": self.n_sessions,
            "n_exposures": self.n_exposures, "n_clicks": self.n_clicks, "ctr": self.ctr,
            "n_parts": self.n_parts, "wall_seconds": self.wall_seconds,
            "action_counts": dict(self.action_counts),
            "paths": {k: str(v) for k, v in self.paths.items()},
        }


# ---------------------------------------------------------------- the hidden world
@dataclass
class _World:
    """Everything hidden and observable about users and items, as arrays."""

    oracle: Oracle
    # categories
    category_prior: np.ndarray  # (C,) float64 popularity of each category
    # users
    gender: np.ndarray
    age_group: np.ndarray
    city: np.ndarray
    device: np.ndarray
    activity: np.ndarray  # (U,) float64 relative session rate
    interest_rows_cum: np.ndarray  # (nnz,) float64 row + cumulative interest within the row
    interest_cols: np.ndarray  # (nnz,) int32 category of each entry
    # authors and items (items are numbered in publish order)
    item_author: np.ndarray
    item_sub_category: np.ndarray
    item_commerce: np.ndarray
    item_duration: np.ndarray  # (I,) float32 seconds, 0 for images
    item_content: np.ndarray  # (I, content_dim) float32
    item_popularity: np.ndarray  # (I,) float64 Zipf weight (before the promoted boost)


def _rng(seed: int, *stream: int) -> np.random.Generator:
    # one independent stream per purpose (and per day), so changing one part of
    # the model does not reshuffle every other random draw
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Weights rank^-exponent over a random permutation of ``n`` entities."""
    return (rng.permutation(n) + 1.0) ** -exponent


def _sample_hours(rng: np.random.Generator, n: int) -> np.ndarray:
    cum = np.cumsum(HOURLY_TRAFFIC / HOURLY_TRAFFIC.sum())
    cum[-1] = 1.0
    return np.minimum(np.searchsorted(cum, rng.random(n), side="right"), 23)


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Split ``total`` into integer parts proportional to ``weights`` (largest remainder)."""
    share = total * weights / weights.sum()
    parts = np.floor(share).astype(np.int64)
    remainder = total - int(parts.sum())
    if remainder > 0:
        parts[np.argsort(-(share - parts), kind="stable")[:remainder]] += 1
    return parts


def _build_world(cfg: SimulatorConfig) -> _World:
    n_cat, dim = cfg.n_categories, cfg.latent_dim

    # ---- categories: popularity, latent centroids, sub-category offsets, demographic tastes
    rng = _rng(cfg.seed, 1)
    category_prior = _zipf_weights(n_cat, cfg.category_popularity_exponent, rng)
    category_prior /= category_prior.sum()
    centroids = _unit_rows(rng.standard_normal((n_cat, dim)))
    sub_offsets = _unit_rows(rng.standard_normal((n_cat, cfg.n_sub_categories, dim)))
    gender_tilt = rng.normal(0.0, cfg.demographic_tilt, (len(GENDERS), n_cat))
    age_tilt = rng.normal(0.0, cfg.demographic_tilt, (len(AGE_GROUPS), n_cat))

    # ---- users
    rng = _rng(cfg.seed, 2)
    n_users = cfg.n_users
    gender = rng.choice(len(GENDERS), n_users, p=GENDER_PROBS).astype(np.int8)
    age_group = rng.choice(len(AGE_GROUPS), n_users, p=AGE_PROBS).astype(np.int8)
    city_weights = 1.0 / np.arange(1, len(CITIES) + 1)
    city = rng.choice(len(CITIES), n_users, p=city_weights / city_weights.sum()).astype(np.int8)
    device = rng.choice(len(DEVICES), n_users, p=DEVICE_PROBS).astype(np.int8)
    # Pareto(x_min=1) session rates: a few heavy users make a large share of the traffic
    activity = np.minimum((1.0 - rng.random(n_users)) ** (-1.0 / cfg.activity_exponent), cfg.max_activity)
    n_interests = np.minimum(1 + rng.poisson(cfg.interests_per_user - 1.0, n_users), n_cat)
    interest = np.zeros((n_users, n_cat), dtype=np.float32)
    log_prior = np.log(category_prior)
    for lo in range(0, n_users, _USER_BLOCK):
        hi = min(lo + _USER_BLOCK, n_users)
        # Gumbel top-k: k_u distinct categories drawn without replacement with
        # probability ~ prior * exp(demographic tilt)
        scores = (log_prior + gender_tilt[gender[lo:hi]] + age_tilt[age_group[lo:hi]]
                  + rng.gumbel(size=(hi - lo, n_cat)))
        kth = -np.sort(-scores, axis=1)[np.arange(hi - lo), n_interests[lo:hi] - 1]
        chosen = scores >= kth[:, None]
        weights = (rng.gamma(cfg.interest_concentration, size=(hi - lo, n_cat)) + 1e-9) * chosen
        interest[lo:hi] = weights / weights.sum(axis=1, keepdims=True)
    user_latent = _unit_rows(interest.astype(np.float64) @ centroids
                             + cfg.user_latent_noise * rng.standard_normal((n_users, dim)) / math.sqrt(dim))
    video_affinity = (cfg.video_affinity_scale * rng.standard_normal(n_users)
                      + np.asarray(DEVICE_VIDEO_SHIFT)[device])
    # flattened per-user cumulative interests: entry j of user u holds u + cum_j, so one
    # global searchsorted samples a category for every slot at once
    rows, cols = np.nonzero(interest)
    values = interest[rows, cols].astype(np.float64)
    counts = np.bincount(rows, minlength=n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    cum = np.cumsum(values)
    within = cum - np.repeat(cum[starts] - values[starts], counts)
    within /= np.repeat(within[starts + counts - 1], counts)
    within[starts + counts - 1] = 1.0
    interest_rows_cum = rows + within

    # ---- authors
    rng = _rng(cfg.seed, 3)
    author_home = rng.choice(n_cat, cfg.n_authors, p=category_prior)
    author_quality = rng.standard_normal(cfg.n_authors)
    author_cum = np.cumsum(_zipf_weights(cfg.n_authors, cfg.author_exponent, rng))

    # ---- items, numbered in publish order
    n_items, n_initial = cfg.n_items, cfg.n_initial_items
    n_new = n_items - n_initial
    initial_day = rng.integers(-cfg.initial_history_days, 0, n_initial)
    new_day = np.repeat(np.arange(cfg.n_days), _apportion(n_new, np.ones(cfg.n_days)))
    day = np.concatenate([initial_day, new_day])
    publish_time = np.sort(cfg.start_time + day * SECONDS_PER_DAY + _sample_hours(rng, n_items) * 3600
                           + rng.integers(0, 3600, n_items))
    author = np.minimum(np.searchsorted(author_cum, rng.random(n_items) * author_cum[-1], side="right"),
                        cfg.n_authors - 1)
    off_home = rng.random(n_items) >= cfg.author_home_prob
    category = author_home[author].copy()
    category[off_home] = rng.choice(n_cat, int(off_home.sum()), p=category_prior)
    sub_category = rng.integers(0, cfg.n_sub_categories, n_items)
    share = cfg.author_quality_share
    quality = share * author_quality[author] + math.sqrt(1.0 - share**2) * rng.standard_normal(n_items)
    # video and commerce rates vary by category around the configured means (on the logit scale)
    video_rate = sigmoid(_logit(cfg.video_fraction) + rng.normal(0.0, 0.8, n_cat))
    commerce_rate = sigmoid(_logit(cfg.commerce_fraction) + rng.normal(0.0, 1.0, n_cat))
    is_video = rng.random(n_items) < video_rate[category]
    commerce = rng.random(n_items) < commerce_rate[category]
    promoted = rng.random(n_items) < cfg.promoted_fraction
    duration = np.where(is_video, np.clip(np.round(
        cfg.video_median_seconds * np.exp(cfg.video_duration_sigma * rng.standard_normal(n_items))), 5, 900), 0.0)
    item_latent = _unit_rows(centroids[category] + cfg.sub_category_scale * sub_offsets[category, sub_category]
                             + cfg.item_latent_noise * rng.standard_normal((n_items, dim)) / math.sqrt(dim))
    # observable content = a fixed random projection of the hidden vector plus noise;
    # both parts have norm ~1 and ~content_noise
    projection = rng.standard_normal((cfg.content_dim, dim)) / math.sqrt(cfg.content_dim)
    content = (item_latent @ projection.T
               + cfg.content_noise * rng.standard_normal((n_items, cfg.content_dim)) / math.sqrt(cfg.content_dim))
    # popularity rank mixes quality with luck; Zipf weights over the ranks
    c = cfg.popularity_quality_coupling
    luck = c * quality + math.sqrt(max(1.0 - c**2, 0.0)) * rng.standard_normal(n_items)
    rank = np.empty(n_items, dtype=np.int64)
    rank[np.argsort(-luck, kind="stable")] = np.arange(1, n_items + 1)
    popularity = rank.astype(np.float64) ** -cfg.popularity_exponent

    oracle = Oracle(
        {
            "user_latent": user_latent.astype(np.float32),
            "user_interest": interest,
            "user_video_affinity": video_affinity.astype(np.float32),
            "item_latent": item_latent.astype(np.float32),
            "item_category": category.astype(np.int32),
            "item_quality": quality.astype(np.float32),
            "item_publish_time": publish_time.astype(np.int64),
            "item_is_video": is_video.astype(np.int8),
            "item_promoted": promoted.astype(np.int8),
        },
        {
            "relevance_bias": cfg.relevance_bias, "relevance_affinity": cfg.relevance_affinity,
            "relevance_interest": cfg.relevance_interest, "relevance_quality": cfg.relevance_quality,
            "relevance_freshness": cfg.relevance_freshness, "freshness_tau_days": cfg.freshness_tau_days,
            "relevance_promoted": cfg.relevance_promoted,
            "position_bias_exponent": cfg.position_bias_exponent, "end_time": cfg.end_time,
        },
    )
    return _World(
        oracle=oracle, category_prior=category_prior,
        gender=gender, age_group=age_group, city=city, device=device, activity=activity,
        interest_rows_cum=interest_rows_cum, interest_cols=cols.astype(np.int32),
        item_author=author, item_sub_category=sub_category, item_commerce=commerce.astype(np.int8),
        item_duration=duration.astype(np.float32), item_content=content.astype(np.float32),
        item_popularity=popularity,
    )


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1.0 - p))


# ---------------------------------------------------------------- the exposure policy
class _Policy:
    """The production system that chose what users saw: interest, popularity and fresh slots.

    Items are numbered in publish order, so "published by t" is the index prefix
    ``[0, n_published(t))``, globally and, through ``category_key``, per category.
    """

    def __init__(self, cfg: SimulatorConfig, world: _World):
        self.cfg = cfg
        a = world.oracle.arrays
        self.publish_time = a["item_publish_time"]
        self.n_items = len(self.publish_time)
        weight = world.item_popularity * np.where(a["item_promoted"] > 0, cfg.promoted_boost, 1.0)
        self.cum_global = np.concatenate([[0.0], np.cumsum(weight)])
        category = a["item_category"].astype(np.int64)
        self.category_order = np.argsort(category, kind="stable")  # by category, then publish order
        self.category_start = np.searchsorted(category[self.category_order], np.arange(cfg.n_categories + 1))
        self.category_key = category[self.category_order] * self.n_items + self.category_order
        self.cum_category = np.concatenate([[0.0], np.cumsum(weight[self.category_order])])
        self.prior_cum = np.cumsum(world.category_prior)
        self.prior_cum[-1] = 1.0
        self.interest_rows_cum = world.interest_rows_cum
        self.interest_cols = world.interest_cols

    def n_published(self, t: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.publish_time, t, side="right")

    def global_popular(self, rng: np.random.Generator, n_pub: np.ndarray) -> np.ndarray:
        """Item ~ popularity among the first ``n_pub`` items (inverse CDF on the cumulative weights)."""
        r = rng.random(len(n_pub)) * self.cum_global[n_pub]
        return np.minimum(np.searchsorted(self.cum_global, r, side="right") - 1, n_pub - 1)

    def in_category(self, rng: np.random.Generator, category: np.ndarray, n_pub: np.ndarray) -> np.ndarray:
        """Item ~ popularity among the published items of ``category``; global popularity if none."""
        start = self.category_start[category]
        n_in = np.searchsorted(self.category_key, category * self.n_items + n_pub, side="left") - start
        lo, hi = self.cum_category[start], self.cum_category[start + n_in]
        r = lo + rng.random(len(category)) * (hi - lo)
        j = np.clip(np.searchsorted(self.cum_category, r, side="right") - 1, start, start + np.maximum(n_in, 1) - 1)
        items = self.category_order[np.minimum(j, self.n_items - 1)]
        empty = n_in == 0
        if empty.any():
            items[empty] = self.global_popular(rng, n_pub[empty])
        return items

    def interest(self, rng: np.random.Generator, user: np.ndarray, n_pub: np.ndarray) -> np.ndarray:
        """A category from the user's interests (or, when exploring, by popularity), then an item in it."""
        r = rng.random(len(user))
        j = np.searchsorted(self.interest_rows_cum, user + r, side="right")
        category = self.interest_cols[np.minimum(j, len(self.interest_cols) - 1)].astype(np.int64)
        explore = rng.random(len(user)) < self.cfg.policy_exploration
        category[explore] = np.searchsorted(self.prior_cum, rng.random(int(explore.sum())), side="right")
        category = np.minimum(category, self.cfg.n_categories - 1)
        return self.in_category(rng, category, n_pub)

    def fresh(self, rng: np.random.Generator, t: np.ndarray, n_pub: np.ndarray) -> np.ndarray:
        """Uniform over items published within ``fresh_window_days`` (cold-start traffic)."""
        lo = np.searchsorted(self.publish_time, t - int(self.cfg.fresh_window_days * SECONDS_PER_DAY), side="right")
        lo = np.minimum(lo, n_pub - 1)
        return lo + np.floor(rng.random(len(t)) * (n_pub - lo)).astype(np.int64)

    def slates(self, rng: np.random.Generator, user: np.ndarray, start: np.ndarray) -> np.ndarray:
        """(B, S) distinct item indices per session, unordered."""
        n_slots = self.cfg.exposures_per_session
        user_slot = np.repeat(user, n_slots)
        t_slot = np.repeat(start, n_slots)
        n_pub = np.repeat(self.n_published(start), n_slots)
        channel = rng.random(len(user_slot))
        interest = channel < self.cfg.policy_interest_share
        fresh = ~interest & (channel < self.cfg.policy_interest_share + self.cfg.policy_fresh_share)
        popular = ~interest & ~fresh
        items = np.empty(len(user_slot), dtype=np.int64)
        items[interest] = self.interest(rng, user_slot[interest], n_pub[interest])
        items[fresh] = self.fresh(rng, t_slot[fresh], n_pub[fresh])
        items[popular] = self.global_popular(rng, n_pub[popular])
        # a feed never shows the same note twice in one slate: redraw repeats, first by
        # popularity, then uniformly (which ends quickly even when one item dominates)
        for round_ in range(12):
            dup = _later_duplicates(items.reshape(-1, n_slots)).ravel()
            if not dup.any():
                break
            if round_ < 2:
                items[dup] = self.global_popular(rng, n_pub[dup])
            else:
                items[dup] = np.floor(rng.random(int(dup.sum())) * n_pub[dup]).astype(np.int64)
        return items.reshape(-1, n_slots)


def _later_duplicates(slates: np.ndarray) -> np.ndarray:
    """(B, S) mask of entries equal to an earlier entry of the same row."""
    order = np.argsort(slates, axis=1, kind="stable")
    ordered = np.take_along_axis(slates, order, axis=1)
    dup_sorted = np.zeros(slates.shape, dtype=bool)
    dup_sorted[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    dup = np.zeros(slates.shape, dtype=bool)
    np.put_along_axis(dup, order, dup_sorted, axis=1)
    return dup


# ---------------------------------------------------------------- feedback
def _simulate_block(cfg: SimulatorConfig, world: _World, policy: _Policy, rng: np.random.Generator,
                    user: np.ndarray, start: np.ndarray) -> dict[str, np.ndarray]:
    """Exposures and feedback of B sessions; arrays of B * S rows, session-major, position-minor."""
    n_sessions, n_slots = len(user), cfg.exposures_per_session
    oracle = world.oracle
    a = oracle.arrays
    slates = policy.slates(rng, user, start)
    user_slot = np.repeat(user, n_slots)
    t_slot = np.repeat(start, n_slots)
    z = oracle.logit_index(user_slot, slates.ravel(), t_slot).reshape(n_sessions, n_slots)
    # the policy orders the slate by a noisy estimate of relevance: position and relevance are
    # confounded, as in a real log, and the position effect is still known exactly
    ranking_score = z + cfg.policy_rank_noise * rng.standard_normal(z.shape)
    order = np.argsort(-ranking_score, axis=1, kind="stable")
    items = np.take_along_axis(slates, order, axis=1).ravel()
    z = np.take_along_axis(z, order, axis=1).ravel()

    n = len(items)
    position = np.tile(np.arange(n_slots, dtype=np.int16), n_sessions)
    examine = (1.0 + position) ** -cfg.position_bias_exponent
    click = rng.random(n) < examine * sigmoid(z)
    quality = a["item_quality"][items].astype(np.float64)
    actions: dict[str, np.ndarray] = {}
    for name in _ACTIONS:
        bias = getattr(cfg, f"{name}_bias")
        p = sigmoid(bias + cfg.action_relevance * z + cfg.action_quality * quality)
        actions[name] = click & (rng.random(n) < p)
    is_video = a["item_is_video"][items] > 0
    completion = sigmoid(cfg.watch_bias + cfg.watch_relevance * z + cfg.watch_quality * quality
                         + cfg.watch_noise * rng.standard_normal(n))
    watch_time = np.where(click & is_video, world.item_duration[items] * completion, 0.0).astype(np.float32)
    p_convert = sigmoid(cfg.conversion_bias + cfg.action_relevance * z + cfg.action_quality * quality)
    conversion = click & (world.item_commerce[items] > 0) & (rng.random(n) < p_convert)
    # exposure times: scrolling gaps, plus the watch / read time of clicked notes
    dwell = rng.exponential(cfg.scroll_seconds, n) + np.where(
        click, np.where(is_video, watch_time, rng.exponential(cfg.read_seconds, n)), 0.0)
    dwell = dwell.reshape(n_sessions, n_slots)
    offset = np.cumsum(dwell, axis=1) - dwell
    timestamp = (start[:, None] + np.floor(offset).astype(np.int64)).ravel()
    return {
        "user": user_slot, "item": items, "timestamp": timestamp, "position": position,
        "label": click, **actions, "watch_time": watch_time, "conversion": conversion,
    }


def _block_table(block: dict[str, np.ndarray], session_id: np.ndarray, user_ids: pa.Array,
                 item_ids: pa.Array) -> pa.Table:
    # ids are formatted once for the whole catalogue and gathered here: no Python strings per row
    columns = {
        "user_id": user_ids.take(pa.array(block["user"])),
        "item_id": item_ids.take(pa.array(block["item"])),
        "timestamp": pa.array(block["timestamp"], pa.int64()),
        "session_id": pa.array(session_id, pa.int64()),
        "position": pa.array(block["position"], pa.int16()),
    }
    for name in ("label", *_ACTIONS):
        columns[name] = pa.array(block[name].astype(np.int8), pa.int8())
    columns["watch_time"] = pa.array(block["watch_time"], pa.float32())
    columns["conversion"] = pa.array(block["conversion"].astype(np.int8), pa.int8())
    return pa.table(columns, schema=EXPOSURE_SCHEMA)


# ---------------------------------------------------------------- tables
def _strings(names: tuple[str, ...] | list[str], index: np.ndarray) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(index.astype(np.int32)), pa.array(list(names))).cast(pa.string())


def _users_table(world: _World) -> pa.Table:
    n_users = len(world.activity)
    return pa.table({
        "user_id": pa.array(format_ids(USER_PREFIX, np.arange(n_users))),
        "age_group": _strings(AGE_GROUPS, world.age_group),
        "gender": _strings(GENDERS, world.gender),
        "city": _strings(CITIES, world.city),
        "device": _strings(DEVICES, world.device),
    })


def _items_table(cfg: SimulatorConfig, world: _World) -> pa.Table:
    a = world.oracle.arrays
    n_items = len(a["item_category"])
    category_names = [f"c{c}" for c in range(cfg.n_categories)]
    sub_names = [f"c{c}_s{s}" for c in range(cfg.n_categories) for s in range(cfg.n_sub_categories)]
    columns: dict[str, pa.Array] = {
        "item_id": pa.array(format_ids(ITEM_PREFIX, np.arange(n_items))),
        "category": _strings(category_names, a["item_category"]),
        "sub_category": _strings(sub_names, a["item_category"] * cfg.n_sub_categories + world.item_sub_category),
        "author_id": pa.array(format_ids(AUTHOR_PREFIX, world.item_author)),
        "item_type": _strings(("image", "video"), a["item_is_video"]),
        "promoted": pa.array(a["item_promoted"], pa.int8()),
        "commerce_card": pa.array(world.item_commerce, pa.int8()),
        "publish_time": pa.array(a["item_publish_time"], pa.int64()),
        "duration": pa.array(world.item_duration, pa.float32()),
    }
    for j in range(cfg.content_dim):
        columns[f"content_{j}"] = pa.array(np.ascontiguousarray(world.item_content[:, j]), pa.float32())
    return pa.table(columns)


# ---------------------------------------------------------------- traffic plan
def _sessions_per_day(cfg: SimulatorConfig, target_exposures: int | None) -> np.ndarray:
    """Sessions of each day: weekends busier; scaled to ``target_exposures`` when given."""
    # 1970-01-01 was a Thursday (weekday 3 with Monday = 0); days are local (UTC+8) days
    first_weekday = ((cfg.start_time + 8 * 3600) // SECONDS_PER_DAY + 3) % 7
    weekday = (first_weekday + np.arange(cfg.n_days)) % 7
    weights = np.where(weekday >= 5, cfg.weekend_traffic_boost, 1.0)
    if target_exposures is not None:
        total = -(-target_exposures // cfg.exposures_per_session)
    else:
        total = max(int(round(cfg.n_users * cfg.sessions_per_user_per_day * cfg.n_days)), 1)
    return _apportion(total, weights)


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"simulation output {out_dir} exists and is not a directory")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise ConfigError(f"simulation output {out_dir} is not empty; choose another directory or overwrite")
        # remove only what a simulation writes: stale parts of a longer run would join the new log
        for name in (USERS_FILE, ITEMS_FILE, INTERACTIONS_FILE, ORACLE_ARRAYS, ORACLE_JSON, MANIFEST_FILE):
            (out_dir / name).unlink(missing_ok=True)
        if (out_dir / EXPOSURES_DIR).is_dir():
            shutil.rmtree(out_dir / EXPOSURES_DIR)
    (out_dir / EXPOSURES_DIR).mkdir(parents=True, exist_ok=True)


def simulate(config: SimulatorConfig, out_dir: str | Path, *, progress: bool = True,
             target_exposures: int | None = None, overwrite: bool = False) -> SimulationSummary:
    """Simulate a note/video feed and write its tables, log and ground truth to ``out_dir``.

    Args:
        config: sizes and model parameters.
        out_dir: output directory; must be empty or absent unless ``overwrite``.
        progress: show a tqdm bar over exposures.
        target_exposures: total exposures to produce (e.g. 10_000_000); sets the
            sessions per day (``ceil(target / S)`` sessions spread over the days,
            the last slate cut to hit the target exactly). Default:
            ``n_users * sessions_per_user_per_day`` sessions per day.
        overwrite: replace the outputs of a previous simulation in ``out_dir``.

    Returns:
        A :class:`SimulationSummary` with counts, wall time and paths.

    Example:
        >>> import tempfile
        >>> cfg = SimulatorConfig(n_users=50, n_items=500, n_days=2, n_authors=20)
        >>> with tempfile.TemporaryDirectory() as out:
        ...     s = simulate(cfg, out, progress=False, target_exposures=1_000)
        >>> s.n_exposures, s.n_clicks > 0
        (1000, True)
    """
    started = time.perf_counter()
    if target_exposures is not None and (isinstance(target_exposures, bool) or target_exposures < 1):
        raise ConfigError(f"target_exposures must be a positive integer, got {target_exposures!r}")
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, overwrite)
    cfg = config

    world = _build_world(cfg)
    pq.write_table(_users_table(world), out_dir / USERS_FILE)
    pq.write_table(_items_table(cfg, world), out_dir / ITEMS_FILE)
    world.oracle.save(out_dir)
    policy = _Policy(cfg, world)
    user_ids = pa.array(format_ids(USER_PREFIX, np.arange(cfg.n_users)))
    item_ids = pa.array(format_ids(ITEM_PREFIX, np.arange(cfg.n_items)))

    sessions_per_day = _sessions_per_day(cfg, target_exposures)
    total = int(sessions_per_day.sum()) * cfg.exposures_per_session
    if target_exposures is not None:
        total = min(total, target_exposures)
    sessions_per_block = cfg.rows_per_part // cfg.exposures_per_session
    activity_cum = np.cumsum(world.activity)

    counts = {"sessions": 0, "exposures": 0, "clicks": 0, "parts": 0}
    action_counts = dict.fromkeys((*_ACTIONS, "conversion"), 0)
    interactions_tmp = out_dir / f".{INTERACTIONS_FILE}.tmp"
    bar = tqdm(total=total, unit="exp", unit_scale=True, disable=not progress, desc="simulate")
    try:
        with pq.ParquetWriter(interactions_tmp, EXPOSURE_SCHEMA) as clicks_writer:
            for day in range(cfg.n_days):
                rng = _rng(cfg.seed, 4, day)
                n_sessions = int(sessions_per_day[day])
                user = np.minimum(np.searchsorted(activity_cum, rng.random(n_sessions) * activity_cum[-1],
                                                  side="right"), cfg.n_users - 1)
                start = (cfg.start_time + day * SECONDS_PER_DAY + _sample_hours(rng, n_sessions) * 3600
                         + rng.integers(0, 3600, n_sessions))
                order = np.argsort(start, kind="stable")  # the log is in time order of sessions
                user, start = user[order], start[order]
                for lo in range(0, n_sessions, sessions_per_block):
                    hi = min(lo + sessions_per_block, n_sessions)
                    block = _simulate_block(cfg, world, policy, rng, user[lo:hi], start[lo:hi])
                    session_id = np.repeat(np.arange(counts["sessions"], counts["sessions"] + hi - lo),
                                           cfg.exposures_per_session)
                    keep = min(len(session_id), total - counts["exposures"])
                    if keep < len(session_id):  # the target cuts the last slate short
                        block = {k: v[:keep] for k, v in block.items()}
                        session_id = session_id[:keep]
                    table = _block_table(block, session_id, user_ids, item_ids)
                    pq.write_table(table, out_dir / EXPOSURES_DIR / f"part-{counts['parts']:05d}.parquet")
                    clicked = table.filter(pa.array(block["label"]))
                    if clicked.num_rows:
                        clicks_writer.write_table(clicked)
                    counts["sessions"] += hi - lo
                    counts["exposures"] += keep
                    counts["clicks"] += clicked.num_rows
                    counts["parts"] += 1
                    for name in action_counts:
                        action_counts[name] += int(block[name].sum())
                    bar.update(keep)
                    if counts["exposures"] >= total:
                        break
                if counts["exposures"] >= total:
                    break
        os.replace(interactions_tmp, out_dir / INTERACTIONS_FILE)
    finally:
        bar.close()
        interactions_tmp.unlink(missing_ok=True)

    paths = {
        "users": out_dir / USERS_FILE, "items": out_dir / ITEMS_FILE, "exposures": out_dir / EXPOSURES_DIR,
        "interactions": out_dir / INTERACTIONS_FILE, "oracle": out_dir / ORACLE_ARRAYS,
        "oracle_json": out_dir / ORACLE_JSON, "manifest": out_dir / MANIFEST_FILE,
    }
    summary = SimulationSummary(
        out_dir=out_dir, n_users=cfg.n_users, n_items=cfg.n_items, n_authors=cfg.n_authors,
        n_days=cfg.n_days, n_sessions=counts["sessions"], n_exposures=counts["exposures"],
        n_clicks=counts["clicks"], n_parts=counts["parts"], wall_seconds=time.perf_counter() - started,
        action_counts=action_counts, paths=paths,
    )
    # written last: its presence marks a complete simulation
    manifest = {
        "format_version": FORMAT_VERSION,
        "config": cfg.to_dict(),
        "target_exposures": target_exposures,
        "start_time": cfg.start_time,
        "end_time": cfg.end_time,
        "n_initial_items": cfg.n_initial_items,
        "new_items_per_day": cfg.new_items_per_day,
        "counts": {k: v for k, v in summary.to_dict().items() if k.startswith("n_") or k == "ctr"},
        "action_counts": action_counts,
        "files": {k: str(v.relative_to(out_dir)) for k, v in paths.items()},
        "exposure_columns": {f.name: str(f.type) for f in EXPOSURE_SCHEMA},
    }
    atomic_write_text(out_dir / MANIFEST_FILE, json.dumps(manifest, indent=2, sort_keys=True))
    return summary
