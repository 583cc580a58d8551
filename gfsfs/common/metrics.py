"""``GET /metrics`` in the Prometheus text format, shared by master and chunkd.

Each daemon gets its own :class:`prometheus_client.CollectorRegistry` (never the
process-global one, so several daemons in one test process do not mix):

- ``gfs_requests_total{route,status}`` and ``gfs_request_seconds{route}``,
  fed by the :class:`gfsfs.common.rpc.App` observers (one call per HTTP request);
- the standard ``process_*`` metrics (CPU, memory, open fds);
- whatever the daemon adds: preferably a collector that reads the daemon's
  state at scrape time (see :class:`StateCollector`), so nothing is counted twice.

Scrapes run on the trio thread: collectors may read daemon state without locks
but must not block for long.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import prometheus_client
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram,
                               ProcessCollector, generate_latest)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gfsfs.common.rpc import App, Request, Response

REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0, 30.0)
FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                 0.1, 0.25, 0.5, 1.0, 2.5)

# no `*_created` series next to every counter and histogram: noise for us
if hasattr(prometheus_client, "disable_created_metrics"):
    prometheus_client.disable_created_metrics()


class DaemonMetrics:
    """One daemon's registry, its request metrics and its ``/metrics`` route."""

    def __init__(self, app: App, daemon: str, access: str = "cluster") -> None:
        """``access``: who may scrape (:mod:`gfsfs.common.rpc`; the master's
        also takes the admin token, as Prometheus's ``bearer_token_file``)."""
        self.app = app
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("gfs_requests", "HTTP requests answered, by route and status",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("gfs_request_seconds",
                                 "time from request to the end of the answer, by route",
                                 ["route"], buckets=REQUEST_BUCKETS, registry=self.registry)
        ProcessCollector(registry=self.registry)
        info = GaugeMetricFamily("gfs_daemon_info", "which gfsfs daemon this is",
                                 labels=["daemon"])
        info.add_metric([daemon], 1)
        self.registry.register(StateCollector(lambda: [info]))
        self.registry.register(StateCollector(self._auth))
        app.observers.append(self.observe)
        app.route("GET", "/metrics", self.serve, access=access)

    def observe(self, route: str, status: int, seconds: float) -> None:
        route = self._route_label(route)
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def _route_label(self, route: str) -> str:
        # keep the label set bounded: an unknown /rpc/<anything> is one label
        if route.startswith("/rpc/") and route[5:] not in self.app.rpcs:
            return "/rpc/unknown"
        return route

    def _auth(self) -> Iterator[Metric]:
        """Requests by how they proved themselves (none of it with no secret)."""
        verifier = self.app.verifier
        if verifier is None:
            return
        fam = CounterMetricFamily("gfs_auth_requests",
                                  "requests let in (signed, with a chunk token, with a web "
                                  "session) and refused (401)", labels=["how"])
        for how, n in self.app.admitted.items():
            fam.add_metric([how], n)
        fam.add_metric(["refused"], verifier.refused)
        yield fam

    def add(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Register ``collect``, called at every scrape for its current families."""
        self.registry.register(StateCollector(collect))

    async def serve(self, req: Request) -> Response:
        return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)


class StateCollector(Collector):
    """A collector whose families come from a function reading live state."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[Metric]:
        yield from self._collect()

    def describe(self) -> list[Metric]:
        return []           # families are only known at scrape time


def gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None
          ) -> GaugeMetricFamily:
    """A gauge family with one sample (unlabelled, or with ``labels``)."""
    if not labels:
        return GaugeMetricFamily(name, doc, value=value)
    fam = GaugeMetricFamily(name, doc, labels=list(labels))
    fam.add_metric(list(labels.values()), value)
    return fam


def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    """A counter family with one unlabelled sample (exposed as ``name_total``)."""
    return CounterMetricFamily(name, doc, value=value)


def labelled_gauge(name: str, doc: str, labels: list[str],
                   rows: Iterable[tuple[list[str], float]]) -> GaugeMetricFamily:
    fam = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in rows:
        fam.add_metric(values, value)
    return fam
