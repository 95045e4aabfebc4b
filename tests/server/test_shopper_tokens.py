"""Shopper tokens: the client key alone never reads, erases or changes a shopper's data.

`/v1/me/*` acts for the shopper a valid `X-Shopper-Token` names, and for no one else; the
shop's backend gets tokens from `POST /v1/admin/shopper-tokens` or `privrec shopper-token`; the
pages' sign-in keeps such a token in the session cookie and every privacy action verifies it.
"""

from __future__ import annotations

import base64
import json
import re
import stat
import time
from pathlib import Path

import jwt
import pytest

from tests.server.conftest import ADMIN_KEY, A, C, make_app, shopper_headers

ALICE = "shopper-00011"
BOB = "shopper-00012"
ME = [
    ("get", "/v1/me/data", None),
    ("delete", "/v1/me/data", None),
    ("get", "/v1/me/consent", None),
    ("put", "/v1/me/consent", {"level": "anonymous"}),
]


def _call(client, method: str, path: str, body: dict | None, headers: dict):
    if body is None:
        return client.request(method.upper(), path, headers=headers)
    return client.request(method.upper(), path, json=body, headers=headers)


def _stored(client, user: str) -> tuple[int, str]:
    """(events, consent level) of a shopper, read on their behalf with the admin key."""
    doc = client.post("/v1/admin/users/export", json={"user": user}, headers=A).json()
    return doc["n_events"], doc["consent"]


def _secret(client) -> bytes:
    from privrec.server.tokens import app_secret

    return app_secret(client.app.state)


