"""The membership audit's empirical epsilon lower bound for every frontier point (issue 16).

For each measured point of the frontier (the points files and JSON results of
`privacy_draws.py`, and of `privacy_beauty.py`), the frontier's shadow-model membership attack
(`evaluation.membership.membership_audit`, seed 42, at most 1,000 attacked shoppers a side) is
rerun ONCE on the first release's settings with `keep_trials=True`, and its per-shopper labels
and scores are turned into a Clopper-Pearson lower bound on epsilon at the model's own delta,
95% confidence (`membership.attack_epsilon_bound`):

- ``eps_lb`` (reported): the threshold with the best bound on the SHADOW trials (the attacker's
  own shoppers), evaluated once on all target trials: no optimism from choosing the threshold;
- ``eps_lb_split``: the best threshold of a seeded stratified half of the target trials,
  evaluated on the other half (a second honest estimate, with half the trials);
- ``eps_lb_best_of_all``: the best of all thresholds on the same target trials, kept only to show
  how optimistic that is (never reported as the bound).

Points with the same model and settings (e.g. dp_ease (fixed) in the main and the literature
tables) share one audit. The claimed epsilon and delta are the fitted target model's own
(`model.privacy`): for private selection that is the single fit's epsilon (the selection as a
whole has the nominal one). A bound above the claim is flagged ("EXCEEDS CLAIM").

Run (resumable: audits already in --out are skipped):
  cd benchmarks && nice -n 10 ../.venv/bin/python privacy_audit_points.py \
      --out results/privacy_audit_points.jsonl results/privacy_draws_ml1m_points.jsonl ...
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from privacy_draws import ROWS, SEED, TEXT_CACHE, Data, log
from privrec.evaluation.attack_bound import attack_epsilon_bound
from privrec.evaluation.canary import epsilon_lower_bound
from privrec.evaluation.membership import membership_audit
from privrec.models.base import Recommender
from privrec.models.zoo import create_model

# the non-private references' ridges (chosen on validation, `privacy_draws.nonprivate`)
NONPRIVATE_REG = {"ml100k": 500.0, "ml1m": 1000.0, "beauty": 50.0}

# privacy_beauty.py's rows that are not a model's name (the diagnostic sets popularity_weight 0)
OTHER_ROWS = {"dp_textknn_nopop": "dp_textknn"}


def read_points(path: Path) -> Iterator[dict[str, Any]]:
    """Every point of a points JSONL file, a `privacy_draws.py` or a `privacy_scaling.py` result."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        for line in text.splitlines():
            if line.strip():
                yield json.loads(line)
        return
    doc = json.loads(text)
    if doc.get("benchmark") == "privacy_scaling":  # its subsampled points (seed 42, as there)
        for row in doc["rows"]:
            yield {"dataset": doc["dataset"].split()[0], "users": row["shoppers"], **row["point"]}
        return
    for ds in doc["datasets"]:
        for pt in ds["points"]:
            yield {"dataset": ds["dataset"], "users": None, **pt}


def _cache(params: Any) -> Any:
    """The text cache of this machine instead of the one recorded (a path, not a setting)."""
    if isinstance(params, dict):
        return {
            k: (TEXT_CACHE if k == "cache_dir" else _cache(v))
            for k, v in params.items()
            if not (k == "cache_dir" and TEXT_CACHE is None)
        }
    return params


