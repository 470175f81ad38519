"""One headless Chromium per test session (per xdist worker), and page helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from tests.browser.chromium import chromium
from tests.support import ServerProcess

Driver = webdriver.Chrome


@pytest.fixture(scope="session")
def browser() -> Iterator[Driver]:
    with chromium() as driver:
        yield driver


@pytest.fixture
def page(browser: Driver) -> Iterator[Driver]:
    """The session's browser, its console log emptied; a test fails on a page error
    (an exception, a Content-Security-Policy refusal) that it did not expect."""
    browser.get_log("browser")
    yield browser
    errors = page_errors(browser)
    browser.get("about:blank")
    assert not errors, errors


def page_errors(driver: Driver, allowed: tuple[str, ...] = ()) -> list[str]:
    messages = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return [m for m in messages if not any(a in m for a in allowed)]


def wait_for(driver: Driver, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll `predicate` (as the browser renders) until it returns something truthy."""

    def check(_: Any) -> Any:
        return predicate()

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(check)


def open_view(driver: Driver, server: ServerProcess, view: str) -> WebElement:
    """Load the console afresh on `view` and wait until that view is shown."""
    driver.get("about:blank")
    driver.get(f"{server.url}/ui/#{view}")
    section = driver.find_element(By.ID, f"view-{view}")
    wait_for(driver, section.is_displayed)
    return section


def text_of(driver: Driver, css: str) -> str:
    """The rendered text of the first match ("" for none), read in one go in the page:
    views re-render every few seconds, and an element found first and read next
    may be gone by then."""
    return str(driver.execute_script(_TEXT_OF, css))


def texts(driver: Driver, css: str) -> list[str]:
    """The rendered text of every match, read in one go in the page."""
    return [str(t) for t in driver.execute_script(_TEXTS, css)]


def find(driver: Driver, css: str) -> WebElement | None:
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0] if found else None


_TEXT_OF = "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';"
_TEXTS = "return [...document.querySelectorAll(arguments[0])].map((e) => e.innerText);"
