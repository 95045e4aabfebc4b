"""Model operations: list, activate, roll back; retrain policies, the job history, the worker.

Each command runs locally, or through the HTTP API when a server runs on the data directory
(`privrec.cli.remote`), and prints the same either way. `privrec worker` runs the retrain
scheduler when no server runs (the server runs it itself: the embedded store admits one writer).
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from privrec.cli.common import DataDir, app, console, errors, open_recsys, parse_params
from privrec.cli.remote import remote
from privrec.cli.runtime import Server

schedule_app = typer.Typer(
    help="Retrain policies: every N new events, every T hours, before erasure deadlines.",
    no_args_is_help=True,
)
app.add_typer(schedule_app, name="schedule")

Json = Annotated[bool, typer.Option("--json", help="Print JSON (what the HTTP API returns).")]


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else ""


# ---- models ---
def _print_models(models: dict[str, Any], as_json: bool) -> None:
    from rich.table import Table

    if as_json:
        print(json.dumps(models, sort_keys=True))
        return
    table = Table(title="models")
    for col in ("model", "active", "versions", "default", "privacy", "quarantined"):
        table.add_column(col)
    for name, m in sorted(models.items()):
        p = m.get("privacy") or {}
        eps = f"epsilon {p['epsilon']:g}" if p.get("epsilon") is not None else "not DP"
        table.add_row(
            name,
            m.get("active") or "-",
            str(len(m.get("versions", []))),
            "yes" if m.get("default") else "",
            eps,
            str(len(m.get("quarantined", []))),
        )
    console.print(table, markup=False, emoji=False)


@app.command("models")
def models_cmd(data_dir: DataDir = None, as_json: Json = False) -> None:
    """List the models: active version, number of versions, default, privacy guarantee."""
    with errors(), open_recsys(data_dir) as rs:
        models = rs.serving.versions()
    _print_models(models, as_json)


@remote("models")
def _models_remote(srv: Server, *, as_json: bool, **_: Any) -> None:
    _print_models(srv.call("GET", "/v1/models")["models"], as_json)


def _print_switch(out: dict[str, Any], verb: str) -> None:
    line = f"{out['model']}: {verb} {out['active']} (was {out.get('previous') or 'none'})"
    if out.get("reason") and verb == "rolled back to":
        line += f"; reason: {out['reason']}"
    console.print(line, markup=False, emoji=False)


@app.command()
def activate(
    model: Annotated[str, typer.Argument(help="The model's name.")],
    version: Annotated[str, typer.Argument(help="The version to serve (see `privrec models`).")],
    data_dir: DataDir = None,
) -> None:
    """Serve an existing version of a model (hot swap where a server serves it)."""
    with errors(), open_recsys(data_dir) as rs:
        out = rs.serving.activate(model, version)
    _print_switch(out, "active")


@remote("activate")
def _activate_remote(srv: Server, *, model: str, version: str, **_: Any) -> None:
    _print_switch(srv.call("POST", f"/v1/models/{model}/activate", {"version": version}), "active")


@app.command()
def rollback(
    model: Annotated[str, typer.Argument(help="The model's name.")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why (kept with the rolled-back version).")
    ] = "rolled back by the operator",
    data_dir: DataDir = None,
) -> None:
    """Serve the model's previous good version again; the current one is marked rolled back."""
    with errors(), open_recsys(data_dir) as rs:
        out = rs.scheduler.rollback(model, reason=reason)
    _print_switch(out, "rolled back to")


@remote("rollback")
def _rollback_remote(srv: Server, *, model: str, reason: str, **_: Any) -> None:
    out = srv.call("POST", f"/v1/models/{model}/rollback", {"reason": reason})
    _print_switch(out, "rolled back to")