def _claims(user: str = ALICE, **over) -> dict:
    now = int(time.time())
    claims = {"sub": user, "aud": "privrec-shopper", "iat": now, "exp": now + 300, "jti": "j-1"}
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(doc: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


def _assert_refused(r, *secrets_: str) -> dict:
    assert r.status_code == 401, r.text
    assert r.headers["content-type"] == "application/problem+json"
    doc = r.json()
    assert doc["type"].endswith("shopper-token") and len(doc["detail"]) > 10
    for s in secrets_:  # never echoes the token or the user id
        assert s not in r.text
    return doc


# ---- the API ---------------------------------------------------------------------------------
def test_client_key_alone_cannot_read_erase_or_change_anyone(client) -> None:
    before = _stored(client, ALICE)
    assert before[0] > 0 and before[1] == "personalized"
    for method, path, body in ME:
        for headers in (C, {**C, "X-User-Id": ALICE}):
            doc = _assert_refused(_call(client, method, path, body, headers), ALICE)
            assert doc["type"] == "urn:privrec:problem:missing-shopper-token"
    assert _stored(client, ALICE) == before  # nothing erased, consent unchanged


def test_a_token_needs_the_client_key_too(client) -> None:
    token = shopper_headers(client, ALICE)["X-Shopper-Token"]
    r = client.get("/v1/me/data", headers={"X-Shopper-Token": token})
    assert r.status_code == 401 and r.json()["type"] == "urn:privrec:problem:missing-api-key"


def test_a_token_for_alice_acts_on_alice_only(client) -> None:
    bob_before = _stored(client, BOB)
    alice_events = _stored(client, ALICE)[0]
    h = {**shopper_headers(client, ALICE), "X-User-Id": BOB}  # a header naming bob is ignored
    got = client.get("/v1/me/data", headers=h).json()
    assert got["n_events"] == alice_events != bob_before[0]
    admin_alice = client.post("/v1/admin/users/export", json={"user": ALICE}, headers=A).json()
    assert got["pseudonym"] == admin_alice["pseudonym"]
    change = client.put("/v1/me/consent", json={"level": "anonymous"}, headers=h)
    assert change.status_code == 200
    assert change.json()["events_deleted"] == alice_events  # anonymous: deleted at once
    receipt = client.delete("/v1/me/data", headers=h).json()
    assert receipt["events_deleted"] == 0
    assert _stored(client, BOB) == bob_before
    assert _stored(client, ALICE)[0] == 0


def test_me_routes_work_with_a_token(client) -> None:
    h = shopper_headers(client, BOB)
    assert client.get("/v1/me/consent", headers=h).json()["level"] == "personalized"
    r = client.put("/v1/me/consent", json={"level": "purchases_only"}, headers=h)
    assert r.status_code == 200 and r.json()["previous"] == "personalized"
    assert client.get("/v1/me/consent", headers=h).json()["level"] == "purchases_only"
    assert _stored(client, BOB)[1] == "purchases_only"


def _bad_tokens(secret: bytes) -> dict[str, str]:
    from privrec.server.tokens import issue_shopper_token

    good = issue_shopper_token(secret, ALICE, 300)
    head, _, sig = good.split(".")
    now = int(time.time())
    tampered = _b64({**jwt.decode(good, options={"verify_signature": False}), "sub": BOB})
    none_head = _b64({"alg": "none", "typ": "JWT"})
    return {
        "expired": issue_shopper_token(secret, ALICE, 60, now=now - 3600),
        "wrong audience": jwt.encode(_claims(aud="someone-else"), secret, algorithm="HS256"),
        "audience list": jwt.encode(_claims(aud=["privrec-shopper"]), secret, algorithm="HS256"),
        "wrong signature": issue_shopper_token(b"another-secret-" * 4, ALICE, 300),
        "alg none": jwt.encode(_claims(), None, algorithm="none"),
        "alg none, signature kept": f"{none_head}.{_b64(_claims())}.{sig}",
        "alg HS512": jwt.encode(_claims(), secret, algorithm="HS512"),
        "tampered subject": f"{head}.{tampered}.{sig}",
        "no sub": jwt.encode(_claims(sub=None), secret, algorithm="HS256"),
        "no exp": jwt.encode(_claims(exp=None), secret, algorithm="HS256"),
        "no iat": jwt.encode(_claims(iat=None), secret, algorithm="HS256"),
        "no jti": jwt.encode(_claims(jti=None), secret, algorithm="HS256"),
        "no aud": jwt.encode(_claims(aud=None), secret, algorithm="HS256"),
        "lives two days": jwt.encode(_claims(exp=now + 2 * 86400), secret, algorithm="HS256"),
        "issued in the future": jwt.encode(
            _claims(iat=now + 3600, exp=now + 3900), secret, algorithm="HS256"
        ),
        "garbage": "not-a-token",
        "truncated": good[:-5],
        "huge": "a" * 10_000,
    }


def test_bad_tokens_are_refused(client) -> None:
    secret = _secret(client)
    before = _stored(client, ALICE)
    for name, token in _bad_tokens(secret).items():
        for method, path, body in ME:
            r = _call(client, method, path, body, {**C, "X-Shopper-Token": token})
            assert r.status_code == 401, (name, method, path, r.text)
            _assert_refused(r, ALICE, BOB, token[:40] if len(token) > 40 else token)
    assert _stored(client, ALICE) == before and _stored(client, BOB)[0] > 0


def test_refusals_say_why() -> None:
    from privrec.server.problems import ProblemError
    from privrec.server.tokens import verify_shopper_token

    secret = b"s" * 48
    bad = _bad_tokens(secret)
    details = {}
    for name, token in bad.items():
        with pytest.raises(ProblemError) as exc:
            verify_shopper_token(secret, token)
        assert exc.value.status == 401 and "WWW-Authenticate" in exc.value.headers
        details[name] = exc.value.detail
    assert "expired" in details["expired"]
    assert "privrec-shopper" in details["wrong audience"]
    assert "signature" in details["wrong signature"] and "signature" in details["tampered subject"]
    assert "HS256" in details["alg none"] and "HS256" in details["alg HS512"]
    assert "'jti'" in details["no jti"] and "'exp'" in details["no exp"]
    assert "longer than" in details["lives two days"]
    with pytest.raises(ProblemError) as exc:
        verify_shopper_token(secret, None)
    assert exc.value.slug == "missing-shopper-token" and "X-Shopper-Token" in exc.value.detail


def test_issue_and_verify_round_trip_and_limits() -> None:
    from privrec.core.errors import ValidationError
    from privrec.server.tokens import issue_shopper_token, verify_shopper_token

    secret = b"s" * 48
    token = issue_shopper_token(secret, "alice@example.com", 900)
    assert verify_shopper_token(secret, token) == "alice@example.com"
    assert verify_shopper_token(secret.decode(), token) == "alice@example.com"
    claims = jwt.decode(token, secret, algorithms=["HS256"], audience="privrec-shopper")
    assert claims["exp"] - claims["iat"] == 900 and claims["jti"]
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    # each token is its own (a fresh jti), even for the same shopper in the same second
    assert issue_shopper_token(secret, "a", 60, now=1) != issue_shopper_token(
        secret, "a", 60, now=1
    )
    for ttl in (0, -5, 86401, True, 1.5):
        with pytest.raises(ValidationError):
            issue_shopper_token(secret, "alice", ttl)  # type: ignore[arg-type]
    for user in ("", "   ", "x" * 257):
        with pytest.raises(ValidationError):
            issue_shopper_token(secret, user, 60)


# ---- the admin route --------------------------------------------------------------------------
def test_admin_route_issues_tokens_and_needs_the_admin_key(client) -> None:
    body = {"user": ALICE, "ttl_seconds": 120}
    assert client.post("/v1/admin/shopper-tokens", json=body).status_code == 401
    r = client.post("/v1/admin/shopper-tokens", json=body, headers=C)
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    t0 = int(time.time())
    r = client.post("/v1/admin/shopper-tokens", json=body, headers=A)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    doc = r.json()
    assert set(doc) == {"token", "expires_at"}
    claims = jwt.decode(doc["token"], options={"verify_signature": False})
    assert claims["sub"] == ALICE and claims["exp"] - claims["iat"] == 120
    expires = time.strptime(doc["expires_at"], "%Y-%m-%dT%H:%M:%SZ")
    assert abs(time.mktime(expires) - time.mktime(time.gmtime(t0 + 120))) <= 2
    h = {**C, "X-Shopper-Token": doc["token"]}
    assert client.get("/v1/me/data", headers=h).json()["n_events"] == _stored(client, ALICE)[0]
    default = client.post("/v1/admin/shopper-tokens", json={"user": ALICE}, headers=A).json()
    claims = jwt.decode(default["token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 900
    for bad in ({"user": ALICE, "ttl_seconds": 86401}, {"user": ALICE, "ttl_seconds": 0}, {}):
        r = client.post("/v1/admin/shopper-tokens", json=bad, headers=A)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    r = client.post("/v1/admin/shopper-tokens", json={"user": "   "}, headers=A)
    assert r.status_code == 422
    schema = client.get("/v1/openapi.json").json()
    assert "/v1/admin/shopper-tokens" in schema["paths"]
    params = schema["paths"]["/v1/me/data"]["get"]["parameters"]
    assert [p["name"] for p in params] == ["X-Shopper-Token"]


def test_secret_file_is_private_and_shared_by_restarts(shop_dir: Path) -> None:
    from fastapi.testclient import TestClient

    with TestClient(make_app(shop_dir, pages="off")) as c:
        h = shopper_headers(c, ALICE)
    path = shop_dir / "keys" / "shopper-token.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_text().strip()) >= 32
    with TestClient(make_app(shop_dir, pages="off")) as c:  # a restart keeps the secret
        assert c.get("/v1/me/data", headers=h).status_code == 200


def test_secret_from_the_environment(shop_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from privrec.server.tokens import issue_shopper_token

    shared = "a-shared-secret-the-shop-backend-also-holds-0123"
    monkeypatch.setenv("PRIVREC_SHOPPER_TOKEN_SECRET", shared)
    with TestClient(make_app(shop_dir)) as c:
        # the shop's backend signs the token itself with the shared secret
        own = issue_shopper_token(shared, ALICE, 60)
        assert c.get("/v1/me/data", headers={**C, "X-Shopper-Token": own}).status_code == 200
        other = issue_shopper_token(b"x" * 48, ALICE, 60)
        _assert_refused(c.get("/v1/me/data", headers={**C, "X-Shopper-Token": other}))
    assert not (shop_dir / "keys" / "shopper-token.key").exists()
    monkeypatch.setenv("PRIVREC_SHOPPER_TOKEN_SECRET", "short")
    with TestClient(make_app(shop_dir), raise_server_exceptions=False) as c:
        r = c.post("/v1/admin/shopper-tokens", json={"user": ALICE}, headers=A)
        assert r.status_code == 400 and "PRIVREC_SHOPPER_TOKEN_SECRET" in r.json()["detail"]
        assert "short" not in r.json()["detail"].replace("shorter", "")


def test_cors_allows_the_token_header_not_a_bare_user_id(shop_dir: Path) -> None:
    from fastapi.testclient import TestClient

    origin = "https://shop.example"
    with TestClient(make_app(shop_dir, cors_origins=[origin])) as c:

        def preflight(header: str):
            return c.options(
                "/v1/me/data",
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": "GET",
                    "Access-Control-Request-Headers": f"authorization,{header}",
                },
            )

        ok = preflight("x-shopper-token")
        assert ok.status_code == 200
        assert "x-shopper-token" in ok.headers["access-control-allow-headers"].lower()
        bad = preflight("x-user-id")
        assert bad.status_code == 400
        assert "x-user-id" not in bad.headers.get("access-control-allow-headers", "").lower()


# ---- the CLI ------------------------------------------------------------------------------------
def test_cli_prints_a_token_the_server_accepts(shop_dir: Path) -> None:
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from privrec.cli import app as cli
    from privrec.server.tokens import load_or_create_secret, verify_shopper_token

    runner = CliRunner()
    r = runner.invoke(cli, ["shopper-token", ALICE, "--ttl", "120", "--data-dir", str(shop_dir)])
    assert r.exit_code == 0, r.output
    token = r.output.strip()
    assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", token)
    assert verify_shopper_token(load_or_create_secret(shop_dir / "keys"), token) == ALICE
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 120
    with TestClient(make_app(shop_dir, pages="off")) as c:
        r = c.get("/v1/me/data", headers={**C, "X-Shopper-Token": token})
        assert r.status_code == 200 and r.json()["n_events"] == _stored(c, ALICE)[0]
    plain = runner.invoke(cli, ["shopper-token", BOB, "--data-dir", str(shop_dir)])
    claims = jwt.decode(plain.output.strip(), options={"verify_signature": False})
    assert plain.exit_code == 0 and claims["sub"] == BOB and claims["exp"] - claims["iat"] == 900
    for ttl in ("0", "86401"):
        bad = runner.invoke(
            cli, ["shopper-token", ALICE, "--ttl", ttl, "--data-dir", str(shop_dir)]
        )
        assert bad.exit_code != 0 and "eyJ" not in bad.output


# ---- the pages ----------------------------------------------------------------------------------
def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def test_page_sign_in_keeps_a_shopper_token(client) -> None:
    from privrec.server import pages
    from privrec.server.tokens import verify_shopper_token

    home = client.get("/")
    client.post("/signin", data={"user": ALICE, "csrf": _csrf(home.text)})
    cookie = client.cookies.get(pages.SHOPPER)
    token = pages.unsign(client.app.state.page_secret, cookie)
    assert token and token != ALICE and ALICE not in cookie
    assert verify_shopper_token(_secret(client), token) == ALICE
    assert 'data-testid="consent-level">personalized<' in client.get("/privacy").text


def _forge(client, token: str) -> None:
    from privrec.server import pages

    client.cookies.set(pages.SHOPPER, pages.sign(client.app.state.page_secret, token))


def test_pages_refuse_a_session_whose_token_does_not_verify(client) -> None:
    from privrec.server.tokens import issue_shopper_token

    before = _stored(client, BOB)
    forged = {
        # the old cookie format: a signed bare user id is no longer a session
        "bare id": BOB,
        "expired": issue_shopper_token(_secret(client), BOB, 60, now=int(time.time()) - 3600),
        "other secret": issue_shopper_token(b"z" * 48, BOB, 600),
    }
    for name, token in forged.items():
        _forge(client, token)
        home = client.get("/")
        assert 'data-testid="who"' not in home.text, name
        assert "sign-in has ended" in home.text, name
        csrf = _csrf(home.text)
        for method, path, data in [
            ("GET", "/privacy", None),
            ("GET", "/privacy/export", None),
            ("POST", "/privacy/consent", {"level": "anonymous", "csrf": csrf}),
            ("POST", "/privacy/delete", {"csrf": csrf}),
        ]:
            _forge(client, token)
            r = client.request(method, path, data=data, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] == "/?signin=1", (name, path)
    assert _stored(client, BOB) == before


def test_page_actions_use_the_token_s_shopper(client) -> None:
    from privrec.server.tokens import issue_shopper_token

    bob_before = _stored(client, BOB)
    _forge(client, issue_shopper_token(_secret(client), ALICE, 600))
    priv = client.get("/privacy")
    assert 'data-testid="who"' in priv.text
    r = client.post("/privacy/consent", data={"level": "anonymous", "csrf": _csrf(priv.text)})
    assert 'data-testid="consent-level">anonymous<' in r.text
    assert (
        client.get("/privacy/export").json()["pseudonym"]
        == client.post(
            "/v1/admin/users/export", json={"user": ALICE}, headers={"X-API-Key": ADMIN_KEY}
        ).json()["pseudonym"]
    )
    rec = client.post("/privacy/delete", data={"csrf": _csrf(r.text), "confirm": "delete"})
    assert 'data-testid="receipt"' in rec.text
    assert _stored(client, ALICE) == (0, "personalized") and _stored(client, BOB) == bob_before
