"""Robustness report: how far fake shoppers push target items, and what each defence buys.

For a train/test split of real shoppers:

1. Clean baselines: the base model (BPR by default), APR and the DP model: NDCG@10 on the real
   users' test data and the targets' exposure (see `target_hit_rate`).
2. Attack grid: for each attack and fraction, fake shoppers are injected into the training part
   only (`attacks.inject_attack`); the undefended base model is retrained and its exposure and
   NDCG measured again; the detector screens every poisoned set (precision / recall on the
   injected profiles).
3. Defences, on the chosen (attack, fraction) cells: APR, detection (flagged users' events are
   dropped before training; their histories still serve them at request time), detection + APR,
   and the DP model's bounded per-user influence.

Figures per defence: rise = exposure(poisoned, defended) - exposure(clean, undefended base), and
NDCG cost = 1 - NDCG(poisoned, defended) / NDCG(clean, undefended base): the shop's question is
what the defended system delivers compared with the system it had before the attack.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from privrec.data.dataset import InteractionDataset
from privrec.evaluation.attacks import (
    ATTACKS,
    AttackKind,
    PoisonedDataset,
    choose_targets,
    inject_attack,
    with_users,
)
from privrec.evaluation.detection import DetectionResult, detect_fake_profiles, precision_recall
from privrec.evaluation.protocol import evaluate_loo, evaluate_ranking, recommend_top_k
from privrec.evaluation.report_archive import keep_previous
from privrec.models.base import Recommender
from privrec.models.zoo import create_model

log = logging.getLogger(__name__)

__all__ = ["RobustnessConfig", "robustness_report", "target_hit_rate", "write_report"]

DEFENCES = ("none", "apr", "detect", "detect+apr", "dp")


def target_hit_rate(
    model: Recommender,
    train: InteractionDataset,
    targets: np.ndarray,
    *,
    users: np.ndarray,
    k: int = 10,
) -> float:
    """Targets' HR@k among `users`: the share of (user, target) pairs, over users who never touched
    that target, where the target is in the user's top-k (training items masked)."""
    targets = np.asarray(targets, dtype=np.int64)
    users = np.asarray(users, dtype=np.int64)
    if users.size == 0 or targets.size == 0:
        return 0.0
    _, top = recommend_top_k(model, train, k=k, users=users)
    x = train.matrix(binary=True)[users][:, targets].toarray() > 0
    hit = (top[:, :, None] == targets[None, None, :]).any(axis=1)
    eligible = ~x
    return float((hit & eligible).sum() / max(int(eligible.sum()), 1))


@dataclass
class RobustnessConfig:
    """What the report runs.

    Attributes:
        base_model / base_params: the undefended model.
        apr_params: APR's settings (on top of base_params when the base is BPR).
        dp_model / dp_params: the DP model whose bounded per-user influence is a defence.
        attacks / fractions: the attack grid (undefended model + detection).
        defended: (attack, fraction) cells where every defence is measured.
        defences: which defences ("apr", "detect", "detect+apr", "dp").
        n_targets / filler_size / selected_size: attack shape (see `inject_attack`).
        k: cut-off of the exposure and NDCG.
        seed: seeds attacks and training.
    """

    base_model: str = "bpr"
    base_params: dict[str, Any] = field(
        default_factory=lambda: {"binary": True, "embedding_size": 64, "epochs": 20, "reg": 1e-4}
    )
    apr_params: dict[str, Any] = field(default_factory=lambda: {"eps": 0.1, "reg_adv": 1.0})
    dp_model: str = "dp_ease"
    dp_params: dict[str, Any] = field(default_factory=lambda: {"epsilon": 8.0})
    attacks: Sequence[str] = ATTACKS
    fractions: Sequence[float] = (0.01, 0.03, 0.05)
    defended: Sequence[tuple[str, float]] = (("bandwagon", 0.03),)
    defences: Sequence[str] = ("apr", "detect", "detect+apr", "dp")
    n_targets: int = 5
    filler_size: int | None = None
    selected_size: int = 10
    k: int = 10
    seed: int = 42

    def check(self) -> None:
        """Raise ValueError naming the field when a setting is impossible."""
        for a in self.attacks:
            if a not in ATTACKS:
                raise ValueError(f"attacks: unknown attack {a!r}; choose from {', '.join(ATTACKS)}")
        for f in self.fractions:
            if not 0.0 < f <= 1.0:
                raise ValueError(f"fractions: {f} is not in (0, 1]")
        for d in self.defences:
            if d not in DEFENCES[1:]:
                raise ValueError(
                    f"defences: unknown defence {d!r}; choose from {', '.join(DEFENCES[1:])}"
                )


