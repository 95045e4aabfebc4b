"""Reports over the data directory: the privacy budget, and the privacy-utility frontier.

The frontier trains evaluation models (never served) and charges their releases to a ledger of
its own beside the report; the data directory's ledger records what was released for serving.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from privrec.core.errors import NotFoundError, ValidationError
from privrec.core.rng import DEFAULT_SEED
from privrec.data.dataset import InteractionDataset
from privrec.privacy.ledger import Budget, PrivacyLedger
from privrec.service.context import ServiceContext
from privrec.service.pending import PendingRetrains
from privrec.service.registry import ModelRegistry

PUBLIC_DATASETS: dict[str, str] = {"ml100k": "movielens-100k", "beauty": "amazon-beauty"}


class Reports:
    """Budget summaries, public datasets and the privacy report.

    Args:
        ctx: the data directory's context.
        registry: the model versions (each one's privacy guarantee).
        pending: the models that owe a retrain.
    """

    def __init__(
        self, ctx: ServiceContext, registry: ModelRegistry, pending: PendingRetrains
    ) -> None:
        self.ctx = ctx
        self.registry = registry
        self.pending = pending

    def privacy_budget(self) -> dict[str, Any]:
        """The ledger (spent, left, releases), each model's guarantee and pending retrains."""
        led = self.ctx.ledger
        out: dict[str, Any] = {"ledger": led.summary(), "models": {}}
        if not led.path.exists():
            out["ledger_note"] = "no differentially private release recorded here yet"
        for name, info in self.registry.models().items():
            out["models"][name] = {"version": info.active, "privacy": info.privacy}
        out["pending_retrains"] = self.pending.read()
        return out

    def public_dataset(self, name_or_path: str | Path) -> InteractionDataset:
        """A public dataset by alias (`ml100k`, `beauty`) or folder, through the privacy gate.

        Aliases are looked up under $PRIVREC_SHARED_DATA, ./shared/data and ../shared/data.
        """
        from privrec.data.loaders import load_dataset

        folder = Path(name_or_path)
        alias = PUBLIC_DATASETS.get(str(name_or_path).lower())
        if alias is not None:
            env = os.environ.get("PRIVREC_SHARED_DATA")
            roots = [Path(env)] if env else []
            roots += [Path("shared/data"), Path("../shared/data")]
            found = [r / alias for r in roots if (r / alias).is_dir()]
            if not found:
                where = ", ".join(map(str, roots))
                raise NotFoundError(
                    f"dataset: {name_or_path!r} ({alias}) not found under {where}; "
                    "set PRIVREC_SHARED_DATA"
                )
            folder = found[0]
        if not folder.is_dir():
            raise ValidationError(
                "dataset",
                f"{str(name_or_path)!r} is neither {' nor '.join(PUBLIC_DATASETS)} "
                "nor a dataset folder",
            )
        return load_dataset(folder, gate=self.ctx.gate())

    def privacy_report(
        self,
        dataset: InteractionDataset,
        out_dir: str | Path | None = None,
        *,
        from_store: bool = False,
        epsilons: Iterable[float] | None = None,
        models: Iterable[str] | None = None,
        protocol: str = "loo",
        audit: bool = True,
        audit_users: int | None = None,
        seed: int = DEFAULT_SEED,
        on_point: Callable[[Any], None] | None = None,
    ) -> dict[str, Path]:
        """The privacy-utility frontier of the DP models (with the attack AUC): PNG, HTML, JSON.

        Args:
            dataset: the data to measure.
            out_dir: where the files go (default DATA_DIR/reports/privacy).
            from_store: whether `dataset` is the store's data (then the data directory's
                ledger is included in the report).
            epsilons: the privacy levels (default 0.5, 1, 2, 4, 8, inf).
            models: DP models of the roster to run (default: `default_roster(dataset)`: all,
                with one DP EASE, the text prior where items have text).
            protocol: "loo" (leave-one-out) or "ranking" (stratified 75/25 split).
            audit: run the membership-inference audit at each point.
            audit_users: at most this many users in each audit (bounds its cost).
            seed: seeds the split, the models and the audit.
            on_point: called with each measured point (progress display).
        """
        from privrec.evaluation.privacy_report import (
            DEFAULT_ROSTER,
            EPSILONS,
            default_roster,
            write_privacy_report,
        )

        if protocol not in ("loo", "ranking"):
            raise ValidationError("protocol", f"{protocol!r} is not a protocol; use loo or ranking")
        eps = [float(e) for e in (EPSILONS if epsilons is None else epsilons)]
        if not eps or any(not (e > 0) for e in eps):
            raise ValidationError(
                "epsilons", "give one or more positive numbers (inf for the non-private model)"
            )
        # by default one DP EASE: with the text prior where the items have text (issue 16)
        wanted = (
            list(default_roster(dataset))
            if models is None
            else [m.strip() for m in models if m.strip()]
        )
        unknown = [m for m in wanted if m not in DEFAULT_ROSTER]
        if unknown or not wanted:
            raise ValidationError(
                "models",
                f"{', '.join(unknown) or '(none)'}: choose from {', '.join(DEFAULT_ROSTER)}",
            )
        if dataset.n_events == 0:
            raise ValidationError("store", "holds no events; ingest some first or give --dataset")
        out = Path(out_dir) if out_dir is not None else self.ctx.reports_dir / "privacy"
        out.mkdir(parents=True, exist_ok=True)
        if from_store:
            # the report publishes what models trained on the shop's data achieve: each of its
            # releases is a release of that data, charged to the one ledger like any other
            ledger = self.ctx.ledger
        else:  # public data: the report's own ledger records what it released of that data
            ledger = PrivacyLedger(out / "frontier-ledger.jsonl", Budget(math.inf, 0.99))
            ledger.path.unlink(missing_ok=True)  # one report, one ledger of its releases
        ds = dataset
        extra = {
            "dataset": {
                "name": ds.name,
                "users": ds.n_users,
                "items": ds.n_items,
                "events": ds.n_events,
                "protocol": protocol,
            },
            "frontier_ledger_note": "the frontier's releases are charged to the data directory's "
            "ledger (the shop's data)"
            if from_store
            else "the frontier's releases of this public dataset are in 'ledger'",
            "data_dir_ledger": None,  # from the store, 'ledger' is the data directory's own
        }
        return write_privacy_report(
            out,
            dataset=ds,
            protocol=protocol,
            ledger=ledger,
            extra=extra,
            roster={m: DEFAULT_ROSTER[m] for m in wanted},
            epsilons=eps,
            audit=audit,
            audit_kwargs={"max_users": audit_users} if audit_users else None,
            seed=seed,
            on_point=on_point,
        )
