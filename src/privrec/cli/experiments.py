"""`privrec experiment` (create, list, stop, report, promote) and `privrec metrics online`.

Each command runs the same service code as the HTTP routes; beside a running server it goes
through that server's API instead (`privrec.cli.remote`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from privrec.cli.common import DataDir, app, console, errors, open_recsys
from privrec.cli.remote import remote
from privrec.cli.runtime import Server
from privrec.core.errors import ValidationError

experiment_app = typer.Typer(
    name="experiment",
    help="A/B experiments: create, stop, report (sequential tests, guardrails), promote.",
    no_args_is_help=True,
)
app.add_typer(experiment_app, name="experiment")
metrics_app = typer.Typer(
    name="metrics", help="Online metrics of served lists (the feedback log).", no_args_is_help=True
)
app.add_typer(metrics_app, name="metrics")

AsJson = Annotated[bool, typer.Option("--json", help="Print the JSON document.")]


def _spec(
    name: str,
    variant: list[str],
    spec_file: Path | None,
    guardrail: list[str],
    primary: str,
    alpha: float,
    tau2: float,
    description: str,
) -> dict[str, Any]:
    """The experiment spec from the options (or the JSON file, which the options extend)."""
    spec: dict[str, Any] = json.loads(spec_file.read_text()) if spec_file else {}
    spec["name"] = name
    if variant:
        spec["variants"] = []
        for v in variant:
            arm, _, model = v.partition("=")
            spec["variants"].append({"name": arm, "model": model or None})
    if not spec.get("variants"):
        raise ValidationError("variants", "give two or more --variant NAME[=MODEL] (or --spec)")
    if guardrail:
        spec["guardrails"] = []
        for g in guardrail:
            metric, _, drop = g.partition("=")
            try:
                spec["guardrails"].append({"metric": metric, "max_drop": float(drop)})
            except ValueError:
                raise ValidationError(
                    "guardrail", f"{g!r}: expected METRIC=MAX_DROP, e.g. coverage=0.1"
                ) from None
    spec.setdefault("primary", primary)
    spec.setdefault("alpha", alpha)
    spec.setdefault("tau2", tau2)
    if description:
        spec["description"] = description
    return spec


@experiment_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The experiment's name (lower-case, digits, -_).")],
    variant: Annotated[
        list[str] | None,
        typer.Option(
            "--variant",
            help="An arm, NAME or NAME=MODEL (repeat; the first is the control).",
        ),
    ] = None,
    spec_file: Annotated[
        Path | None,
        typer.Option("--spec", help="A JSON spec (variants with weights and params).", exists=True),
    ] = None,
    guardrail: Annotated[
        list[str] | None,
        typer.Option("--guardrail", help="METRIC=MAX_DROP, e.g. revenue_per_shopper=0.05."),
    ] = None,
    primary: Annotated[str, typer.Option(help="conversion or ctr.")] = "conversion",
    alpha: Annotated[float, typer.Option(help="Level of the sequential test.")] = 0.05,
    tau2: Annotated[float, typer.Option(help="mSPRT mixing variance.")] = 1e-4,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    data_dir: DataDir = None,
) -> None:
    """Create and start an experiment."""
    with errors():
        spec = _spec(
            name, variant or [], spec_file, guardrail or [], primary, alpha, tau2, description
        )
        with open_recsys(data_dir) as rs:
            out = rs.experiments.create(spec)
    console.print_json(json.dumps(out))


@remote("experiment create")
def _create_remote(
    srv: Server,
    *,
    name: str,
    variant: list[str] | None,
    spec_file: Path | None,
    guardrail: list[str] | None,
    primary: str,
    alpha: float,
    tau2: float,
    description: str,
    **_: Any,
) -> None:
    spec = _spec(name, variant or [], spec_file, guardrail or [], primary, alpha, tau2, description)
    console.print_json(json.dumps(srv.call("POST", "/v1/experiments", spec)))


@experiment_app.command("list")
def list_all(data_dir: DataDir = None) -> None:
    """All experiments."""
    with errors(), open_recsys(data_dir) as rs:
        console.print_json(json.dumps({"experiments": rs.experiments.all()}))


@remote("experiment list")
def _list_remote(srv: Server, **_: Any) -> None:
    console.print_json(json.dumps(srv.call("GET", "/v1/experiments")))


@experiment_app.command("stop")
def stop(name: Annotated[str, typer.Argument()], data_dir: DataDir = None) -> None:
    """Stop an experiment (its data stays for the report)."""
    with errors(), open_recsys(data_dir) as rs:
        console.print_json(json.dumps(rs.experiments.stop(name)))


@remote("experiment stop")
def _stop_remote(srv: Server, *, name: str, **_: Any) -> None:
    console.print_json(json.dumps(srv.call("POST", f"/v1/experiments/{name}/stop")))


def _fmt(x: Any, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.2f}%" if pct else f"{x:.4g}" if isinstance(x, float) else str(x)


def _print_report(rep: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rep, ensure_ascii=False))
        return
    exp = rep["experiment"]
    table = Table(title=f"experiment {exp['name']} ({exp['status']}; primary: {exp['primary']})")
    for col in ("arm", "impressions", "shoppers", "CTR", "conversion", "rev/shopper", "coverage"):
        table.add_column(col)
    for r in rep["online"]:
        table.add_row(
            str(r["arm"]),
            _fmt(r.get("impressions")),
            _fmt(r.get("shoppers")),
            _fmt(r.get("ctr"), True),
            _fmt(r.get("conversion"), True),
            _fmt(r.get("revenue_per_shopper")),
            _fmt(r.get("coverage"), True),
        )
    console.print(table, markup=False, emoji=False)
    seq = Table(title="always-valid sequential tests against the control (mSPRT)")
    for col in ("arm", "metric", "effect", "always-valid CI", "p", "concluded"):
        seq.add_column(col)
    for arm, tests in rep["sequential"].items():
        for metric, t in tests.items():
            lo, hi = t["ci"]
            ci = "-" if lo is None and hi is None else f"[{_fmt(lo)}, {_fmt(hi)}]"
            seq.add_row(arm, metric, _fmt(t["effect"]), ci, _fmt(t["p_value"]), str(t["concluded"]))
    console.print(seq, markup=False, emoji=False)
    for arm, checks in rep["guardrails"].items():
        for g in checks:
            state = "BREACHED" if g["breached"] else "ok" if g["judged"] else "not judged yet"
            console.print(
                f"guardrail {arm}/{g['metric']}: change {_fmt(g['change'], True)} "
                f"(max drop {100 * g['max_drop']:.1f}%): {state}",
                markup=False,
                emoji=False,
            )
    d = rep["decision"]
    console.print(
        f"decision: {'ready to promote ' + repr(d['winner']) if d['ready'] else 'not ready'}; "
        f"{d['reason']}",
        markup=False,
        emoji=False,
    )


@experiment_app.command("report")
def report(
    name: Annotated[str, typer.Argument()], as_json: AsJson = False, data_dir: DataDir = None
) -> None:
    """Per-arm metrics, sequential tests, guardrails and the promotion decision."""
    with errors(), open_recsys(data_dir) as rs:
        rep = rs.experiments.report(name)
    _print_report(rep, as_json)


@remote("experiment report")
def _report_remote(srv: Server, *, name: str, as_json: bool, **_: Any) -> None:
    _print_report(srv.call("GET", f"/v1/experiments/{name}/report"), as_json)


@experiment_app.command("promote")
def promote(
    name: Annotated[str, typer.Argument()],
    force: Annotated[
        bool,
        typer.Option("--force", help="Promote before the test concludes or past guardrails."),
    ] = False,
    arm: Annotated[
        str | None, typer.Option("--arm", help="The arm to promote (with --force).")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Make the winning arm's model version the default and end the experiment (exit 2 while
    the sequential test has not concluded or a guardrail is breached, unless --force)."""
    with errors(), open_recsys(data_dir) as rs:
        out = rs.experiments.promote_served(rs.serving, name, force=force, arm=arm)
    console.print_json(json.dumps(out))


