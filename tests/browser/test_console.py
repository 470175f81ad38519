"""The web console in a real browser: headless Chromium from the distribution's
packages (`chromium`, `chromium-driver`; `scripts/ensure-test-tools.sh` installs them,
`make test` runs it), driven by Selenium, against a real `cfylogs serve`.

One browser serves the whole session (tests/browser/conftest.py); most tests
share one relay (with `ingest.accept: cloudify`, so the dead letters show) and
tell their data apart by ids and unique texts. Each test fails on any error the
page logs that it did not expect, a Content-Security-Policy refusal included.

Run alone: `.venv/bin/pytest -q tests/browser -n 0`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By

from tests.browser.conftest import (
    Driver,
    find,
    open_view,
    page_errors,
    text_of,
    texts,
    wait_for,
)
from tests.certs import Pki, make_pki
from tests.conftest import ServerFactory
from tests.support import Api, ServerProcess, cloudify_log, gauge

TOKEN = "browser-token-9c4e7a"


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("console"), {"ingest": {"accept": "cloudify"}})
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def api(relay: ServerProcess) -> Iterator[Api]:
    with relay.client() as client:
        yield Api(client)


def log(text: str, **context: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(cloudify_log())
    event["message"]["text"] = text
    event["context"].update(context)
    return event


def registration(api: Api, reg_id: str) -> dict[str, Any]:
    found = [r for r in api.http.get("/api/v1/registration").json()["registrations"]]
    (reg,) = [r for r in found if r["id"] == reg_id]
    return reg


def cell(driver: Driver, reg_id: str, column: str) -> str:
    return text_of(driver, f'#registrations-table tr[data-id="{reg_id}"] td[data-col="{column}"]')


def watch_tail(api: Api) -> None:
    """Start the relay's ring now (the page's first poll would too, a moment later)."""
    assert api.http.get("/api/v1/console/tail").status_code == 200


def tail_rows(driver: Driver) -> list[str]:
    return texts(driver, "#tail-events .row")


def test_registrations_appear_with_names_and_backlog_and_follow_a_push(
    page: Driver, relay: ServerProcess, api: Api
) -> None:
    first, second = api.register("orchestrator-east"), api.register("orchestrator-west")
    assert api.push(*(log(f"before {n}") for n in range(3))).is_success
    open_view(page, relay, "registrations")
    wait_for(page, lambda: cell(page, second, "backlog_events") == "3")
    assert cell(page, first, "name") == "orchestrator-east"
    assert cell(page, second, "name") == "orchestrator-west"
    assert cell(page, first, "backlog_events") == "3"
    assert text_of(page, f'tr[data-id="{first}"] .mark') == "ok"
    page.execute_script("window.notReloaded = true")
    assert api.push(log("one more"), log("and another")).is_success
    started = time.monotonic()
    wait_for(page, lambda: cell(page, first, "backlog_events") == "5")
    print(f"backlog figure moved {time.monotonic() - started:.2f}s after the push")
    assert page.execute_script("return window.notReloaded") is True
    # Sorting: by name, then by name descending.
    header = page.find_element(By.CSS_SELECTOR, '#registrations-table th[data-key="name"]')
    header.click()
    names = texts(page, 'td[data-col="name"]')
    assert names == sorted(names) and len(names) >= 2
    assert text_of(page, 'th[aria-sort="ascending"]') == "Name"
    page.find_element(By.CSS_SELECTOR, '#registrations-table th[data-key="name"]').click()
    names = texts(page, 'td[data-col="name"]')
    assert names == sorted(names, reverse=True)


def test_the_tail_shows_a_pushed_event_within_2s_and_watching_consumes_nothing(
    page: Driver, relay: ServerProcess, api: Api
) -> None:
    reg = api.register("watched-orchestrator")
    assert api.push(log("pending")).is_success
    batch = api.fetch(reg)  # a pending batch, delivered once
    before = registration(api, reg)
    count_before = len(api.http.get("/api/v1/registration").json()["registrations"])
    watch_tail(api)
    open_view(page, relay, "tail")
    wait_for(page, lambda: text_of(page, "#tail-status").startswith("Watching."))
    marker = f"live-{uuid.uuid4()}"
    assert api.push(log(marker, deployment_id="dep-live", node_id="vm_7")).is_success
    pushed = time.monotonic()
    wait_for(page, lambda: any(marker in row for row in tail_rows(page)), timeout=2.0)
    print(f"the tail showed the event {time.monotonic() - pushed:.2f}s after the push")
    (row,) = [r for r in tail_rows(page) if marker in r]
    assert "DEBUG" in row and "dep-live" in row and "vm_7" in row
    # The page polls again after showing the event: its next poll is held open.
    wait_for(page, lambda: gauge(relay.url, "cfylogs_console_tail_polls_waiting") >= 1)
    after = registration(api, reg)
    assert after["backlog_events"] == before["backlog_events"] + 1  # the push, nothing else
    for key in ("pending_batch_id", "pending_deliveries", "redeliveries", "dropped_events"):
        assert after[key] == before[key], key
    assert after["pending_batch_id"] == batch["id"] and after["pending_deliveries"] == 1
    assert len(api.http.get("/api/v1/registration").json()["registrations"]) == count_before
    # The JSON of one event, on demand (rows stay: the tail only appends).
    target = [
        r for r in page.find_elements(By.CSS_SELECTOR, "#tail-events .row") if marker in r.text
    ]
    target[0].click()
    shown = json.loads(target[0].find_element(By.CSS_SELECTOR, "pre").text)
    assert shown["message"]["text"] == marker and shown["context"]["node_id"] == "vm_7"


def test_the_tail_filters_and_pauses(page: Driver, relay: ServerProcess, api: Api) -> None:
    watch_tail(api)
    open_view(page, relay, "tail")
    marker = uuid.uuid4().hex
    events = [log(f"{marker} info"), {**log(f"{marker} error"), "level": "error"}]
    assert api.push(*events).is_success
    wait_for(page, lambda: mine(page, marker) == [f"{marker} info", f"{marker} error"])
    page.find_element(By.ID, "tail-level").send_keys("error+")
    # The list starts again with what the relay holds that matches: the error only.
    wait_for(page, lambda: mine(page, marker) == [f"{marker} error"])
    assert marker in last_row(page)
    page.find_element(By.ID, "tail-pause").click()
    assert api.push({**log(f"{marker} held"), "level": "error"}).is_success
    wait_for(page, lambda: "1 new event(s) held" in text_of(page, "#tail-status"))
    assert mine(page, marker) == [f"{marker} error"]
    page.find_element(By.ID, "tail-pause").click()
    wait_for(page, lambda: mine(page, marker) == [f"{marker} error", f"{marker} held"])


def mine(driver: Driver, marker: str) -> list[str]:
    """The messages of the tail's lines that hold `marker`."""
    return [t for t in texts(driver, "#tail-events .row .text") if marker in t]


