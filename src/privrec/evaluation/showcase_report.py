"""The main job's report sections beyond the model table: search, privacy, explanations, stages.

`privrec.pipeline` gathers the figures as one JSON-ready mapping (the "showcase"); this module
measures search on a labelled query set (`leaf_queries`, `search_metrics`), renders the
sections as HTML for `write_report`'s appendix (`showcase_html`), and writes the whole report
as Markdown (`showcase_markdown`). Keys the renderers read:

- ``search``: {"mode_summary", "quality" (or None), "examples": [{"query", "mode", "note",
  "items": [{"title", ...}]}]}
- ``privacy``: {"model", "epsilon", "delta", "unit", "ndcg", "baseline", "baseline_ndcg",
  "ratio", "ledger_text", "audit" (or None): {"method", "models": [{"model", "lira_auc",
  "tpr_at_1pct", "epsilon_lb", "claimed_epsilon", "seconds"}]}}
- ``explanations``: [{"label", "model", "personalized", "rules", "items": [{"title", "kind",
  "text"}]}]
- ``serving``: {"default", "active": {model: version}}
- ``stages``: [{"stage", "seconds"}]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from privrec.evaluation.report_results import ModelResult, metric_keys

__all__ = ["leaf_queries", "misspelt", "search_metrics", "showcase_html", "showcase_markdown"]

LEAF_QUERY_METHOD = (
    "two queries per leaf category: the leaf's name in lower case (e.g. 'cat supplies') and a "
    "misspelt copy (the middle letter of its longest word dropped: 'cat suppies'); the relevant "
    "items are that leaf's products; binary gain, ideal list of min(relevant, 10) hits (so "
    "Recall@10 is at most 10 / the leaf's size)"
)


def misspelt(query: str) -> str:
    """`query` with the middle letter of its longest word dropped (a typo a shopper makes)."""
    words = query.split()
    if not words:
        return query
    j = max(range(len(words)), key=lambda n: len(words[n]))
    w = words[j]
    if len(w) >= 4:
        words[j] = w[: len(w) // 2] + w[len(w) // 2 + 1 :]
    return " ".join(words)


def leaf_queries(
    categories: Sequence[str | None], items: Sequence[str]
) -> list[tuple[str, set[str]]]:
    """(query, relevant item ids): per leaf category, its name and a misspelt copy of it
    (`misspelt`) should find the leaf's products.

    Args:
        categories: the category path of each item ("Grocery > Tea"; None: no category).
        items: the item ids, aligned with `categories`.
    """
    by_leaf: dict[str, set[str]] = {}
    for cat, item in zip(categories, items, strict=True):
        if not cat:
            continue
        leaf = str(cat).split(">")[-1].strip().lower()
        if leaf:
            by_leaf.setdefault(leaf, set()).add(str(item))
    out: list[tuple[str, set[str]]] = []
    for leaf, rel in sorted(by_leaf.items()):
        out.append((leaf, rel))
        typo = misspelt(leaf)
        if typo != leaf:
            out.append((typo, rel))
    return out


def search_metrics(
    found: Sequence[Sequence[str]], relevant: Sequence[set[str]], k: int = 10
) -> dict[str, float]:
    """Mean nDCG@k, Recall@k and Precision@k of ranked result lists against relevant sets.

    Args:
        found: per query, the returned item ids, best first.
        relevant: per query, the relevant item ids.
        k: the cut-off.

    Raises:
        ValueError: the two sequences differ in length or are empty.
    """
    if len(found) != len(relevant) or not found:
        raise ValueError("found/relevant: give one result list per query (at least one)")
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    ndcg, rec, prec = [], [], []
    for got, rel in zip(found, relevant, strict=True):
        hits = np.array([g in rel for g in list(got)[:k]], dtype=float)
        ideal = float(disc[: min(len(rel), k)].sum())
        ndcg.append(float((hits * disc[: len(hits)]).sum()) / ideal if ideal else 0.0)
        rec.append(float(hits.sum()) / len(rel) if rel else 0.0)
        prec.append(float(hits.sum()) / k)
    return {
        f"ndcg@{k}": float(np.mean(ndcg)),
        f"recall@{k}": float(np.mean(rec)),
        f"precision@{k}": float(np.mean(prec)),
    }


def showcase_html(showcase: Mapping[str, Any]) -> str:
    """The showcase's sections as HTML (autoescaped), for `write_report(appendix_html=...)`."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("privrec.evaluation", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("showcase.html.j2").render(**dict(showcase))


