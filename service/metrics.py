"""Prometheus metrics: requests by route template and status, the problems answered by their
type, the database pool, and the identity provider's JWK Set."""

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.pool import QueuePool

if TYPE_CHECKING:
    from service.jwks import JWKSKeys

LABELS = ("method", "route", "status")
PROBLEM_LABELS = ("route", "status", "type")
# From 5 ms to 10 s: one-row reads sit at the bottom, timeouts at the top.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The metrics of one app, in a registry of its own (each app in a test has its own)."""

    CONTENT_TYPE = CONTENT_TYPE_LATEST  # of render()'s text

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=self.registry)
        self.requests = Counter(
            "http_requests", "HTTP requests answered.", LABELS, registry=self.registry
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time from a request's arrival to the end of its response.",
            LABELS,
            buckets=BUCKETS,
            registry=self.registry,
        )
        # A 503 is the database down or the pool full, searches busy, a statement over its time
        # limit or keys the identity provider did not serve: the problem's type tells them apart,
        # and its values are the service's own few.
        self.problems = Counter(
            "http_problems",
            "Problem details answered (application/problem+json), by their type.",
            PROBLEM_LABELS,
            registry=self.registry,
        )
        # labels() costs a lock and a lookup; the few label sets seen are kept here instead.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._problem_children: dict[tuple[str, int, str], Counter] = {}
        self._pool: PoolCollector | None = None
        self._jwks: JWKSCollector | None = None

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            labels = (method, route, str(status))
            children = self.requests.labels(*labels), self.duration.labels(*labels)
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def count_problem(self, route: str, status: int, problem_type: str) -> None:
        key = (route, status, problem_type)
        child = self._problem_children.get(key)
        if child is None:
            child = self.problems.labels(route, str(status), problem_type)
            self._problem_children[key] = child
        child.inc()

    def watch_pool(self, pool: object) -> None:
        """Report this connection pool's state at each scrape (a QueuePool; others have none)."""
        self.forget_pool()
        if isinstance(pool, QueuePool):
            self._pool = PoolCollector(pool)
            self.registry.register(self._pool)

    def forget_pool(self) -> None:
        if self._pool is not None:
            self.registry.unregister(self._pool)
            self._pool = None

    def watch_jwks(self, keys: "JWKSKeys") -> None:
        """Report the fetches of the identity provider's JWK Set at each scrape."""
        if self._jwks is not None:
            self.registry.unregister(self._jwks)
        self._jwks = JWKSCollector(keys)
        self.registry.register(self._jwks)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class PoolCollector(Collector):
    """The SQLAlchemy pool's counts, read when Prometheus scrapes, not on every request."""

    def __init__(self, pool: QueuePool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        pool = self.pool
        yield GaugeMetricFamily(
            "db_pool_size", "Connections the pool keeps (DB_POOL_SIZE).", value=pool.size()
        )
        yield GaugeMetricFamily(
            "db_pool_checked_out", "Connections in use by requests.", value=pool.checkedout()
        )
        # SQLAlchemy keeps the place of a connection the database closed (an outage), and opens
        # it again on its next use: an idle place, not always an open connection.
        yield GaugeMetricFamily(
            "db_pool_checked_in",
            "Idle connections in the pool, each open or, if the database closed it, reopened on "
            "its next use.",
            value=pool.checkedin(),
        )
        # SQLAlchemy counts overflow from -pool_size up; only connections beyond the size count.
        yield GaugeMetricFamily(
            "db_pool_overflow",
            "Connections open beyond the pool size (at most DB_MAX_OVERFLOW).",
            value=max(pool.overflow(), 0),
        )


class JWKSCollector(Collector):
    """The fetches of the JWK Set (JWT_JWKS_URL), read when Prometheus scrapes: a set that has
    not been fetched for long (the provider unreachable) verifies no key it has rolled to since."""

    def __init__(self, keys: "JWKSKeys") -> None:
        self.keys = keys

    def collect(self) -> Iterator[Metric]:
        fetches = CounterMetricFamily(
            "jwks_fetches", "Fetches of the JWK Set (JWT_JWKS_URL), by outcome.", labels=["outcome"]
        )
        for outcome, count in self.keys.fetches.items():
            fetches.add_metric([outcome], count)
        yield fetches
        yield GaugeMetricFamily(
            "jwks_last_success_timestamp_seconds",
            "When the JWK Set was last fetched (0: never since the start).",
            value=self.keys.fetched_at,
        )
        yield GaugeMetricFamily(
            "jwks_keys", "Keys of the JWK Set that verify tokens.", value=self.keys.key_count()
        )
