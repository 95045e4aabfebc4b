"""Events: one, or a batch (the fast path parses JSON itself and lets the gate validate)."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from privrec.server.deps import RS, client
from privrec.server.problems import ProblemError, problem_responses
from privrec.server.responses import JSON
from privrec.server.schemas import EventIn, IngestOut

router = APIRouter(prefix="/v1/events", tags=["events"])

_BATCH_SCHEMA = {
    "type": "object",
    "required": ["events"],
    "additionalProperties": False,
    "properties": {
        "events": {
            "type": "array",
            "minItems": 1,
            "maxItems": 20000,
            "items": EventIn.model_json_schema(),
        }
    },
}


@router.post(
    "",
    response_model=IngestOut,
    responses=problem_responses(401, 403, 413, 422, 429),
    dependencies=[Depends(client)],
)
async def post_event(rs: RS, event: EventIn) -> JSON:
    """Ingest one event (through consent check and privacy gate). A rejected event is a 422."""
    report = await run_in_threadpool(rs.ingestion.batch, [event.model_dump(exclude_none=True)])
    if report["rejected"]:
        raise ProblemError(
            422, f"event rejected: {report['rejects'][0]['reason']}", slug="event-rejected"
        )
    return JSON(report)


@router.post(
    "/batch",
    response_model=IngestOut,
    responses=problem_responses(400, 401, 403, 413, 415, 422, 429),
    dependencies=[Depends(client)],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _BATCH_SCHEMA}},
        }
    },
)
async def post_batch(rs: RS, request: Request) -> JSON:
    """Ingest up to `max_batch_events` events; rejected rows are reported by position."""
    ctype = request.headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() not in ("application/json", ""):
        raise ProblemError(
            415,
            'send the batch as application/json: {"events": [...]}',
            slug="unsupported-media-type",
        )
    body = await request.body()
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ProblemError(
            400, 'the body is not valid JSON; send {"events": [...]}', slug="invalid-json"
        ) from None
    if not isinstance(doc, dict) or set(doc) != {"events"} or not isinstance(doc["events"], list):
        raise ProblemError(
            422,
            "body: must be an object with exactly one field, events (a list of event objects)",
            slug="invalid-batch",
        )
    events = doc["events"]
    limit = request.app.state.server_settings.max_batch_events
    if not events:
        raise ProblemError(422, "events: is empty; send at least one event", slug="invalid-batch")
    if len(events) > limit:
        raise ProblemError(
            413,
            f"events: {len(events)} events in one batch; send at most {limit}",
            slug="batch-too-large",
        )
    report = await run_in_threadpool(rs.ingestion.batch, events)
    return JSON(report)