def point_setting(pt: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(model name, parameters) of the point's first release."""
    if "releases" in pt:
        params = dict(pt["releases"][0]["params"])
    else:  # privacy_beauty.py's points: one parameter set per point
        params = {**pt["params"], "epsilon": pt["epsilon"]}
    params.pop("delta", None)  # the model's default delta (1e-6 here), as the frontier's attack
    name = ROWS[pt["row"]][0] if pt["row"] in ROWS else OTHER_ROWS.get(pt["row"], pt["row"])
    return name, _cache(params)


def key_of(pt: dict[str, Any]) -> str:
    name, params = point_setting(pt)
    clean = {k: v for k, v in params.items() if k != "content_params"}
    clean["content_params"] = {
        k: v for k, v in (params.get("content_params") or {}).items() if k != "cache_dir"
    }
    return json.dumps([pt["dataset"], pt.get("users"), name, clean], sort_keys=True)


def audit(data: Data, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """One attack with its trials, and the bounds (see the module docstring)."""
    made: list[Recommender] = []

    def factory() -> Recommender:
        m = create_model(name, **params)
        made.append(m)
        return m

    t = time.perf_counter()
    res = membership_audit(factory, data.train, seed=SEED, max_eval_users=1000, keep_trials=True)
    seconds = time.perf_counter() - t
    guarantee = made[0].privacy  # the target model (fitted first)
    # no guarantee (the non-private reference): the bound at the frontier's delta shows the
    # attack's power against a model that memorises
    eps, delta = (
        (float("inf"), 1e-6)
        if guarantee is None
        else (float(guarantee.epsilon), float(guarantee.delta))
    )
    assert res.trials is not None
    shadow = attack_epsilon_bound(res.trials, delta=delta, select="shadow")
    split = attack_epsilon_bound(res.trials, delta=delta, select="split", seed=SEED)
    naive = epsilon_lower_bound(res.trials.labels, res.trials.scores, delta=delta)
    return {
        "model": name,
        "params": params,
        "claimed_epsilon": eps,
        "delta": delta,
        "auc": res.auc,
        "shadow_auc": res.shadow_auc,
        "tpr@1%fpr": res.tpr_at_1pct_fpr,
        "trials": {"in": res.n_members, "out": res.n_nonmembers},
        "eps_lb": shadow.epsilon_lb,
        "eps_lb_detail": vars(shadow),
        "eps_lb_split": split.epsilon_lb,
        "eps_lb_split_detail": vars(split),
        "eps_lb_best_of_all": naive.epsilon_lb,
        "exceeds_claim": shadow.epsilon_lb > eps or split.epsilon_lb > eps,
        "seconds": round(seconds, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("inputs", nargs="*", help="points JSONL files or privacy_draws JSON results")
    ap.add_argument("--out", required=True, help="JSONL, one line per distinct audit (appended)")
    ap.add_argument("--max-points", type=int, default=None, help="stop after this many audits")
    ap.add_argument(
        "--nonprivate",
        default="",
        help="also audit the non-private EASE reference of these datasets (e.g. ml100k,ml1m)",
    )
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    logging.getLogger("privrec.models.dp.release").setLevel(logging.ERROR)
    out = Path(args.out)
    done: dict[str, dict[str, Any]] = {}
    if out.exists():
        for line in out.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            done[rec["key"]] = rec
    data: dict[tuple[str, int | None], Data] = {}
    for ds in filter(None, args.nonprivate.split(",")):
        reg = NONPRIVATE_REG[ds]
        rec = {"key": f"nonprivate:{ds}", "dataset": ds, "points": []}
        rec.update(audit(Data(ds), "ease", {"reg": reg}))
        with open(out, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
        log(f"{ds} EASE reg {reg} (non-private): AUC {rec['auc']:.3f} eps_lb {rec['eps_lb']:.3f}")
    n = 0
    for src in args.inputs:
        for pt in read_points(Path(src)):
            if not float(pt["epsilon"]) < float("inf"):  # exact statistics: no DP claim
                continue
            k = key_of(pt)
            where = {"source": Path(src).name, "row": pt["row"], "epsilon": pt["epsilon"]}
            if k in done:
                if where not in done[k]["points"]:  # the same setting in another table
                    done[k]["points"].append(where)
                    with open(out, "a", encoding="utf-8") as fh:
                        fh.write(json.dumps(done[k]) + "\n")
                continue
            if args.max_points is not None and n >= args.max_points:
                return
            dkey = (pt["dataset"], pt.get("users"))
            if dkey not in data:
                data[dkey] = Data(*dkey)
            name, params = point_setting(pt)
            rec = {"key": k, "dataset": pt["dataset"], "points": [where]}
            rec.update(audit(data[dkey], name, params))
            done[k] = rec
            n += 1
            with open(out, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec) + "\n")
            flag = "  EXCEEDS CLAIM" if rec["exceeds_claim"] else ""
            users = "" if pt.get("users") is None else f" ({pt['users']} shoppers)"
            log(
                f"{pt['dataset']}{users} {pt['row']} eps {pt['epsilon']}: AUC {rec['auc']:.3f} "
                f"eps_lb {rec['eps_lb']:.3f} (split {rec['eps_lb_split']:.3f}, best-of-all "
                f"{rec['eps_lb_best_of_all']:.3f}) claimed {rec['claimed_epsilon']:.3g} "
                f"{rec['seconds']}s{flag}"
            )


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
