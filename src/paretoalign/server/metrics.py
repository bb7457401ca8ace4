"""Prometheus metrics of the reward server, kept in one `CollectorRegistry` per `ServerMetrics` instance.

Exposed (text format of ``prometheus_client.generate_latest``):

- ``paretoalign_requests_total{endpoint, status}``: HTTP requests answered, by endpoint and status code;
- ``paretoalign_request_seconds{endpoint}``: histogram of request handling time;
- ``paretoalign_batch_rows``, ``paretoalign_batch_requests``, ``paretoalign_batch_tokens``: histograms of what each
  reward-model batch held (rows, coalesced requests, estimated tokens);
- ``paretoalign_batch_seconds``: histogram of each batch's reward-model call;
- ``paretoalign_rows_scored_total``: rows scored by successful batches;
- ``paretoalign_queue_rows``: rows waiting for a batch (gauge).

Nothing is registered in prometheus_client's global registry, so two servers (or tests) in one process never share
counts.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (64, 256, 1024, 4096, 16384, 32768, 65536, 131072)


class ServerMetrics:
    """Request, batch and queue metrics of one server, rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("paretoalign_requests", "HTTP requests answered, by endpoint and status code.",
                                ["endpoint", "status"], registry=self.registry)
        self.request_seconds = Histogram("paretoalign_request_seconds", "Time to answer a request, by endpoint.",
                                         ["endpoint"], buckets=SECONDS_BUCKETS, registry=self.registry)
        self.batch_rows = Histogram("paretoalign_batch_rows", "Rows in each reward-model batch.",
                                    buckets=ROW_BUCKETS, registry=self.registry)
        self.batch_requests = Histogram("paretoalign_batch_requests", "Requests coalesced into each batch.",
                                        buckets=ROW_BUCKETS, registry=self.registry)
        self.batch_tokens = Histogram("paretoalign_batch_tokens", "Estimated tokens in each batch.",
                                      buckets=TOKEN_BUCKETS, registry=self.registry)
        self.batch_seconds = Histogram("paretoalign_batch_seconds", "Time of each batch's reward-model call.",
                                       buckets=SECONDS_BUCKETS, registry=self.registry)
        self.rows_scored = Counter("paretoalign_rows_scored", "Rows scored by successful batches.",
                                   registry=self.registry)
        self.queue_rows = Gauge("paretoalign_queue_rows", "Rows waiting for a batch.", registry=self.registry)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered request and its handling time."""
        self.requests.labels(endpoint=endpoint, status=str(int(status))).inc()
        self.request_seconds.labels(endpoint=endpoint).observe(seconds)

    def observe_batch(self, rows: int, requests: int, tokens: int, seconds: float) -> None:
        """Record one successful batch: its size, its reward-model time, and its rows as scored."""
        self.batch_rows.observe(rows)
        self.batch_requests.observe(requests)
        self.batch_tokens.observe(tokens)
        self.batch_seconds.observe(seconds)
        self.rows_scored.inc(rows)

    def set_queue(self, rows: int) -> None:
        """The number of rows now waiting for a batch."""
        self.queue_rows.set(rows)

    def render(self) -> tuple[bytes, str]:
        """The metrics in the Prometheus text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
