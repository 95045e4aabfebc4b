"""SASRec and BERT4Rec trained with DDP on Ray Train workers (`TorchTrainer`).

The same training code as torchrun (`models.distributed`, `models.sequential_train`): Ray Train
starts the workers, joins them in a torch.distributed process group (gloo on CPU, NCCL with
GPUs) and runs `_worker` on each; the model's `fit` sees the process group through
`DistInfo.current()`, so every rank builds the same global batches from the same seed, trains on
its strided share and DDP averages the gradients. The result equals single-process training on
the whole global batch up to float rounding in the gradient all-reduce (tested: the loss curve of
2 Ray workers within 1e-4 of one process's).

Rank 0 saves the model (safetensors + JSON, never pickle) and reports it to Ray Train as a
checkpoint; the driver loads it back from the run's storage. On a local cluster that storage is
a temporary folder; on several machines it must be a path every node can reach (a shared file
system, or `s3://...`): `storage_path`.

Entry points: `fit_ray(job)` (a `models.distributed.Job`), and `RayTrainFit`, the plan that
`RecSys.train(..., sharded=RayTrainFit(...))` takes (`privrec train-sequential`).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from privrec.core.errors import ConfigError
from privrec.data.dataset import InteractionDataset
from privrec.models.base import Recommender, seed_from
from privrec.models.distributed import Job
from privrec.models.sequential import SequentialRecommender
from privrec.models.sharded import SHARDED_MODELS, ShardedFit, ShardRunner
from privrec.privacy.ledger import PrivacyLedger

__all__ = ["RayTrainFit", "RayTrainResult", "fit_ray", "ray_train_available"]

log = logging.getLogger(__name__)

_CHECKPOINT = "model"  # the saved model's folder inside a Ray Train checkpoint


def ray_train_available() -> bool:
    """Whether Ray Train and torch can be imported (the `scale` extra)."""
    try:
        import ray.train.torch  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _ray() -> Any:
    try:
        import ray
        import ray.train.torch
    except ImportError as exc:
        raise ConfigError(
            "ray: Ray Train is not installed; install the scale extra "
            "(`pip install -e '.[scale]'`) or train in one process"
        ) from exc
    return ray


def _worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: fit the job's model in the process group; rank 0 reports it."""
    import ray.train

    from privrec.models.zoo import create_model

    job: Job = config["job"]
    rank = ray.train.get_context().get_world_rank()
    model = create_model(job.model, **job.params)
    t0 = time.perf_counter()
    model.fit(job.dataset, rng=job.seed, validation=job.validation)  # type: ignore[call-arg]
    metrics = {"train_seconds": time.perf_counter() - t0, "rank": rank}
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / _CHECKPOINT)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


@dataclass
class RayTrainResult:
    """A Ray Train fit: the trained model and how it ran.

    Attributes:
        model: the trained model (loaded from rank 0's checkpoint).
        workers: Ray Train workers (DDP ranks).
        seconds: wall-clock time of the whole fit, Ray's start-up included.
        train_seconds: rank 0's time inside `fit`.
    """

    model: Recommender
    workers: int
    seconds: float
    train_seconds: float

    @property
    def train_log(self) -> list[dict[str, float]]:
        """One entry per epoch (loss, and validation metrics when validated)."""
        return list(getattr(self.model, "train_log", []))


