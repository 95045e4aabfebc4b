"""The web pages without a browser: storefront, privacy centre, operator dashboard."""

from __future__ import annotations

import re

from tests.server.conftest import ADMIN_KEY


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def test_storefront_privacy_centre_and_receipt(client) -> None:
    home = client.get("/")
    assert home.status_code == 200 and "Sign in" in home.text
    assert (
        "content-security-policy" in home.headers and "https://" not in home.text
    )  # no external resources
    page = client.post("/signin", data={"user": "shopper-00004", "csrf": _csrf(home.text)})
    assert "Recommended for you" in page.text and page.text.count('data-testid="explanation"') >= 8
    assert "because you" in page.text
    priv = client.get("/privacy")
    assert 'data-testid="consent-level">personalized<' in priv.text
    dl = client.get("/privacy/export")
    assert dl.json()["n_events"] > 0 and "attachment" in dl.headers["content-disposition"]
    r = client.post("/privacy/consent", data={"level": "anonymous", "csrf": _csrf(priv.text)})
    assert "Saved" in r.text and 'data-testid="consent-level">anonymous<' in r.text
    assert 'data-testid="not-personalized"' in client.get("/").text
    # anonymous: the stored events are deleted at once
    assert client.get("/privacy/export").json()["n_events"] == 0
    # one stray click deletes nothing: the confirmation box must be ticked
    again = client.post("/privacy/delete", data={"csrf": _csrf(r.text)})
    assert "Tick the box to confirm" in again.text and 'data-testid="receipt"' not in again.text
    rec = client.post("/privacy/delete", data={"csrf": _csrf(r.text), "confirm": "delete"})
    assert 'data-testid="receipt"' in rec.text
    assert 'data-testid="who"' not in rec.text  # signed out with the data
    # the shop's models unlearn exactly: none is listed as waiting for a retrain
    assert 'data-testid="retrain-deadline"' not in rec.text
    assert 'data-testid="who"' not in client.get("/").text
    assert re.search(r'data-testid="events-deleted">0<', rec.text)
    assert client.get("/privacy/export", follow_redirects=False).status_code == 303


def test_forms_need_the_csrf_token(client) -> None:
    r = client.post("/signin", data={"user": "shopper-00004", "csrf": "0" * 32})
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"


def test_search_page(client) -> None:
    r = client.get("/?q=coffee")
    assert "Results for" in r.text and "matches your search" in r.text


def test_operator_dashboard_needs_admin_key(client) -> None:
    page = client.get("/ops")
    assert "Operator sign-in" in page.text
    bad = client.post(
        "/ops/signin", data={"key": "client-key-0123456789abcdef", "csrf": _csrf(page.text)}
    )
    assert bad.status_code == 401
    ok = client.post("/ops/signin", data={"key": ADMIN_KEY, "csrf": _csrf(page.text)})
    assert (
        "Operator console" in ok.text
        and "itemknn" in ok.text
        and "Privacy budget" in ok.text
        and "Experiments" in ok.text
    )


def test_a_receipt_never_lists_a_model_as_both_updating_and_awaiting_a_retrain(client) -> None:
    home = client.get("/")
    client.post("/signin", data={"user": "shopper-00006", "csrf": _csrf(home.text)})
    priv = client.get("/privacy")
    rec = client.post("/privacy/delete", data={"csrf": _csrf(priv.text), "confirm": "delete"})
    assert "Models being updated now" in rec.text  # popularity and item-kNN, on the worker
    assert 'data-testid="retrain-deadline"' not in rec.text


def test_the_dashboard_shows_the_privacy_report_plot(client, shop_dir) -> None:
    plot = shop_dir / "reports" / "privacy" / "frontier.png"
    plot.parent.mkdir(parents=True, exist_ok=True)
    plot.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 64)  # where privacy-report writes it
    page = client.get("/ops")
    client.post("/ops/signin", data={"key": ADMIN_KEY, "csrf": _csrf(page.text)})
    ops = client.get("/ops")
    assert 'src="/ops/files/privacy-frontier.png"' in ops.text
    got = client.get("/ops/files/privacy-frontier.png")
    assert got.status_code == 200 and got.content.startswith(b"\x89PNG")
    assert client.get("/ops/files/..%2Fkeys%2Fstore.key").status_code == 404


def test_the_operator_page_has_no_shopper_header_and_a_sign_out(client) -> None:
    home = client.get("/")
    client.post("/signin", data={"user": "shopper-00004", "csrf": _csrf(home.text)})
    page = client.get("/ops")
    ops = client.post("/ops/signin", data={"key": ADMIN_KEY, "csrf": _csrf(page.text)})
    assert "Operator console" in ops.text and 'data-testid="who"' not in ops.text
    out = client.post("/ops/signout", data={"csrf": _csrf(ops.text)})
    assert "Operator sign-in" in out.text and "Operator console" not in out.text
