"""The operator console, item pages and /docs in headless Chromium (Debian's chromium, Playwright).

The operator signs in, sees the SVG charts with data, the ledger with readable numbers and the
report index, activates an older model version with a click; a shopper opens an item page with
similar items; at phone width (390 px) no page scrolls sideways; /docs loads nothing from
outside. Screenshots go to a temporary folder (printed).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.browser import ARGS, CHROMIUM, playwright_or_skip, serve
from tests.server.conftest import ADMIN_KEY, make_app


@pytest.fixture()
def console_server(shop_dir: Path) -> Iterator[str]:
    """The test shop plus a DP release in the ledger, a second item-kNN version and reports."""
    from privrec.core.settings import Settings
    from privrec.service import RecSys

    with RecSys(Settings(data_dir=shop_dir)) as rs:
        rs.train("dp_popularity", params={"epsilon": 0.5})
        rs.train("itemknn", params={"k": 20})  # the shop's first version becomes "older"
    reports = shop_dir / "reports" / "robustness"
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "robustness.md").write_text(
        "# Robustness\n\n| attack | hit |\n|---|---|\n| a | 1 |\n"
    )
    with serve(make_app(shop_dir)) as url:
        yield url


def _no_overflow(page, width: int) -> None:
    sw = page.evaluate("document.documentElement.scrollWidth")
    assert sw <= width, f"{page.url}: {sw}px wide at a {width}px viewport"


def test_console_item_page_and_docs_in_chromium(console_server: str, tmp_path: Path) -> None:
    sync_api = playwright_or_skip()
    base = console_server
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"screenshots: {shots}")
    outside: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            args=ARGS,
            headless=True,
            viewport={"width": 1200, "height": 900},
        )
        try:
            browser.on(
                "request",
                lambda req: (
                    None if req.url.startswith((base, "data:")) else outside.append(req.url)
                ),
            )
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.set_default_timeout(20_000)

            # a shopper: recommendations, then an item page with similar items
            page.goto(base + "/")
            page.get_by_test_id("user-input").fill("shopper-00005")
            page.get_by_test_id("signin").click()
            page.get_by_test_id("recs").wait_for()
            page.locator("[data-testid=recs] [data-testid=item-link]").first.click()
            page.get_by_test_id("product-title").wait_for()
            similar = page.locator("[data-testid=similar] [data-testid=item]")
            assert similar.count() >= 3
            assert re.fullmatch(r"\d+\.\d\d", page.get_by_test_id("product-price").inner_text())
            page.screenshot(path=str(shots / "1-item-page.png"), full_page=True)

            # the operator console
            page.goto(base + "/ops")
            page.get_by_test_id("admin-key").fill(ADMIN_KEY)
            page.get_by_test_id("ops-signin").click()
            page.get_by_test_id("events-chart").wait_for()
            points = page.locator("[data-testid=events-chart] svg circle[data-value]")
            assert points.count() > 0
            values = points.evaluate_all("els => els.map(e => Number(e.dataset.value))")
            assert sum(values) > 0
            assert page.locator("[data-testid=latency-chart] svg rect.bar").count() > 0
            gauge = page.locator("[data-testid=budget-gauge] svg path.gauge-fill")
            # dp_popularity's 0.5, plus the bought-together release the item page made (1.0),
            # composed by the accountant: more than either, at most their plain sum
            assert 1.0 < float(gauge.get_attribute("data-value") or 0) <= 1.5
            eps = page.get_by_test_id("ledger-epsilon").all_inner_texts()
            assert sorted(eps) == ["0.5", "1"], eps
            assert "bought_together" in page.get_by_test_id("ledger").inner_text()
            delta = page.get_by_test_id("ledger-delta").first.inner_text()
            assert len(delta) <= 8, delta  # e.g. 1e-6 or 0, never 17 digits
            assert "times more" in page.get_by_test_id("epsilon-words").inner_text()
            page.screenshot(path=str(shots / "2-console.png"), full_page=True)

            # activate the older item-kNN version with a click
            row = page.locator("tr[data-model=itemknn]")
            active = row.get_by_test_id("active-version").inner_text()
            button = row.get_by_test_id("activate").first
            older = button.get_attribute("data-version")
            assert older and older != active
            button.click()
            page.get_by_test_id("message").wait_for()
            assert "Version activated" in page.get_by_test_id("message").inner_text()
            row = page.locator("tr[data-model=itemknn]")
            assert row.get_by_test_id("active-version").inner_text() == older
            page.screenshot(path=str(shots / "3-activated.png"), full_page=True)

            # the report index and a Markdown report rendered as HTML
            page.get_by_test_id("reports-link").click()
            rows = page.get_by_test_id("report-row")
            assert rows.count() >= 1
            page.get_by_role("link", name="robustness/robustness.md").first.click()
            assert page.locator("[data-testid=report-view] table td").first.inner_text() == "a"
            page.screenshot(path=str(shots / "4-report.png"), full_page=True)

            # API documentation, from this server only
            page.goto(base + "/docs")
            assert page.get_by_test_id("operation").count() > 20
            page.screenshot(path=str(shots / "5-docs.png"))

            # phone width: nothing scrolls sideways
            phone = browser.new_page()
            phone.set_viewport_size({"width": 390, "height": 844})
            for path in ("/", "/privacy", "/ops", "/ops/reports", "/docs"):
                phone.goto(base + path)
                _no_overflow(phone, 390)
            item = page.evaluate("location.origin")  # same origin, any item page
            phone.goto(base + "/")
            phone.locator("[data-testid=item-link]").first.click()
            phone.get_by_test_id("product-title").wait_for()
            _no_overflow(phone, 390)
            assert item == base
            phone.goto(base + "/")
            why = phone.locator("[data-testid=why-detail]").first
            phone.locator("[data-testid=recs] [data-testid=why] summary").first.click()
            why.click()
            phone.get_by_test_id("contributors").wait_for()
            _no_overflow(phone, 390)
            phone.screenshot(path=str(shots / "6b-phone-why.png"), full_page=True)
            phone.screenshot(path=str(shots / "6-phone-item.png"), full_page=True)
            phone.goto(base + "/ops")
            _no_overflow(phone, 390)
            phone.screenshot(path=str(shots / "7-phone-console.png"), full_page=True)
        finally:
            browser.close()
    assert not outside, f"requests left the server: {outside[:5]}"
