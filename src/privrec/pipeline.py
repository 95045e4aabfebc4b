"""The main job (layer 7): build a shop's data, train the models, compare them, write the report.

`run_demo()` with no dataset shows the product on the seeded demo shop, the way a shop would use
it: the catalogue is written as a JSONL file and imported through `privrec items import`'s code
path, the events pass the privacy gate into the encrypted store, and then it trains and evaluates
the CF baselines, the hybrid (MiniLM content + EASE + a small SASRec, cold-start routes) and one
DP model (DP EASE shrunk towards the item-text prior, plain DP EASE for a shop without item
text; its evaluation release charged to an evaluation ledger beside the report),
runs a short membership audit (LiRA and canaries, `privrec audit`'s code), serves the hybrid
(the default afterwards) and the DP model (charged to the data directory's ledger), runs example
searches and a labelled query set through the service's search, collects explanation examples
(one with a pinned item: "placed by a shop rule"), and writes one report: `report.html`,
`report.json` and `report.md`. Item embeddings are cached under `DATA_DIR/cache/embeddings` and
survive the demo's fresh start, so a second run does not encode the catalogue again.

With a dataset folder it trains and compares the classic models on real data, each dataset under
the protocol its published numbers use, and serves the best.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
from privrec.evaluation.showcase_report import showcase_html, showcase_markdown
from privrec.service import RecSys
from privrec.service import showcase as show

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
    "dp_ease_prior": {"epsilon": 1.0},
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


# The demo's hybrid: EASE + a small SASRec + MiniLM content + popularity. Item-item CF also
# serves shoppers with one or two items (on the demo shop it beats content + popularity alone
# for them on the validation split).
DEMO_HYBRID: dict[str, Any] = {
    "cf": "ease",
    "cf_params": {"reg": 200.0},
    "sequential": "sasrec",
    "sequential_params": {"embedding_size": 32, "epochs": 5, "max_len": 50},
    "cold_components": ["cf", "content", "popularity"],
}
DEMO_DP = ModelSpec("dp_ease", {"epsilon": 1.0})  # without item text; see `demo_dp_spec`
DEMO_DP_TWIN = "ease"  # the non-private model the DP one is compared with
EVAL_LEDGER = "evaluation-ledger.jsonl"


@dataclass(frozen=True)
class DemoSize:
    """How big the demo's steps are: `make demo` uses the defaults, tests a small shop.

    Attributes:
        n_users / n_items: the demo shop.
        sasrec_epochs: epochs of the hybrid's SASRec.
        audit_shadows / audit_runs / audit_canaries / audit_users: the membership audit (LiRA
            models, canary runs, canary shoppers, shoppers attacked; see `privrec audit`).
    """

    n_users: int = 3000
    n_items: int = 3000
    sasrec_epochs: int = 5
    audit_shadows: int = 4
    audit_runs: int = 4
    audit_canaries: int = 16
    audit_users: int | None = 400


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
    report_md: Path | None = None
    default_model: str = ""
    stages: list[dict[str, Any]] = field(default_factory=list)
    showcase: dict[str, Any] = field(default_factory=dict)
    catalogue: dict[str, Any] = field(default_factory=dict)


class _Stages:
    """Names each stage (for progress) and times it (for the report)."""

    def __init__(self, on_stage: Callable[[str], None] | None) -> None:
        self.on_stage = on_stage or (lambda _s: None)
        self.done: list[dict[str, Any]] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.on_stage(name)
        t0 = time.perf_counter()
        yield
        self.done.append({"stage": name, "seconds": round(time.perf_counter() - t0, 2)})


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
    size: DemoSize | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_step: Callable[[str, str], None] | None = None,
    on_models: Callable[[int], None] | None = None,
) -> DemoResult:
    """Run the main job; see the module docstring.

    Args:
        rs: the data directory (the demo owns it: it starts clean).
        dataset: a real dataset folder instead of the demo shop.
        out_dir: the report folder (default: DATA_DIR/reports).
        seed: the shop's and the models' seed.
        n_users / n_items: the demo shop's size (overridden by `size` when given).
        models: on the demo shop, the CF baselines to compare (the hybrid, the DP model and
            its twin EASE always run); on a dataset, the roster's models to compare.
        size: the demo's step sizes (default: `DemoSize(n_users, n_items)`).
        on_stage: called with each stage's name as it starts.
        on_step / on_models: model progress (see `compare_models`).
    """
    if dataset is not None:
        return _run_dataset(rs, dataset, out_dir, seed, models, on_stage, on_step, on_models)
    sz = size or DemoSize(n_users=n_users, n_items=n_items)
    t_start = time.perf_counter()
    stage = _Stages(on_stage)
    out = Path(out_dir or rs.reports_dir)
    cache = _prepare_demo_dir(rs)
    with stage("generating the demo shop"):
        events, catalogue = generate_shop(n_items=sz.n_items, n_users=sz.n_users, seed=seed)
    with stage("importing the catalogue (privrec items import)"):
        cat_info = show.import_catalogue(rs, catalogue, rs.data_dir / "demo-catalogue.jsonl")
    with stage("ingesting events through the privacy gate into the encrypted store"):
        ingest_info = rs.ingest_frame(events).to_dict()
        ds = rs.dataset(name="demo-shop")
    train, test, protocol, description = split_for(ds, "shop")
    hybrid = _demo_hybrid(sz, cache)
    roster = [s for s in ROSTERS["shop"] if models is None or s.name in models]
    if not any(s.name == DEMO_DP_TWIN for s in roster):
        roster.append(next(s for s in ROSTERS["shop"] if s.name == DEMO_DP_TWIN))
    dp = demo_dp_spec(ds, cache)
    roster += [ModelSpec("hybrid", hybrid), dp]
    out.mkdir(parents=True, exist_ok=True)
    eval_ledger = _eval_ledger(out)
    with stage(f"training and evaluating {len(roster)} models"):
        if on_models:
            on_models(len(roster))
        results, fitted = compare_models(
            roster,
            train,
            test,
            protocol=protocol,
            k=10,
            seed=seed,
            on_step=on_step,
            ledger=eval_ledger,
        )
    best = max(results, key=lambda r: r.metrics.get("ndcg@10", float("-inf")))
    with stage(f"training the hybrid and {dp.name} on all data for serving"):
        # the route weights found on the training part's validation split are kept: the
        # hybrid is fitted once more, not searched again
        h = fitted["hybrid"]
        fixed = {
            **hybrid,
            "weights": dict(h.weights),  # type: ignore[attr-defined]
            "cold_weights": dict(h.cold_weights),  # type: ignore[attr-defined]
            "cold_item_boost": float(h.item_boost),  # type: ignore[attr-defined]
        }
        rs.train(dp.name, params=dict(dp.params), seed=seed)
        rs.train("hybrid", params=fixed, seed=seed)
        rs.registry.set_default("hybrid")
        rs.serving.forget_default()
    with stage("membership audit (LiRA and canaries)"):
        audit = show.audit_rows(
            [(DEMO_DP_TWIN, _params_of(roster, DEMO_DP_TWIN)), (dp.name, dp.params)],
            ds,
            shadows=sz.audit_shadows,
            runs=sz.audit_runs,
            canaries=sz.audit_canaries,
            max_users=sz.audit_users,
            seed=seed,
        )
    with stage("search: example queries and the labelled query set"):
        search = show.search_showcase(rs, catalogue)
    with stage("explanation examples"):
        explanations = show.explanation_examples(rs, _example_shoppers(rs, catalogue))
    guarantee = fitted[dp.name].privacy
    privacy = show.privacy_point(
        results,
        dp_model=dp.name,
        baseline=DEMO_DP_TWIN,
        guarantee=guarantee.to_dict() if guarantee is not None else None,
        ledger_summary=rs.ctx.ledger.summary(),
        audit=audit,
    )
    default = rs.registry.default_name() or ""
    serving = {
        "default": default,
        "active": {n: v for n in ("hybrid", dp.name) if (v := rs.registry.active(n))},
    }
    info = {
        "name": ds.name,
        "users": ds.n_users,
        "items": ds.n_items,
        "events": ds.n_events,
        "train_events": train.n_events,
        "test_events": test.n_events,
        "protocol": description,
        "catalogue": f"{cat_info['accepted']} products imported from {cat_info['file']}",
        "privacy ledger": f"the DP evaluation release is charged to {EVAL_LEDGER} beside "
        "this report; the served DP model to the data directory's ledger",
    }
    with stage("writing the report"):
        showcase: dict[str, Any] = {
            "search": search,
            "privacy": privacy,
            "explanations": explanations,
            "serving": serving,
            "stages": list(stage.done),
        }
        title = f"privrec: {ds.name}"
        html, js = write_report(
            results,
            out,
            title=title,
            dataset_info=info,
            appendix_html=showcase_html(showcase),
            extra={
                "showcase": showcase,
                "catalogue_import": cat_info,
                "ingest": ingest_info,
                "evaluation_ledger": {"file": EVAL_LEDGER, **eval_ledger.summary()},
            },
        )
        md = out / "report.md"
        md.write_text(
            showcase_markdown(title=title, dataset_info=info, results=results, showcase=showcase),
            encoding="utf-8",
        )
    sample = {"user": "shopper-00001", **rs.recommend("shopper-00001", 5).to_dict()}
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
        report_md=md,
        default_model=default,
        stages=stage.done,
        showcase=showcase,
        catalogue=cat_info,
    )


def _demo_hybrid(sz: DemoSize, cache: Path) -> dict[str, Any]:
    seq = {**DEMO_HYBRID["sequential_params"], "epochs": sz.sasrec_epochs}
    return {**DEMO_HYBRID, "sequential_params": seq, "content_params": {"cache_dir": str(cache)}}


def demo_dp_spec(ds: InteractionDataset, cache: Path) -> ModelSpec:
    """The demo's DP model: the default DP model for `ds` (text prior where items have text)."""
    from privrec.evaluation.privacy_tuning import DEFAULT_DP_MODEL, default_dp_model

    if default_dp_model(ds) != DEFAULT_DP_MODEL:
        return DEMO_DP
    return ModelSpec(
        DEFAULT_DP_MODEL, {**DEMO_DP.params, "content_params": {"cache_dir": str(cache)}}
    )


