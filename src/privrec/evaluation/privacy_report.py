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

Hyper-parameters of the DP models (the rule: nothing is tuned on private data for free).
`choose_params` picks them in one of two ways, `tuning=`:

- ``"public"`` (default): the fixed values of `DEFAULT_ROSTER`, set in this module in advance and
  never tuned on the data a report measures. Revisit them only on public data, the MovieLens-100k
  and Amazon Beauty datasets (`benchmarks/privacy_frontier.py --tuning public`), never on a
  shop's events.
- ``"private"``: a private selection (`privacy.selection`, Papernot & Steinke's repeat-and-select
  with a geometric number of runs, mean = the number of candidates) over `PRIVATE_GRIDS`, scored
  by NDCG@10 on each user's last training event (a per-user split) with Gaussian noise
  (sensitivity 1: a sum of per-user NDCGs in [0, 1]). The per-fit epsilon is calibrated so that
  the WHOLE selection, every candidate fit and the choice included, costs the point's epsilon at
  its delta (1 / (10 x expected users), not the data's count); that one release is charged to
  the report's ledger before the first fit, and the selected run's model (fitted on the
  training part minus validation) is the point's model. Models without a
  grid (or whose releases are not Gaussian, e.g. DP-SGD) keep the public values.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from privrec.core.errors import ConfigError
from privrec.data.dataset import InteractionDataset
from privrec.evaluation.membership import membership_audit
from privrec.evaluation.protocol import evaluate_loo, evaluate_ranking
from privrec.models.base import Recommender
from privrec.models.zoo import create_model
from privrec.privacy.dp import gaussian_sigma
from privrec.privacy.ledger import PrivacyLedger
from privrec.privacy.selection import (
    RandomSource,
    SelectionRelease,
    gaussian_multiplier,
    plan_selection,
    private_select,
)

log = logging.getLogger(__name__)

EPSILONS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, math.inf)

# model -> parameters for an epsilon (the frontier's default roster; benchmarks tune their own)
ParamsFor = Callable[[float], Mapping[str, Any]]
DEFAULT_ROSTER: dict[str, ParamsFor] = {
    "dp_popularity": lambda eps: {"epsilon": eps},
    "dp_itemknn": lambda eps: {"epsilon": eps, "k": 100, "selection_share": 0.15},
    "dp_ease": lambda eps: {"epsilon": eps, "selection_share": 0.15},
    "dp_bpr": lambda eps: {"epsilon": eps},
    # public item text + one DP co-occurrence release (needs item text; encodes it once, cached)
    "dp_hybrid": lambda eps: {"epsilon": eps},
}

TUNING_MODES = ("public", "private")
HYPERPARAMETER_RULE = (
    "DP hyper-parameters are either fixed in advance (public: never tuned on the reported data; "
    "revisited only on public MovieLens-100k / Amazon Beauty) or chosen by a private selection "
    "(Papernot-Steinke repeat-and-select) whose whole cost is the point's epsilon and is charged "
    "to the ledger; see each point's 'tuning'"
)
# candidates of the private selection (epsilon and delta are set by the selection); small on
# purpose: the cost grows with the log of the mean number of runs, the utility with fit epsilon
PRIVATE_GRIDS: dict[str, list[dict[str, Any]]] = {
    "dp_ease": [{"reg": r, "selection_share": s} for r in (1.0, 3.0, 10.0) for s in (0.1, 0.2)],
    "dp_itemknn": [
        {"k": k, "shrink": sh, "selection_share": 0.15}
        for k in (50, 100, 200)
        for sh in (0.0, 10.0)
    ],
}
# score noise multiplier over the fit's: the noisy score takes 1/10 of a run's Gaussian budget
SCORE_NOISE_RATIO = 3.0
DEFAULT_EXPECTED_USERS = 100_000  # the delta of a tuned point: 1 / (10 x expected users)


