"""ServerMetrics renders parseable Prometheus text holding what was observed; instances share nothing."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from paretoalign.server.metrics import ServerMetrics


def samples(metrics: ServerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of the rendered text."""
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain") and isinstance(body, bytes)
    out = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_rendered_text_holds_the_observed_counts_and_buckets():
    m = ServerMetrics()
    m.observe_request("/v1/rewards", 200, 0.02)
    m.observe_request("/v1/rewards", 200, 0.3)
    m.observe_request("/v1/rewards", 422, 0.001)
    m.observe_request("/get_reward", 200, 1.5)
    m.observe_batch(rows=5, requests=2, tokens=300, seconds=0.04)
    m.observe_batch(rows=64, requests=9, tokens=5000, seconds=0.7)
    m.set_queue(17)
    got = samples(m)

    assert got[("paretoalign_requests_total", (("endpoint", "/v1/rewards"), ("status", "200")))] == 2
    assert got[("paretoalign_requests_total", (("endpoint", "/v1/rewards"), ("status", "422")))] == 1
    assert got[("paretoalign_requests_total", (("endpoint", "/get_reward"), ("status", "200")))] == 1
    rewards = (("endpoint", "/v1/rewards"),)
    assert got[("paretoalign_request_seconds_count", rewards)] == 3
    assert abs(got[("paretoalign_request_seconds_sum", rewards)] - 0.321) < 1e-12
    assert got[("paretoalign_request_seconds_bucket", (*rewards, ("le", "0.025")))] == 2
    assert got[("paretoalign_request_seconds_bucket", (*rewards, ("le", "0.25")))] == 2
    assert got[("paretoalign_request_seconds_bucket", (*rewards, ("le", "0.5")))] == 3
    assert got[("paretoalign_request_seconds_bucket", (*rewards, ("le", "+Inf")))] == 3

    assert got[("paretoalign_batch_rows_count", ())] == 2
    assert got[("paretoalign_batch_rows_sum", ())] == 69
    assert got[("paretoalign_batch_rows_bucket", (("le", "4.0"),))] == 0
    assert got[("paretoalign_batch_rows_bucket", (("le", "8.0"),))] == 1
    assert got[("paretoalign_batch_rows_bucket", (("le", "64.0"),))] == 2
    assert got[("paretoalign_batch_requests_sum", ())] == 11
    assert got[("paretoalign_batch_tokens_sum", ())] == 5300
    assert got[("paretoalign_batch_tokens_bucket", (("le", "256.0"),))] == 0
    assert got[("paretoalign_batch_tokens_bucket", (("le", "1024.0"),))] == 1
    assert got[("paretoalign_batch_seconds_count", ())] == 2
    assert got[("paretoalign_rows_scored_total", ())] == 69
    assert got[("paretoalign_queue_rows", ())] == 17
    m.set_queue(0)
    assert samples(m)[("paretoalign_queue_rows", ())] == 0


def test_two_instances_do_not_share_state():
    a, b = ServerMetrics(), ServerMetrics()
    a.observe_request("/health", 200, 0.001)
    a.observe_batch(rows=3, requests=1, tokens=10, seconds=0.01)
    a.set_queue(4)
    got_b = samples(b)
    assert got_b[("paretoalign_rows_scored_total", ())] == 0
    assert got_b[("paretoalign_queue_rows", ())] == 0
    assert got_b[("paretoalign_batch_rows_count", ())] == 0
    assert not any(name == "paretoalign_requests_total" for name, _ in got_b)  # no label set seen yet
    assert samples(a)[("paretoalign_requests_total", (("endpoint", "/health"), ("status", "200")))] == 1
    assert a.registry is not b.registry