@remote("experiment promote")
def _promote_remote(srv: Server, *, name: str, force: bool, arm: str | None, **_: Any) -> None:
    body = {"force": force, **({"arm": arm} if arm else {})}
    console.print_json(json.dumps(srv.call("POST", f"/v1/experiments/{name}/promote", body)))


def _print_online(doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(doc, ensure_ascii=False))
        return
    by = doc["by"]
    cols = ("model", "version") if by == "version" else ("experiment", "arm")
    table = Table(title=f"online metrics by {by}, last {doc['days']} day(s)")
    for col in ("day", *cols, "impressions", "CTR", "conversion", "rev/shopper", "coverage"):
        table.add_column(col)
    for r in doc["daily"]:
        table.add_row(
            r["day"],
            *(str(r[c]) for c in cols),
            _fmt(r["impressions"]),
            _fmt(r["ctr"], True),
            _fmt(r["conversion"], True),
            _fmt(r["revenue_per_shopper"]),
            _fmt(r["coverage"], True),
        )
    console.print(table, markup=False, emoji=False)


@metrics_app.command("online")
def online(
    by: Annotated[str, typer.Option("--by", help="version or arm.")] = "version",
    days: Annotated[int, typer.Option("--days", help="The window, ending today.")] = 7,
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """Impressions, CTR, conversion, revenue per shopper and coverage per day and group."""
    with errors(), open_recsys(data_dir) as rs:
        fb = rs.experiments.feedback
        doc = {
            "by": by,
            "days": days,
            "attribution_window_hours": fb.window_s / 3600.0,
            "daily": fb.metrics(by, days),
            "totals": fb.summary(by, days),
        }
    _print_online(doc, as_json)


@remote("metrics online")
def _online_remote(srv: Server, *, by: str, days: int, as_json: bool, **_: Any) -> None:
    _print_online(srv.call("GET", f"/v1/metrics/online?by={by}&days={int(days)}"), as_json)