class _Runner:
    """Fits and evaluates models under one protocol, caching nothing but the clean figures."""

    def __init__(
        self,
        train: InteractionDataset,
        test: InteractionDataset,
        protocol: str,
        cfg: RobustnessConfig,
        progress: Callable[[str], None] | None,
    ) -> None:
        self.train, self.test, self.protocol, self.cfg = train, test, protocol, cfg
        self.real = np.flatnonzero(np.diff(train.user_offsets()) > 0)
        self.progress = progress or (lambda s: None)

    def spec(self, defence: str) -> tuple[str, dict[str, Any]]:
        c = self.cfg
        if defence in ("apr", "detect+apr"):
            base = dict(c.base_params) if c.base_model == "bpr" else {"binary": True}
            return "apr", {**base, **c.apr_params}
        if defence == "dp":
            return c.dp_model, dict(c.dp_params)
        return c.base_model, dict(c.base_params)

    def run(self, defence: str, train: InteractionDataset, targets: np.ndarray) -> dict[str, Any]:
        name, params = self.spec(defence)
        t0 = time.perf_counter()
        model = create_model(name, **params).fit(train, rng=self.cfg.seed)
        fit_s = time.perf_counter() - t0
        test = (
            self.test if train.n_users == self.test.n_users else with_users(self.test, train.users)
        )
        ev = evaluate_loo if self.protocol == "loo" else evaluate_ranking
        ndcg = float(
            ev(model, train, test, k=self.cfg.k, metrics=[f"ndcg@{self.cfg.k}"])[
                f"ndcg@{self.cfg.k}"
            ]
        )
        hr = target_hit_rate(model, train, targets, users=self.real, k=self.cfg.k)
        self.progress(
            f"{defence:10s} {name:8s} {train.name}: ndcg {ndcg:.4f} target_hr {hr:.4f} "
            f"({fit_s:.0f}s)"
        )
        return {"model": name, "ndcg": ndcg, "target_hr": hr, "fit_seconds": round(fit_s, 1)}


