"""Ray Train: one training run on N workers (DDP), on one machine or many.

The epoch loop is `mtard.loop.fit`, unchanged; `RayContext` gives it ranks,
all-reduces (torch.distributed, set up by Ray Train: gloo on CPU, NCCL on GPU),
and checkpoints through `ray.train.report`. Only the student is wrapped in DDP;
the frozen teachers run locally on every worker.

`data.batch_size` is the *global* batch: each of N workers takes batch_size // N,
so a run on 1 or N workers sees the same number of samples per optimizer step
(the optimizer step is shared through DDP's gradient all-reduce).

Re-creating a trainer with the same (storage path, name) resumes from its last
checkpoint: that is how `--resume` works and how a search re-runs a trial.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from mtard import checkpoint as ckpt
from mtard.checkpoint import CHECKPOINT_FILE
from mtard.config import TrainConfig, config_from_dict, to_dict
from mtard.errors import MtardError
from mtard.loop import BEST_FILE, Context, StopRule, TrainingDiverged, fit
from mtard.runs import CHECKPOINTS_TO_KEEP, failure_report
from mtard.storage import absolute, is_uri, put_atomic


def wants_sync_batchnorm(device: torch.device, world_size: int, enabled: bool = True) -> bool:
    """Whether the student's BatchNorm layers become `SyncBatchNorm`: on CUDA with several workers.

    With N workers each BN layer otherwise normalises over batch_size/N images, so the results
    would depend on the worker count. torch's SyncBatchNorm runs on CUDA only (its forward
    rejects CPU tensors), so on CPU/gloo BN stays per-worker.
    """
    return enabled and device.type == "cuda" and world_size > 1


def prepare_batchnorm(model: nn.Module, device: torch.device, world_size: int, enabled: bool = True) -> nn.Module:
    """`model` with `SyncBatchNorm` where `wants_sync_batchnorm` says so, else unchanged."""
    if wants_sync_batchnorm(device, world_size, enabled):
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


class RayContext(Context):
    """The loop's view of one Ray Train worker."""

    def __init__(self, log_dir: str | None = None, *, sync_batchnorm: bool = True, stop_rule: StopRule | None = None):
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.local_rank = context.get_local_rank()
        super().__init__(ray.train.torch.get_device(), stop_rule)  # a search's rung judge (MO-ASHA) or None
        self.sync_batchnorm = sync_batchnorm
        self.log = None
        if log_dir and self.rank == 0:
            from mtard.logs import MetricsLog

            self.log = MetricsLog(Path(log_dir))

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        if self.world_size == 1:
            return t
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def all_reduce_mean(self, t: Tensor) -> Tensor:
        return t if self.world_size == 1 else self.all_reduce_sum(t) / self.world_size

    def rung_stop(self, epoch: int, metrics: dict) -> bool:
        """Rank 0 asks the judge; its answer reaches every rank, so all leave the loop together."""
        if self.stop_rule is None or not self.stop_rule.asks_at(epoch):
            return False
        stop = self.stop_rule.stops(epoch, metrics) if self.rank == 0 else False
        return bool(self.all_reduce_sum(torch.tensor([1.0 if stop else 0.0], device=self.device)).item() > 0)

    def once_per_node(self, fn) -> None:
        if self.local_rank == 0:
            fn()
        if self.world_size > 1:
            dist.barrier()

    def prepare_model(self, model: nn.Module) -> nn.Module:
        import ray.train.torch

        model = prepare_batchnorm(model, self.device, self.world_size, self.sync_batchnorm)
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        if self.rank == 0 and self.world_size > 1 and has_bn and not wants_sync_batchnorm(self.device, self.world_size, self.sync_batchnorm):
            why = "scaling.sync_batchnorm is off" if self.device.type == "cuda" else "torch's SyncBatchNorm runs on CUDA only"
            print(f"mtard: BatchNorm stays per-worker ({why}): each BN layer normalises over "
                  f"data.batch_size/{self.world_size} images, so results depend on the worker count", flush=True)
        # DDP only for the student; with one worker there is nothing to synchronise.
        return ray.train.torch.prepare_model(model, parallel_strategy="ddp" if self.world_size > 1 else None)

    def latest_checkpoint(self) -> dict | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            return ckpt.read(Path(directory) / CHECKPOINT_FILE, self.device)

    def report(self, metrics: dict, payload: dict | None) -> None:
        import ray.train

        if self.log is not None:
            self.log.write(metrics)
        if payload is None:
            ray.train.report(metrics)  # a barrier: every rank reports every epoch
            return
        with tempfile.TemporaryDirectory() as directory:
            ckpt.save(Path(directory) / CHECKPOINT_FILE, payload)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))

    def save_best(self, payload: dict) -> None:
        """`BEST_FILE` in the run's storage directory (beside Ray Train's `checkpoint_*` folders).

        Ray Train keeps only the 2 latest checkpoints, so the selected epoch's weights are
        written by rank 0 straight into the storage (local path, shared filesystem or a cloud
        URI), to a temporary name first and then moved over the previous best.
        """
        import ray.train

        storage = ray.train.get_context().get_storage()  # Ray's DeveloperAPI: the RunConfig's filesystem and paths
        with tempfile.TemporaryDirectory() as directory:
            local = Path(directory) / BEST_FILE
            ckpt.save(local, payload)
            put_atomic(local, storage.storage_filesystem, storage.experiment_fs_path, BEST_FILE)


def fit_reporting_divergence(cfg: TrainConfig, ctx: Context) -> None:
    """`fit`, but a diverged run is reported (NaN objectives, `diverged: 1`) and ends normally.

    Divergence is deterministic: a restart would diverge again. Every rank reports it, so Ray
    Train's report barrier matches; the caller (a search, `train_distributed`) sees a failed run.
    """
    try:
        fit(cfg, ctx)
    except TrainingDiverged as err:
        ctx.report(failure_report(err.epoch, str(err), diverged=True), None)


