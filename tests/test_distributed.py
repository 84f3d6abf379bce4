"""One training run on Ray Train workers (DDP over gloo, CPU), on real local Ray clusters.

Every test starts its own cluster and shuts it down (fixtures). Tests that need to see
inside the workers swap `mtard.distributed.train_fn_per_worker` for `recording_train_fn`:
the same `mtard.loop.fit`, with a `RayContext` subclass that, on every rank, appends
what that rank holds at each epoch end (its pid and node, the metrics, its *own* copy of
the balance state τ/w, a hash of its student weights, its unreduced validation counts)
to `<run>/records/rank<R>.jsonl`, then calls the real `report`.

Reported metrics are all-reduced, so they agree across ranks by construction; the local
τ/w and weights are what show that the ranks really stay in lockstep.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from conftest import TINY_CLEAN, TINY_ROBUST, fast_polling, tiny_catalog_text
from mtard import checkpoint as ckpt
from mtard.distributed import RayContext
from mtard.errors import MtardError
from mtard.logs import read_metrics
from mtard.loop import BEST_FILE

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow

# Workers cannot import this test module: ship its functions and classes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

TIMING = {"train_time_s", "samples_per_s", "epoch_time_s", "time_in_epochs_s"}  # rank-local clocks
VAL_SAMPLES = 64  # eval.max_samples in every config here
TEACHER_EPOCHS = 5  # 1-epoch teachers give near-uniform targets: a student learns ~nothing from them


# ---------------------------------------------------------------- worker side


class RecordingContext(RayContext):
    """`RayContext` that records each rank's view to a file; optionally blocks rank R at epoch E to be killed."""

    def __init__(self, log_dir: str, record_dir: Path):
        super().__init__(log_dir)
        import ray as ray_

        self.record_dir = record_dir
        self.record_dir.mkdir(parents=True, exist_ok=True)
        self.node_id = ray_.get_runtime_context().get_node_id()
        self.epoch = 1  # the epoch being trained
        self.student = self.method = None
        self.val_local = self.val_global = None
        kill = record_dir / "kill.json"
        self.kill = json.loads(kill.read_text()) if kill.exists() else None
        self._write({"event": "start"})

    def _write(self, row: dict) -> None:
        row = {"rank": self.rank, "pid": os.getpid(), "node": self.node_id, **row}
        with open(self.record_dir / f"rank{self.rank}.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def prepare_model(self, model):
        self.student = super().prepare_model(model)
        return self.student

    def latest_checkpoint(self):
        state = super().latest_checkpoint()
        self.epoch = 1 if state is None else state["epoch"] + 1
        self._write({"event": "resume", "from_epoch": None if state is None else state["epoch"]})
        return state

    def all_reduce_mean(self, t):
        k = self.kill
        if k and self.rank == k["rank"] and self.epoch == k["epoch"]:
            pid_file = self.record_dir / "victim.pid"
            if not pid_file.exists():  # first attempt only: the restarted worker runs on
                tmp = pid_file.with_suffix(".tmp")
                tmp.write_text(str(os.getpid()))
                tmp.rename(pid_file)
                deadline = time.monotonic() + 120  # mid-step, inside the epoch: wait for SIGKILL
                while time.monotonic() < deadline:
                    time.sleep(0.05)
        return super().all_reduce_mean(t)

    def all_reduce_sum(self, t):
        out = super().all_reduce_sum(t)
        if t.numel() == 3:  # validation_metrics(): (clean correct, pgd correct, samples) of this rank's shard
            self.val_local, self.val_global = t.tolist(), out.tolist()
        return out

    def report(self, metrics, payload):
        from mtard.methods import unwrap

        digest = hashlib.sha256()
        for name, value in unwrap(self.student).state_dict().items():
            digest.update(name.encode() + value.detach().cpu().contiguous().numpy().tobytes())
        self._write({
            "event": "report", "epoch": metrics["epoch"], "metrics": metrics, "method": self.method.state_dict(),
            "weights_sha256": digest.hexdigest(), "val_local": self.val_local, "val_global": self.val_global,
        })
        super().report(metrics, payload)
        self.epoch = metrics["epoch"] + 1


def recording_train_fn(config: dict) -> None:
    """Stands in for `train_fn_per_worker`: the real `fit`, seen through `RecordingContext`."""
    import mtard.loop
    from mtard.config import config_from_dict

    ctx = RecordingContext(config["log_dir"], Path(config["log_dir"]) / "records")
    original = mtard.loop.build_method

    def capture(*args, **kwargs):  # keep this rank's method: its τ/w are local state
        ctx.method = original(*args, **kwargs)
        return ctx.method

    mtard.loop.build_method = capture
    try:
        mtard.loop.fit(config_from_dict(config["cfg"]), ctx)
    finally:
        mtard.loop.build_method = original


# ---------------------------------------------------------------- driver side


def records(run_dir: Path, rank: int, event: str = "report") -> list[dict]:
    path = run_dir / "records" / f"rank{rank}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in rows if r["event"] == event]


def committed_epochs(run_dir: Path) -> list[int]:
    """Epochs whose checkpoint the Train controller has registered (its snapshot on storage)."""
    try:
        snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, ValueError):  # not written yet, or caught mid-write
        return []
    return [c["metrics"]["epoch"] for c in snapshot["checkpoint_results"]]


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING}