def _params_of(roster: Sequence[ModelSpec], name: str) -> dict[str, Any]:
    return dict(next(s for s in roster if s.name == name).params)


def _eval_ledger(folder: Path) -> Any:
    """A ledger with no cap beside the report: evaluation releases are recorded, not rationed."""
    from privrec.privacy.ledger import Budget, PrivacyLedger

    path = folder / EVAL_LEDGER
    path.unlink(missing_ok=True)  # an earlier run's releases are not this report's
    return PrivacyLedger(path, Budget(math.inf, 0.99))


def _example_shoppers(rs: RecSys, catalogue: Any) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Two shoppers, the first again with a promotion pinned, and a first-time visitor."""
    first = rs.recommend("shopper-00001", 5)
    shown = {it["item"] for it in first.items}
    cats = {it.get("category") for it in first.items}
    # a product the shopper's list does not hold, from a category it does not show
    stock = catalogue[catalogue["in_stock"].fillna(False).astype(bool)]
    other = stock[~stock["category"].isin(cats) & ~stock["item"].isin(shown)]
    pin = str((other if len(other) else stock)["item"].iloc[-1])
    return [
        ("shopper 1", "shopper-00001", None),
        ("shopper 2", "shopper-00002", None),
        ("shopper 1 with a promotion pinned", "shopper-00001", {"pin_items": [pin]}),
        ("a first-time visitor", "visitor-first-time", None),
    ]


def _run_dataset(
    rs: RecSys,
    dataset: Path,
    out_dir: Path | None,
    seed: int,
    models: Sequence[str] | None,
    on_stage: Callable[[str], None] | None,
    on_step: Callable[[str, str], None] | None,
    on_models: Callable[[int], None] | None,
) -> DemoResult:
    """The main job on a real dataset folder: the classic models under its protocol."""
    t_start = time.perf_counter()
    stage = _Stages(on_stage)
    fmt = detect_format(dataset)
    _prepare_demo_dir(rs)
    with stage(f"loading {fmt} from {dataset} through the privacy gate into the encrypted store"):
        gate = _StoringGate(rs)
        ds = load_dataset(dataset, gate=gate)  # type: ignore[arg-type]
        rs.add_items(ds.item_meta)
        ingest_info = {
            "accepted": gate.inserted,
            "duplicates": gate.duplicates,
            "rejected": int(ds.n_rejects),
        }
    key = fmt if fmt in ROSTERS else ("loo" if fmt in ("amazon-s3rec", "unisrec") else "shop")
    train, test, protocol, description = split_for(ds, fmt)
    roster = [s for s in ROSTERS[key] if models is None or s.name in models]
    if not roster:
        raise ValidationError("models", f"none of {list(models or [])} is in the roster")
    with stage(f"training and evaluating {len(roster)} models"):
        if on_models:
            on_models(len(roster))
        results, _fitted = compare_models(
            roster, train, test, protocol=protocol, k=10, seed=seed, on_step=on_step
        )
    best = max(results, key=lambda r: r.metrics.get("ndcg@10", float("-inf")))
    with stage("writing the report"):
        html, js = write_report(
            results,
            out_dir or rs.reports_dir,
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
    with stage(f"training {best.model} on all data for serving"):
        spec = next(s for s in roster if s.display == best.model)
        from privrec.models.zoo import create_model

        final = create_model(spec.name, **dict(spec.params)).fit(ds, rng=seed)
        version = rs.registry.save(final, ds.items)
        rs.registry.activate(final.name, version.name)
        rs.registry.set_default(final.name)
        rs.serving.forget_default()
    user = _first_raw_user(dataset, fmt)
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
        default_model=final.name,
        stages=stage.done,
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


def _prepare_demo_dir(rs: RecSys) -> Path:
    """The demo owns its data directory: start clean, but never wipe a directory with real data.

    The item-embedding cache (public catalogue text only, no personal data) is kept across the
    fresh start, so a second run encodes nothing twice. Returns the cache folder.
    """
    marker = rs.data_dir / DEMO_MARKER
    # A PostgreSQL store (PRIVREC_STORE_URL) has no file here: ask the store itself, so the demo
    # never wipes a shop's database that it did not fill.
    has_store = (rs.data_dir / "events.duckdb").exists() or rs.store.count() > 0
    if has_store and not marker.exists():
        raise ValidationError(
            "data_dir",
            f"{rs.data_dir} holds a store that the demo did not create; "
            "use another --data-dir for the demo",
        )
    cache = rs.data_dir / "cache" / "embeddings"
    kept = rs.data_dir.parent / f".{rs.data_dir.name}.embeddings-kept"
    shutil.rmtree(kept, ignore_errors=True)
    if cache.is_dir():
        os.replace(cache, kept)
    rs.reset()
    if kept.is_dir():
        cache.parent.mkdir(parents=True, exist_ok=True)
        os.replace(kept, cache)
    marker.write_text(json.dumps({"created": time.time()}))
    return cache