def fit_ray(
    job: Job,
    *,
    workers: int = 2,
    address: str | None = None,
    storage_path: str | Path | None = None,
    use_gpu: bool = False,
) -> RayTrainResult:
    """Train `job` with DDP on `workers` Ray Train workers and return the trained model.

    Args:
        job: the model name, its settings (device defaults to "cpu" without GPUs), the data and
            the seed.
        workers: DDP ranks, one Ray Train worker each (1 CPU, or 1 GPU with `use_gpu`).
        address: a running Ray cluster (`ray start --head` prints it); None starts a local one
            with `workers` CPUs for this fit and shuts it down after.
        storage_path: where Ray Train keeps the run and its checkpoint; must be reachable by
            every node of a multi-machine cluster. Default: a temporary folder.
        use_gpu: one GPU per worker (NCCL).

    Raises:
        ConfigError: Ray Train is missing, the model is not a sequence model, or workers < 1.
    """
    ray = _ray()
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from privrec.models.zoo import model_class

    if workers < 1:
        raise ConfigError(f"workers: {workers} is not a positive number of workers")
    if not issubclass(model_class(job.model), SequentialRecommender):
        raise ConfigError(
            f"model: {job.model} is not a sequence model; Ray Train fits sasrec and bert4rec"
        )
    params = {"device": "cuda" if use_gpu else "cpu", **job.params}
    job = Job(job.model, job.dataset, params, job.validation, job.seed)
    started = False
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="privrec-raytrain-") as tmp:
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address is None:
                kw["num_cpus"] = workers
            ray.init(address=address, **kw)
            started = True
        try:
            trainer = TorchTrainer(
                _worker,
                train_loop_config={"job": job},
                scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
                run_config=RunConfig(
                    name=f"privrec-{job.model}",
                    storage_path=str(Path(storage_path or tmp).resolve())
                    if "://" not in str(storage_path or "")
                    else str(storage_path),
                ),
            )
            result = trainer.fit()
            if result.checkpoint is None:
                raise ConfigError("ray train: the run ended without rank 0's checkpoint")
            with result.checkpoint.as_directory() as ckpt:
                model = Recommender.load(Path(ckpt) / _CHECKPOINT)
            train_seconds = float((result.metrics or {}).get("train_seconds", 0.0))
        finally:
            if started:
                ray.shutdown()
    seconds = time.perf_counter() - t0
    log.info("ray train model=%s workers=%d seconds=%.1f", job.model, workers, seconds)
    return RayTrainResult(model, workers, seconds, train_seconds)


@dataclass
class RayTrainFit(ShardedFit):
    """The plan `RecSys.train(..., sharded=...)` takes to train a sequence model on Ray Train.

    Sequence models (sasrec, bert4rec) are trained by `fit_ray` on `n_shards` workers (DDP
    ranks); the models with a sharded statistics fit (`SHARDED_MODELS`) take that fit, as with
    `ShardedFit`. The fitted state is copied into the service's model object in place.

    Attributes:
        n_shards: Ray Train workers (DDP ranks), or user shards for a statistics model.
        runner: where a statistics model's shards run; its `address` is the Ray cluster.
        storage_path: Ray Train's run storage (see `fit_ray`).
        last: the last `fit_ray` result (timings, the loss curve).
    """

    runner: ShardRunner = field(default_factory=lambda: ShardRunner(use_ray=True))
    storage_path: str | None = None
    last: RayTrainResult | None = field(default=None, repr=False)

    def fit(
        self,
        model: Recommender,
        dataset: InteractionDataset,
        *,
        rng: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
        noise_seed: int | None = None,
    ) -> Recommender:
        """Fit `model` on Ray Train (sequence models) or from sharded statistics (the others).

        Raises:
            ConfigError: the model has neither (e.g. ALS): train it without Ray.
        """
        if not isinstance(model, SequentialRecommender):
            if model.name not in SHARDED_MODELS:
                raise ConfigError(
                    f"model: {model.name} has no Ray fit; Ray Train fits sasrec and bert4rec, "
                    f"sharded statistics fit {', '.join(SHARDED_MODELS)}"
                )
            return super().fit(model, dataset, rng=rng, ledger=ledger, noise_seed=noise_seed)
        if model.privacy is not None or "epsilon" in type(model.config).model_fields:
            raise ConfigError(f"model: {model.name} is a DP model; train it without Ray")
        seed = seed_from(rng, int(getattr(model.config, "seed", 0)))
        job = Job(model.name, dataset, model.config.model_dump(), None, seed)
        self.last = fit_ray(
            job, workers=self.n_shards, address=self.runner.address, storage_path=self.storage_path
        )
        trained = self.last.model
        # The service saves the object it created: it takes the trained state in place.
        model.n_items = trained.n_items  # the network is rebuilt for this many items
        model._set_state(trained._state(), trained._meta())
        model._mark_fitted(trained.n_items)
        return model
