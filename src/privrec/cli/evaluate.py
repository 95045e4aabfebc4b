"""`privrec evaluate`: compare any registered models, once or by k-fold cross-validation.

The report is written to a temporary folder beside the target and moved into place only when
every model has been evaluated, so a failed or refused run leaves the previous report as it was.
DP models are charged to an evaluation ledger written beside the report, never to the data
directory's ledger: these models are measured, not served.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from privrec.cli.common import DataDir, app, console, errors, open_recsys, progress

if TYPE_CHECKING:
    from privrec.data.dataset import InteractionDataset
    from privrec.evaluation.compare import ModelSpec
    from privrec.privacy.ledger import PrivacyLedger

EVAL_LEDGER = "evaluation-ledger.jsonl"


@app.command()
def evaluate(
    dataset: Annotated[
        Path | None, typer.Option("--dataset", help="A dataset folder (default: the store).")
    ] = None,
    models: Annotated[
        str | None,
        typer.Option("--models", help="Comma-separated registered model names (default: roster)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Report folder (default: DATA_DIR/reports).")
    ] = None,
    folds: Annotated[
        int | None,
        typer.Option("--folds", help="Run user k-fold cross-validation with K >= 2 folds.", min=2),
    ] = None,
    tune: Annotated[
        bool,
        typer.Option("--tune", help="Choose hyper-parameters on a validation split of the train."),
    ] = False,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            help="MODEL.NAME=VALUE: a hyper-parameter of one model of --models (JSON value). "
            "A model may be given twice as NAME@LABEL to compare settings, e.g. "
            "--models sasrec,sasrec@buy -p 'sasrec@buy.target_weights={\"purchase\": 5}'.",
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Compare models under the dataset's protocol or k-fold CV; print a table, write HTML+JSON."""
    from privrec.core.errors import ValidationError
    from privrec.data.loaders import detect_format, load_dataset
    from privrec.pipeline import roster_for, roster_key, split_for

    wanted = [m.strip() for m in models.split(",") if m.strip()] if models is not None else None
    with errors(), open_recsys(data_dir) as rs:
        overrides: dict[str, dict[str, Any]] = {}
        if wanted is not None:
            # checked before any data is read, so a typo costs nothing and changes nothing
            roster_for("shop", [w.split("@", 1)[0] for w in wanted])
            overrides = _overrides(param or [], wanted)
        elif param:
            raise ValidationError("param", "name the models with --models to set their parameters")
        if dataset is not None:
            fmt = detect_format(dataset)
            ds = load_dataset(dataset, gate=rs.ctx.gate())
        else:
            fmt, ds = "shop", rs.dataset()
        if ds.n_events == 0:
            raise ValidationError("store", "holds no events; ingest some first or give --dataset")
        train_ds, test_ds, protocol, description = split_for(ds, fmt)
        key = roster_key(fmt, protocol)
        specs = roster_for(key, wanted) if wanted is None else _variants(key, wanted, overrides)
        # text models keep their adapters and embedding cache in the data directory, not the cwd
        specs = [
            dataclasses.replace(s, params=rs.training.adapters.with_paths(s.name, s.params))
            for s in specs
        ]
        target = Path(out or rs.reports_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".evaluate-", dir=target.parent))
        try:
            ledger = _eval_ledger(tmp)
            tuning: dict[str, Any] = {}
            if tune and folds is None:
                specs, tuning = _tune(specs, train_ds, fmt)
            extra: dict[str, Any] = {}
            if folds is not None:
                # tuned inside each fold, on that fold's training users only: parameters chosen
                # on the whole data would have seen the held-out events they are judged on
                results, cv = _cross_validate(specs, ds, folds, ledger, fmt if tune else None)
                if tune:
                    tuning = {
                        name: {"per_fold": [f["tuning"] for f in r["folds"]]}
                        for name, r in cv.items()
                    }
                description = (
                    f"user {folds}-fold cross-validation (latest 20% of each user held out)"
                )
                extra["cross_validation"] = {"folds": folds, "models": cv}
            else:
                results = _compare(specs, train_ds, test_ds, protocol, ledger)
            if tuning:
                extra["tuning"] = tuning
            info: dict[str, Any] = {
                "name": ds.name,
                "users": ds.n_users,
                "items": ds.n_items,
                "events": ds.n_events,
                "protocol": description,
            }
            if ledger.entries():
                info["privacy ledger"] = (
                    f"DP models charged to {EVAL_LEDGER} beside this report "
                    "(not the data directory's ledger)"
                )
                extra["evaluation_ledger"] = {"file": EVAL_LEDGER, **ledger.summary()}
            else:
                ledger.path.unlink(missing_ok=True)
            html, js = _write(results, tmp, ds.name, info, extra)
            _move_into_place(tmp, target)
            if "evaluation_ledger" not in extra:
                # an earlier run's ledger would sit beside a report that no longer speaks of it
                (target / EVAL_LEDGER).unlink(missing_ok=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    from privrec.evaluation.report import render_table

    console.print(render_table(results))
    if folds is not None:
        _print_spread(extra["cross_validation"]["models"])
    _print_tuning(tuning)
    if "evaluation_ledger" in extra:
        console.print(f"DP releases charged to the evaluation ledger: {target / EVAL_LEDGER}")
    console.print(f"report: {target / html.name}\njson:   {target / js.name}")


def _overrides(items: list[str], wanted: list[str]) -> dict[str, dict[str, Any]]:
    """`-p MODEL.NAME=VALUE` options per model of `wanted`, each model's config checked."""
    from privrec.cli.common import parse_params
    from privrec.core.errors import ConfigError, ValidationError
    from privrec.models.zoo import model_class

    out: dict[str, dict[str, Any]] = {w: {} for w in wanted}
    for key, value in parse_params(items).items():
        model, _, name = key.rpartition(".")
        if model not in out or not name:
            raise ValidationError(
                "param",
                f"{key!r}: expected MODEL.NAME=VALUE with MODEL one of {', '.join(wanted)}",
            )
        out[model][name] = value
    for w, params in out.items():
        cls = model_class(w.split("@", 1)[0])
        try:
            cls.Config(**params)
        except Exception as exc:  # pydantic's message names the field
            raise ConfigError(f"{w}: {exc}") from exc
    return out


def _variants(key: str, wanted: list[str], overrides: dict[str, dict[str, Any]]) -> list[ModelSpec]:
    """The specs of `wanted` (NAME or NAME@LABEL), each with its `-p` parameters on top."""
    from privrec.evaluation.compare import ModelSpec
    from privrec.pipeline import roster_for

    out = []
    for w in dict.fromkeys(wanted):
        base = roster_for(key, [w.split("@", 1)[0]])[0]
        params = {**base.params, **overrides.get(w, {})}
        out.append(ModelSpec(base.name, params, w if "@" in w else base.label))
    return out


def _eval_ledger(folder: Path) -> PrivacyLedger:
    """A fresh ledger with no cap: the evaluation records its releases, it does not ration them."""
    from privrec.privacy.ledger import Budget, PrivacyLedger

    return PrivacyLedger(folder / EVAL_LEDGER, Budget(math.inf, 0.99))


def _compare(
    specs: list[ModelSpec],
    train: InteractionDataset,
    test: InteractionDataset,
    protocol: str,
    ledger: PrivacyLedger,
) -> list[Any]:
    from privrec.evaluation.compare import compare_models

    with progress() as prog:
        task = prog.add_task("models", total=2 * len(specs))
        results, _ = compare_models(
            specs,
            train,
            test,
            protocol=protocol,
            ledger=ledger,
            on_step=lambda m, step: prog.update(task, advance=1, description=f"{step} {m}"),
        )
        prog.update(task, completed=2 * len(specs), description="done")
    return results


def _cross_validate(
    specs: list[ModelSpec],
    ds: InteractionDataset,
    folds: int,
    ledger: PrivacyLedger,
    tune_fmt: str | None,
) -> tuple[list[Any], dict[str, Any]]:
    from privrec.evaluation.compare import cross_validate_models
    from privrec.evaluation.report import ModelResult

    with progress() as prog:
        task = prog.add_task("folds", total=folds * len(specs))
        cv = cross_validate_models(
            specs,
            ds,
            folds,
            ledger=ledger,
            on_step=lambda m, f: prog.update(task, advance=1, description=f"{m} fold {f + 1}"),
            choose=None if tune_fmt is None else (lambda s, t: _tune_one(s, t, tune_fmt)),
        )
    results = [
        ModelResult(
            model=name,
            metrics=dict(r["mean"]),
            train_seconds=float(sum(f["fit_seconds"] for f in r["folds"]) / len(r["folds"])),
            params=dict(r["params"]),
            notes=f"mean over {folds} user folds; spread in cross_validation",
        )
        for name, r in cv.items()
    ]
    return results, cv


def _tune(
    specs: list[ModelSpec], train: InteractionDataset, fmt: str
) -> tuple[list[ModelSpec], dict[str, Any]]:
    """Each spec with parameters chosen on a validation split carved from `train` only."""
    tuned: list[ModelSpec] = []
    report: dict[str, Any] = {}
    for spec in specs:
        new, info = _tune_one(spec, train, fmt)
        tuned.append(new)
        report[spec.display] = info
    return tuned, report


def _tune_one(
    spec: ModelSpec, train: InteractionDataset, fmt: str
) -> tuple[ModelSpec, dict[str, Any]]:
    """`spec` with the grid point that scores best (NDCG@10) on a validation split of `train`."""
    from privrec.evaluation.compare import ModelSpec
    from privrec.evaluation.tuning import grid_search, iter_grid
    from privrec.models.zoo import create_model
    from privrec.pipeline import TUNE_GRIDS, split_for

    grid = TUNE_GRIDS.get(spec.name)
    if grid is None:
        why = (
            "DP model: each grid point would spend privacy budget"
            if spec.name.startswith("dp_")
            else "no grid for this model"
        )
        return spec, {"chosen": dict(spec.params), "tuned": False, "note": why}
    fit_part, valid, protocol, how = split_for(train, fmt)
    fixed = {k: v for k, v in spec.params.items() if k not in grid}
    name = spec.name
    best, table = grid_search(
        lambda _n=name, **p: create_model(_n, **p),
        grid,
        fit_part,
        valid,
        protocol=protocol,
        fixed=fixed,
    )
    chosen = {**fixed, **best}
    scores = [float(v) for v in table["ndcg@10"]]
    info = {
        "chosen": chosen,
        "tuned": True,
        "validation": f"carved from the training part only: {how}",
        "metric": "ndcg@10",
        "grid": [{**p, "ndcg@10": v} for p, v in zip(iter_grid(grid), scores, strict=True)],
    }
    return ModelSpec(spec.name, chosen, spec.label), info


def _write(
    results: list[Any], folder: Path, name: str, info: dict[str, Any], extra: dict[str, Any]
) -> tuple[Path, Path]:
    from privrec.evaluation.report import write_report

    html, js = write_report(results, folder, title=f"privrec: {name}", dataset_info=info)
    if extra:
        doc = json.loads(js.read_text(encoding="utf-8"))
        doc.update(_json_safe(extra))
        js.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return html, js


def _json_safe(value: Any) -> Any:
    """`value` with every non-finite float as its text ("inf"): strict JSON has no infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _move_into_place(tmp: Path, target: Path) -> list[Path]:
    """Move every file written to `tmp` into `target` (same filesystem: each move is atomic);
    the report files they replace are archived first."""
    from privrec.evaluation.report_archive import keep_previous

    target.mkdir(parents=True, exist_ok=True)
    keep_previous(target)
    moved = []
    for f in sorted(tmp.iterdir()):
        dest = target / f.name
        os.replace(f, dest)
        moved.append(dest)
    return moved


def _print_tuning(tuning: dict[str, Any]) -> None:
    """One line per tuned model (per fold under --folds); untuned ones say why, once."""
    for name, choice in tuning.items():
        runs = choice.get("per_fold", [choice])
        if not any(one["tuned"] for one in runs):
            kept = json.dumps(runs[0]["chosen"])
            console.print(f"{name} not tuned ({runs[0]['note']}); kept {kept}", markup=False)
            continue
        for n, one in enumerate(runs):
            where = f" (fold {n + 1})" if "per_fold" in choice else ""
            console.print(f"tuned {name}{where}: {json.dumps(one['chosen'])}", markup=False)


def _print_spread(cv: dict[str, Any]) -> None:
    from rich.table import Table

    first = next(iter(cv.values()))
    keys = list(first["mean"])
    table = Table(title="cross-validation: mean ± spread (sample std across folds)")
    table.add_column("model")
    for k in keys:
        table.add_column(k)
    for name, r in cv.items():
        table.add_row(name, *(f"{r['mean'][k]:.4f} ± {r['std'][k]:.4f}" for k in keys))
    console.print(table)
