"""Fuzz the OpenAPI schema (schemathesis, bounded): no 5xx, and every 4xx is problem+json whose
detail names the problem. Every operation gets schema-valid cases and schema-violating cases
(schemathesis' negative mode), in-process against the small shop, with an admin key so every
operation is reachable (requests without a key are covered by test_api)."""

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
    """The app without its lifespan (the fixture runs it once; schemathesis opens a client per call)."""

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


def _check(case) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
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


def test_no_5xx_and_every_4xx_is_problem_json(api_schema) -> None:
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable

    ran = 0
    for result in api_schema.get_all_operations():
        op = result.ok()
        if op.path == "/v1/models/{name}/train":
            continue  # training in the background is covered by test_models_api; here it would only queue jobs

        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            @given(op.as_strategy(generation_mode=mode))
            def run(case) -> None:
                _check(case)

            try:
                run()
            except Unsatisfiable:
                assert (
                    mode is GenerationMode.NEGATIVE
                )  # nothing to violate (no parameters, no body)
                continue
            ran += 1
    assert ran >= 35