def _cell(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if math.isfinite(v) else "–"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return [*out, ""]


def showcase_markdown(
    *,
    title: str,
    dataset_info: Mapping[str, Any],
    results: Sequence[ModelResult],
    showcase: Mapping[str, Any],
) -> str:
    """The whole main-job report as Markdown: models, search, privacy, explanations, stages."""
    lines = [f"# {title}", ""]
    lines += [f"- {k}: {v}" for k, v in dataset_info.items()] + [""]
    keys = metric_keys(list(results), [], None)
    lines += ["## Model comparison", ""]
    lines += _table(
        ["model", *keys, "train s", "privacy"],
        [
            [
                r.model,
                *[r.metrics.get(k) for k in keys],
                "–" if r.train_seconds is None else f"{r.train_seconds:.1f}",
                _privacy_text(r.privacy),
            ]
            for r in results
        ],
    )
    search = showcase["search"]
    lines += [
        "## Search quality",
        "",
        f"Served by the service's search ({search['mode_summary']}).",
        "",
    ]
    q = search.get("quality")
    if q:
        lines += [
            f"- method: {q['method']}",
            f"- queries: {q['queries']} ({q['empty']} with no result)",
            f"- nDCG@10 {q['ndcg@10']:.4f}, Recall@10 {q['recall@10']:.4f}, "
            f"Precision@10 {q['precision@10']:.4f}",
            "",
        ]
    lines += _table(
        ["query", "mode", "top results"],
        [
            [e["query"], e["mode"], "; ".join(i["title"] for i in e["items"]) or "nothing found"]
            for e in search["examples"]
        ],
    )
    p = showcase["privacy"]
    lines += [
        "## The privacy point",
        "",
        f"- private model: {p['model']}, epsilon={p['epsilon']}, delta={p['delta']} "
        f"per {p['unit']}",
        f"- NDCG@10 {p['ndcg']:.4f} vs {p['baseline_ndcg']:.4f} for the non-private "
        f"{p['baseline']} ({100 * p['ratio']:.0f}% of it)",
        f"- ledger: {p['ledger_text']}",
        "",
    ]
    audit = p.get("audit")
    if audit:
        lines += _table(
            ["model", "LiRA AUC", "TPR at 1% FPR", "canary epsilon lower bound", "claimed epsilon"],
            [
                [
                    a["model"],
                    f"{a['lira_auc']:.3f}",
                    f"{a['tpr_at_1pct']:.3f}",
                    f"{a['epsilon_lb']:.2f}",
                    a["claimed_epsilon"],
                ]
                for a in audit["models"]
            ],
        )
        lines += [audit["method"], ""]
    lines += ["## Explanation examples", ""]
    for ex in showcase["explanations"]:
        rules = f" (rules: {ex['rules']})" if ex.get("rules") else ""
        lines += [f"### {ex['label']}{rules}", "", f"model {ex['model']}", ""]
        lines += _table(
            ["#", "item", "why"],
            [
                [n, it["title"], f"{it['text']} [{it['kind']}]"]
                for n, it in enumerate(ex["items"], 1)
            ],
        )
    serving = showcase["serving"]
    lines += ["## Serving", "", f"- default model: {serving['default']}"]
    lines += [f"- {name}: {version}" for name, version in serving["active"].items()] + [""]
    lines += ["## Stages", ""]
    lines += _table(
        ["stage", "seconds"], [[s["stage"], f"{s['seconds']:.1f}"] for s in showcase["stages"]]
    )
    return "\n".join(lines)


def _privacy_text(p: Mapping[str, Any] | None) -> str:
    if not p:
        return "none"
    return f"epsilon={p.get('epsilon')}, delta={p.get('delta')} per {p.get('unit', 'user')}"
