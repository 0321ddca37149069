"""`GET /metrics` (Prometheus text format): the receiver's own series, the queues' depth, and the series
worker processes keep in Redis (app/telemetry.py).

Per receiver process: retrain_deliveries_total{event,outcome}, retrain_enqueue_seconds.
Deployment-wide, the same on every receiver replica (aggregate them with max, not sum):
retrain_queue_depth{queue}, retrain_sessions_total{profile,outcome}, retrain_training_tokens_per_second,
retrain_training_loss, retrain_validation_loss, retrain_validation_bits_per_byte,
retrain_github_api_calls_total{method,status}, retrain_github_rate_limit_remaining{resource},
retrain_releases_total{outcome} (publishing a session's checkpoint: workers/jobs/release.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.telemetry import COUNTERS_KEY, GAUGES_KEY, parse_field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
HELP = {
    "retrain_sessions_total": "Training sessions that ended, by profile and outcome.",
    "retrain_training_tokens_per_second": "Training throughput of the latest progress report.",
    "retrain_training_loss": "Training loss of the latest progress report.",
    "retrain_validation_loss": "Validation loss after the latest session (nats per token).",
    "retrain_validation_bits_per_byte": "Validation bits per byte after the latest session: the headline figure.",
    "retrain_github_api_calls_total": "GitHub API calls made by workers, by method and HTTP status.",
    "retrain_github_rate_limit_remaining": "Requests left in the current GitHub rate-limit window.",
    "retrain_queue_depth": "Messages waiting on a Celery queue.",
    "retrain_releases_total": "Checkpoints of repositories that publish, by outcome: published, already_there, "
                              "not_best (another checkpoint is the profile's best) or failed.",
}


class SharedSeries(Collector):
    """What the last scrape read from Redis, as metric families (filled by `refresh` before each scrape)."""

    def __init__(self) -> None:
        self.counters: dict[bytes, bytes] = {}
        self.gauges: dict[bytes, bytes] = {}
        self.queues: dict[str, int] = {}

    async def refresh(self, store: Any, queues: Iterable[str]) -> None:
        async with store.pipeline(transaction=False) as pipe:
            pipe.hgetall(COUNTERS_KEY)
            pipe.hgetall(GAUGES_KEY)
            for queue in queues:
                pipe.llen(queue)
            counters, gauges, *depths = await pipe.execute()
        self.counters, self.gauges = counters, gauges
        self.queues = dict(zip(queues, (int(d) for d in depths), strict=True))

    def collect(self) -> Iterator[Metric]:
        yield from _families(self.counters, CounterMetricFamily, suffix="_total")
        yield from _families(self.gauges, GaugeMetricFamily)
        depth = GaugeMetricFamily("retrain_queue_depth", HELP["retrain_queue_depth"], labels=["queue"])
        for queue, n in sorted(self.queues.items()):
            depth.add_metric([queue], n)
        yield depth


def _families(raw: dict[bytes, bytes], family: type, suffix: str = "") -> Iterator[Metric]:
    grouped: dict[str, list[tuple[dict[str, str], float]]] = {}
    for key, value in raw.items():
        try:
            name, labels = parse_field(key)
            grouped.setdefault(name, []).append((labels, float(value)))
        except (ValueError, TypeError):
            continue  # a field this version does not understand
    for name, samples in sorted(grouped.items()):
        label_names = sorted({k for labels, _ in samples for k in labels})
        metric = family(name.removesuffix(suffix), HELP.get(name, name), labels=label_names)
        for labels, value in samples:
            metric.add_metric([labels.get(k, "") for k in label_names], value)
        yield metric


class ReceiverMetrics:
    """One registry per receiver app (tests run several in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.deliveries = Counter("retrain_deliveries", "Webhook deliveries, by event and outcome.",
                                  ["event", "outcome"], registry=self.registry)
        self.enqueue_seconds = Histogram(
            "retrain_enqueue_seconds", "Time to dedupe and enqueue a delivery in Redis.", registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.shared = SharedSeries()
        self.registry.register(self.shared)

    def render(self) -> bytes:
        return generate_latest(self.registry)
