"""The privacy report: the privacy-utility frontier of every DP-capable model, with the attack AUC.

For each DP model and each epsilon in {0.5, 1, 2, 4, 8, inf} (delta = 1 / (10 x users) unless
given), `run_frontier` trains on the training part, measures NDCG@10 on the test part (full
ranking; leave-one-out or every-test-item-relevant), and runs the membership-inference audit
(`evaluation.membership`) against the same model kind and settings. Every DP release is charged to
a privacy-budget ledger. `write_privacy_report` writes

- ``frontier.png``: NDCG@10 against epsilon per model (and the best non-private model as a line),
  next to the attack AUC against epsilon (0.5 = chance);
- ``privacy_report.html``: the figure inlined (no external resources), the tables and the ledger;
- ``privacy_report.json``: everything, machine-readable.

CLI wiring (`privrec privacy-report`): call `write_privacy_report(out_dir, dataset=ds)`; it splits
the data (leave-one-out when `protocol="loo"`, else a stratified 75/25 split by item), runs the
frontier with the default roster and writes the three files, returning their paths.

Hyper-parameters of the DP models follow `privacy_tuning` (fixed public values, or a private
selection charged to the ledger); the frontier itself runs in `privacy_frontier`. Both modules'
public names are importable from here too.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from privrec.data.dataset import InteractionDataset
from privrec.evaluation.membership import membership_audit
from privrec.evaluation.privacy_frontier import EPSILONS, FrontierPoint, evaluate, run_frontier
from privrec.evaluation.privacy_tuning import (
    DEFAULT_DP_MODEL,
    DEFAULT_EXPECTED_USERS,
    DEFAULT_ROSTER,
    FALLBACK_DP_MODEL,
    HYPERPARAMETER_RULE,
    PRIVATE_GRIDS,
    SCORE_NOISE_RATIO,
    TUNING_MODES,
    ParamChoice,
    ParamsFor,
    choose_params,
    default_dp_model,
    default_roster,
    has_item_text,
    per_fit_epsilon,
)
from privrec.evaluation.report_archive import keep_previous
from privrec.models.zoo import create_model
from privrec.privacy.ledger import PrivacyLedger

# the frontier's and the tuning's names stay importable from here, where callers found them first
__all__ = [
    "DEFAULT_DP_MODEL",
    "DEFAULT_EXPECTED_USERS",
    "DEFAULT_ROSTER",
    "EPSILONS",
    "FALLBACK_DP_MODEL",
    "HYPERPARAMETER_RULE",
    "PRIVATE_GRIDS",
    "SCORE_NOISE_RATIO",
    "TUNING_MODES",
    "FrontierPoint",
    "ParamChoice",
    "ParamsFor",
    "choose_params",
    "default_dp_model",
    "default_roster",
    "evaluate",
    "has_item_text",
    "per_fit_epsilon",
    "plot_frontier",
    "run_frontier",
    "write_privacy_report",
]

log = logging.getLogger(__name__)


# ---- the figure ----------------------------------------------------------------------------------
def _eps_x(eps: float, finite_max: float) -> float:
    return finite_max * 2.0 if math.isinf(eps) else eps


def plot_frontier(
    points: Sequence[FrontierPoint],
    path: str | Path,
    *,
    baselines: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write the frontier figure (PNG, Agg): per dataset, NDCG@10 and attack AUC against epsilon.

    Args:
        points: frontier points (any number of datasets).
        path: the PNG file.
        baselines: dataset -> {"model": name, "ndcg_at_10": value, "attack_auc": value} (and
            optionally "attack_model" when the attacked model is not "model"): the best
            non-private model, drawn as a horizontal line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(p.dataset for p in points))
    fig, axes = plt.subplots(
        len(datasets), 2, figsize=(11, 4.8 * max(len(datasets), 1)), squeeze=False
    )
    finite = [p.epsilon for p in points if not math.isinf(p.epsilon)] or [1.0]
    fmax = max(finite)
    for row, ds in enumerate(datasets):
        ax_u, ax_a = axes[row]
        pts = [p for p in points if p.dataset == ds]
        for name in dict.fromkeys(p.model for p in pts):
            mp = sorted((p for p in pts if p.model == name), key=lambda p: _eps_x(p.epsilon, fmax))
            xs = [_eps_x(p.epsilon, fmax) for p in mp]
            ax_u.plot(xs, [p.ndcg_at_10 for p in mp], marker="o", label=name)
            if any(p.attack_auc is not None for p in mp):
                ax_a.plot(
                    xs,
                    [p.attack_auc if p.attack_auc is not None else np.nan for p in mp],
                    marker="o",
                    label=name,
                )
        base = (baselines or {}).get(ds)
        if base:
            ax_u.axhline(
                base["ndcg_at_10"],
                color="black",
                linestyle="--",
                linewidth=1,
                label=f"{base['model']} (non-private)",
            )
            for frac, style in ((0.9, ":"), (0.7, "-.")):
                ax_u.axhline(
                    frac * base["ndcg_at_10"],
                    color="grey",
                    linestyle=style,
                    linewidth=0.8,
                    label=f"{int(frac * 100)}% of it",
                )
            if base.get("attack_auc") is not None:
                attacked = base.get(
                    "attack_model", base["model"]
                )  # the attacked model may be another one
                ax_a.axhline(
                    base["attack_auc"],
                    color="black",
                    linestyle="--",
                    linewidth=1,
                    label=f"{attacked} (non-private)",
                )
        ax_a.axhline(0.5, color="grey", linestyle=":", linewidth=0.8, label="chance")
        ax_a.axhline(0.55, color="red", linestyle=":", linewidth=0.8, label="0.55")
        for ax, ylabel in ((ax_u, "NDCG@10"), (ax_a, "attack AUC")):
            ax.set_xscale("log")
            ticks = sorted({_eps_x(p.epsilon, fmax) for p in pts})
            ax.set_xticks(ticks)
            ax.set_xticklabels(["inf" if t == fmax * 2.0 else f"{t:g}" for t in ticks])
            ax.minorticks_off()
            ax.set_xlabel("epsilon (user-level)")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{ds}: {ylabel}")
            ax.grid(alpha=0.3)
            ax.legend(
                fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False
            )  # below: never over a line
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---- the report ----------------------------------------------------------------------------------
def _table(rows: Sequence[Mapping[str, Any]], cols: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            if isinstance(v, float):
                v = "inf" if math.isinf(v) else f"{v:.4g}"
            cells.append(f"<td>{html.escape('' if v is None else str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def write_privacy_report(
    out_dir: str | Path,
    *,
    points: Sequence[FrontierPoint] | None = None,
    dataset: InteractionDataset | None = None,
    protocol: str = "loo",
    ledger: PrivacyLedger | None = None,
    baselines: Mapping[str, Mapping[str, Any]] | None = None,
    title: str = "privrec privacy report",
    extra: Mapping[str, Any] | None = None,
    roster: Mapping[str, ParamsFor] | None = None,
    epsilons: Sequence[float] = EPSILONS,
    audit_kwargs: Mapping[str, Any] | None = None,
    seed: int = 42,
    audit: bool = True,
    on_point: Callable[[FrontierPoint], None] | None = None,
    tuning: str = "public",
) -> dict[str, Path]:
    """Write frontier.png, privacy_report.html and privacy_report.json into `out_dir`.

    Either give measured `points` (what benchmarks/privacy_frontier.py does), or a `dataset`:
    then it is split by `protocol` ("loo": leave-one-out test; "ranking": stratified 75/25 by
    item, seed 42), the frontier runs with `roster` (default DEFAULT_ROSTER) and the non-private
    EASE is measured as the baseline.

    Args:
        out_dir: where the files go (created).
        points: measured frontier points.
        dataset: data to measure when `points` is None.
        protocol: the split and metric protocol for `dataset`.
        ledger: its entries and totals are included in the report.
        baselines: dataset -> {"model", "ndcg_at_10", "attack_auc"} of the best non-private model.
        title: page title.
        extra: more JSON-ready facts to include (timings, targets, erasure benchmarks).
        roster, epsilons, audit_kwargs, seed: for measuring `dataset`.
        audit: run the membership audit at each point (and for the baseline) when measuring.
        on_point: called with each measured point (progress display).
        tuning: how DP hyper-parameters are chosen when measuring ("public" or "private"; see
            `privacy_tuning`).

    Returns:
        {"png": path, "html": path, "json": path}.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keep_previous(out)  # the last run's report stays in the archive
    if points is None:
        if dataset is None:
            raise ValueError("give either measured points or a dataset to measure")
        from privrec.data.splitters import leave_one_out_test, stratified_split

        train, test = (
            leave_one_out_test(dataset)
            if protocol == "loo"
            else stratified_split(dataset, 0.75, filter_by="item", seed=seed)
        )
        points = run_frontier(
            train,
            test,
            dataset_name=dataset.name,
            protocol=protocol,
            roster=roster,
            epsilons=epsilons,
            ledger=ledger,
            audit=audit,
            audit_kwargs=audit_kwargs,
            seed=seed,
            on_point=on_point,
            tuning=tuning,
        )
        if baselines is None:
            ease = create_model("ease").fit(train, rng=seed)
            m = evaluate(ease, train, test, protocol)
            auc = (
                membership_audit(
                    lambda: create_model("ease"), train, seed=seed, **dict(audit_kwargs or {})
                ).auc
                if audit
                else None
            )
            baselines = {
                dataset.name: {"model": "ease", "ndcg_at_10": m["ndcg@10"], "attack_auc": auc}
            }
    png = plot_frontier(points, out / "frontier.png", baselines=baselines)
    ledger_doc = ledger.summary() if ledger is not None else None
    doc = {
        "title": title,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "unit_of_privacy": (
            "user (all of one user's events), add/remove-one-user neighbouring relation"
        ),
        "points": [p.to_dict() for p in points],
        "baselines": dict(baselines or {}),
        "ledger": ledger_doc,
        "hyperparameters": HYPERPARAMETER_RULE,
        **dict(extra or {}),
    }
    jpath = out / "privacy_report.json"
    jpath.write_text(json.dumps(doc, indent=2, default=_json_default))
    img = base64.b64encode(png.read_bytes()).decode("ascii")
    cols = [
        "dataset",
        "model",
        "epsilon",
        "delta",
        "ndcg_at_10",
        "attack_auc",
        "attack_tpr_at_1pct_fpr",
        "fit_seconds",
    ]
    rows = [{**p.to_dict(), "epsilon": p.epsilon} for p in points]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}"
        "pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>Unit of privacy: one user (all their events). Each point is a separate model trained "
        "at that epsilon; delta is 1/(10 &times; users) unless stated. Attack: user-level "
        "membership inference with shadow models (Zhang et al., CCS 2021 style); "
        "AUC 0.5 is chance.</p>",
        f"<img alt='privacy-utility frontier' src='data:image/png;base64,{img}' "
        "style='max-width:100%'>",
        "<h2>Frontier</h2>",
        _table(rows, cols),
    ]
    if baselines:
        parts += [
            "<h2>Best non-private models</h2>",
            _table(
                [{"dataset": k, **dict(v)} for k, v in baselines.items()],
                ["dataset", "model", "ndcg_at_10", "attack_model", "attack_auc"],
            ),
        ]
    if extra:
        parts += [
            "<h2>More</h2>",
            f"<pre>{html.escape(json.dumps(dict(extra), indent=2, default=_json_default))}</pre>",
        ]
    if ledger_doc is not None:
        parts += [
            "<h2>Privacy-budget ledger</h2>",
            f"<p>Spent (composed by the accountant): epsilon {ledger_doc['epsilon_spent']:.4g} "
            f"of {ledger_doc['budget_epsilon']:.4g} at delta {ledger_doc['budget_delta']:.3g} "
            f"(plain sum: epsilon {ledger_doc.get('epsilon_spent_basic', math.nan):.4g}), "
            f"{ledger_doc['releases']} releases. With user-level DP this is the epsilon every "
            "shopper has accumulated.</p>",
            _table(
                ledger_doc["entries"],
                ["time", "model", "release", "epsilon", "delta", "mechanism", "unit", "accountant"],
            ),
        ]
    parts.append("</body></html>")
    hpath = out / "privacy_report.html"
    hpath.write_text("".join(parts), encoding="utf-8")
    return {"png": png, "html": hpath, "json": jpath}


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    return str(v)
