"""What the operator console shows, gathered and shaped for the templates (no routes here).

Numbers are formatted for people here (`fmt_number`: never 3.3322225924691766e-05) and the
charts are server-side SVG (`privrec.server.charts`).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any

from privrec.core.errors import PrivrecError
from privrec.server.charts import bar_chart, fmt_number, gauge, line_chart
from privrec.service.report_index import ReportFile

# report files linked under the flat names older pages used (bookmarks keep working)
LEGACY_NAMES = {"privacy/frontier.png": "privacy-frontier.png"}
# routes whose latency says nothing about serving
_SKIP_ROUTES = frozenset({"unmatched", "/static", "/metrics"})


def ledger_rows(entries: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The privacy ledger as table rows with readable numbers, newest first."""
    rows = []
    for e in reversed(entries):
        when = str(e.get("time") or "")
        rows.append(
            {
                "date": when.replace("T", " ").replace("Z", " UTC") if when else "–",
                "release": str(e.get("release") or "–"),
                "model": str(e.get("model") or "–"),
                "epsilon": fmt_number(float(e.get("epsilon", math.nan))),
                "delta": fmt_number(float(e.get("delta", math.nan))),
                "mechanism": str(e.get("mechanism") or "–"),
                "unit": str(e.get("unit") or "user"),
                "accountant": str(e.get("accountant") or "–"),
            }
        )
    return rows


def epsilon_words(epsilon: float, delta: float, releases: int) -> str:
    """What the spent epsilon means for one shopper, in plain words."""
    if releases == 0 or not math.isfinite(epsilon):
        return (
            "No statistic has been released from shoppers' data with differential privacy yet, "
            "so no privacy budget is spent."
        )
    factor = math.exp(epsilon)
    ratio = f"{factor:,.1f}" if factor < 1e6 else f"{factor:.1e}"
    spend = "The one release spends" if releases == 1 else f"All {releases} releases together spend"
    return (
        f"{spend} ε = "
        f"{fmt_number(epsilon)}: whatever else they know, an observer who sees all of it "
        f"can be at most e^ε ≈ {ratio} times more (or less) confident that a given shopper's data "
        f"was used than if it had not been, except with a probability of at most δ = "
        f"{fmt_number(delta)}. Smaller ε is more private; ε ≤ 1 is strong protection."
    )


def budget_view(budget: dict[str, Any]) -> dict[str, Any]:
    """The privacy budget panel: gauge, sentence, ledger rows, model guarantees."""
    led = budget.get("ledger") or {}
    spent = float(led.get("epsilon_spent") or 0.0)
    total = float(led.get("budget_epsilon") or 0.0)
    releases = int(led.get("releases") or 0)
    delta = float(led.get("delta_spent") or 0.0)
    chart = None
    if total > 0 and math.isfinite(total):
        chart = gauge(
            spent,
            total,
            title="Privacy budget spent",
            unit="ε",
            note=f"{releases} release{'s' if releases != 1 else ''}; "
            f"δ {fmt_number(delta)} of {fmt_number(float(led.get('budget_delta') or 0.0))}",
        )
    return {
        "gauge": chart,
        "words": epsilon_words(spent, delta, releases),
        "rows": ledger_rows(list(led.get("entries") or [])),
        "spent": fmt_number(spent),
        "left": fmt_number(float(led.get("epsilon_left") or 0.0)),
        "total": fmt_number(total),
        "composition": led.get("composition") or "",
        "note": budget.get("ledger_note"),
        "pending": budget.get("pending_retrains") or {},
    }


def model_privacy(privacy: dict[str, Any] | None) -> str:
    """A model's DP guarantee in one short phrase."""
    if not privacy:
        return "no DP guarantee"
    eps = fmt_number(float(privacy.get("epsilon", math.nan)))
    delta = fmt_number(float(privacy.get("delta", math.nan)))
    return f"ε = {eps}, δ = {delta} per {privacy.get('unit') or 'user'}"


def events_chart(per_day: dict[str, Any]) -> Any:
    """Events per day and type as a line chart (dates shortened to MM-DD)."""
    return line_chart(
        per_day["series"],
        [d[5:] for d in per_day["days"]],
        title="Events per day, by type",
        y_label="events",
        x_label="day (UTC)",
        empty_note="no events stored yet",
    )