def last_row(driver: Driver) -> str:
    rows = tail_rows(driver)
    return rows[-1] if rows else ""


MARKUP = [
    "<img src=x onerror=\"window.pwned='img'\">",
    "<script>window.pwned='script'</script>",
    "<svg onload=\"window.pwned='svg'\"></svg>",
]


def no_markup_inside(driver: Driver, css: str) -> bool:
    inner = driver.find_elements(By.CSS_SELECTOR, f"{css} img, {css} script, {css} b, {css} svg")
    return not inner


def test_event_text_is_shown_as_text_and_nothing_executes(
    page: Driver, relay: ServerProcess, api: Api
) -> None:
    watch_tail(api)
    open_view(page, relay, "tail")
    marker = uuid.uuid4().hex
    events = [log(f"{marker} {m}", deployment_id="<b>dep</b>") for m in MARKUP]
    assert api.push(*events).is_success
    wait_for(page, lambda: sum(marker in r for r in tail_rows(page)) == len(MARKUP))
    rows = [r for r in tail_rows(page) if marker in r]
    for text, row in zip(MARKUP, rows, strict=True):
        assert f"{marker} {text}" in row and "<b>dep</b>" in row
    assert no_markup_inside(page, "#tail-events")
    page.find_element(By.CSS_SELECTOR, "#tail-events .row:last-child").click()
    shown = json.loads(text_of(page, "#tail-events .row:last-child pre"))
    assert shown["message"]["text"] == f"{marker} {MARKUP[-1]}"
    # A registration name and a dead letter carry text from outside too.
    reg = api.register(MARKUP[0])
    assert api.push({"type": "x", "message": MARKUP[1]}).is_success
    open_view(page, relay, "registrations")
    wait_for(page, lambda: cell(page, reg, "name") == MARKUP[0])
    assert no_markup_inside(page, "#registrations-table tbody")
    open_view(page, relay, "dead-letters")
    wait_for(page, lambda: MARKUP[1] in text_of(page, "#dead-letters-table tbody"))
    assert no_markup_inside(page, "#dead-letters-table tbody")
    assert page.execute_script("return window.pwned") is None