# ---- a shopper's consent ---
@app.command()
def consent(
    user: Annotated[str, typer.Argument(help="The shop's user id.")],
    set_level: Annotated[
        str | None,
        typer.Option("--set", help="New level: personalized, purchases_only or anonymous."),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """A shopper's consent level, or set it (it applies from the next request on)."""
    with errors(), open_recsys(data_dir) as rs:
        if set_level is None:
            doc: dict[str, Any] = {"level": rs.consent(user)}
        else:
            doc = rs.set_consent(user, set_level).to_dict()
    console.print_json(json.dumps(doc))


@remote("consent")
def _consent_remote(srv: Server, *, user: str, set_level: str | None, **_: Any) -> None:
    # acting for the shopper: a one-minute shopper token from the admin route, then /v1/me
    token = srv.call("POST", "/v1/admin/shopper-tokens", {"user": user, "ttl_seconds": 60})
    headers = {"X-Shopper-Token": token["token"]}
    if set_level is None:
        doc = {"level": srv.call("GET", "/v1/me/consent", headers=headers)["level"]}
    else:
        doc = srv.call("PUT", "/v1/me/consent", {"level": set_level}, headers=headers)
    console.print_json(json.dumps(doc))


# ---- privacy budget ---
@app.command("privacy-budget")
def privacy_budget(data_dir: DataDir = None) -> None:
    """The privacy ledger (spent, left), each model's guarantee and the pending retrains."""
    with errors(), open_recsys(data_dir) as rs:
        doc = rs.privacy_budget()
    console.print_json(json.dumps(doc, default=str))


@remote("privacy-budget")
def _privacy_budget_remote(srv: Server, **_: Any) -> None:
    console.print_json(json.dumps(srv.call("GET", "/v1/privacy/budget"), default=str))


# ---- the job history ---
def _print_jobs(jobs: list[dict[str, Any]], as_json: bool) -> None:
    from rich.table import Table

    if as_json:
        print(json.dumps(jobs, sort_keys=True, default=str))
        return
    table = Table(title=f"jobs (newest first, {len(jobs)})")
    for col in ("id", "created (UTC)", "kind", "model", "trigger", "status", "version"):
        table.add_column(col, no_wrap=True)
    table.add_column("reason")
    for j in jobs:
        table.add_row(
            j["id"],
            _when(j.get("created_at"))[5:],
            j.get("kind") or "",
            j.get("model") or "",
            j.get("trigger") or "",
            j.get("status") or "",
            j.get("version") or "",
            j.get("reason") or "",
        )
    console.print(table, markup=False, emoji=False)


@app.command()
def jobs(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000)] = 20,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Only this model.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="Only this status (e.g. refused, gated).")
    ] = None,
    data_dir: DataDir = None,
    as_json: Json = False,
) -> None:
    """The job history: trainings, scheduled retrains, rollbacks, with status and reason."""
    with errors(), open_recsys(data_dir) as rs:
        got = rs.jobs.recent(limit, model=model, status=status)
    _print_jobs(got, as_json)


@remote("jobs")
def _jobs_remote(
    srv: Server, *, limit: int, model: str | None, status: str | None, as_json: bool, **_: Any
) -> None:
    from urllib.parse import urlencode

    query = {"limit": limit, **({"model": model} if model else {})}
    if status:
        query["status"] = status
    _print_jobs(srv.call("GET", "/v1/jobs?" + urlencode(query))["jobs"], as_json)


# ---- policies ---
def _print_schedule(doc: dict[str, Any], as_json: bool) -> None:
    from rich.table import Table

    if as_json:
        print(json.dumps(doc, sort_keys=True, default=str))
        return
    table = Table(title="retrain policies")
    for col in ("model", "every events", "every hours", "new events", "hours since", "gate"):
        table.add_column(col)
    for name, m in sorted(doc["models"].items()):
        p = m["policy"]
        gate = (
            f"{p['gate_metric']} -{p['gate_tolerance']:.0%} on {p['holdout_days']:g} d"
            if p["gate"]
            else "off"
        )
        table.add_row(
            name + ("" if p["enabled"] else " (disabled)"),
            str(p["every_events"] or "-"),
            f"{p['every_hours']:g}" if p["every_hours"] else "-",
            str(m["new_events"]),
            f"{m['hours_since_retrain']:.1f}",
            gate,
        )
    console.print(table, markup=False, emoji=False)
    for name, deadline in sorted(doc.get("erasure_deadlines", {}).items()):
        console.print(f"{name}: retrain owed before {deadline} (erasures)", markup=False)
    for d in doc.get("due", []):
        console.print(f"due now: {d['model']} ({d['why']})", markup=False)


@schedule_app.command("show")
def schedule_show(data_dir: DataDir = None, as_json: Json = False) -> None:
    """The policies, new events and hours since each retrain, erasure deadlines, what is due."""
    with errors(), open_recsys(data_dir) as rs:
        doc = rs.scheduler.status()
    _print_schedule(doc, as_json)