def train_fn_per_worker(config: dict) -> None:
    """The Ray Train entry point: `config` = {"cfg": TrainConfig as a dict, "log_dir": optional path}."""
    cfg = config_from_dict(config["cfg"])
    ctx = RayContext(config.get("log_dir"), sync_batchnorm=cfg.scaling.sync_batchnorm, stop_rule=config.get("stop_rule"))
    fit_reporting_divergence(cfg, ctx)


def scaling_config(cfg: TrainConfig):
    import ray.train

    s = cfg.scaling
    resources = {"CPU": s.cpus_per_worker}
    if s.gpus_per_worker:
        resources["GPU"] = s.gpus_per_worker
    resources.update(s.resources)
    return ray.train.ScalingConfig(
        num_workers=s.workers,
        use_gpu=s.gpus_per_worker > 0,
        resources_per_worker=resources,
        placement_strategy=s.placement_strategy,
        accelerator_type=s.accelerator_type or None,
    )


def build_trainer(
    cfg: TrainConfig, *, storage: str, name: str, callbacks: list | None = None, log_dir: str | None = None, stop_rule: StopRule | None = None
):
    """A TorchTrainer for `cfg`; the same (storage, name) resumes the run from its last checkpoint.

    `stop_rule`: a search's early-stopping rule (picklable: it travels in the loop config), asked by
    rank 0 at the epochs it names.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    return TorchTrainer(
        train_fn_per_worker,
        train_loop_config={"cfg": to_dict(cfg), "log_dir": log_dir, "stop_rule": stop_rule},
        scaling_config=scaling_config(cfg),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=cfg.scaling.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=CHECKPOINTS_TO_KEEP),
            callbacks=callbacks or [],
        ),
    )


def fit_trainer(trainer, storage: str):
    """Run a trainer; turn Ray's failures into one actionable message."""
    from ray.train import TrainingFailedError

    try:
        return trainer.fit()
    except TrainingFailedError as err:
        text = str(err)
        if "Unable to set up cluster storage" in text:
            raise MtardError(
                f"storage {storage} is not reachable from every node: give --storage a cloud URI "
                f"(s3://bucket/prefix, gs://...) or a shared filesystem path mounted on all nodes"
            ) from err
        raise MtardError(f"training failed on a worker after {trainer.run_config.failure_config.max_failures} restarts: {text.strip().splitlines()[-1]}") from err


# Ray Train's controller polls its workers every 2 s by default, and a run's teardown waits on several
# polls: ~4.5 s per run, measured on digits, against ~1.6 s at 0.5 s. A local Ray started by mtard
# inherits this from our environment (set it yourself to override; a remote cluster keeps its own).
FAST_POLLING = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}


def use_fast_polling() -> None:
    """Before starting a local Ray: short runs (a search's trials) should not wait on slow polls."""
    for key, value in FAST_POLLING.items():
        os.environ.setdefault(key, value)


def check_cluster_address(address: str | None, *, timeout_s: float = 5.0) -> None:
    """Fail within seconds, naming the address and the fix, when nothing listens at a Ray address
    (`ray.init` would retry for minutes and ignore Ctrl-C). "auto", "local" and None pass: Ray
    itself finds or starts those."""
    import socket

    if not address or address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise MtardError(f"--address {address!r}: expected host:port (the head's GCS, e.g. 10.0.0.1:6379), ray://host:10001, or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as err:
        raise MtardError(
            f"cannot reach a Ray cluster at {address} ({err.strerror or err}): check the address and that the cluster "
            f"is up (`ray status` on the head; start one with `ray start --head`), or leave --address out to run on a local Ray"
        ) from err


def train_distributed(cfg: TrainConfig, *, address: str | None = None, storage: str | None = None, resume: bool = False) -> dict:
    """`mtard train --workers N`: one Ray Train run; results under <storage>/<name>."""
    import ray

    from mtard.config import save_config
    from mtard.logs import read_metrics
    from mtard.runs import check_run_dir

    if not ray.is_initialized():
        check_cluster_address(address or os.environ.get("RAY_ADDRESS"))  # in seconds, before any work
    storage = absolute(storage, cfg.out_dir)
    local = not is_uri(storage)
    run_dir = Path(storage) / cfg.name if local else None
    if local:  # a bucket is Ray's to check; a local folder is checked like a plain run's
        check_run_dir(run_dir, cfg, resume=resume)
        save_config(cfg, run_dir / "config.yaml")
    from mtard.staging import stage_run_teachers

    stage_run_teachers(cfg, storage)  # before any worker starts: every node fetches them from the storage
    if not ray.is_initialized():
        # The dashboard serves the State API, which Ray Train's placement-group cleaner polls: without
        # it the cleaner logs a warning every second and cannot free the workers of a crashed run.
        use_fast_polling()
        ray.init(address=address, include_dashboard=True, configure_logging=False, log_to_driver=cfg.runtime.progress)
    cfg.runtime.progress = False  # workers log through Ray; a progress bar per worker is noise
    trainer = build_trainer(cfg, storage=storage, name=cfg.name, log_dir=str(run_dir) if local else None)
    result = fit_trainer(trainer, storage)
    # result.metrics holds only the last *checkpointed* report; rank 0's log has every epoch.
    metrics = read_metrics(run_dir)[-1] if local else dict(result.metrics or {})
    if metrics.get("diverged"):
        raise MtardError(metrics["error"])
    if result.checkpoint is not None:
        metrics["checkpoint"] = str(Path(result.checkpoint.path) / CHECKPOINT_FILE)
    return metrics
