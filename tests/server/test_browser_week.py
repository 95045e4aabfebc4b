"""A week of the demo shop in fast time, end to end in headless Chromium (issue 14's acceptance).

A real server (the app `privrec serve` runs, uvicorn in a thread, on a free port, over a copy of
the test shop) and Debian's chromium driven by Playwright. Day 0: the operator trains an EASE
model, sets a retrain policy for item-kNN and starts an experiment (item-kNN vs EASE), all in the
console's forms. Days 1-6: one shopper a day browses in Chromium (storefront, a recommended
item by its list id, add to cart, buy) and 80 simulated shoppers a day get lists through
POST /v1/recommendations and answer them through POST /v1/events/batch (with the lists'
recommendation_id), the EASE arm converting far more often than the item-kNN arm; at the end
of each day the retrain scheduler ticks. Day 6: the operator sees the charts, the sequential
test's decision and the scheduled retrains in the job history, promotes the winner, trains a
deliberately mis-configured EASE version and rolls it back from the console.

How time is faked (honestly): the shop's clock is a counter that the test advances a day at a
time. It reaches the server in-process: the feedback log's `clock` (impressions, attribution
windows, the experiment's looks; the storefront stamps its events with it too) is set to it on
the running server's service object, the simulated events carry its timestamps, and the
scheduler is driven by `Scheduler.tick(now)` on the server's job thread (as the server's
APScheduler job runs it, but with the fake `now`; the APScheduler loop is switched off with
PRIVREC_SCHEDULER_ENABLED=false, because it reads the wall clock). The week ends shortly before
the wall clock, since the gate refuses events from the future. The experiment starts on the
same clock (`Experiments.create` stamps it with the feedback log's clock).

Screenshots go to a temporary folder (printed) and, when PRIVREC_SCREENSHOTS is set, there.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.server.browser import ARGS, CHROMIUM, playwright_or_skip, serve
from tests.server.conftest import ADMIN_KEY, CLIENT_KEY, make_app

DAY = 86_400.0
EXPERIMENT = "itemknn-vs-ease"
CATALOGUE = 240  # the test shop's items
SHOPPERS_PER_DAY = 80  # simulated; about 240 per arm by day 6: enough for the mSPRT (tau2 1e-4)
# the real effect between the arms: P(click), P(purchase) of a shopper given a list
EFFECT = {"control": (0.3, 0.05), "treatment": (0.7, 0.6)}
SHOTS = (
    "1-storefront.png",
    "2-item-page.png",
    "3-ops-charts.png",
    "4-experiment-decision.png",
    "5-job-history.png",
    "6-after-rollback.png",
)


class Clock:
    """The shop's clock in fast time: starts a week before the wall clock, moved by the test."""

    def __init__(self, start: float) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


@pytest.fixture()
def week_server(
    shop_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Any, Clock]]:
    """The app on a free port; returns (base URL, app, clock)."""
    monkeypatch.setenv("PRIVREC_SCHEDULER_ENABLED", "false")  # ticks come from the test's clock
    app = make_app(shop_dir)
    with serve(app) as url:
        clock = Clock(time.time() - 6 * DAY - 3 * 3600)
        app.state.rs.experiments.feedback.clock = clock
        yield url, app, clock


def _shot(page: Any, shots: list[Path], name: str, part: Any = None) -> None:
    """A full-page screenshot, or one of `part` (a locator) only."""
    for d in shots:
        if part is None:
            page.screenshot(path=str(d / name), full_page=True)
        else:
            part.screenshot(path=str(d / name))


def _wait_job(http: Any, kind: str, model: str, after: int) -> dict[str, Any]:
    """The newest finished `kind` job of `model` beyond the first `after` such jobs."""
    t0 = time.time()
    while time.time() - t0 < 60:
        jobs = http.get("/v1/jobs", params={"model": model}).json()["jobs"]
        mine = [j for j in jobs if j["kind"] == kind]
        if len(mine) > after and mine[0]["status"] not in ("queued", "running"):
            return dict(mine[0])
        time.sleep(0.2)
    raise AssertionError(f"no {kind} job of {model} finished within 60 s")