@remote("schedule show")
def _schedule_show_remote(srv: Server, *, as_json: bool, **_: Any) -> None:
    doc = srv.call("GET", "/v1/schedule")
    doc.pop("policies", None)
    _print_schedule(doc, as_json)


def _fields(
    every_events: int | None,
    every_hours: float | None,
    param: list[str] | None,
    gate: bool | None,
    tolerance: float | None,
    holdout_days: float | None,
    enabled: bool | None,
) -> dict[str, Any]:
    given = {
        "every_events": every_events,
        "every_hours": every_hours,
        "gate": gate,
        "gate_tolerance": tolerance,
        "holdout_days": holdout_days,
        "enabled": enabled,
    }
    out: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if param:
        out["params"] = parse_params(param)
    return out


@schedule_app.command("set")
def schedule_set(
    model: Annotated[str, typer.Argument(help="The model's name.")],
    every_events: Annotated[
        int | None, typer.Option("--every-events", min=1, help="Retrain after N new events.")
    ] = None,
    every_hours: Annotated[
        float | None, typer.Option("--every-hours", min=0.001, help="Retrain every T hours.")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Hyper-parameter NAME=VALUE for the retrains."),
    ] = None,
    gate: Annotated[
        bool | None, typer.Option("--gate/--no-gate", help="Compare with the active version.")
    ] = None,
    tolerance: Annotated[
        float | None,
        typer.Option("--tolerance", min=0, max=0.99, help="Relative gate tolerance (0.02 = 2%)."),
    ] = None,
    holdout_days: Annotated[
        float | None, typer.Option("--holdout-days", help="Recent days the gate holds out.")
    ] = None,
    enabled: Annotated[bool | None, typer.Option("--enable/--disable")] = None,
    data_dir: DataDir = None,
) -> None:
    """Create or change a model's retrain policy (options not given keep their value)."""
    fields = _fields(every_events, every_hours, param, gate, tolerance, holdout_days, enabled)
    with errors(), open_recsys(data_dir) as rs:
        policy = rs.scheduler.set_policy(model, fields)
    console.print_json(json.dumps({model: policy}))


@remote("schedule set")
def _schedule_set_remote(srv: Server, *, model: str, **kw: Any) -> None:
    keys = ("every_events", "every_hours", "param", "gate", "tolerance", "holdout_days", "enabled")
    fields = _fields(*(kw.get(k) for k in keys))
    policies = srv.call("GET", "/v1/schedule")["policies"]
    policies[model] = {**policies.get(model, {}), **fields}
    doc = srv.call("PUT", "/v1/schedule", {"policies": policies})
    console.print_json(json.dumps({model: doc["policies"][model]}))


@schedule_app.command("remove")
def schedule_remove(
    model: Annotated[str, typer.Argument(help="The model's name.")], data_dir: DataDir = None
) -> None:
    """Drop a model's policy (retrains owed to erasure deadlines still happen)."""
    with errors(), open_recsys(data_dir) as rs:
        had = rs.scheduler.remove_policy(model)
    console.print(f"{model}: " + ("policy removed" if had else "had no policy"), markup=False)


@remote("schedule remove")
def _schedule_remove_remote(srv: Server, *, model: str, **_: Any) -> None:
    policies = srv.call("GET", "/v1/schedule")["policies"]
    had = policies.pop(model, None) is not None
    srv.call("PUT", "/v1/schedule", {"policies": policies})
    console.print(f"{model}: " + ("policy removed" if had else "had no policy"), markup=False)


# ---- the worker ---
@app.command()
def worker(
    tick: Annotated[
        float, typer.Option("--tick", min=0.1, help="Seconds between looks for due retrains.")
    ] = 60.0,
    once: Annotated[
        bool, typer.Option("--once", help="Run what is due now, print the jobs and exit.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Run the retrain scheduler without a server (a running server runs it itself).

    The embedded store admits one writer process: while the worker runs, `privrec serve` cannot
    start on the same data directory, and the other way round.
    """
    with errors(), open_recsys(data_dir) as rs:
        rs.jobs.interrupted()
        if once:
            _print_jobs(rs.scheduler.tick(), as_json=False)
            return
        console.print(f"retrain scheduler running (tick {tick:g} s); Ctrl-C stops it")
        rs.scheduler.start(tick)
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
        finally:
            rs.scheduler.shutdown()
