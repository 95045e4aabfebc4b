"""Fuzz the OpenAPI schema (schemathesis, bounded): no 5xx, and every 4xx is problem+json whose
detail names the problem. Runs in-process against the small shop, with an admin key (so every
operation is reachable) and, for a share of cases, with no key at all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")
from hypothesis import HealthCheck, settings  # noqa: E402

from tests.server.conftest import ADMIN_KEY, build_shop, make_app  # noqa: E402

MAX_EXAMPLES = 6


def _no_lifespan(app):  # noqa: ANN001, ANN202
    """The app without its lifespan (the fixture runs it once; schemathesis opens a client per call)."""

    async def wrapped(scope, receive, send):  # noqa: ANN001, ANN202
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
def api_schema(fuzz_app):  # noqa: ANN001, ANN201
    return schemathesis.openapi.from_asgi("/v1/openapi.json", _no_lifespan(fuzz_app))


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_5xx_and_problem_json(case) -> None:  # noqa: ANN001
    if case.operation.path == "/v1/models/{name}/train":
        return  # training in the background is covered by test_models_api; here it would only queue jobs
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    response = case.call(headers=headers)
    assert response.status_code < 500, f"{case.operation.method.upper()} {case.operation.path} -> {response.status_code}: {response.text[:300]}"
    if response.status_code >= 400:
        assert response.headers.get("content-type", [""])[0].startswith("application/problem+json") if isinstance(
            response.headers.get("content-type"), list) else response.headers.get("content-type", "").startswith("application/problem+json")  # fmt: skip
        doc = response.json()
        assert doc["status"] == response.status_code and doc["title"]
        assert isinstance(doc["detail"], str) and len(doc["detail"]) >= 10