def test_unregister_from_the_page_asks_first_then_does_it(
    page: Driver, relay: ServerProcess, api: Api
) -> None:
    reg = api.register("to-be-removed")
    open_view(page, relay, "registrations")
    wait_for(page, lambda: cell(page, reg, "name") == "to-be-removed")
    button = f'#registrations-table tr[data-id="{reg}"] button'
    page.find_element(By.CSS_SELECTOR, button).click()
    dialog = page.find_element(By.ID, "confirm")
    wait_for(page, dialog.is_displayed)
    assert "to-be-removed" in dialog.text and "deleted" in dialog.text
    page.find_element(By.ID, "confirm-cancel").click()
    assert not dialog.is_displayed() and registration(api, reg)["name"] == "to-be-removed"
    page.find_element(By.CSS_SELECTOR, button).click()
    wait_for(page, dialog.is_displayed)
    page.find_element(By.ID, "confirm-ok").click()
    wait_for(page, lambda: find(page, f'tr[data-id="{reg}"]') is None)
    assert "Unregistered to-be-removed" in text_of(page, "#registrations-message")
    ids = [r["id"] for r in api.http.get("/api/v1/registration").json()["registrations"]]
    assert reg not in ids


def dead_letters(api: Api) -> list[dict[str, Any]]:
    page = api.http.get("/api/v1/dead-letters", params={"limit": 1000}).json()
    letters: list[dict[str, Any]] = page["dead_letters"]
    return letters


def test_dead_letters_replay_and_purge_from_the_page(
    page: Driver, relay: ServerProcess, api: Api
) -> None:
    reg = api.register("replay-target")
    marker = uuid.uuid4().hex
    assert api.push(*({"type": "scanner", "probe": f"{marker}-{n}"} for n in range(3))).is_success
    mine = [d for d in dead_letters(api) if marker in json.dumps(d["event"])]
    assert len(mine) == 3 and all(d["reason"].startswith("type is not") for d in mine)
    open_view(page, relay, "dead-letters")
    row = f'#dead-letters-table tr[data-id="{mine[0]["id"]}"]'
    wait_for(page, lambda: find(page, row) is not None)
    assert "type is not" in text_of(page, row) and marker in text_of(page, row)
    page.find_element(By.CSS_SELECTOR, f"{row} button").click()  # the event itself
    shown = page.find_element(By.CSS_SELECTOR, f"{row} + tr.detail pre").text
    assert json.loads(shown) == mine[0]["event"]
    for letter in mine[:2]:
        page.find_element(By.CSS_SELECTOR, f'tr[data-id="{letter["id"]}"] input').click()
    page.find_element(By.ID, "dead-letters-replay").click()
    wait_for(page, lambda: text_of(page, "#dead-letters-message").startswith("Replayed 2"))
    wait_for(page, lambda: find(page, row) is None)
    batch = api.fetch(reg)
    assert [e["probe"] for e in batch["entries"]] == [f"{marker}-0", f"{marker}-1"]
    last = f'tr[data-id="{mine[2]["id"]}"]'
    page.find_element(By.CSS_SELECTOR, f"{last} input").click()
    page.find_element(By.ID, "dead-letters-purge").click()
    wait_for(page, page.find_element(By.ID, "confirm").is_displayed)
    page.find_element(By.ID, "confirm-ok").click()
    wait_for(page, lambda: text_of(page, "#dead-letters-message") == "Purged 1.")
    assert not [d for d in dead_letters(api) if marker in json.dumps(d["event"])]


def test_the_overview_opens_with_health_and_filled_charts(
    page: Driver, relay: ServerProcess, api: Api
) -> None:
    # Two samples (5 s apart) make a line: wait for the relay to have them, then open.
    wait_for(page, lambda: len(api.http.get("/api/v1/console/history").json()["time"]) >= 2, 12)
    open_view(page, relay, "overview")
    wait_for(page, lambda: find(page, "#chart-rates polyline") is not None, 3)
    assert text_of(page, '[data-card="health"] dd') == "ok"
    assert text_of(page, '[data-card="storage"] dd').startswith("sqlite")
    assert text_of(page, '[data-card="version"] dd') == api.http.get("/health").json()["version"]
    series = {
        e.get_attribute("data-series")
        for e in page.find_elements(By.CSS_SELECTOR, "#view-overview polyline")
    }
    assert series == {
        "received_per_sec",
        "delivered_per_sec",
        "acknowledged_per_sec",
        "backlog_events",
    }