def assert_placement_groups_removed(timeout_s: float = 30.0) -> None:
    """Every placement group this cluster ever had is REMOVED (removal may lag the run's end)."""
    deadline = time.monotonic() + timeout_s
    while True:
        table = ray.util.placement_group_table()
        left = {pg: e["state"] for pg, e in table.items() if e["state"] != "REMOVED"}
        if table and not left:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"placement groups left behind: {left or 'none were ever created'}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def _teacher_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny MLP teachers, trained for a few epochs (once per module, in this process)."""
    from mtard.teachers import load_catalog
    from mtard.train import ensure_teachers

    root = tmp_path_factory.mktemp("dist_teachers")
    catalog = root / "catalog.yaml"
    text = tiny_catalog_text("dist")
    assert text.count("optim.epochs: 1,") == 2
    catalog.write_text(text.replace("optim.epochs: 1,", f"optim.epochs: {TEACHER_EPOCHS},"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MTARD_TEACHERS", str(root))
        ensure_teachers(load_catalog(catalog), [("teachers.clean", TINY_CLEAN), ("teachers.robust", TINY_ROBUST)], "digits", progress=False)
    return catalog, root


@pytest.fixture
def teachers(_teacher_store, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$MTARD_TEACHERS -> the trained teachers, set *before* a cluster starts so its workers inherit it.

    Also Ray Train's fast polling, as `mtard train --workers N` sets it when it starts Ray itself.
    """
    catalog, root = _teacher_store
    monkeypatch.setenv("MTARD_TEACHERS", str(root))
    fast_polling(monkeypatch)
    return catalog


@pytest.fixture
def dist_cfg(make_cfg, teachers: Path):
    """Tiny 2-worker MTARD on digits (MLP student, 2-step attacks, 64 validation samples)."""

    def make(*overrides: str, name: str = "run"):
        return make_cfg(
            "mtard", "scaling.workers=2", "runtime.threads=1", "balance.tau_lr=0.05", "method.kl_scale=10",
            *overrides, catalog=teachers, name=name,
        )

    return make


_shared = {"up": False}  # the single-node cluster below is up and was started by this module


def _shutdown_ray() -> None:
    ray.shutdown()
    _shared["up"] = False


@pytest.fixture(scope="module", autouse=True)
def _no_ray_after_this_module():
    """Whatever cluster the last test here used is shut down with the module."""
    yield
    _shutdown_ray()


@pytest.fixture
def local_ray(teachers):
    """A one-node Ray cluster with 2 CPUs.

    Starting a cluster costs 10-25 s on the 2 shared test cores, so consecutive single-node
    tests share one; it is shut down after any test that leaves a placement group behind,
    before the two-node test and at the end of the module.
    """
    if not (_shared["up"] and ray.is_initialized()):
        ray.shutdown()  # not ours (another module's), or gone
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
        _shared["up"] = True
    yield
    table = ray.util.placement_group_table()
    if any(e["state"] != "REMOVED" for e in table.values()):
        _shutdown_ray()


@pytest.fixture
def two_node_ray(teachers):
    """Two Ray nodes (raylets) on this machine, 1 CPU each; the driver is connected to the head."""
    from ray.cluster_utils import Cluster

    _shutdown_ray()  # a single-node cluster left by an earlier test
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, configure_logging=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch):
    """Make `train_distributed` run `recording_train_fn` on the workers."""
    import mtard.distributed

    monkeypatch.setattr(mtard.distributed, "train_fn_per_worker", recording_train_fn)


# ---------------------------------------------------------------- tests


def test_two_workers_learn_and_stay_in_lockstep(local_ray, recording, dist_cfg) -> None:
    from mtard.data import load_splits
    from mtard.distributed import train_distributed
    from mtard.loop import Context, validation_metrics

    cfg = dist_cfg("optim.epochs=3", name="lockstep")
    final = train_distributed(cfg)
    run_dir = Path(cfg.out_dir) / cfg.name
    r0, r1 = records(run_dir, 0), records(run_dir, 1)
    assert [r["epoch"] for r in r0] == [r["epoch"] for r in r1] == [1, 2, 3]
    assert r0[0]["pid"] != r1[0]["pid"] and r0[0]["node"] == r1[0]["node"]

    for a, b in zip(r0, r1):
        assert without_timing(a["metrics"]) == without_timing(b["metrics"])
        # Each rank's own controllers and weights, not an all-reduced summary: bitwise equal.
        assert a["method"] == b["method"], f"ranks disagree on τ/w at epoch {a['epoch']}"
        assert a["weights_sha256"] == b["weights_sha256"], f"student weights differ at epoch {a['epoch']}"
        # Validation is sharded (32 + 32 samples) and summed: rank 0 reports the whole split.
        assert a["val_local"][2] + b["val_local"][2] == VAL_SAMPLES and a["val_local"][2] == VAL_SAMPLES / 2
        summed = [x + y for x, y in zip(a["val_local"], b["val_local"])]
        assert a["val_global"] == b["val_global"] == summed
        assert a["metrics"]["val_clean_acc"] == summed[0] / VAL_SAMPLES
        assert a["metrics"]["val_pgd_acc"] == summed[1] / VAL_SAMPLES

    last = r0[-1]["method"]
    # τ moved (tau_lr 0.05; measured tau_nat 1 -> ~3.2 after 3 epochs) and w left 0.5: the check is not vacuous.
    assert last["entropy"]["tau_nat"] != 1.0 or last["entropy"]["tau_adv"] != 1.0
    assert last["weights"]["w_nat"] != 0.5
    assert r0[-1]["metrics"]["tau_nat"] > 1.5

    # Learns: measured val clean acc ~0.78 after 3 epochs (chance 0.1), loss falls.
    assert final["epoch"] == 3 and final["val_clean_acc"] > 0.5
    assert r0[0]["metrics"]["loss"] > r0[-1]["metrics"]["loss"]
    assert without_timing({k: v for k, v in final.items() if k != "checkpoint"}) == without_timing(r0[-1]["metrics"])
    assert [m["epoch"] for m in read_metrics(run_dir)] == [1, 2, 3]  # rank 0's log, once per epoch

    # The reported accuracy is the whole split's: recompute it in one process from the final checkpoint.
    model = ckpt.load_checkpoint(Path(final["checkpoint"]))
    cfg.eval.pgd_steps = 0  # PGD noise depends on the sharding; clean accuracy does not
    again = validation_metrics(model, cfg, load_splits(cfg.data), Context(torch.device("cpu")), nullcontext())
    assert again["val_clean_acc"] == final["val_clean_acc"]
    assert_placement_groups_removed()


def test_killed_worker_restarts_from_the_last_checkpoint_and_the_run_resumes_later(local_ray, recording, dist_cfg) -> None:
    from mtard.distributed import train_distributed

    # Selecting the best epoch on clean accuracy: best.pt must outlive Ray Train's 2 kept checkpoints.
    best = ("eval.select=best", "eval.select_criterion=clean", "eval.select_every=1")
    cfg = dist_cfg("optim.epochs=2", "scaling.max_failures=1", "eval.pgd_steps=0", *best, name="killed")
    run_dir = Path(cfg.out_dir) / cfg.name
    (run_dir / "records").mkdir(parents=True)
    (run_dir / "records" / "kill.json").write_text(json.dumps({"rank": 1, "epoch": 2}))
    pid_file = run_dir / "records" / "victim.pid"
    killed: list[int] = []
    stop = threading.Event()

    def killer() -> None:
        # SIGKILL rank 1 once it is inside epoch 2 *and* the controller has committed epoch 1's
        # checkpoint. Ray Train commits a checkpoint only after it has polled every rank's report
        # (every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S: 0.5 s here, 2 s by default): a worker killed sooner takes its
        # report with it, and the restart repeats the epoch from the previous checkpoint.
        while not stop.is_set():
            if pid_file.exists() and 1 in committed_epochs(run_dir):
                pid = int(pid_file.read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        first = train_distributed(cfg)
    finally:
        stop.set()
        thread.join()

    # 1. A worker killed mid-run: the group restarts once, from epoch 1's checkpoint.
    assert len(killed) == 1
    starts = {rank: records(run_dir, rank, "start") for rank in (0, 1)}
    resumes = {rank: records(run_dir, rank, "resume") for rank in (0, 1)}
    reports = {rank: records(run_dir, rank) for rank in (0, 1)}
    assert starts[1][0]["pid"] == killed[0]
    assert [len(starts[r]) for r in (0, 1)] == [2, 2]  # one restart of the whole group
    assert [r["from_epoch"] for r in resumes[0]] == [r["from_epoch"] for r in resumes[1]] == [None, 1]
    for rank in (0, 1):
        first_pid, second_pid = starts[rank][0]["pid"], starts[rank][1]["pid"]
        assert first_pid != second_pid
        # Epoch 1 ran once (first group); the restarted group began at epoch 2.
        assert [(r["pid"], r["epoch"]) for r in reports[rank]] == [(first_pid, 1), (second_pid, 2)]
    assert first["epoch"] == cfg.optim.epochs == 2
    assert [m["epoch"] for m in read_metrics(run_dir)] == [1, 2]
    assert ckpt.read(Path(first["checkpoint"]))["epoch"] == 2
    assert_placement_groups_removed()

    # 2. The same storage and name again: refused before any worker starts, unless --resume.
    with pytest.raises(MtardError, match="already holds a run.*--resume"):
        train_distributed(cfg)
    (run_dir / "records" / "kill.json").unlink()
    cfg.optim.epochs = 3
    second = train_distributed(cfg, resume=True)
    assert second["epoch"] == 3
    # Rank 0 appends to the run's log: epochs 1 and 2 once (first run), then only epoch 3.
    rows = read_metrics(run_dir)
    assert [m["epoch"] for m in rows] == [1, 2, 3]
    assert without_timing(rows[1]) == without_timing({k: v for k, v in first.items() if k != "checkpoint"})
    assert ckpt.read(Path(second["checkpoint"]))["epoch"] == 3
    assert Path(second["checkpoint"]).parent != Path(first["checkpoint"]).parent
    accs = [m["val_clean_acc"] for m in rows]
    best_epoch = accs.index(max(accs)) + 1
    assert second["selected_epoch"] == best_epoch
    kept = ckpt.read(run_dir / BEST_FILE)
    assert kept["epoch"] == best_epoch and kept["metrics"]["val_clean_acc"] == max(accs)
    assert not list(run_dir.glob(f"{BEST_FILE}.tmp"))
    assert_placement_groups_removed()


def test_divergence_fails_the_run_without_restarts(local_ray, dist_cfg) -> None:
    from mtard.distributed import train_distributed

    cfg = dist_cfg("optim.lr=1e30", "eval.pgd_steps=0", "scaling.max_failures=2", name="boom")
    t0 = time.monotonic()
    with pytest.raises(MtardError, match="training diverged.*epoch 1.*lower optim.lr"):
        train_distributed(cfg)
    rows = read_metrics(Path(cfg.out_dir) / cfg.name)
    assert len(rows) == 1 and rows[0]["diverged"] == 1.0  # one attempt, no worker-group restarts
    assert time.monotonic() - t0 < 300
    assert_placement_groups_removed()


def test_strict_spread_places_workers_on_two_nodes(two_node_ray, recording, dist_cfg) -> None:
    from mtard.distributed import train_distributed

    cfg = dist_cfg("scaling.placement_strategy=STRICT_SPREAD", "eval.pgd_steps=0", name="spread")
    final = train_distributed(cfg)
    assert final["epoch"] == 1 and math.isfinite(final["loss"])
    run_dir = Path(cfg.out_dir) / cfg.name
    nodes = {rank: records(run_dir, rank)[-1]["node"] for rank in (0, 1)}
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(alive) == 2 and nodes[0] != nodes[1] and set(nodes.values()) == alive
    strategies = {e["strategy"] for e in ray.util.placement_group_table().values()}
    assert strategies == {"STRICT_SPREAD"}
    assert_placement_groups_removed()


def test_fast_polling_is_a_default_the_user_can_override(monkeypatch) -> None:
    from mtard.distributed import use_fast_polling

    monkeypatch.delenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", raising=False)
    use_fast_polling()
    assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "0.5"
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "3")
    use_fast_polling()
    assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "3"
