"""Benchmark reports: a JSON file with every figure and a self-contained HTML page.

The HTML page has no external references (no CDN, no web fonts): plots are PNG files written
beside it and embedded as base64 data URIs, so the page works offline and can be mailed as one
file. `render_table` gives the same comparison as a rich table for the CLI. This module renders;
the figures and their JSON form live in `report_results`, the charts in `report_plots`.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import privrec
from privrec.evaluation.report_archive import keep_previous
from privrec.evaluation.report_plots import bar_chart, chart_file_name, chart_keys
from privrec.evaluation.report_results import (
    ModelResult,
    anchor_metrics,
    best_per_metric,
    is_number,
    jsonable,
    metric_keys,
    report_document,
)

if TYPE_CHECKING:
    from rich.table import Table

__all__ = [
    "BEAUTY_LOO_FULL_RANKING",
    "MS_RECOMMENDERS_ML100K",
    "PROTOCOL_FULL_RANKING",
    "PROTOCOL_LOO",
    "ModelResult",
    "render_table",
    "write_report",
]

PROTOCOL_FULL_RANKING = (
    "Full ranking: every test user is scored against every item in the catalogue; the user's "
    "training items are removed (set to -inf) and the top k are kept, ties broken by the lower "
    "item index. Every held-out interaction is relevant (no rating threshold). Precision@k = "
    "hits/k; Recall@k = hits / relevant items; NDCG@k uses binary gain and a 1/ln(1+rank) "
    "discount with the ideal list of min(relevant, k) hits; MAP sums the precision at each hit "
    "within the top k and divides by the number of relevant items (Microsoft Recommenders' "
    "definitions). Means run over users with at least one test item and a non-empty training "
    "history. Hyper-parameters were chosen on a validation split carved from the training part, "
    "never on the test part."
)
PROTOCOL_LOO = (
    "Leave-one-out, full ranking: each user's last interaction is held out and ranked against "
    "every item in the catalogue, the user's earlier items removed. HR@k (= Recall@k with one "
    "held-out item) and NDCG@k (binary gain, one relevant item) are averaged over users; MRR uses "
    "the full ranking. Figures measured against 99 sampled negatives are on another scale and are "
    "not compared."
)

# Published anchors (read from /work/shared/anchors.md; metric keys follow the protocol's names).
MS_RECOMMENDERS_ML100K: list[dict[str, Any]] = [
    {
        "model": "BiVAE",
        "map@10": 0.146,
        "ndcg@10": 0.475,
        "precision@10": 0.412,
        "recall@10": 0.219,
        "train_seconds": (11, 23),
    },
    {
        "model": "BPR (Cornac)",
        "map@10": 0.132,
        "ndcg@10": 0.442,
        "precision@10": 0.388,
        "recall@10": 0.213,
        "train_seconds": (5, 6),
    },
    {
        "model": "LightGCN",
        "map@10": (0.089, 0.122),
        "ndcg@10": (0.416, 0.420),
        "precision@10": (0.360, 0.380),
        "recall@10": (0.144, 0.196),
        "train_seconds": (16, 23),
    },
    {
        "model": "NCF",
        "map@10": 0.108,
        "ndcg@10": 0.396,
        "precision@10": 0.347,
        "recall@10": 0.181,
        "train_seconds": (67, 113),
    },
    {
        "model": "SAR",
        "map@10": 0.111,
        "ndcg@10": 0.382,
        "precision@10": 0.331,
        "recall@10": 0.176,
        "train_seconds": (0.23, 0.33),
    },
    {
        "model": "SVD (rating model)",
        "map@10": 0.013,
        "ndcg@10": 0.096,
        "precision@10": 0.091,
        "recall@10": 0.033,
        "rmse": 0.939,
        "train_seconds": 0.9,
    },
    {
        "model": "ALS (Spark, explicit)",
        "map@10": 0.005,
        "ndcg@10": 0.044,
        "precision@10": 0.048,
        "recall@10": 0.018,
        "rmse": 0.965,
        "train_seconds": (7, 12),
    },
]
for _a in MS_RECOMMENDERS_ML100K:
    _a["source"] = "Microsoft Recommenders README, Algorithm Comparison (GPU box)"

BEAUTY_LOO_FULL_RANKING: list[dict[str, Any]] = [
    {"model": "PopRec", "hr@10": 0.0152, "ndcg@10": 0.0068, "source": "S3-Rec repository"},
    {"model": "GRU4Rec", "hr@10": 0.0283, "ndcg@10": 0.0137, "source": "S3-Rec repository"},
    {"model": "BERT4Rec", "hr@10": 0.0347, "ndcg@10": 0.0170, "source": "S3-Rec repository"},
    {"model": "SASRec", "hr@10": 0.0605, "ndcg@10": 0.0318, "source": "S3-Rec repository"},
    {"model": "S3-Rec", "hr@10": 0.0647, "ndcg@10": 0.0327, "source": "S3-Rec repository"},
    {"model": "TIGER", "hr@10": 0.0648, "ndcg@10": 0.0384, "source": "TIGER paper, Table 1"},
    {"model": "DuoRec", "hr@10": 0.0845, "ndcg@10": 0.0443, "source": "FEARec paper"},
    {"model": "FEARec", "hr@10": 0.0884, "ndcg@10": 0.0459, "source": "FEARec paper"},
    {
        "model": "SASRec + sampled softmax",
        "hr@10": 0.0921,
        "ndcg@10": 0.0531,
        "source": "uSASRec paper repository",
    },
    {"model": "uSASRec", "hr@10": 0.0928, "ndcg@10": 0.0523, "source": "uSASRec paper repository"},
]


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, (tuple, list)) and len(v) == 2:
        return f"{_fmt(v[0], digits)}–{_fmt(v[1], digits)}"
    if is_number(v):
        f = float(v)
        if not math.isfinite(f):
            return "–"
        return f"{f:.{digits}f}"
    return str(v)


def _fmt_seconds(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, (tuple, list)) and len(v) == 2:
        return f"{_fmt_seconds(v[0])}–{_fmt_seconds(v[1])}"
    f = float(v)
    return f"{f:.3g}" if f < 100 else f"{f:.0f}"


def _fmt_privacy(p: Mapping[str, Any] | None) -> str:
    if not p:
        return "none"
    eps, delta, unit = p.get("epsilon"), p.get("delta"), p.get("unit")
    parts = []
    if eps is not None:
        parts.append(f"ε={float(eps):g}")
    if delta is not None:
        parts.append(f"δ={float(delta):g}")
    if unit:
        parts.append(f"per {unit}")
    return ", ".join(parts) if parts else "yes"


def write_report(
    results: Sequence[ModelResult | Mapping[str, Any]],
    out_dir: str | Path,
    *,
    title: str,
    dataset_info: Mapping[str, Any],
    anchors: Sequence[Mapping[str, Any]] | None = None,
    protocol: str = PROTOCOL_FULL_RANKING,
    metrics: Sequence[str] | None = None,
    chart_metrics: Sequence[str] | None = None,
    name: str = "report",
    appendix_html: str = "",
    extra: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write `<name>.json` and `<name>.html` (plus one PNG per chart) into `out_dir`.

    Args:
        results: our models' figures (ModelResult, or dicts as `ModelResult.coerce` accepts).
        out_dir: folder to write into (created if needed).
        title: page title.
        dataset_info: facts about the data (name, users, items, events, split), shown as a list.
        anchors: published rows to show beside ours, each {"model", metric keys..., "source"} or
            {"model", "metrics": {...}, "source"}; a value may be a (low, high) range.
        protocol: a short description of the protocol (default: full ranking).
        metrics: table columns (default: every metric key in results, then in anchors).
        chart_metrics: which metrics get a bar chart (default: the first NDCG@k and Recall@k, or
            HR@k).
        name: file stem.
        appendix_html: further sections, already rendered and escaped (e.g. the main job's
            search, privacy and explanation sections), placed before the protocol.
        extra: further top-level keys of the JSON document (JSON-ready values).

    Returns:
        (html_path, json_path).
    """
    import jinja2
    import markupsafe

    res = [ModelResult.coerce(r) for r in results]
    anc = [dict(a) for a in (anchors or [])]
    for a in anc:
        if "model" not in a:
            raise ValueError("anchors: every entry needs a 'model' name")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keep_previous(out)  # the last run's report (and its report.md) stays in the archive
    keys = metric_keys(res, anc, metrics)
    best = best_per_metric(res, keys)
    generated = datetime.now(UTC).replace(microsecond=0).isoformat()

    charts = []
    for key in chart_keys(keys, chart_metrics):
        png = bar_chart(key, res, anc)
        fname = chart_file_name(name, key)
        (out / fname).write_bytes(png)
        charts.append(
            {
                "metric": key,
                "file": fname,
                "src": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
            }
        )

    rows = []
    for r in res:
        cells = []
        for key in keys:
            v = r.metrics.get(key)
            is_best = (
                is_number(v)
                and key in best
                and math.isclose(float(v), best[key], rel_tol=1e-12, abs_tol=1e-15)
            )
            cells.append({"text": _fmt(v), "best": bool(is_best) and len(res) > 1})
        rows.append(
            {
                "model": r.model,
                "published": False,
                "cells": cells,
                "train": _fmt_seconds(r.train_seconds),
                "eval": _fmt_seconds(r.eval_seconds),
                "users": "–" if r.n_users is None else str(r.n_users),
                "privacy": _fmt_privacy(r.privacy),
            }
        )
    sources: list[str] = []
    for a in anc:
        am = anchor_metrics(a)
        rows.append(
            {
                "model": a["model"],
                "published": True,
                "cells": [{"text": _fmt(am.get(key), 3), "best": False} for key in keys],
                "train": _fmt_seconds(a.get("train_seconds")),
                "eval": "–",
                "users": "–",
                "privacy": "none",
            }
        )
        src = a.get("source")
        if src and src not in sources:
            sources.append(str(src))

    doc = report_document(
        title=title,
        generated_at=generated,
        dataset_info=dataset_info,
        protocol=protocol,
        metrics=keys,
        results=res,
        anchors=anc,
        charts=[{"metric": c["metric"], "file": c["file"]} for c in charts],
    )
    if extra:
        doc.update(jsonable(dict(extra)))
    json_path = out / f"{name}.json"
    json_path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("privrec.evaluation", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
        lstrip_blocks=False,
    )
    html = env.get_template("report.html.j2").render(
        title=title,
        generated_at=generated,
        version=privrec.__version__,
        dataset_info={str(k): v for k, v in dataset_info.items()},
        metric_keys=keys,
        rows=rows,
        any_anchor=bool(anc),
        anchor_sources=sources,
        charts=charts,
        protocol=protocol,
        appendix=markupsafe.Markup(appendix_html),
    )
    html_path = out / f"{name}.html"
    html_path.write_text(html, encoding="utf-8")
    return html_path, json_path


