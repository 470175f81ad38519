"""`GET /metrics`: values move as expected under a scripted workload on a real server."""

from __future__ import annotations

import threading

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerFactory
from tests.support import Api, ServerProcess, wait_for_gauge

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: httpx.Client, **headers: str) -> Samples:
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: Samples, metric: str, **labels: str) -> float:
    return samples.get((metric, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, metric: str) -> float:
    return value(after, metric) - value(before, metric)


def test_counters_and_backlogs_follow_a_workload(server_factory: ServerFactory) -> None:
    server = server_factory(config={"storage": {"max_backlog_events": 5}}).start()
    with server.client() as client:
        api = Api(client)
        start = scrape(client)
        assert value(start, "cfylogs_build_info", version=_version()) == 1
        assert api.push({"n": 0}, {"n": 1}).status_code == 200  # nobody registered yet
        a, b = api.register("alpha"), api.register("beta")
        assert api.push({"n": 2}, {"n": 3}).status_code == 200
        assert api.push({"n": 4}).status_code == 200
        first = api.fetch(a)
        assert api.fetch(a)["id"] == first["id"]  # a re-delivery
        pending = scrape(client)
        assert value(pending, "cfylogs_registration_pending_deliveries", id=a, name="alpha") == 2
        assert api.ack(a, first["id"]).status_code == 200
        after = scrape(client)

    assert delta(start, after, "cfylogs_events_received_total") == 5
    assert delta(start, after, "cfylogs_events_discarded_total") == 2
    assert delta(start, after, "cfylogs_events_stored_total") == 3
    assert delta(start, after, "cfylogs_events_delivered_total") == 6
    assert delta(start, after, "cfylogs_events_redelivered_total") == 3
    assert delta(start, after, "cfylogs_events_acknowledged_total") == 3
    assert delta(start, after, "cfylogs_batches_redelivered_total") == 1
    assert delta(start, after, "cfylogs_registrations_created_total") == 2
    assert delta(start, after, "cfylogs_bytes_received_total") == 5 * len(b'{"n": 0}')
    assert value(after, "cfylogs_registrations") == 2
    assert value(after, "cfylogs_store_up", backend="sqlite") == 1
    assert value(after, "cfylogs_store_disk_bytes", backend="sqlite") > 0
    assert value(after, "cfylogs_store_free_bytes", backend="sqlite") > 0
    # alpha is drained; beta still owes all three events
    assert value(after, "cfylogs_registration_backlog_events", id=a, name="alpha") == 0
    assert value(after, "cfylogs_registration_pending_deliveries", id=a, name="alpha") == 0
    assert value(after, "cfylogs_registration_redeliveries_total", id=a, name="alpha") == 1
    assert value(after, "cfylogs_registration_backlog_events", id=b, name="beta") == 3
    assert value(after, "cfylogs_registration_backlog_bytes", id=b, name="beta") == 3 * 8
    assert value(after, "cfylogs_registration_oldest_unacked_age_seconds", id=b, name="beta") >= 0
    assert value(after, "cfylogs_registration_last_seen_timestamp_seconds", id=a, name="alpha") > 0


def test_backlog_cap_drops_are_counted_per_registration(server_factory: ServerFactory) -> None:
    server = server_factory(config={"storage": {"max_backlog_events": 5}}).start()
    with server.client() as client:
        api = Api(client)
        reg = api.register()
        assert api.push(*({"n": n} for n in range(7))).status_code == 200
        samples = scrape(client)
    assert value(samples, "cfylogs_registration_dropped_events_total", id=reg, name="") == 2
    assert value(samples, "cfylogs_registration_backlog_events", id=reg, name="") == 5


def test_latency_is_labelled_by_route_template(server_factory: ServerFactory) -> None:
    server = server_factory().start()
    with server.client() as client:
        api = Api(client)
        reg = api.register()
        api.fetch(reg)
        api.fetch(reg)
        client.get("/no/such/path")
        samples = scrape(client)
    count = "cfylogs_http_request_duration_seconds_count"
    assert value(samples, count, method="GET", route="/api/v1/logs/{id}") == 2
    assert value(samples, count, method="POST", route="/api/v1/registration") == 1
    assert value(samples, count, method="GET", route="unmatched") == 1
    routes = {dict(labels).get("route", "") for _, labels in samples}
    assert not any(reg in route for route in routes), "raw paths must not become labels"


def test_metrics_need_the_consumer_token_when_set(server_factory: ServerFactory) -> None:
    server = server_factory(config={"security": {"consumer_token": "c-secret"}}).start()
    with server.client() as client:
        assert client.get("/metrics").status_code == 401
        scrape(client, authorization="Bearer c-secret")


def _version() -> str:
    from cfylogs import __version__

    return __version__


def test_a_held_long_poll_shows_in_its_gauge_until_answered(server: ServerProcess) -> None:
    with server.client() as client:
        api = Api(client)
        registration = api.register()
        assert value(scrape(client), "cfylogs_long_polls_waiting") == 0
        answers: list[int] = []

        def poll() -> None:
            with server.client() as poller:
                r = poller.get(f"/api/v1/logs/{registration}", params={"wait": 20}, timeout=30)
                answers.append(len(r.json()["entries"]))

        thread = threading.Thread(target=poll)
        thread.start()
        wait_for_gauge(server.url, "cfylogs_long_polls_waiting", 1)
        assert value(scrape(client), "cfylogs_console_tail_polls_waiting") == 0
        assert api.push({"n": 1}).status_code == 200
        thread.join(10)
        assert answers == [1]
        assert value(scrape(client), "cfylogs_long_polls_waiting") == 0