def _quantile(buckets: list[tuple[float, float]], count: float, q: float) -> float:
    """A quantile from cumulative histogram buckets (linear inside the bucket)."""
    want = q * count
    prev_bound, prev_cum = 0.0, 0.0
    for bound, cum in buckets:
        if cum >= want:
            if math.isinf(bound):
                return prev_bound  # beyond the last finite bucket: its lower edge
            inside = cum - prev_cum
            frac = (want - prev_cum) / inside if inside > 0 else 1.0
            return prev_bound + frac * (bound - prev_bound)
        prev_bound, prev_cum = bound, cum
    return prev_bound


def latency(registry: Any, top: int = 10) -> list[dict[str, Any]]:
    """Per route: requests, mean, median and 95th percentile latency (ms), busiest first."""
    buckets: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    counts: dict[tuple[str, str], float] = {}
    sums: dict[tuple[str, str], float] = {}
    for fam in registry.collect():
        if fam.name != "privrec_request_seconds":
            continue
        for s in fam.samples:
            key = (s.labels.get("method", ""), s.labels.get("route", ""))
            if key[1] in _SKIP_ROUTES:
                continue
            if s.name.endswith("_bucket"):
                buckets[key].append((float(s.labels["le"]), float(s.value)))
            elif s.name.endswith("_count"):
                counts[key] = float(s.value)
            elif s.name.endswith("_sum"):
                sums[key] = float(s.value)
    rows: list[dict[str, Any]] = []
    for key, n in counts.items():
        if n <= 0:
            continue
        b = sorted(buckets[key])
        rows.append(
            {
                "route": f"{key[0]} {key[1]}",
                "requests": int(n),
                "mean_ms": 1000 * sums.get(key, 0.0) / n,
                "p50_ms": 1000 * _quantile(b, n, 0.5),
                "p95_ms": 1000 * _quantile(b, n, 0.95),
            }
        )
    rows.sort(key=lambda r: (-r["requests"], r["route"]))
    return rows[:top]


def serving_view(stats: dict[str, Any], registry: Any) -> dict[str, Any]:
    """Cache hit ratio gauge and the latency chart."""
    hits, misses = int(stats.get("cache_hits", 0)), int(stats.get("cache_misses", 0))
    cache = (
        gauge(hits, hits + misses, title="Cache hit ratio", note=f"{hits} hits, {misses} misses")
        if hits + misses
        else None
    )
    rows = latency(registry)
    chart = bar_chart(
        [r["route"] for r in rows],
        [r["p50_ms"] for r in rows],
        intervals=[(r["p50_ms"], r["p95_ms"]) for r in rows],
        title="Latency by route: median (bar) to 95th percentile (whisker)",
        x_label="milliseconds",
        empty_note="no request served yet",
    )
    return {"cache": cache, "latency": chart, "latency_rows": rows, "stats": stats}


def experiment_chart(report: dict[str, Any]) -> Any:
    """An experiment's click-through rate per variant with its 95% interval."""
    labels, values, intervals = [], [], []
    for v in report.get("variants") or []:
        ctr = v.get("ctr") or {}
        val = ctr.get("value")
        labels.append(str(v.get("variant")))
        values.append(float(val) if val is not None else math.nan)
        ci = ctr.get("ci")
        intervals.append((float(ci[0]), float(ci[1])) if ci and val is not None else None)
    name = (report.get("experiment") or {}).get("name", "")
    return bar_chart(
        labels,
        values,
        intervals=intervals,
        title=f"{name}: click-through rate per variant (95% CI)",
        x_label="clicks per shown list",
        empty_note="no exposure logged yet",
    )


def experiments_view(rs: Any) -> list[dict[str, Any]]:
    """Every experiment's report (or its bare record when the report cannot be made yet)."""
    out = []
    for e in rs.experiments.all():
        try:
            rep = rs.experiments.report(e["name"])
        except PrivrecError:
            rep = {"experiment": e, "variants": [], "srm": {}}
        rep["chart"] = experiment_chart(rep)
        rep["arm_chart"] = arm_chart(rep) if rep.get("daily") else None
        rep["tests"] = sequential_rows(rep)
        out.append(rep)
    return out


