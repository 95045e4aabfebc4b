"""Request size limits hold whether or not the client declares the body's length."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi.testclient import TestClient

from tests.server.conftest import C, make_app


def _chunks(total: int, size: int = 4096) -> Iterator[bytes]:
    yield b'{"user": "u", "k": 5, "pad": "'
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}'


def test_an_oversized_chunked_body_is_413_not_400(shop_dir) -> None:
    with TestClient(make_app(shop_dir, max_body_bytes=20_000)) as http:
        r = http.post(
            "/v1/explanations",
            content=_chunks(50_000),
            headers={**C, "Content-Type": "application/json"},
        )
        assert r.status_code == 413, r.text
        assert r.headers["content-type"].startswith("application/problem+json")


def test_a_small_chunked_body_is_served(shop_dir) -> None:
    with TestClient(make_app(shop_dir, max_body_bytes=20_000)) as http:
        body = b'{"user": "shopper-00001", "k": 3}'
        r = http.post(
            "/v1/recommendations",
            content=iter([body[:10], body[10:]]),
            headers={**C, "Content-Type": "application/json"},
        )
        assert r.status_code == 200, r.text
        assert len(r.json()["items"]) == 3