def _simulated_day(http: Any, day: int, clock: Clock, rng: np.random.Generator) -> dict[str, int]:
    """80 new shoppers get a list each (through the experiment) and answer it by the arms'
    real difference; returns lists per arm."""
    per_arm = {"control": 0, "treatment": 0}
    # each shopper looked at two products before: their lists are personal (so the arms differ
    # in what they show as well as in how shoppers answer)
    seen = [
        {"user": f"sim-{day}-{i:03d}", "item": f"sku-{int(j):06d}", "type": "view"}
        for i in range(SHOPPERS_PER_DAY)
        for j in rng.choice(CATALOGUE, 2, replace=False)
    ]
    for n, e in enumerate(seen):
        e["timestamp"] = clock() - 600 + n
    rep = http.post("/v1/events/batch", json={"events": seen})
    assert rep.status_code == 200 and rep.json()["accepted"] == len(seen), rep.text
    events: list[dict[str, Any]] = []
    for i in range(SHOPPERS_PER_DAY):
        user = f"sim-{day}-{i:03d}"
        got = http.post(
            "/v1/recommendations", json={"user": user, "k": 5, "experiment": EXPERIMENT}
        )
        assert got.status_code == 200, got.text
        body = got.json()
        arm = body["variant"]
        per_arm[arm] += 1
        click, buy = EFFECT[arm]
        item = body["items"][int(rng.integers(len(body["items"])))]["item"]
        at = clock() + 60 + i
        base = {"user": user, "item": item, "recommendation_id": body["recommendation_id"]}
        if rng.random() < click:
            events.append({**base, "type": "view", "timestamp": at})
        if rng.random() < buy:
            events.append({**base, "type": "purchase", "timestamp": at + 30})
    rep = http.post("/v1/events/batch", json={"events": events})
    assert rep.status_code == 200, rep.text
    assert rep.json()["accepted"] == len(events)
    return per_arm


def _browse(page: Any, base: str, shopper: str, rank: int, shots: list[Path] | None = None) -> str:
    """One shopper's visit: storefront, the recommended item at `rank` (0: the first) by its
    list id, add to cart, buy."""
    page.context.clear_cookies()  # yesterday's shopper (and the operator) signed out
    page.goto(base + "/")
    page.get_by_test_id("user-input").fill(shopper)
    page.get_by_test_id("signin").click()
    page.get_by_test_id("recs").wait_for()
    assert page.locator("[data-testid=recs] [data-testid=item]").count() >= 3
    if shots:
        _shot(page, shots, "1-storefront.png")
    link = page.locator("[data-testid=recs] [data-testid=item-link]").nth(rank)
    href = link.get_attribute("href") or ""
    rid = re.search(r"[?&]rec=([0-9a-f]+)", href)
    assert rid, f"a recommended item links without its list id: {href}"
    link.click()
    page.get_by_test_id("product-title").wait_for()
    assert f"rec={rid.group(1)}" in page.url
    page.get_by_test_id("cart").click()
    page.wait_for_url(re.compile(r"done=cart"))
    page.get_by_test_id("purchase").click()
    page.wait_for_url(re.compile(r"done=purchase"))
    assert "Thank you for your order." in page.inner_text("main")
    if shots:
        assert page.locator("[data-testid=similar] [data-testid=item]").count() >= 1
        _shot(page, shots, "2-item-page.png")
    return rid.group(1)


def _ops(page: Any, base: str) -> None:
    page.goto(base + "/ops")
    if page.get_by_test_id("admin-key").count():
        page.get_by_test_id("admin-key").fill(ADMIN_KEY)
        page.get_by_test_id("ops-signin").click()
    page.get_by_test_id("events-chart").wait_for()


def _message(page: Any) -> str:
    page.get_by_test_id("message").wait_for()
    return str(page.get_by_test_id("message").inner_text())


