"""The main job's walk through the product, through the same service paths a shop uses.

Each function reads or drives a `RecSys` and returns JSON-ready figures for the report
(`privrec.evaluation.showcase_report` renders them): the catalogue written as a shop's JSONL
file and imported by `privrec items import`'s code path, search examples and a labelled query
set through `RecSys.search`, explanation examples through `RecSys.recommend`, and the privacy
point (the DP model against its non-private twin, the ledger, the membership audits).

Shoppers appear in the report as "shopper 1", "shopper 2", ...: their ids never reach a file.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from privrec.evaluation.report_results import ModelResult
from privrec.evaluation.showcase_report import LEAF_QUERY_METHOD, leaf_queries, search_metrics

if TYPE_CHECKING:
    from privrec.data.dataset import InteractionDataset
    from privrec.service.facade import RecSys

__all__ = [
    "SEARCH_EXAMPLES",
    "audit_rows",
    "explanation_examples",
    "import_catalogue",
    "privacy_point",
    "search_showcase",
    "write_catalogue_jsonl",
]

# Queries a shopper of the demo shop might type: a plain one, a misspelt one and two that share
# no word with the product titles (a lexical search finds nothing for those; a semantic one does).
SEARCH_EXAMPLES: tuple[str, ...] = (
    "green tea",
    "lipstik",
    "something for my cat to sleep on",
    "gift for a coffee lover",
)


def write_catalogue_jsonl(catalogue: pd.DataFrame, path: Path, *, currency: str = "EUR") -> Path:
    """Write catalogue rows (item, title, text, category, brand, price, in_stock) as a shop's
    JSONL catalogue file (`privrec items import` fields: description, currency, ...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row in catalogue.to_dict("records"):
            rec: dict[str, Any] = {"item": str(row["item"])}
            for src, dst in (("title", "title"), ("text", "description"), ("brand", "brand")):
                if isinstance(row.get(src), str) and row[src]:
                    rec[dst] = row[src]
            if isinstance(row.get("category"), str) and row["category"]:
                rec["category"] = row["category"]
            price = row.get("price")
            if price is not None and not (isinstance(price, float) and math.isnan(price)):
                rec["price"] = float(price)
                rec["currency"] = currency
            if row.get("in_stock") is not None and not pd.isna(row["in_stock"]):
                rec["in_stock"] = bool(row["in_stock"])
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


def import_catalogue(rs: RecSys, catalogue: pd.DataFrame, path: Path) -> dict[str, Any]:
    """Write `catalogue` to `path` and import it as `privrec items import PATH` does.

    Raises:
        ValidationError: a row was rejected (the demo catalogue must import cleanly).
    """
    from privrec.core.errors import ValidationError

    report = rs.catalogue.import_file(write_catalogue_jsonl(catalogue, path))
    if report["rejected"]:
        first = report["rejects"][0]
        raise ValidationError(
            "catalogue", f"line {first['line']}, field {first['field']}: {first['reason']}"
        )
    return {"file": path.name, **{k: v for k, v in report.items() if k != "rejects"}}


def _item_row(it: Mapping[str, Any]) -> dict[str, Any]:
    exp = it.get("explanation") or {}
    return {
        "item": it["item"],
        "title": it.get("title") or it["item"],
        "category": it.get("category"),
        "kind": exp.get("kind", ""),
        "text": exp.get("text", ""),
        "because": [b.get("item") for b in exp.get("because", [])],
    }


def search_showcase(
    rs: RecSys,
    catalogue: pd.DataFrame,
    *,
    examples: Sequence[str] = SEARCH_EXAMPLES,
    k: int = 5,
) -> dict[str, Any]:
    """Example queries and the leaf-category query set, all through `RecSys.search`."""
    rows: list[dict[str, Any]] = []
    for q in examples:
        res = rs.search(q, k)
        rows.append(
            {
                "query": q,
                "mode": res.mode,
                "note": res.note or "",
                "items": [_item_row(it) for it in res.items],
            }
        )
    labelled = leaf_queries(catalogue["category"].tolist(), catalogue["item"].tolist())
    found: list[list[str]] = []
    relevant: list[set[str]] = []
    modes: Counter[str] = Counter()
    for q, rel in labelled:
        res = rs.search(q, 10)
        modes[res.mode] += 1
        found.append([it["item"] for it in res.items])
        relevant.append(rel)
    quality = None
    if labelled:
        quality = {
            "method": LEAF_QUERY_METHOD,
            "queries": len(labelled),
            "empty": sum(1 for f in found if not f),
            "modes": dict(modes),
            **search_metrics(found, relevant, 10),
        }
    all_modes = sorted({str(r["mode"]) for r in rows} | set(modes))
    return {"mode_summary": "mode: " + ", ".join(all_modes), "quality": quality, "examples": rows}


def explanation_examples(
    rs: RecSys,
    shoppers: Sequence[tuple[str, str, Mapping[str, Any] | None]],
    *,
    k: int = 5,
) -> list[dict[str, Any]]:
    """Served lists with their explanations: (label, user id, rules or None) per example."""
    out = []
    for label, user, rules in shoppers:
        served = rs.recommend(user, k, rules=dict(rules) if rules else None)
        out.append(
            {
                "label": label,
                "model": served.model,
                "personalized": served.personalized,
                "rules": json.dumps(dict(rules)) if rules else "",
                "items": [_item_row(it) for it in served.items],
            }
        )
    return out


def audit_rows(
    specs: Sequence[tuple[str, Mapping[str, Any]]],
    dataset: InteractionDataset,
    *,
    shadows: int,
    runs: int,
    canaries: int,
    max_users: int | None,
    seed: int,
) -> dict[str, Any]:
    """`privrec audit`'s LiRA and canary audits of each (model, params), in a short setting."""
    from privrec.evaluation.audit_suite import run_audit

    models = []
    for name, params in specs:
        a = run_audit(
            name,
            params,
            dataset,
            shadows=shadows,
            runs=runs,
            canaries=canaries,
            max_users=max_users,
            seed=seed,
        )
        claimed = a.canary.claimed_epsilon
        models.append(
            {
                "model": name,
                "lira_auc": float(a.lira.auc),
                "tpr_at_1pct": float(a.lira.point(0.01).tpr),
                "epsilon_lb": float(a.canary.epsilon_lb),
                "claimed_epsilon": "none" if math.isinf(claimed) else f"{claimed:g}",
                "seconds": float(a.lira.seconds + a.canary.seconds),
                "audit": a.to_dict(),
            }
        )
    method = (
        f"LiRA with {shadows} models (each the target once; at most {max_users or 'all'} "
        f"shoppers attacked) and a canary audit with {canaries} canary shoppers over {runs} "
        "training runs, on the synthetic demo shop (public data: on a real shop's events use "
        "`privrec audit` on a public dataset instead). AUC 0.5 is chance; the canary bound is "
        "a lower bound on the epsilon the training really gives."
    )
    return {"method": method, "models": models}


def privacy_point(
    results: Sequence[ModelResult],
    *,
    dp_model: str,
    baseline: str,
    guarantee: Mapping[str, Any] | None,
    ledger_summary: Mapping[str, Any],
    audit: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The DP model's guarantee and accuracy next to its non-private twin, the ledger, the audit.

    Raises:
        KeyError: `dp_model` or `baseline` is not among `results`.
    """
    by = {r.model: r for r in results}
    dp, base = by[dp_model], by[baseline]
    ndcg = float(dp.metrics.get("ndcg@10", float("nan")))
    base_ndcg = float(base.metrics.get("ndcg@10", float("nan")))
    g = dict(guarantee or {})
    ledger_text = (
        f"{ledger_summary.get('releases', '?')} release(s) charged to the data directory's "
        f"ledger; epsilon spent {_g(ledger_summary.get('epsilon_spent'))} of the budget's "
        f"{_g(ledger_summary.get('budget_epsilon'))} (delta "
        f"{_g(ledger_summary.get('delta_spent'))})"
    )
    return {
        "model": dp_model,
        "epsilon": _g(g.get("epsilon")),
        "delta": _g(g.get("delta")),
        "unit": g.get("unit", "user"),
        "ndcg": ndcg,
        "baseline": baseline,
        "baseline_ndcg": base_ndcg,
        "ratio": ndcg / base_ndcg if base_ndcg > 0 else float("nan"),
        "ledger_text": ledger_text,
        "ledger": dict(ledger_summary),
        "audit": dict(audit) if audit else None,
    }


def _g(v: Any) -> str:
    if v is None:
        return "?"
    try:
        return f"{float(v):.3g}"
    except (TypeError, ValueError):
        return str(v)
