"""The main job (layer 7): build a shop's data, train every model, compare them, write the report.

`run_demo()` with no dataset generates the seeded demo shop, sends it through the privacy gate into
the encrypted store, trains and evaluates every classic model, writes the report and saves the
models for serving. With a dataset folder it does the same on real data, each dataset under the
protocol its published numbers use.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from privrec.core.errors import ValidationError
from privrec.data.dataset import InteractionDataset
from privrec.data.loaders import detect_format, load_dataset
from privrec.data.splitters import leave_one_out_test, stratified_split, temporal_split
from privrec.data.synthetic import generate_shop
from privrec.evaluation.compare import ModelSpec, compare_models, drop_seen_test_items
from privrec.evaluation.report import ModelResult, write_report
from privrec.service import RecSys

DEMO_MARKER = "DEMO"

# Hyper-parameters per protocol. The MovieLens/Beauty values were chosen on validation splits
# carved from the training part only (benchmarks/ml100k.py and benchmarks/beauty.py re-run that
# search).
ROSTERS: dict[str, list[ModelSpec]] = {
    "shop": [
        ModelSpec("popularity", {}),
        ModelSpec("itemknn", {"k": 100, "shrink": 10.0}),
        ModelSpec("ease", {"reg": 200.0}),
        ModelSpec("als", {"embedding_size": 64, "reg": 10.0, "epochs": 15, "alpha": 2.0}),
        ModelSpec("bpr", {"embedding_size": 64, "epochs": 10}),
    ],
    "movielens-100k": [
        ModelSpec("popularity", {}),
        ModelSpec("itemknn", {"k": 400, "shrink": 10.0}),
        ModelSpec("ease", {"reg": 500.0}),
        ModelSpec("als", {"embedding_size": 64, "reg": 10.0, "epochs": 15, "binary": True}),
        ModelSpec("bpr", {"embedding_size": 64, "epochs": 20, "binary": True}),
    ],
    "loo": [
        ModelSpec("popularity", {}),
        ModelSpec("itemknn", {"k": 200, "shrink": 10.0}),
        ModelSpec("ease", {"reg": 50.0}),
        ModelSpec(
            "als", {"embedding_size": 64, "reg": 30.0, "alpha": 20.0, "epochs": 15, "binary": True}
        ),
        ModelSpec("bpr", {"embedding_size": 64, "epochs": 20, "binary": True}),
    ],
}

# Models outside the rosters, with small parameters so that `privrec evaluate` finishes in
# seconds on a shop; a user who wants the published settings passes them to `privrec train`.
SMALL_DEFAULTS: dict[str, dict[str, Any]] = {
    "apr": {"embedding_size": 32, "epochs": 5},
    "sasrec": {"embedding_size": 32, "epochs": 5, "max_len": 50},
    "bert4rec": {"embedding_size": 32, "epochs": 5, "max_len": 50},
    "content": {},
    "hybrid": {},
    "dp_popularity": {"epsilon": 1.0},
    "dp_itemknn": {"epsilon": 1.0},
    "dp_ease": {"epsilon": 1.0},
    "dp_bpr": {"epsilon": 1.0, "embedding_size": 32, "epochs": 3},
    "dp_sasrec": {"epsilon": 1.0, "embedding_size": 32, "epochs": 3, "max_len": 50},
    "dp_hybrid": {"epsilon": 1.0},
}

# What `privrec evaluate --tune` tries per model (on a validation split of the training part).
# DP models are left out: every fit of a grid point would spend privacy budget.
TUNE_GRIDS: dict[str, dict[str, list[Any]]] = {
    "itemknn": {"k": [50, 100, 200], "shrink": [0.0, 10.0]},
    "ease": {"reg": [50.0, 200.0, 500.0]},
    "als": {"reg": [1.0, 10.0], "alpha": [2.0, 20.0]},
    "bpr": {"epochs": [5, 10, 20]},
    "apr": {"epochs": [5, 10]},
    "sasrec": {"epochs": [5, 10]},
    "bert4rec": {"epochs": [5, 10]},
    "popularity": {"half_life_days": [None, 30.0]},
}


def roster_key(fmt: str, protocol: str) -> str:
    """Which roster a dataset of format `fmt` under `protocol` uses."""
    return fmt if fmt in ROSTERS else ("loo" if protocol == "loo" else "shop")


def roster_for(key: str, names: Sequence[str] | None) -> list[ModelSpec]:
    """The specs of `names` in the given order (None: the roster `key`).

    A roster model keeps its tuned parameters; any other registered model gets SMALL_DEFAULTS.
    Raises ValidationError naming the unknown models and the known ones.
    """
    from privrec.models.zoo import available_models

    if names is None:
        return list(ROSTERS[key])
    known = available_models()
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValidationError(
            "models",
            f"unknown model(s) {', '.join(repr(n) for n in unknown) or '(none given)'}; "
            f"known: {', '.join(known)}",
        )
    by_name = {s.name: s for s in ROSTERS[key]}
    out: list[ModelSpec] = []
    for n in dict.fromkeys(names):  # a name given twice is evaluated once
        out.append(by_name.get(n) or ModelSpec(n, dict(SMALL_DEFAULTS.get(n, {}))))
    return out


@dataclass
class DemoResult:
    """What the main job produced."""

    dataset: str
    protocol: str
    results: list[ModelResult]
    report_html: Path
    report_json: Path
    best_model: str
    ingest: dict[str, Any] = field(default_factory=dict)
    sample: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def split_for(
    ds: InteractionDataset, fmt: str
) -> tuple[InteractionDataset, InteractionDataset, Literal["ranking", "loo"], str]:
    """The standard split and protocol of each dataset: (train, test, protocol, description)."""
    if fmt == "movielens-100k":
        train, test = stratified_split(ds, 0.75, filter_by="item", seed=42)
        return (
            train,
            test,
            "ranking",
            "Microsoft Recommenders protocol: stratified 75/25 by item, seed 42, k=10",
        )
    if fmt in ("amazon-s3rec", "unisrec"):
        train, test = leave_one_out_test(ds)
        return (
            train,
            test,
            "loo",
            "leave-one-out (last item = test), full ranking over all items, seen items masked",
        )
    train, test = temporal_split(ds, 0.8, drop_unseen=True)
    test = drop_seen_test_items(train, test)
    return (
        train,
        test,
        "ranking",
        "global temporal 80/20 split; test = items first touched after the cut, full ranking",
    )


def run_demo(
    rs: RecSys,
    *,
    dataset: Path | None = None,
    out_dir: Path | None = None,
    seed: int = 42,
    n_users: int = 3000,
    n_items: int = 3000,
    models: Sequence[str] | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_step: Callable[[str, str], None] | None = None,
    on_models: Callable[[int], None] | None = None,
) -> DemoResult:
    """Run the main job; see the module docstring."""
    t_start = time.perf_counter()
    stage = on_stage or (lambda _s: None)
    ingest_info: dict[str, Any] = {}
    if dataset is None:
        _prepare_demo_dir(rs)
        stage("generating the demo shop")
        events, catalogue = generate_shop(n_items=n_items, n_users=n_users, seed=seed)
        stage("ingesting through the privacy gate into the encrypted store")
        rs.add_items(catalogue)
        report = rs.ingest_frame(events)
        ingest_info = report.to_dict()
        stage("building the interaction dataset")
        ds = rs.dataset(name="demo-shop")
        fmt, roster_key = "shop", "shop"
    else:
        fmt = detect_format(dataset)
        _prepare_demo_dir(rs)
        stage(f"loading {fmt} from {dataset} through the privacy gate into the encrypted store")
        gate = _StoringGate(rs)
        ds = load_dataset(dataset, gate=gate)  # type: ignore[arg-type]
        rs.add_items(ds.item_meta)
        ingest_info = {
            "accepted": gate.inserted,
            "duplicates": gate.duplicates,
            "rejected": int(ds.n_rejects),
        }
        roster_key = (
            fmt if fmt in ROSTERS else ("loo" if fmt in ("amazon-s3rec", "unisrec") else "shop")
        )
    train, test, protocol, description = split_for(ds, fmt)
    roster = [s for s in ROSTERS[roster_key] if models is None or s.name in models]
    if not roster:
        raise ValidationError("models", f"none of {list(models or [])} is in the roster")
    stage(f"training and evaluating {len(roster)} models")
    if on_models:
        on_models(len(roster))
    results, _fitted = compare_models(
        roster, train, test, protocol=protocol, k=10, seed=seed, on_step=on_step
    )
    key = "ndcg@10"
    best = max(results, key=lambda r: r.metrics.get(key, float("-inf")))
    stage("writing the report")
    out = out_dir or rs.reports_dir
    html, js = write_report(
        results,
        out,
        title=f"privrec: {ds.name}",
        dataset_info={
            "name": ds.name,
            "users": ds.n_users,
            "items": ds.n_items,
            "events": ds.n_events,
            "train_events": train.n_events,
            "test_events": test.n_events,
            "protocol": description,
        },
    )
    stage(f"training {best.model} on all data for serving")
    spec = next(s for s in roster if s.display == best.model)
    from privrec.models.zoo import create_model

    if dataset is None:
        # the store holds exactly `ds`: train through the service, so the version records what it
        # was trained on and `forget` can later take a shopper out of it exactly
        final_name = rs.train(spec.name, params=dict(spec.params), seed=seed).model
    else:
        final = create_model(spec.name, **dict(spec.params)).fit(ds, rng=seed)
        version = rs.registry.save(final, ds.items)
        rs.registry.activate(final.name, version.name)
        final_name = final.name
    rs.registry.set_default(final_name)
    rs.serving.forget_default()
    user = "shopper-00001" if dataset is None else _first_raw_user(dataset, fmt)
    sample: dict[str, Any] = {}
    if user is not None:
        sample = {"user": user, **rs.recommend(user, 5).to_dict()}
    return DemoResult(
        dataset=ds.name,
        protocol=description,
        results=results,
        report_html=Path(html),
        report_json=Path(js),
        best_model=best.model,
        ingest=ingest_info,
        sample=sample,
        seconds=time.perf_counter() - t_start,
    )


def _first_raw_user(path: Path, fmt: str) -> str | None:
    """A user id of the dataset's first line, to show a sample recommendation (never stored)."""
    try:
        if fmt == "movielens-100k":
            return (Path(path) / "u.data").read_text().split("\t", 1)[0]
        if fmt == "amazon-s3rec":
            txt = next(Path(path).glob("*.txt"))
            return txt.read_text().split(" ", 1)[0]
    except (OSError, StopIteration):
        return None
    return None


class _StoringGate:
    """The data directory's gate, storing every accepted batch as it passes (used by loaders)."""

    def __init__(self, rs: RecSys) -> None:
        self._gate = rs.ctx.gate()
        self._store = rs.ctx.store
        self._store.bind_generation(rs.ctx.pseudonymiser.generation)
        self.inserted = 0
        self.duplicates = 0

    def process_frame(self, df: Any, *, line_numbers: Any = None) -> Any:
        result = self._gate.process_frame(df, line_numbers=line_numbers)
        ins, dup = self._store.append(result.accepted)
        self.inserted += ins
        self.duplicates += dup
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gate, name)


def _prepare_demo_dir(rs: RecSys) -> None:
    """The demo owns its data directory: start clean, but never wipe a directory with real data."""
    marker = rs.data_dir / DEMO_MARKER
    has_store = (rs.data_dir / "events.duckdb").exists()
    if has_store and not marker.exists():
        raise ValidationError(
            "data_dir",
            f"{rs.data_dir} holds a store that the demo did not create; "
            "use another --data-dir for the demo",
        )
    rs.reset()
    marker.write_text(json.dumps({"created": time.time()}))