def _points(page: Any, chart: str) -> list[float]:
    pts = page.locator(f"[data-testid={chart}] svg circle[data-value]")
    return [float(v) for v in pts.evaluate_all("els => els.map(e => e.dataset.value)")]


def test_a_week_of_the_demo_shop_in_chromium(
    week_server: tuple[str, Any, Clock], tmp_path: Path
) -> None:
    sync_api = playwright_or_skip()
    import httpx

    base, app, clock = week_server
    rs = app.state.rs
    shots = [tmp_path / "screenshots"]
    if os.environ.get("PRIVREC_SCREENSHOTS"):
        shots.append(Path(os.environ["PRIVREC_SCREENSHOTS"]))
    for d in shots:
        d.mkdir(parents=True, exist_ok=True)
    print(f"screenshots: {shots[0]}")
    rng = np.random.default_rng(14)
    admin = httpx.Client(base_url=base, headers={"X-API-Key": ADMIN_KEY}, timeout=60)
    client = httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=60
    )

    def tick() -> list[dict[str, Any]]:
        # what the server's APScheduler job does, on the same job thread, at the fake time
        return list(app.state.jobs.run_exclusive(lambda: rs.scheduler.tick(clock())))

    with sync_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            args=ARGS,
            headless=True,
            viewport={"width": 1200, "height": 900},
        )
        try:
            ops = ctx.pages[0] if ctx.pages else ctx.new_page()
            ops.set_default_timeout(30_000)
            shop = ctx.new_page()  # the shopper's tab (its own cookies: same profile, own token)
            shop.set_default_timeout(30_000)

            # ---- day 0: the operator trains EASE, schedules item-kNN, starts the experiment ----
            _ops(ops, base)
            ops.get_by_test_id("train-control").locator("summary").click()
            ops.get_by_test_id("train-model").select_option("ease")
            ops.get_by_test_id("train-params").fill("reg=5")  # personal enough: no coverage drop
            ops.get_by_test_id("train").click()
            assert "Training started" in _message(ops)
            assert _wait_job(admin, "train", "ease", 0)["status"] == "succeeded"
            ops.get_by_test_id("schedule-control").locator("summary").click()
            ops.get_by_test_id("schedule-control").locator("select[name=model]").select_option(
                "itemknn"
            )
            ops.get_by_test_id("every-events").fill("400")
            ops.get_by_test_id("save-schedule").click()
            assert "Retrain policy saved" in _message(ops)
            assert ops.locator("tr[data-testid=policy][data-model=itemknn]").count() == 1
            ops.get_by_test_id("experiment-control").locator("summary").click()
            form = ops.get_by_test_id("experiment-control")
            ops.get_by_test_id("experiment-name").fill(EXPERIMENT)
            form.locator("select[name=control]").select_option("itemknn")
            form.locator("select[name=treatment]").select_option("ease")
            ops.get_by_test_id("create-experiment").click()
            assert "Experiment created" in _message(ops)
            assert ops.locator(f"[data-testid=experiment][data-name={EXPERIMENT}]").count() == 1

            # ---- days 1..6: shoppers in Chromium and simulated through the API; ticks ----------
            lists = {"control": 0, "treatment": 0}
            retrains: list[dict[str, Any]] = []
            for day in range(1, 7):
                clock.t += DAY
                shots_today = shots if day == 1 else None
                rid = _browse(shop, base, f"shopper-{day:05d}", day % 3, shots_today)
                assert rid
                for arm, n in _simulated_day(client, day, clock, rng).items():
                    lists[arm] += n
                retrains += tick()
            assert min(lists.values()) > 150, lists

            # the scheduler retrained item-kNN on new events (gate: activated or kept inactive)
            assert retrains, "the scheduler never retrained"
            assert all(j["model"] == "itemknn" and j["trigger"] == "events" for j in retrains)
            assert {j["status"] for j in retrains} <= {"succeeded", "gated"}, retrains

            # ---- day 6: the console -----------------------------------------------------------
            _ops(ops, base)
            assert sum(_points(ops, "events-chart")) > 0
            events_days = ops.locator("[data-testid=events-chart] svg circle[data-value]")
            assert events_days.count() >= 7
            ctr = _points(ops, "ctr-chart")
            assert ctr and max(ctr) > 0
            assert _points(ops, "conversion-chart")
            online = ops.locator("[data-testid=online-table] tbody tr")
            assert online.count() >= 2
            _shot(ops, shots, "3-ops-charts.png")

            exp = ops.locator(f"[data-testid=experiment][data-name={EXPERIMENT}]")
            decision = exp.get_by_test_id("decision")
            report = admin.get(f"/v1/experiments/{EXPERIMENT}/report").json()
            assert decision.get_attribute("data-ready") == "yes", (
                decision.inner_text(),
                report.get("guardrails"),
            )
            assert "'treatment' beats the control on conversion" in decision.inner_text()
            # per-arm daily CTR over the experiment's six days (two arms)
            assert exp.locator("[data-testid=arm-chart] svg circle[data-value]").count() >= 10
            seq = exp.locator("[data-testid=sequential] tbody tr")
            assert seq.count() >= 1 and "yes" in seq.first.inner_text()
            _shot(ops, shots, "4-experiment-decision.png", exp)

            jobs = ops.locator("[data-testid=jobs] tr[data-testid=job]")
            texts = jobs.all_inner_texts()
            scheduled = [t for t in texts if "retrain" in t and "itemknn" in t and "events" in t]
            assert len(scheduled) == len(retrains), texts
            assert any("ease" in t and "train" in t for t in texts)
            _shot(ops, shots, "5-job-history.png", ops.get_by_test_id("jobs"))

            # the operator promotes the winner: EASE becomes the default and serves
            exp.get_by_test_id("promote").click()
            assert "Experiment promoted" in _message(ops)
            exp = ops.locator(f"[data-testid=experiment][data-name={EXPERIMENT}]")
            assert "Promoted: arm treatment (ease" in exp.inner_text()
            assert exp.get_by_test_id("decision").count() == 0  # no "Ready to promote" now
            assert "default" in ops.locator("tr[data-model=ease]").first.inner_text()
            good = ops.locator("tr[data-model=ease]").get_by_test_id("active-version").inner_text()
            served = client.post("/v1/recommendations", json={"user": "shopper-00001", "k": 5})
            assert served.json()["model"] == "ease" and served.json()["version"] == good

            # a deliberately mis-configured EASE version is trained and goes live ...
            ops.get_by_test_id("train-control").locator("summary").click()
            ops.get_by_test_id("train-model").select_option("ease")
            ops.get_by_test_id("train-params").fill("reg=10000000")
            ops.get_by_test_id("train").click()
            assert "Training started" in _message(ops)
            assert _wait_job(admin, "train", "ease", 1)["status"] == "succeeded"
            _ops(ops, base)
            row = ops.locator("tr[data-model=ease]")
            bad = row.get_by_test_id("active-version").inner_text()
            assert bad != good
            served = client.post("/v1/recommendations", json={"user": "shopper-00001", "k": 5})
            assert served.json()["version"] == bad
            # ... and the operator rolls it back from the console
            row.get_by_test_id("rollback").click()
            assert "Rolled back" in _message(ops)
            row = ops.locator("tr[data-model=ease]")
            assert row.get_by_test_id("active-version").inner_text() == good
            served = client.post("/v1/recommendations", json={"user": "shopper-00001", "k": 5})
            assert served.json()["model"] == "ease" and served.json()["version"] == good
            texts = ops.locator("[data-testid=jobs] tr[data-testid=job]").all_inner_texts()
            assert any("rollback" in t and "ease" in t and "succeeded" in t for t in texts)
            _shot(ops, shots, "6-after-rollback.png")

        finally:
            ctx.close()
            admin.close()
            client.close()
    for d in shots:
        assert set(SHOTS) <= set(os.listdir(d)), os.listdir(d)
        assert all((d / n).stat().st_size > 2_000 for n in SHOTS)