def robustness_report(
    train: InteractionDataset,
    test: InteractionDataset,
    *,
    protocol: Literal["ranking", "loo"] = "ranking",
    config: RobustnessConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the attack grid, detection and defences; a JSON-ready report.

    Args:
        train / test: a split of real shoppers sharing vocabularies (test = held-out events).
        protocol: "ranking" (every test item relevant) or "loo" (one held-out item per user).
        config: what to run (default `RobustnessConfig()`).
        progress: called with one line per trained model.
    """
    cfg = config or RobustnessConfig()
    cfg.check()
    t0 = time.perf_counter()
    runner = _Runner(train, test, protocol, cfg, progress)
    targets = choose_targets(train, cfg.n_targets, seed=cfg.seed)
    needed = {"none"} | {d for d in cfg.defences if d in ("apr", "dp")}
    clean = {d: runner.run(d, train, targets) for d in sorted(needed)}
    base = clean["none"]
    # false alarms: what the detector flags when nobody attacks
    clean_flags = int(detect_fake_profiles(train).flagged.size)

    def attack(kind: str, frac: float) -> PoisonedDataset:
        return inject_attack(
            train,
            cast(AttackKind, kind),  # a known attack: cfg.check() above
            fraction=frac,
            targets=targets,
            filler_size=cfg.filler_size,
            selected_size=cfg.selected_size,
            seed=cfg.seed,
        )

    grid = []
    for kind in cfg.attacks:
        for frac in cfg.fractions:
            p = attack(kind, frac)
            det = detect_fake_profiles(p.dataset)
            pr = precision_recall(det.flagged, p.fake_users)
            res = runner.run("none", p.dataset, targets)
            grid.append(
                {
                    "attack": kind,
                    "fraction": frac,
                    "n_fakes": len(p.fake_users),
                    "target_hr": res["target_hr"],
                    "rise": res["target_hr"] - base["target_hr"],
                    "ndcg": res["ndcg"],
                    "detection": {k: pr[k] for k in ("precision", "recall", "flagged")},
                }
            )

    defended = []
    for kind, frac in cfg.defended:
        p = attack(kind, frac)
        undefended = next((g for g in grid if g["attack"] == kind and g["fraction"] == frac), None)
        rows: list[dict[str, Any]] = [
            {
                "defence": "none",
                **(
                    runner.run("none", p.dataset, targets)
                    if undefended is None
                    else {
                        "model": cfg.base_model,
                        "ndcg": undefended["ndcg"],
                        "target_hr": undefended["target_hr"],
                    }
                ),
            }
        ]
        screen: DetectionResult | None = None  # one detection run serves every screening
        for d in cfg.defences:
            data = p.dataset
            if d.startswith("detect"):
                screen = screen or detect_fake_profiles(p.dataset)
                data = p.dataset.subset(
                    ~np.isin(p.dataset.user_idx, screen.flagged),
                    name=f"{p.dataset.name}-screened",
                )
            rows.append({"defence": d, **runner.run(d, data, targets)})
        none_rise = rows[0]["target_hr"] - base["target_hr"]
        for r in rows:
            r["rise"] = r["target_hr"] - base["target_hr"]
            r["rise_ratio"] = r["rise"] / none_rise if none_rise > 0 else None
            r["ndcg_cost"] = 1.0 - r["ndcg"] / base["ndcg"] if base["ndcg"] > 0 else None
            r["meets_target"] = bool(
                r["rise_ratio"] is not None
                and r["rise_ratio"] <= 0.25
                and r["ndcg_cost"] is not None
                and r["ndcg_cost"] <= 0.05
            )
        ok = [r for r in rows[1:] if r["ndcg_cost"] is not None and r["ndcg_cost"] <= 0.05]
        best = min(ok, key=lambda r: r["rise"]) if ok else None
        defended.append(
            {
                "attack": kind,
                "fraction": frac,
                "rows": rows,
                "best": best["defence"] if best else None,
                "best_meets_target": bool(best and best["meets_target"]),
            }
        )

    return {
        "dataset": train.name,
        "protocol": protocol,
        "users": int(runner.real.size),
        "items": train.n_items,
        "targets": targets.tolist(),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
        "clean": clean,
        "clean_detection": {
            "flagged": clean_flags,
            "share": clean_flags / max(int(runner.real.size), 1),
        },
        "grid": grid,
        "defended": defended,
        "seconds": round(time.perf_counter() - t0, 1),
    }


# ---- output -----------------------------------------------------------------------------------
def _markdown(report: dict[str, Any]) -> str:
    k = report["config"]["k"]
    out = [f"# Robustness report: {report['dataset']} ({report['protocol']})", ""]
    out.append(f"Targets (unpopular items): {report['targets']}. Real users: {report['users']}.")
    out += [
        "",
        "## Clean models",
        "",
        f"| defence | model | NDCG@{k} | targets' HR@{k} |",
        "|---|---|---:|---:|",
    ]
    for d, r in report["clean"].items():
        out.append(f"| {d} | {r['model']} | {r['ndcg']:.4f} | {r['target_hr']:.4f} |")
    cd = report["clean_detection"]
    out += [
        "",
        f"Detector on the clean data (false alarms): {cd['flagged']} users flagged "
        f"({cd['share']:.2%}).",
    ]
    out += [
        "",
        "## Attacks (undefended) and detection",
        "",
        f"| attack | fraction | fakes | targets' HR@{k} | rise | NDCG@{k} | detection "
        "precision | detection recall |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for g in report["grid"]:
        d = g["detection"]
        out.append(
            f"| {g['attack']} | {g['fraction']:.0%} | {g['n_fakes']} | {g['target_hr']:.4f} | "
            f"{g['rise']:+.4f} | {g['ndcg']:.4f} | {d['precision']:.3f} | {d['recall']:.3f} |"
        )
    for cell in report["defended"]:
        out += [
            "",
            f"## Defences under {cell['attack']} {cell['fraction']:.0%}",
            "",
            f"| defence | model | targets' HR@{k} | rise | rise / undefended rise | "
            f"NDCG@{k} | NDCG cost | meets target |",
            "|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in cell["rows"]:
            ratio = "" if r["rise_ratio"] is None else f"{r['rise_ratio']:.2f}"
            cost = "" if r["ndcg_cost"] is None else f"{r['ndcg_cost']:+.1%}"
            out.append(
                f"| {r['defence']} | {r['model']} | {r['target_hr']:.4f} | "
                f"{r['rise']:+.4f} | {ratio} | {r['ndcg']:.4f} | {cost} | "
                f"{'yes' if r['meets_target'] else 'no'} |"
            )
        out += [
            "",
            f"Best defence (lowest rise at <= 5% NDCG cost): {cell['best']}; meets the target "
            "(rise <= 1/4 of undefended, cost <= 5%): "
            f"{'yes' if cell['best_meets_target'] else 'no'}.",
        ]
    return "\n".join(out) + "\n"


def _plots(report: dict[str, Any], out: Path) -> list[Path]:
    """PNG charts (matplotlib, headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    grid = report["grid"]
    if grid:
        attacks = list(dict.fromkeys(g["attack"] for g in grid))
        fracs = sorted({g["fraction"] for g in grid})
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for n, a in enumerate(attacks):
            xs = [g["fraction"] * 100 for g in grid if g["attack"] == a]
            col = f"C{n}"  # one colour per attack in both panels
            axes[0].plot(
                xs,
                [g["target_hr"] for g in grid if g["attack"] == a],
                marker="o",
                color=col,
                label=a,
            )
            axes[1].plot(
                xs,
                [g["detection"]["recall"] for g in grid if g["attack"] == a],
                marker="o",
                color=col,
                label=f"{a} recall",
            )
            axes[1].plot(
                xs,
                [g["detection"]["precision"] for g in grid if g["attack"] == a],
                marker="x",
                linestyle="--",
                color=col,
                label=f"{a} precision",
            )
        axes[0].axhline(
            report["clean"]["none"]["target_hr"], color="grey", linestyle=":", label="clean"
        )
        axes[0].set(
            xlabel="fake shoppers (% of real)",
            ylabel=f"targets' HR@{report['config']['k']}",
            title="Attack success (undefended)",
            xticks=[f * 100 for f in fracs],
        )
        axes[1].set(
            xlabel="fake shoppers (% of real)",
            ylabel="share",
            title="Detection",
            ylim=(-0.05, 1.05),
            xticks=[f * 100 for f in fracs],
        )
        axes[0].legend(fontsize=8)
        axes[1].legend(fontsize=6)
        fig.tight_layout()
        p = out / "attacks.png"
        fig.savefig(p, dpi=100)
        plt.close(fig)
        paths.append(p)
    for cell in report["defended"]:
        rows = cell["rows"]
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        names = [r["defence"] for r in rows]
        axes[0].bar(names, [r["target_hr"] for r in rows], color="tab:red")
        axes[0].axhline(report["clean"]["none"]["target_hr"], color="grey", linestyle=":")
        axes[0].set(
            title=f"targets' HR@{report['config']['k']} under {cell['attack']} "
            f"{cell['fraction']:.0%}"
        )
        axes[1].bar(names, [r["ndcg"] for r in rows], color="tab:blue")
        axes[1].axhline(report["clean"]["none"]["ndcg"], color="grey", linestyle=":")
        axes[1].set(title=f"NDCG@{report['config']['k']}")
        for ax in axes:
            ax.tick_params(axis="x", labelrotation=30)
        fig.tight_layout()
        p = out / f"defences_{cell['attack']}_{round(cell['fraction'] * 100)}.png"
        fig.savefig(p, dpi=100)
        plt.close(fig)
        paths.append(p)
    return paths


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write robustness.json, robustness.md, robustness.html and PNG plots into `out_dir`."""
    import html

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keep_previous(out)  # the last run's report stays in the archive
    paths = {
        "json": out / "robustness.json",
        "markdown": out / "robustness.md",
        "html": out / "robustness.html",
    }
    paths["json"].write_text(json.dumps(report, indent=2, default=float))
    md = _markdown(report)
    paths["markdown"].write_text(md)
    pngs = _plots(report, out)
    imgs = "".join(
        f'<p><img src="{html.escape(p.name)}" alt="{html.escape(p.stem)}"></p>' for p in pngs
    )
    # the Markdown rendered as HTML tables (markdown-it, raw HTML in the text disabled) + charts
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(md)
    style = (
        "body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto}"
        "table{border-collapse:collapse;margin:1rem 0}"
        "th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}"
        "th:first-child,td:first-child{text-align:left}"
    )
    paths["html"].write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>privrec robustness "
        f"report</title><style>{style}</style></head><body>{body}{imgs}</body></html>"
    )
    for p in pngs:
        paths[p.stem] = p
    return paths