def plots(files: list[ReportFile]) -> list[dict[str, str]]:
    """The current report images, grouped by what they show."""
    out = []
    for f in files:
        if f.archived or f.kind != "image":
            continue
        group = (
            "privacy-utility frontier"
            if f.name.startswith("privacy/")
            else "robustness"
            if f.name.startswith("robustness/")
            else "evaluation"
        )
        out.append({"name": LEGACY_NAMES.get(f.name, f.name), "group": group})
    return out


def _when(ts: Any) -> str:
    if not isinstance(ts, (int, float)):
        return "–"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(ts)))


def jobs_view(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The job history's records as table rows (times in UTC, durations in seconds)."""
    rows = []
    for j in jobs:
        start, end = j.get("started_at"), j.get("finished_at")
        took = (
            fmt_number(float(end) - float(start))
            if isinstance(start, (int, float)) and isinstance(end, (int, float))
            else "–"
        )
        rows.append(
            {
                "id": j.get("id"),
                "created": _when(j.get("created_at")),
                "kind": j.get("kind") or "–",
                "model": j.get("model") or "–",
                "trigger": j.get("trigger") or "–",
                "status": j.get("status") or "–",
                "version": j.get("version") or "–",
                "took": took,
                "reason": j.get("reason") or j.get("error") or "",
            }
        )
    return rows


def _daily_chart(
    rows: list[dict[str, Any]], group: Any, metric: str, title: str, y_label: str
) -> Any:
    """A line per group of one daily metric (None: a gap) from feedback-log rows."""
    days = sorted({str(r["day"]) for r in rows})
    series: dict[str, list[float]] = {}
    at = {d: i for i, d in enumerate(days)}
    for r in rows:
        values = series.setdefault(group(r), [math.nan] * len(days))
        v = r.get(metric)
        values[at[str(r["day"])]] = float(v) if v is not None else math.nan
    return line_chart(
        series,
        [d[5:] for d in days],
        title=title,
        y_label=y_label,
        x_label="day (UTC)",
        empty_note="no list served and logged yet",
    )


def feedback_view(feedback: Any, days: int = 14) -> dict[str, Any]:
    """Online metrics per model version from the feedback log: daily CTR chart and totals."""
    rows = feedback.metrics("version", days)
    totals = feedback.summary("version", days)

    def label(r: dict[str, Any]) -> str:
        return f"{r.get('model')} {r.get('version')}"

    table = [
        {
            "model": r.get("model"),
            "version": r.get("version"),
            "impressions": int(r.get("impressions") or 0),
            "shoppers": int(r.get("shoppers") or 0),
            "ctr": fmt_number(r["ctr"]) if r.get("ctr") is not None else "–",
            "conversion": fmt_number(r["conversion"]) if r.get("conversion") is not None else "–",
            "revenue": fmt_number(r["revenue_per_shopper"])
            if r.get("revenue_per_shopper") is not None
            else "–",
            "coverage": fmt_number(r["coverage"]) if r.get("coverage") is not None else "–",
        }
        for r in totals
    ]
    return {
        "ctr_chart": _daily_chart(
            rows, label, "ctr", "Click-through rate per model version, by day", "CTR"
        ),
        "conversion_chart": _daily_chart(
            rows, label, "conversion", "Conversion per model version, by day", "conversion"
        ),
        "table": table,
        "days": days,
    }


def sequential_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The always-valid tests of an experiment's report as table rows."""
    out = []
    for arm, tests in (report.get("sequential") or {}).items():
        for metric, t in tests.items():
            ci = t.get("ci") or [None, None]
            out.append(
                {
                    "arm": arm,
                    "metric": metric,
                    "effect": fmt_number(t["effect"]) if t.get("effect") is not None else "–",
                    "ci": "["
                    + ", ".join(fmt_number(c) if c is not None else "–" for c in ci)
                    + "]",
                    "p": fmt_number(float(t.get("p_value", 1.0))),
                    "concluded": bool(t.get("concluded")),
                    "units": t.get("units") or [0, 0],
                }
            )
    return out


def arm_chart(report: dict[str, Any]) -> Any:
    """An experiment's daily CTR per arm (from the feedback log)."""
    name = (report.get("experiment") or {}).get("name", "")
    return _daily_chart(
        list(report.get("daily") or []),
        lambda r: str(r.get("arm")),
        "ctr",
        f"{name}: click-through rate per arm, by day",
        "CTR",
    )
