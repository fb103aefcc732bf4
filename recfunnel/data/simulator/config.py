"""Configuration of the platform simulator.

Every parameter of the generative model lives in one frozen dataclass; the
equations that use them are in ``docs/simulator.md``. The defaults describe a
small note/video feed (10k users, 50k notes, two weeks) that simulates in a few
seconds; ``simulate(..., target_exposures=...)`` scales the traffic.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from recfunnel.errors import ConfigError

#: 2026-01-01 00:00:00 China Standard Time (UTC+8): the platform's local midnight, so
#: ``(timestamp - START_TIME) % 86400 // 3600`` is the local hour of an event.
START_TIME = 1_767_196_800

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class SimulatorConfig:
    """Sizes, traffic and hidden-model parameters of a simulated note/video feed.

    Attributes are grouped as: sizes; traffic; users; items; the exposure policy
    (what the production system showed); feedback (true relevance, position
    bias, post-click actions). See ``docs/simulator.md`` for the equations.

    >>> cfg = SimulatorConfig(n_users=100, n_items=1_000, n_days=10)
    >>> cfg.n_initial_items, cfg.new_items_per_day
    (500, 50.0)
    """

    # ---- sizes
    n_users: int = 10_000
    n_items: int = 50_000
    n_days: int = 14
    seed: int = 0
    n_categories: int = 20
    n_sub_categories: int = 8  # per category
    n_authors: int = 5_000
    latent_dim: int = 16  # hidden user / item vectors
    content_dim: int = 16  # observable content vector (content_0..content_{d-1})

    # ---- traffic
    sessions_per_user_per_day: float = 1.5  # mean over all users; ignored when target_exposures is set
    exposures_per_session: int = 10  # slate size S: positions 0..S-1
    initial_item_fraction: float = 0.5  # share of items already published at day 0
    initial_history_days: int = 30  # initial items were published over this many days before day 0
    start_time: int = START_TIME
    weekend_traffic_boost: float = 1.15  # Saturday / Sunday sessions relative to weekdays
    scroll_seconds: float = 3.0  # mean seconds between two exposures without a click
    read_seconds: float = 25.0  # mean seconds spent on a clicked image note
    rows_per_part: int = 1_000_000  # exposures per file under exposures/ (bounds memory)

    # ---- users
    activity_exponent: float = 1.5  # Pareto tail index of the session rate
    max_activity: float = 200.0  # cap on the Pareto draw (x_min = 1)
    interests_per_user: float = 3.0  # mean number of categories a user likes
    interest_concentration: float = 0.7  # Dirichlet alpha over the chosen categories
    category_popularity_exponent: float = 0.8  # Zipf exponent of category popularity
    demographic_tilt: float = 0.7  # std of the gender / age shifts of category preference
    user_latent_noise: float = 0.6  # idiosyncratic part of the user vector
    video_affinity_scale: float = 0.5  # std of the user's taste for videos (logit)

    # ---- items
    popularity_exponent: float = 0.9  # Zipf exponent s: popularity of rank r is r^-s
    popularity_quality_coupling: float = 0.7  # how much quality decides popularity rank
    author_exponent: float = 1.0  # Zipf exponent of author productivity
    author_home_prob: float = 0.85  # an author posts in their home category with this probability
    author_quality_share: float = 0.6  # correlation of item quality with its author's quality
    sub_category_scale: float = 0.6  # weight of the sub-category offset in the item vector
    item_latent_noise: float = 0.5  # idiosyncratic part of the item vector
    content_noise: float = 0.5  # noise-to-signal ratio of the content vector
    video_fraction: float = 0.4
    promoted_fraction: float = 0.03
    commerce_fraction: float = 0.1
    video_median_seconds: float = 45.0  # video duration ~ LogNormal(log median, sigma)
    video_duration_sigma: float = 0.8

    # ---- exposure policy (the production system that produced the log)
    policy_interest_share: float = 0.6  # slots filled from the user's categories
    policy_fresh_share: float = 0.15  # slots given to new items (cold-start traffic)
    # the remaining 1 - interest - fresh slots come from global popularity
    policy_exploration: float = 0.1  # interest slots that pick a category by popularity instead
    fresh_window_days: float = 2.0  # "new" = published within this window
    promoted_boost: float = 3.0  # exposure weight multiplier of promoted items
    policy_rank_noise: float = 1.0  # std of the noise in the policy's ordering score (logit)

    # ---- feedback: true relevance (click probability at position 0)
    position_bias_exponent: float = 1.0  # examine(p) = (1 + p)^-eta
    relevance_bias: float = -4.5
    relevance_affinity: float = 2.0  # weight of u . v
    relevance_interest: float = 1.5  # weight of the user's interest in the item's category
    relevance_quality: float = 0.5
    relevance_freshness: float = 0.7
    freshness_tau_days: float = 2.0
    relevance_promoted: float = -0.3  # ads are a little less relevant

    # ---- feedback after a click: p = sigmoid(bias + action_relevance * z + action_quality * q)
    like_bias: float = -1.5
    collect_bias: float = -2.5
    share_bias: float = -4.0
    comment_bias: float = -3.5
    action_relevance: float = 0.8
    action_quality: float = 0.5
    conversion_bias: float = -3.0  # commerce-card items only
    watch_bias: float = 1.0  # completion = sigmoid(bias + watch_relevance * z + watch_quality * q + noise)
    watch_relevance: float = 0.8
    watch_quality: float = 0.3
    watch_noise: float = 1.0

    def __post_init__(self) -> None:
        positive_ints = ("n_users", "n_items", "n_days", "n_categories", "n_sub_categories", "n_authors",
                         "latent_dim", "content_dim", "exposures_per_session", "rows_per_part",
                         "initial_history_days")
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"SimulatorConfig.{name} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"SimulatorConfig.seed must be a non-negative integer, got {self.seed!r}")
        fractions = ("initial_item_fraction", "author_home_prob", "author_quality_share", "video_fraction",
                     "promoted_fraction", "commerce_fraction", "policy_interest_share", "popularity_quality_coupling",
                     "policy_fresh_share", "policy_exploration")
        for name in fractions:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"SimulatorConfig.{name} must be in [0, 1], got {value!r}")
        if self.policy_interest_share + self.policy_fresh_share > 1.0:
            raise ConfigError("SimulatorConfig.policy_interest_share + policy_fresh_share must be at most 1")
        positive_floats = ("sessions_per_user_per_day", "activity_exponent", "interests_per_user",
                           "interest_concentration", "fresh_window_days", "freshness_tau_days",
                           "video_median_seconds", "scroll_seconds", "read_seconds", "promoted_boost",
                           "weekend_traffic_boost")
        for name in positive_floats:
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"SimulatorConfig.{name} must be a positive number, got {value!r}")
        if self.max_activity < 1:
            raise ConfigError(f"SimulatorConfig.max_activity must be >= 1, got {self.max_activity!r}")
        if self.exposures_per_session > self.rows_per_part:
            raise ConfigError("SimulatorConfig.rows_per_part must hold at least one session")
        # every slate needs S distinct items that are already published at day 0
        if self.n_initial_items < self.exposures_per_session:
            raise ConfigError(
                f"SimulatorConfig: only {self.n_initial_items} items exist at day 0 but a session shows "
                f"{self.exposures_per_session}; raise n_items or initial_item_fraction"
            )

    @property
    def n_initial_items(self) -> int:
        """Items already published when the simulation starts."""
        return int(round(self.n_items * self.initial_item_fraction))

    @property
    def new_items_per_day(self) -> float:
        """Items published per simulated day (the rest of the catalogue, spread evenly)."""
        return (self.n_items - self.n_initial_items) / self.n_days

    @property
    def end_time(self) -> int:
        """Unix seconds at the end of the last simulated day."""
        return self.start_time + self.n_days * SECONDS_PER_DAY

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SimulatorConfig:
        """Build a config from a dict (e.g. ``simulator.json["config"]``), refusing unknown keys.

        Args:
            values: field name -> value; missing fields keep their defaults.

        Returns:
            The validated config.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown SimulatorConfig field(s): {', '.join(unknown)}")
        return cls(**values)