def render_table(
    results: Sequence[ModelResult | Mapping[str, Any]],
    *,
    anchors: Sequence[Mapping[str, Any]] | None = None,
    metrics: Sequence[str] | None = None,
    title: str | None = None,
) -> Table:
    """The comparison as a `rich.table.Table` (models x metrics, times; published rows dimmed)."""
    from rich.table import Table

    res = [ModelResult.coerce(r) for r in results]
    anc = [dict(a) for a in (anchors or [])]
    keys = metric_keys(res, anc, metrics)
    best = best_per_metric(res, keys)
    table = Table(title=title)
    table.add_column("model", style="bold")
    for key in keys:
        table.add_column(key, justify="right")
    table.add_column("train s", justify="right")
    table.add_column("eval s", justify="right")
    table.add_column("users", justify="right")
    for r in res:
        cells = []
        for key in keys:
            v = r.metrics.get(key)
            text = _fmt(v)
            if (
                len(res) > 1
                and is_number(v)
                and key in best
                and math.isclose(float(v), best[key], rel_tol=1e-12, abs_tol=1e-15)
            ):
                text = f"[bold green]{text}[/]"
            cells.append(text)
        table.add_row(
            r.model,
            *cells,
            _fmt_seconds(r.train_seconds),
            _fmt_seconds(r.eval_seconds),
            "–" if r.n_users is None else str(r.n_users),
        )
    if anc:
        table.add_section()
    for a in anc:
        am = anchor_metrics(a)
        table.add_row(
            f"{a['model']} (published)",
            *[_fmt(am.get(k), 3) for k in keys],
            _fmt_seconds(a.get("train_seconds")),
            "–",
            "–",
            style="dim italic",
        )
    return table