@dataclass
class FrontierPoint:
    """One model at one epsilon: utility and attack."""

    dataset: str
    model: str
    epsilon: float
    delta: float | None
    ndcg_at_10: float
    metrics: dict[str, float]
    attack_auc: float | None
    attack_tpr_at_1pct_fpr: float | None
    attack_auc_std: float | None
    fit_seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    privacy: dict[str, Any] | None = None
    tuning: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (inf epsilon as the string "inf")."""
        d = asdict(self)
        d["epsilon"] = "inf" if math.isinf(self.epsilon) else self.epsilon
        return d


def _fit(
    model: Recommender, train: InteractionDataset, seed: int, ledger: PrivacyLedger | None
) -> Recommender:
    """`fit`, charging the DP releases to `ledger` (every model's fit takes one)."""
    return model.fit(train, rng=seed, ledger=ledger)


# ---- hyper-parameters ----------------------------------------------------------------------------
@dataclass
class ParamChoice:
    """The parameters a frontier point uses and how they were chosen.

    Attributes:
        params: the model's parameters.
        tuning: "public" (fixed in advance) or "private" (charged private selection).
        model: the selected run's fitted model (private), None (public: fit it yourself).
        selection: the selection's facts (release, runs, per-fit epsilon), None when public.
    """

    params: dict[str, Any]
    tuning: str
    model: Recommender | None = None
    selection: dict[str, Any] | None = None


def _selection_plan(
    fit_epsilon: float, n: int, delta: float, name: str
) -> tuple[SelectionRelease, float]:
    z = gaussian_sigma(fit_epsilon, delta)
    fits = [{"kind": "gaussian", "noise_multiplier": z}] * n
    plan = plan_selection(
        fits, score_noise_multiplier=SCORE_NOISE_RATIO * z, delta=delta, name=name
    )
    return plan, z


def per_fit_epsilon(target: float, n_candidates: int, delta: float, *, tol: float = 1e-3) -> float:
    """The largest per-fit epsilon whose private selection over `n_candidates` costs <= target.

    Raises:
        ConfigError: even a negligible per-fit epsilon costs more (the selection's fixed part).
    """
    lo, hi = target * 1e-3, target
    if _selection_plan(lo, n_candidates, delta, "")[0].epsilon > target:
        raise ConfigError(
            f"epsilon: {target:g} is too small for a private selection over {n_candidates} "
            "candidates at this delta; use tuning='public' or fewer candidates"
        )
    while hi - lo > tol * target:  # the cost grows with the per-fit epsilon
        mid = 0.5 * (lo + hi)
        if _selection_plan(mid, n_candidates, delta, "")[0].epsilon <= target:
            lo = mid
        else:
            hi = mid
    return lo


def choose_params(
    name: str,
    epsilon: float,
    train: InteractionDataset,
    *,
    tuning: str = "public",
    roster: Mapping[str, ParamsFor] | None = None,
    grids: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    expected_users: int = DEFAULT_EXPECTED_USERS,
    ledger: PrivacyLedger | None = None,
    seed: int = 42,
    random: RandomSource | None = None,
) -> ParamChoice:
    """The hyper-parameters of DP model `name` at `epsilon`, by the rule of the module docstring.

    Args:
        name: the model.
        epsilon: the point's total epsilon (the whole selection's, when private).
        train: the training part (private tuning splits a validation part off it).
        tuning: "public" (fixed values of `roster`) or "private" (charged selection).
        roster: the fixed values (DEFAULT_ROSTER).
        grids: the private candidates per model (PRIVATE_GRIDS); a model without one is public.
        expected_users: sets the tuned point's delta, 1 / (10 x expected_users).
        ledger: charged with the selection (one release) before the first fit.
        seed: the fits' and split's non-noise seed.
        random: the selection's randomness (default OS entropy; seeded only in tests).
    """
    if tuning not in TUNING_MODES:
        raise ConfigError(f"tuning: {tuning!r} is not one of {', '.join(TUNING_MODES)}")
    roster = DEFAULT_ROSTER if roster is None else roster
    grid = list((PRIVATE_GRIDS if grids is None else grids).get(name, []))
    public = dict(roster[name](float(epsilon))) if name in roster else {"epsilon": epsilon}
    if tuning == "public" or math.isinf(epsilon) or not grid:
        return ParamChoice(public, "public")
    delta = 1.0 / (10.0 * expected_users)
    eps_fit = per_fit_epsilon(float(epsilon), len(grid), delta)
    plan, z_fit = _selection_plan(eps_fit, len(grid), delta, f"{name}:tuning")
    candidates = [{**dict(c), "epsilon": eps_fit, "delta": delta} for c in grid]
    from privrec.data.splitters import leave_one_out_test

    # a per-user split: one user's events decide only their own validation item, so the score
    # sum changes by at most one NDCG (<= 1) when a user is added or removed
    sub_train, valid = leave_one_out_test(train)

    def fit_and_score(params: dict[str, Any]) -> tuple[Recommender, float]:
        model = create_model(name, **params)
        model.fit(sub_train, rng=seed, ledger=None)  # the selection's release covers this fit
        event = getattr(getattr(model, "release", None), "event", None)
        z = gaussian_multiplier(event) if isinstance(event, Mapping) else None
        if z is None or z < z_fit * (1 - 1e-9):
            # the charged cost assumed at most this Gaussian's loss per fit; stop otherwise
            raise ConfigError(
                f"private tuning of {name}: the fit's release is not a Gaussian release at "
                f"least as noisy as planned (noise multiplier {z} < {z_fit:.4g}); use "
                "tuning='public'"
            )
        r = evaluate_loo(model, sub_train, valid, metrics=("ndcg@10",))
        return model, float(r["ndcg@10"]) * float(r["n_users"])  # sum of per-user NDCG@10

    res = private_select(candidates, fit_and_score, plan, ledger=ledger, model=name, random=random)
    if res.candidate is None:
        return ParamChoice(public, "public", selection={"runs": 0, "note": "no run happened"})
    return ParamChoice(
        dict(res.candidate),
        "private",
        model=res.model,
        selection={
            "release": {"name": plan.name, "epsilon": plan.epsilon, "delta": plan.delta},
            "event": plan.event,
            "per_fit_epsilon": eps_fit,
            "candidates": len(candidates),
            "runs": res.runs,
            "chosen": res.index,
            "validation": "each user's last training event; score: sum of NDCG@10 + noise",
        },
    )


def evaluate(
    model: Recommender, train: InteractionDataset, test: InteractionDataset, protocol: str
) -> dict[str, float]:
    """NDCG@10 (and HR@10 for leave-one-out) under the protocol."""
    if protocol == "loo":
        r = evaluate_loo(model, train, test, metrics=("ndcg@10", "hr@10"))
    else:
        r = evaluate_ranking(
            model, train, test, metrics=("ndcg@10", "map@10", "precision@10", "recall@10")
        )
    return {k: float(v) for k, v in r.items() if "@" in k}


def run_frontier(
    train: InteractionDataset,
    test: InteractionDataset,
    *,
    dataset_name: str,
    protocol: str = "loo",
    roster: Mapping[str, ParamsFor] | None = None,
    epsilons: Sequence[float] = EPSILONS,
    audit_dataset: InteractionDataset | None = None,
    audit: bool = True,
    audit_kwargs: Mapping[str, Any] | None = None,
    ledger: PrivacyLedger | None = None,
    seed: int = 42,
    on_point: Callable[[FrontierPoint], None] | None = None,
    tuning: str = "public",
    grids: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> list[FrontierPoint]:
    """Train and measure every roster model at every epsilon.

    Args:
        train / test: the split (shared vocabularies).
        dataset_name: label of the points.
        protocol: "loo" (one held-out item per user) or "ranking" (every test item relevant).
        roster: model name -> function of epsilon giving its parameters (DEFAULT_ROSTER).
        epsilons: the privacy levels (math.inf for the same model without noise).
        audit_dataset: what the membership audit draws users from (default: `train`).
        audit: run the membership audit at each point.
        audit_kwargs: passed to `membership_audit` (e.g. repeats, max_eval_users).
        ledger: charged with every DP release of the frontier's models (not of the audit's
            target/shadow models, which are experiments on disjoint user subsets).
        seed: passed to every fit and the audit.
        on_point: called with each point as soon as it is measured (progress output).
        tuning: "public" (the roster's fixed values) or "private" (a charged private selection
            over `grids` whose whole cost is the point's epsilon; see `choose_params`).
        grids: the private candidates per model (PRIVATE_GRIDS).
    """
    roster = DEFAULT_ROSTER if roster is None else roster
    if tuning not in TUNING_MODES:
        raise ConfigError(f"tuning: {tuning!r} is not one of {', '.join(TUNING_MODES)}")
    points = []
    for name in roster:
        for eps in epsilons:
            t0 = time.perf_counter()
            choice = choose_params(
                name,
                float(eps),
                train,
                tuning=tuning,
                roster=roster,
                grids=grids,
                ledger=ledger,
                seed=seed,
            )
            params = choice.params
            if choice.model is not None:
                model = choice.model  # the selected run: no further fit, no further release
            else:
                model = create_model(name, **params)
                _fit(model, train, seed, ledger)
            fit_s = time.perf_counter() - t0
            metrics = evaluate(model, train, test, protocol)
            auc = tpr = std = None
            if audit:
                res = membership_audit(
                    functools.partial(create_model, name, **params),
                    audit_dataset or train,
                    seed=seed,
                    **dict(audit_kwargs or {}),
                )
                auc, tpr, std = res.auc, res.tpr_at_1pct_fpr, res.auc_std
            pt = FrontierPoint(
                dataset=dataset_name,
                model=name,
                epsilon=float(eps),
                delta=(
                    float(choice.selection["release"]["delta"])
                    if choice.selection and "release" in choice.selection
                    else (model.privacy.delta if model.privacy else None)
                ),
                ndcg_at_10=metrics["ndcg@10"],
                metrics=metrics,
                attack_auc=auc,
                attack_tpr_at_1pct_fpr=tpr,
                attack_auc_std=std,
                fit_seconds=round(fit_s, 3),
                params={
                    k: ("inf" if isinstance(v, float) and math.isinf(v) else v)
                    for k, v in params.items()
                },
                privacy=model.privacy.to_dict() if model.privacy else None,
                tuning={"mode": choice.tuning, **(choice.selection or {})},
            )
            points.append(pt)
            if on_point:
                on_point(pt)
    return points


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
            the module docstring).

    Returns:
        {"png": path, "html": path, "json": path}.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
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
