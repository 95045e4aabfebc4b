"""Fuzz the OpenAPI schema (schemathesis, bounded): no 5xx, and every 4xx is problem+json whose
detail names the problem. Every operation gets schema-valid cases and schema-violating cases
(schemathesis' negative mode), in-process against the small shop, with an admin key so every
operation is reachable (requests without a key are covered by test_api); schema-valid cases of
`/v1/me/*` carry a valid shopper token so they reach the handlers, schema-violating ones keep
whatever token header was generated (or none)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from tests.server.conftest import ADMIN_KEY, build_shop, make_app  # noqa: E402

MAX_EXAMPLES = 5


def _no_lifespan(app):
    """The app without its lifespan (the fixture runs it once; schemathesis calls it often)."""

    async def wrapped(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await app(scope, receive, send)

    return wrapped


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from fastapi.testclient import TestClient

    d: Path = tmp_path_factory.mktemp("fuzz") / "data"
    build_shop(d)
    app = make_app(d, rate_client=1e6, rate_admin=1e6)
    with TestClient(app):  # runs the lifespan once: histories and models loaded
        yield app


@pytest.fixture(scope="module")
def api_schema(fuzz_app):
    return schemathesis.openapi.from_asgi("/v1/openapi.json", _no_lifespan(fuzz_app))


def _check(case, shopper_token: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    if shopper_token is not None and case.operation.path.startswith("/v1/me/"):
        headers["X-Shopper-Token"] = shopper_token
    response = case.call(headers=headers)
    where = f"{case.operation.method.upper()} {case.operation.path}"
    assert response.status_code < 500, f"{where} -> {response.status_code}: {response.text[:300]}"
    if response.status_code >= 400:
        ctype = response.headers.get("content-type", "")
        ctype = ctype[0] if isinstance(ctype, list) else ctype
        assert ctype.startswith("application/problem+json"), (
            f"{where} -> {response.status_code} as {ctype}"
        )
        doc = response.json()
        assert doc["status"] == response.status_code and doc["title"]
        assert isinstance(doc["detail"], str) and len(doc["detail"]) >= 10, doc


def _runner(op, mode, shopper_token: str):
    """A bounded hypothesis test of one operation in one generation mode."""
    from hypothesis import given

    token = shopper_token if mode is GenerationMode.POSITIVE else None

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(op.as_strategy(generation_mode=mode))
    def run(case) -> None:
        _check(case, token)

    return run


def test_no_5xx_and_every_4xx_is_problem_json(api_schema, fuzz_app) -> None:
    from hypothesis.errors import Unsatisfiable

    from privrec.server.tokens import app_secret, issue_shopper_token

    token = issue_shopper_token(app_secret(fuzz_app.state), "shopper-00009", 3600)
    ran = 0
    for result in api_schema.get_all_operations():
        op = result.ok()
        if op.path == "/v1/models/{name}/train":
            # background training is covered by test_models_api; here it would only queue jobs
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _runner(op, mode, token)()
            except Unsatisfiable:
                # nothing to violate (no parameters, no body)
                assert mode is GenerationMode.NEGATIVE
                continue
            ran += 1
    assert ran >= 35