def test_with_a_consumer_token_nothing_shows_until_it_is_given(
    page: Driver, server_factory: ServerFactory
) -> None:
    config = {"security": {"consumer_token": TOKEN}, "server": {"access_log": True}}
    server = server_factory(config).start()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.url, headers=auth) as client:
        reg = Api(client).register("secret-orchestrator")
        assert Api(client).push(log("secret event")).is_success
    calls = [
        ("GET", "/api/v1/console"),
        ("GET", "/api/v1/console/history"),
        ("GET", "/api/v1/console/tail"),
        ("GET", "/api/v1/registration"),
        ("DELETE", f"/api/v1/registration/{reg}"),
        ("GET", "/api/v1/dead-letters"),
        ("POST", "/api/v1/dead-letters/replay"),
        ("DELETE", "/api/v1/dead-letters?all=true"),
        ("GET", "/metrics"),
    ]
    for method, path in calls:
        assert httpx.request(method, server.url + path, json={}).status_code == 401, path
    driver = page
    driver.get(server.url + "/ui/#registrations")
    login = driver.find_element(By.ID, "login")
    wait_for(driver, login.is_displayed)
    assert not driver.find_element(By.ID, "nav").is_displayed()
    assert "secret-orchestrator" not in driver.page_source
    shown = [s.get_attribute("id") for s in driver.find_elements(By.CSS_SELECTOR, "section")]
    assert [s for s in shown if driver.find_element(By.ID, s).is_displayed()] == ["login"]
    driver.find_element(By.ID, "token").send_keys("not-the-token\n")
    wait_for(driver, lambda: text_of(driver, "#login-error") == "That token was refused.")
    assert "secret-orchestrator" not in driver.page_source
    driver.find_element(By.ID, "token").send_keys(TOKEN + "\n")
    wait_for(driver, lambda: cell(driver, reg, "name") == "secret-orchestrator")
    assert TOKEN not in driver.current_url
    key = "cfylogs.consumer_token"
    assert driver.execute_script(f"return sessionStorage.getItem('{key}')") == TOKEN
    driver.find_element(By.CSS_SELECTOR, 'a[data-view="tail"]').click()
    wait_for(driver, lambda: text_of(driver, "#tail-status").startswith("Watching."))
    with httpx.Client(base_url=server.url, headers=auth) as client:
        watch_tail(Api(client))
        assert Api(client).push(log("seen with the token")).is_success
    wait_for(driver, lambda: any("seen with the token" in r for r in tail_rows(driver)))
    driver.find_element(By.ID, "forget-token").click()
    wait_for(driver, login.is_displayed)
    assert driver.execute_script(f"return sessionStorage.getItem('{key}')") is None
    assert TOKEN not in server.run_log()  # the access log has paths, never headers
    # The 401s the page met before the token were expected; nothing else failed.
    assert not page_errors(driver, allowed=("401 (Unauthorized)",))


def test_the_plain_port_of_ssl_mode_refuses_the_console(
    page: Driver, server_factory: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    pki: Pki = make_pki(tmp_path_factory.mktemp("pki"))
    ssl = {
        "enabled": True,
        "certificate": str(pki.root / "server.pem"),
        "certificate-private-key": str(pki.root / "server-key.pem"),
    }
    server = server_factory({"server": {"http": {"port": 0}, "ssl": ssl}}).start()
    plain = server.urls["http"]
    for path in ("/ui/", "/ui/app.js", "/api/v1/console", "/api/v1/console/tail"):
        assert httpx.get(plain + path).status_code == 403, path
    with httpx.Client(verify=pki.client_context()) as client:
        assert client.get(server.urls["api"] + "/ui/").status_code == 200
    page.get(plain + "/ui/")
    assert "only takes POST /api/v1/logs" in page.find_element(By.TAG_NAME, "body").text
    assert page.find_elements(By.ID, "nav") == []
    assert not page_errors(page, allowed=("403 (Forbidden)",))
