"""Prometheus metrics of one service instance (its own registry, so apps never share counters).

>>> m = ServiceMetrics()
>>> m.requests.labels(endpoint="/recommend", status="200").inc()
>>> b"recfunnel_requests_total" in m.render()
True
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

#: seconds; dense below 50 ms, where the serving budget lives
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25,
                   0.5, 1.0, 2.5, 5.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServiceMetrics:
    """The service's counters, gauges and histograms, in one registry."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("recfunnel_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("recfunnel_request_latency_seconds", "HTTP request latency, end to end",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.stage_latency = Histogram("recfunnel_stage_latency_seconds",
                                       "latency of each funnel stage and retrieval channel",
                                       ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.recommendations = Counter("recfunnel_recommendations", "recommendation requests answered",
                                       ["degraded"], registry=r)
        self.degraded = Counter("recfunnel_degraded", "recommendations answered in degraded mode", registry=r)
        self.fallback_items = Counter("recfunnel_fallback_items",
                                      "items filled from the popular fallback", registry=r)
        self.channel_failures = Counter("recfunnel_channel_failures",
                                        "retrieval channels or stages dropped from a request",
                                        ["stage", "reason"], registry=r)
        self.events = Counter("recfunnel_events_ingested", "events acknowledged, new or duplicate",
                              ["result"], registry=r)
        self.items_published = Counter("recfunnel_items_published", "items published with PUT /items",
                                       registry=r)
        self.rejected = Counter("recfunnel_rejected", "requests refused before handling",
                                ["reason"], registry=r)
        self.in_flight = Gauge("recfunnel_in_flight_requests", "requests being handled", registry=r)
        self.model_swaps = Counter("recfunnel_model_swaps", "model versions activated (loads and rollbacks)",
                                   ["action"], registry=r)
        self.model_info = Gauge("recfunnel_model_info", "the model version being served (value 1)",
                                ["version", "model_id"], registry=r)
        self.ready = Gauge("recfunnel_ready", "1 when the model is loaded and warmed up", registry=r)

    def set_model(self, version: str, model_id: str) -> None:
        self.model_info.clear()
        self.model_info.labels(version=version, model_id=model_id).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
