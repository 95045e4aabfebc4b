"""The operator console, item pages, the "why?" view and /docs, without a browser."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import pytest

from tests.server.conftest import ADMIN_KEY, A


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def _operator(client) -> str:
    page = client.get("/ops")
    ops = client.post("/ops/signin", data={"key": ADMIN_KEY, "csrf": _csrf(page.text)})
    assert ops.status_code == 200 and "Operator console" in ops.text
    return ops.text


def _shopper(client, user: str = "shopper-00004") -> str:
    home = client.get("/")
    return client.post("/signin", data={"user": user, "csrf": _csrf(home.text)}).text


# ---- charts -------------------------------------------------------------------------------------
def test_nice_ticks_and_numbers() -> None:
    from privrec.server.charts import fmt_number, nice_ticks

    assert nice_ticks(0, 97) == [0, 20, 40, 60, 80, 100]
    assert nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(3, 3)[0] <= 3 <= nice_ticks(3, 3)[-1]
    assert fmt_number(3.3322225924691766e-05) == "3.33e-5"
    assert fmt_number(1234567.8) == "1,234,568" and fmt_number(0.5) == "0.5"
    assert fmt_number(float("inf")) == "∞" and fmt_number(0) == "0"


def test_charts_plot_the_values_and_escape_text() -> None:
    from privrec.server.charts import bar_chart, gauge, line_chart

    svg = line_chart({"view": [1, 5, 2], "<buy>": [0, 1, 3]}, ["a", "b", "c"], title="t & <x>")
    assert svg.startswith("<svg") and "<buy>" not in svg and "&lt;buy&gt;" in svg
    assert re.findall(r'data-value="([^"]+)"', svg) == ["1", "5", "2", "0", "1", "3"]
    assert "t &amp; &lt;x&gt;" in svg and "<script" not in svg and "style=" not in svg
    bars = bar_chart(["a", "b"], [0.25, 0.5], title="b", intervals=[(0.2, 0.3), None])
    assert re.findall(r'class="bar"[^>]*data-value="([^"]+)"', bars) == ["0.25", "0.5"]
    g = gauge(2.0, 8.0, title="budget", unit="ε")
    assert 'data-value="2"' in g and 'data-total="8"' in g and "25%" in g
    assert "no data yet" in line_chart({}, [], title="empty")
    with pytest.raises(ValueError, match="series 'x' has 1 values for 2 labels"):
        line_chart({"x": [1]}, ["a", "b"], title="bad")
    with pytest.raises(ValueError, match="total must be a positive"):
        gauge(1, 0, title="bad")


# ---- console ------------------------------------------------------------------------------------
def test_console_charts_show_the_stores_events_and_serving(client) -> None:
    _shopper(client)
    for _ in range(3):  # served lists: cache misses then hits, and latency samples
        client.get("/")
    html = _operator(client)
    events = re.search(r'data-testid="events-chart">(.*?)</figure>', html, re.S).group(1)
    assert 'data-chart="line"' in events and 'data-series="view"' in events
    counts = [float(v) for v in re.findall(r'data-value="([^"]+)"', events)]
    assert counts and sum(counts) > 0
    cache = re.search(r'data-testid="cache-chart">(.*?)</figure>', html, re.S).group(1)
    assert 'data-chart="gauge"' in cache and "Cache hit ratio" in cache
    latency = re.search(r'data-testid="latency-chart">(.*?)</figure>', html, re.S).group(1)
    assert "GET /" in latency and re.search(r'class="bar"[^>]*data-value="[0-9.e-]+"', latency)


def test_ledger_is_a_readable_table_with_epsilon_in_words(client) -> None:
    html = _operator(client)
    assert "no statistic has been released" in html.lower()
    r = client.post(
        "/ops/train",
        data={"model": "dp_popularity", "params": "epsilon=0.5", "csrf": _csrf(html)},
    )
    assert r.status_code == 200 and "Training started" in r.text  # followed the redirect
    _wait_jobs(client)
    html = client.get("/ops").text
    ledger = re.search(r'data-testid="ledger">(.*?)</table>', html, re.S).group(1)
    eps = re.findall(r'data-testid="ledger-epsilon">([^<]+)<', ledger)
    deltas = re.findall(r'data-testid="ledger-delta">([^<]+)<', ledger)
    assert eps == ["0.5"] and len(deltas) == 1 and len(deltas[0]) <= 8
    words = re.search(r'data-testid="epsilon-words">([^<]+)<', html).group(1)
    assert "e^ε ≈ 1.6 times more" in words and "ε = 0.5" in words
    gauge = re.search(r'data-testid="budget-gauge">(.*?)</figure>', html, re.S).group(1)
    assert 'data-value="0.5"' in gauge


def _wait_jobs(client, timeout: float = 120) -> None:
    from privrec.service.jobs import FINISHED

    history = client.app.state.rs.jobs
    t0 = time.time()
    while True:
        recs = history.recent(100)
        if recs and all(r["status"] in FINISHED for r in recs):
            assert all(r["status"] == "succeeded" for r in recs), recs
            return
        assert time.time() - t0 < timeout, "training did not finish"
        time.sleep(0.2)


def test_train_then_activate_the_older_version_from_the_console(client) -> None:
    html = _operator(client)
    before = client.app.state.rs.serving.versions()["itemknn"]
    client.post("/ops/train", data={"model": "itemknn", "params": "k=20", "csrf": _csrf(html)})
    _wait_jobs(client)
    after = client.app.state.rs.serving.versions()["itemknn"]
    assert after["active"] != before["active"]
    html = client.get("/ops").text
    assert f'data-version="{before["active"]}"' in html
    r = client.post(
        "/ops/activate",
        data={"model": "itemknn", "version": before["active"], "csrf": _csrf(html)},
    )
    assert "Version activated" in r.text
    assert client.app.state.rs.serving.versions()["itemknn"]["active"] == before["active"]
    # a refused control says why on the page, and changes nothing
    bad = client.post(
        "/ops/train", data={"model": "itemknn", "params": "k=-3", "csrf": _csrf(html)}
    )
    assert bad.status_code == 422 and "Refused" in bad.text and "k" in bad.text
    # the job history shows the training, and rolling back serves the previous version
    html = client.get("/ops").text
    job_row = r'data-testid="job" data-status="([a-z]+)"><td>[^<]+</td><td>(\w+)</td>'
    jobs = re.findall(job_row, html)
    assert ("succeeded", "train") in jobs
    r = client.post("/ops/rollback", data={"model": "itemknn", "csrf": _csrf(html)})
    assert "Rolled back" in r.text, r.text[:2000]
    assert client.app.state.rs.serving.versions()["itemknn"]["active"] != before["active"]
    assert re.search(r'data-status="succeeded"><td>[^<]+</td><td>rollback</td>', r.text)


def test_set_a_retrain_policy_from_the_console(client) -> None:
    html = _operator(client)
    form = {"model": "itemknn", "every_events": "500", "gate": "on", "enabled": "on"}
    r = client.post("/ops/schedule", data={**form, "csrf": _csrf(html)})
    assert "Retrain policy saved" in r.text
    assert 'data-testid="policy" data-model="itemknn"' in r.text
    assert client.app.state.rs.scheduler.policy("itemknn").every_events == 500
    bad = client.post("/ops/schedule", data={**form, "every_events": "many", "csrf": _csrf(html)})
    assert bad.status_code == 422 and "every_events" in bad.text


def test_controls_need_csrf_and_an_operator(client) -> None:
    html = _operator(client)
    r = client.post("/ops/activate", data={"model": "itemknn", "version": "v1", "csrf": "0" * 32})
    assert r.status_code == 403
    client.post("/ops/signout", data={"csrf": _csrf(html)})
    page = client.get("/ops")
    r = client.post(
        "/ops/activate", data={"model": "itemknn", "version": "v1", "csrf": _csrf(page.text)}
    )
    assert r.status_code == 401


def test_experiment_create_and_stop_from_the_console(client) -> None:
    html = _operator(client)
    form = {
        "name": "knn-vs-pop",
        "control": "popularity",
        "treatment": "itemknn",
        "treatment_share": "0.5",
        "csrf": _csrf(html),
    }
    r = client.post("/ops/experiments", data=form)
    assert "Experiment created" in r.text and 'data-name="knn-vs-pop"' in r.text
    assert 'data-chart="bar"' in r.text.split('data-name="knn-vs-pop"', 1)[1]
    again = client.post("/ops/experiments", data=form)
    assert again.status_code in (409, 422) and "Refused" in again.text
    bad = client.post("/ops/experiments", data={**form, "name": "Bad Name!"})
    assert bad.status_code == 422 and "name" in bad.text
    r = client.post("/ops/experiments/stop", data={"name": "knn-vs-pop", "csrf": _csrf(html)})
    assert "Experiment stopped" in r.text
    assert client.app.state.rs.experiments.get("knn-vs-pop")["status"] == "stopped"


# ---- reports ------------------------------------------------------------------------------------
def test_report_index_keeps_older_reports_and_renders_markdown(client, shop_dir: Path) -> None:
    reports = shop_dir / "reports"
    (reports / "robustness").mkdir(parents=True, exist_ok=True)
    (reports / "report.html").write_text("<html><body><h1>first run</h1></body></html>")
    md = "# Robustness\n\n| attack | hit |\n|---|---|\n| bandwagon | 0.3 |\n\n<script>x</script>\n"
    (reports / "robustness" / "robustness.md").write_text(md)
    _operator(client)
    index = client.get("/ops/reports").text
    assert "report.html" in index and "robustness/robustness.md" in index
    # a second run overwrites the file: the first one stays listed, with its date
    (reports / "report.html").write_text("<html><body><h1>second run</h1></body></html>")
    index = client.get("/ops/reports").text
    rows = re.findall(r'data-archived="(yes|no)">\s*<td><a href="([^"]+)"', index)
    older = [href for flag, href in rows if flag == "yes" and href.endswith("report.html")]
    assert len(older) == 1 and "first run" in client.get(older[0]).text
    assert "second run" in client.get("/ops/files/report.html").text
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", index)
    view = client.get("/ops/reports/view/robustness/robustness.md").text
    assert "<table>" in view and "<td>bandwagon</td>" in view
    assert "<script>x</script>" not in view and "&lt;script&gt;" in view
    assert client.get("/ops/files/../keys/store.key").status_code == 404
    assert client.get("/ops/reports/view/archive/nothing.md").status_code == 404


# ---- storefront ---------------------------------------------------------------------------------
def _some_item(client) -> str:
    return client.app.state.rs.serving.catalogue(limit=1)["items"][0]["item"]


def test_item_page_shows_facts_similar_and_bought_together(client) -> None:
    item = _some_item(client)
    page = client.get(f"/item/{item}")
    assert page.status_code == 200 and 'data-testid="product-title"' in page.text
    facts = client.app.state.rs.serving.item(item)
    assert (facts["title"] or item) in page.text
    price = re.search(r'data-testid="product-price">([^<]+)<', page.text).group(1)
    assert price == f"{facts['price']:.2f}"
    similar = re.findall(r'data-testid="similar" data-model="([^"]+)"', page.text)
    assert similar == ["itemknn"]
    section = page.text.split('data-testid="similar"', 1)[1]
    assert section.count('data-testid="item"') >= 3 and f'data-item="{item}"' not in section
    assert 'data-testid="bought-together"' in page.text
    assert client.get("/item/no-such-item").status_code == 404


def test_bought_together_is_a_dp_release_charged_once(client) -> None:
    insights = client.app.state.insights
    ledger = client.app.state.rs.ctx.ledger
    before = len(ledger.entries())
    item = _some_item(client)
    got = insights.bought_together(item, 10)
    entries = ledger.entries()
    assert len(entries) == before + 1 and entries[-1]["release"] == "bought_together:pairs"
    assert entries[-1]["event"]["kind"] == "thresholded"
    assert got["privacy"]["epsilon"] == entries[-1]["epsilon"]
    assert all("count" not in o for o in got["items"])
    # the test shop's pairs have a handful of buyers each: far below the threshold
    assert got["items"] == []
    insights.bought_together(item, 3)  # the same release serves until events change
    assert len(ledger.entries()) == before + 1


def test_why_view_splits_the_score_by_the_shoppers_items(client) -> None:
    html = _shopper(client)
    items = re.findall(r'href="/why/([^"]+)" data-testid="why-detail"', html)
    assert items, "a personalised list links to the why view"
    page = client.get(f"/why/{items[0]}")
    assert page.status_code == 200 and 'data-testid="contributors"' in page.text
    shares = [int(s) for s in re.findall(r'data-testid="share">(\d+)%<', page.text)]
    assert shares and shares == sorted(shares, reverse=True)
    assert abs(sum(shares) - 100) <= len(shares)  # rounded percentages
    assert 'data-chart="bar"' in page.text
    got = client.app.state.insights.contributions("shopper-00004", items[0])
    assert math.isclose(sum(c["share"] for c in got["contributors"]), 1.0, abs_tol=0.01)
    # signed out: back to sign-in
    client.post("/signout", data={"csrf": _csrf(page.text)})
    assert client.get(f"/why/{items[0]}", follow_redirects=False).status_code == 303


# ---- API documentation --------------------------------------------------------------------------
def test_docs_are_served_offline_with_every_asset_local(client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and 'data-testid="api-docs"' in page.text
    assert "/v1/recommendations" in page.text and "POST" in page.text
    assert "https://" not in page.text and "http://" not in page.text and "<script" not in page.text
    assets = re.findall(r'(?:href|src)="(/[^"#]*)"', page.text)
    assert "/docs/style.css" in assets
    for url in set(assets):
        got = client.get(url)
        assert got.status_code == 200, url
    assert client.get("/docs/style.css").headers["content-type"].startswith("text/css")


def test_the_loop_through_the_pages_reaches_the_console_and_promotion(client) -> None:
    html = _operator(client)
    form = {"name": "loop", "control": "popularity", "treatment": "itemknn", "csrf": _csrf(html)}
    assert "Experiment created" in client.post("/ops/experiments", data=form).text
    rs = client.app.state.rs
    bought = 0
    for n in range(4, 12):
        home = _shopper(client, f"shopper-{n:05d}")
        link = re.search(r'href="(/item/[^"?]+\?rec=[0-9a-f]+)" data-testid="item-link"', home)
        assert link, "a recommended item links back with its list id"
        page = client.get(link.group(1).replace("&amp;", "&"))
        assert page.status_code == 200
        rec = re.search(r'name="rec" value="([0-9a-f]+)"', page.text)
        item = re.search(r'data-testid="product" data-item="([^"]+)"', page.text).group(1)
        if rec and 'data-testid="purchase"' in page.text:
            done = client.post(
                "/item/action",
                data={
                    "item": item,
                    "action": "purchase",
                    "rec": rec.group(1),
                    "csrf": _csrf(page.text),
                },
            )
            assert "Thank you for your order" in done.text
            bought += 1
    assert bought >= 1
    rs.experiments.feedback.flush()
    rs.experiments.flush()
    html = _operator(client)
    online = re.search(r'data-testid="online-table">(.*?)</table>', html, re.S).group(1)
    assert "itemknn" in online or "popularity" in online
    ctr = re.search(r'data-testid="ctr-chart">(.*?)</figure>', html, re.S).group(1)
    assert re.search(r'data-value="[0-9.]+"', ctr), "a daily CTR point is plotted"
    exp = html.split('data-name="loop"', 1)[1]
    assert 'data-testid="decision"' in exp and 'data-testid="sequential"' in exp
    # not concluded on eight shoppers: promotion needs the override, and says so
    refused = client.post("/ops/experiments/promote", data={"name": "loop", "csrf": _csrf(html)})
    assert refused.status_code == 409 and "cannot be promoted yet" in refused.text
    r = client.post(
        "/ops/experiments/promote", data={"name": "loop", "force": "on", "csrf": _csrf(html)}
    )
    assert "Experiment promoted" in r.text and "forced over" in r.text
    assert rs.experiments.get("loop")["status"] == "promoted"


def test_catalogue_images_are_stored_and_shown(client) -> None:
    from privrec.core.errors import ValidationError
    from privrec.data.catalogue_import import validate_row

    item = _some_item(client)
    url = "https://cdn.example.com/p/1.jpg"
    r = client.patch(f"/v1/items/{item}", json={"image_url": url}, headers=A)
    assert r.status_code == 200, r.text
    assert client.app.state.rs.store.items().set_index("item").loc[item, "image_url"] == url
    page = client.get(f"/item/{item}")
    assert f'src="{url}"' in page.text and 'data-testid="product-image"' in page.text
    assert "https:" in page.headers["content-security-policy"]  # img-src allows https pictures
    for bad in ("http://cdn.example.com/1.jpg", "javascript:alert(1)", "//cdn.example.com/x"):
        with pytest.raises(ValidationError, match="image_url"):
            validate_row({"item": "x", "image_url": bad})
    bad = client.patch(f"/v1/items/{item}", json={"image_url": "http://x.example/1.jpg"}, headers=A)
    assert bad.status_code == 422 and "image_url" in bad.text


def test_the_same_insights_over_http(client) -> None:
    from tests.server.conftest import C, shopper_headers

    item = _some_item(client)
    r = client.get(f"/v1/items/{item}/bought-together?k=3", headers=C)
    assert r.status_code == 200 and r.json()["privacy"]["epsilon"] > 0
    assert client.get(f"/v1/items/{item}/bought-together").status_code == 401
    assert client.get("/v1/items/nope/bought-together", headers=C).status_code == 404
    home = _shopper(client)
    target = re.search(r'href="/why/([^"]+)" data-testid="why-detail"', home).group(1)
    h = shopper_headers(client, "shopper-00004")  # the shopper's own history: their token
    got = client.post("/v1/me/explanations/contributions", json={"item": target}, headers=h).json()
    assert got["personalized"] and got["contributors"]
    assert got == client.app.state.insights.contributions("shopper-00004", target)


def test_fine_tune_control_is_offered_to_the_operator_only(client) -> None:
    html = _operator(client)
    assert 'data-testid="finetune-control"' in html and 'action="/ops/finetune"' in html
    client.post("/ops/signout", data={"csrf": _csrf(html)})
    page = client.get("/ops")
    r = client.post("/ops/finetune", data={"epochs": "1", "csrf": _csrf(page.text)})
    assert r.status_code == 401  # nothing started without an operator session
    assert not [j for j in client.app.state.rs.jobs.recent(10) if j["kind"] == "finetune"]


def test_docs_are_served_with_the_pages_off(shop_dir: Path) -> None:
    from fastapi.testclient import TestClient

    from tests.server.conftest import make_app

    with TestClient(make_app(shop_dir, pages="off")) as c:
        assert c.get("/ops").status_code == 404
        page = c.get("/docs")
        assert page.status_code == 200 and "/v1/events" in page.text
        assert c.get("/docs/style.css").status_code == 200


def test_reports_present_at_start_are_archived(shop_dir: Path) -> None:
    from fastapi.testclient import TestClient

    from tests.server.conftest import make_app

    reports = shop_dir / "reports"
    reports.mkdir(exist_ok=True)
    (reports / "report.json").write_text('{"run": 1}')
    make_app(shop_dir)  # the server starts: the current report is kept
    (reports / "report.json").write_text('{"run": 2}')  # a later run overwrites it
    kept = list((reports / "archive").glob("*-report.json"))
    assert len(kept) == 1 and kept[0].read_text() == '{"run": 1}'
    with TestClient(make_app(shop_dir)) as c:
        _operator(c)
        view = c.get("/ops/reports").text
        rows = re.findall(r'data-archived="(yes|no)">\s*<td><a href="[^"]*report\.json"', view)
        assert sorted(rows) == ["no", "yes"]  # the current one and the older one


def test_report_lookup_finds_only_listed_files(tmp_path: Path) -> None:
    from privrec.service.report_index import find

    reports = tmp_path / "reports"
    (reports / "privacy").mkdir(parents=True)
    (reports / "privacy" / "frontier.png").write_bytes(b"png")
    (reports / ".hidden.md").write_text("x")
    (reports / "notes.txt").write_text("x")
    (tmp_path / "secret.md").write_text("x")
    (reports / "link.md").symlink_to(tmp_path / "secret.md")
    assert find(reports, "privacy/frontier.png").kind == "image"
    for bad in ("../secret.md", "/etc/passwd", ".hidden.md", "notes.txt", "link.md", "", "."):
        assert find(reports, bad) is None, bad
