"""Prometheus metrics (no key needed; labels carry route templates and key ids only)."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Request
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.responses import Response

from privrec.service import RecSys

router = APIRouter(tags=["health"])


class ServingCollector(Collector):
    """Cache, memory and model-version gauges read from the facade at scrape time."""

    def __init__(self, rs: RecSys) -> None:
        self.rs = rs

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self.rs.serving.stats()
        for key, help_ in (
            ("cache_hits", "recommendation lists served from cache"),
            ("cache_misses", "recommendation lists computed"),
            ("cache_entries", "lists in the cache"),
            ("users_in_memory", "histories in memory"),
            ("events_in_memory", "events in memory"),
        ):
            g = GaugeMetricFamily(f"privrec_{key}", help_)
            g.add_metric([], float(stats.get(key, 0)))
            yield g
        info = GaugeMetricFamily(
            "privrec_model_active",
            "served model versions (1 per active version)",
            labels=["model", "version"],
        )
        for name, version in stats.get("models", {}).items():
            info.add_metric([name, version], 1.0)
        yield info


class Metrics:
    """The app's metrics in its own registry."""

    def __init__(self, rs: RecSys) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "privrec_request_seconds",
            "request latency",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
        )
        self.requests = Counter(
            "privrec_requests_total",
            "requests by status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.registry.register(ServingCollector(rs))


@router.get("/metrics", include_in_schema=True)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type="text/plain; version=0.0.4"
    )
