"""Online metrics of served lists: impressions, CTR, conversion, revenue per shopper, coverage.

Pure functions over the rows of the feedback log (`privrec.service.feedback`), so the numbers
are the same whoever asks (HTTP, CLI, the console, an experiment's report):

- impressions: lists served (anonymous shoppers' lists included: they are counted, not stored);
- tracked: lists with a per-list record (outcomes can only be attributed to those);
- ctr: tracked lists with at least one attributed click / tracked lists;
- conversion: shoppers with at least one attributed purchase / shoppers shown a list;
- revenue_per_shopper: attributed purchase value on shoppers' lists / shoppers shown a list;
- coverage: distinct items shown / items in the catalogue.

A group is a model version (``by="version"``: model, version) or an experiment arm
(``by="arm"``: experiment, arm); rows are per UTC day of the impression, or over the whole
window (`totals`). Outcomes count on the day of the list they answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from privrec.experiments.assignment import GUARDRAIL_METRICS

__all__ = [
    "BY",
    "GUARDRAIL_METRICS",
    "ListRow",
    "OutcomeRow",
    "arm_units",
    "check_guardrails",
    "daily",
    "totals",
]

BY = ("version", "arm")


@dataclass(frozen=True, slots=True)
class ListRow:
    """One tracked list: id (as stored), shopper (hash or None), time, day and who served it."""

    list: str
    shopper: str | None
    ts: float
    day: str
    model: str
    version: str
    experiment: str
    arm: str


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    """One attributed outcome: the list it answers, its type, time and value."""

    list: str
    type: str
    ts: float
    value: float = 0.0


def _key(by: str, model: str, version: str, experiment: str, arm: str) -> tuple[str, str] | None:
    if by == "version":
        return (model, version)
    return (experiment, arm) if experiment else None


def _names(by: str, key: tuple[str, str]) -> dict[str, str]:
    return (
        {"model": key[0], "version": key[1]}
        if by == "version"
        else {
            "experiment": key[0],
            "arm": key[1],
        }
    )


@dataclass
class _Acc:
    impressions: int = 0
    anonymous: int = 0
    lists: set[str] = field(default_factory=set)
    shoppers: set[str] = field(default_factory=set)
    clicked: set[str] = field(default_factory=set)
    converters: set[str] = field(default_factory=set)
    carts: int = 0
    purchases: int = 0
    revenue: float = 0.0
    shopper_revenue: float = 0.0
    items: set[str] = field(default_factory=set)

    def row(self, catalogue_size: int | None) -> dict[str, Any]:
        tracked, shoppers = len(self.lists), len(self.shoppers)
        return {
            "impressions": self.impressions,
            "anonymous_impressions": self.anonymous,
            "tracked": tracked,
            "shoppers": shoppers,
            "clicked_lists": len(self.clicked),
            "ctr": len(self.clicked) / tracked if tracked else None,
            "carts": self.carts,
            "purchases": self.purchases,
            "converters": len(self.converters),
            "conversion": len(self.converters) / shoppers if shoppers else None,
            "revenue": round(self.revenue, 6),
            "revenue_per_shopper": self.shopper_revenue / shoppers if shoppers else None,
            "items_shown": len(self.items),
            "coverage": len(self.items) / catalogue_size if catalogue_size else None,
        }


def _aggregate(
    by: str,
    day_of: Callable[[str], str],
    counts: Iterable[Sequence[Any]],
    lists: Sequence[ListRow],
    outcomes: Iterable[OutcomeRow],
    shown: Iterable[Sequence[str]],
) -> dict[tuple[str, str, str], _Acc]:
    if by not in BY:
        from privrec.core.errors import ValidationError

        raise ValidationError("by", f"is {by!r}; use one of {', '.join(BY)}")
    acc: dict[tuple[str, str, str], _Acc] = {}

    def get(day: str, model: str, version: str, experiment: str, arm: str) -> _Acc | None:
        k = _key(by, model, version, experiment, arm)
        if k is None:
            return None
        return acc.setdefault((day_of(day), *k), _Acc())

    for day, model, version, experiment, arm, n, anon in counts:
        a = get(day, model, version, experiment, arm)
        if a is not None:
            a.impressions += int(n)
            a.anonymous += int(anon)
    for day, model, version, experiment, arm, item in shown:
        a = get(day, model, version, experiment, arm)
        if a is not None:
            a.items.add(item)
    where: dict[str, tuple[_Acc, str | None]] = {}
    for r in lists:
        a = get(r.day, r.model, r.version, r.experiment, r.arm)
        if a is None:
            continue
        a.lists.add(r.list)
        if r.shopper:
            a.shoppers.add(r.shopper)
        where[r.list] = (a, r.shopper)
    for o in outcomes:
        hit = where.get(o.list)
        if hit is None:
            continue
        a, shopper = hit
        if o.type == "click":
            a.clicked.add(o.list)
        elif o.type == "cart":
            a.carts += 1
        elif o.type == "purchase":
            a.purchases += 1
            a.revenue += o.value
            if shopper:
                a.converters.add(shopper)
                a.shopper_revenue += o.value
    return acc


def daily(
    by: str,
    counts: Iterable[Sequence[Any]],
    lists: Sequence[ListRow],
    outcomes: Iterable[OutcomeRow],
    shown: Iterable[Sequence[str]],
    *,
    catalogue_size: int | None = None,
) -> list[dict[str, Any]]:
    """One row per (UTC day, group), by day then group.

    Args:
        by: "version" or "arm".
        counts: (day, model, version, experiment, arm, lists, anonymous lists) per group.
        lists: the tracked lists.
        outcomes: the attributed outcomes.
        shown: (day, model, version, experiment, arm, item) per distinct item shown.
        catalogue_size: items in the catalogue (None: no coverage).
    """
    acc = _aggregate(by, lambda d: d, counts, lists, outcomes, shown)
    return [
        {"day": k[0], **_names(by, (k[1], k[2])), **a.row(catalogue_size)}
        for k, a in sorted(acc.items())
    ]


def totals(
    by: str,
    counts: Iterable[Sequence[Any]],
    lists: Sequence[ListRow],
    outcomes: Iterable[OutcomeRow],
    shown: Iterable[Sequence[str]],
    *,
    catalogue_size: int | None = None,
) -> list[dict[str, Any]]:
    """One row per group over the whole window (distinct shoppers and items over it)."""
    acc = _aggregate(by, lambda d: "", counts, lists, outcomes, shown)
    return [{**_names(by, (k[1], k[2])), **a.row(catalogue_size)} for k, a in sorted(acc.items())]


def arm_units(
    lists: Sequence[ListRow], outcomes: Iterable[OutcomeRow], metric: str
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per arm: (when each unit was first exposed, when it first succeeded; inf: not yet).

    For ``metric="conversion"`` a unit is a shopper and success an attributed purchase on any
    of their lists; for ``"ctr"`` a unit is a list and success an attributed click on it.
    """
    unit_of: dict[str, tuple[str, str]] = {}
    exposed: dict[str, dict[str, float]] = {}
    for r in sorted(lists, key=lambda r: r.ts):
        if metric == "conversion":
            if not r.shopper:
                continue
            unit = r.shopper
        else:
            unit = r.list
        unit_of[r.list] = (r.arm, unit)
        exposed.setdefault(r.arm, {}).setdefault(unit, r.ts)
    want = "purchase" if metric == "conversion" else "click"
    success: dict[str, dict[str, float]] = {}
    for o in outcomes:
        hit = unit_of.get(o.list)
        if hit is None or o.type != want:
            continue
        arm, unit = hit
        cur = success.setdefault(arm, {})
        cur[unit] = min(cur.get(unit, np.inf), o.ts)
    out = {}
    for arm, units in exposed.items():
        got = success.get(arm, {})
        e = np.fromiter(units.values(), np.float64, count=len(units))
        s = np.fromiter((got.get(u, np.inf) for u in units), np.float64, count=len(units))
        out[arm] = (e, s)
    return out


def check_guardrails(
    control: Mapping[str, Any], arm: Mapping[str, Any], guardrails: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Each guardrail {metric, max_drop} of `arm` against `control` (relative change).

    A guardrail is breached when the arm's metric is lower than the control's by more than
    `max_drop` (a fraction: 0.05 = five per cent); with no control value yet it is not judged.
    """
    out = []
    for g in guardrails:
        metric, max_drop = str(g["metric"]), float(g["max_drop"])
        c, v = control.get(metric), arm.get(metric)
        change = (v - c) / c if c and v is not None else None
        out.append(
            {
                "metric": metric,
                "max_drop": max_drop,
                "control": c,
                "value": v,
                "change": change,
                "breached": bool(change is not None and change < -max_drop),
                "judged": change is not None,
            }
        )
    return out
