"""End to end in headless Chromium (Debian's chromium) driven by Playwright.

A shopper sees recommendations with explanations, switches consent to anonymous and sees
non-personalised results, deletes their data and receives a receipt. Screenshots go to a
temporary folder (printed; kept by pytest's tmp_path retention).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.server.browser import ARGS, CHROMIUM, playwright_or_skip, serve
from tests.server.conftest import make_app


@pytest.fixture()
def live_server(shop_dir: Path):
    with serve(make_app(shop_dir)) as url:
        yield url


def test_shopper_journey_in_chromium(live_server: str, tmp_path: Path) -> None:
    sync_api = playwright_or_skip()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"screenshots: {shots}")
    with sync_api.sync_playwright() as pw:
        # a fresh profile (Playwright passes it to chromium as --user-data-dir)
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            args=ARGS,
            headless=True,
            viewport={"width": 1200, "height": 900},
        )
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.set_default_timeout(20_000)
            page.goto(live_server + "/")
            page.get_by_test_id("user-input").fill("shopper-00005")
            page.get_by_test_id("signin").click()
            recs = page.get_by_test_id("recs")
            recs.wait_for()
            assert recs.get_attribute("data-personalized") == "yes"
            assert page.locator("[data-testid=recs] [data-testid=item]").count() == 8
            first_why = page.locator("[data-testid=recs] [data-testid=why]").first
            first_why.locator("summary").click()
            text = first_why.get_by_test_id("explanation").inner_text()
            assert text.startswith(("because you", "popular", "new arrival"))
            page.screenshot(path=str(shots / "1-recommendations.png"), full_page=True)

            page.get_by_test_id("privacy-link").click()
            held = int(page.get_by_test_id("n-events").inner_text())
            assert held > 0
            page.get_by_test_id("consent-anonymous").check()
            page.get_by_test_id("save-consent").click()
            assert page.get_by_test_id("consent-level").inner_text() == "anonymous"
            # anonymous: what was stored is deleted at once, not at some later retrain
            assert int(page.get_by_test_id("n-events").inner_text()) == 0
            page.screenshot(path=str(shots / "2-consent-anonymous.png"), full_page=True)

            page.goto(live_server + "/")
            assert page.get_by_test_id("recs").get_attribute("data-personalized") == "no"
            page.get_by_test_id("not-personalized").wait_for()
            kinds = page.locator("[data-testid=recs] [data-testid=explanation]").evaluate_all(
                "els => els.map(e => e.dataset.kind)"
            )
            assert kinds and set(kinds) == {"popular"}
            page.screenshot(path=str(shots / "3-not-personalised.png"), full_page=True)

            page.get_by_test_id("privacy-link").click()
            page.get_by_test_id("confirm-delete").check()
            page.get_by_test_id("delete").click()
            receipt = page.get_by_test_id("receipt")
            receipt.wait_for()
            assert int(page.get_by_test_id("events-deleted").inner_text()) == 0  # gone already
            assert page.get_by_test_id("erased-at").inner_text().endswith("Z")
            page.screenshot(path=str(shots / "4-receipt.png"), full_page=True)
        finally:
            browser.close()
    assert len(list(shots.glob("*.png"))) == 4
