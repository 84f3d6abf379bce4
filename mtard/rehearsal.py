"""The Python steps of `launch/rehearse.sh`: the dress rehearsal of the cloud workflow on one machine.

The shell script drives the rehearsal (starts the fake multi-node cluster, submits the search
through `launch/submit.sh`, stops the cluster); every step that needs Python is a sub-command here:

    prepare YAML PORT...                    shell assignments: free ports, head flags, worker count
    wait-nodes ADDR N PID YAML              until the head and N worker nodes are up
    snapshot REPO RUN                       the repository as `ray job submit --working-dir .` uploads it
    wait-job ADDR JOB TIMEOUT               until the job ends (exit 0 only if it SUCCEEDED)
    check ADDR JOB EXP NODE_TEACHERS STORE  the checks on what the job left (exit 1 if one fails)

Each failure ends the process with one message and a non-zero status, as the script expects.
The checks are computed as `Check` values (pure functions where no cluster is needed) and printed
by `report_checks`.

The script runs this file by path, `python -P mtard/rehearsal.py STEP ...` (`-P`: mtard/ is not put
on sys.path), rather than `python -m mtard.rehearsal STEP ...` (which works too): importing the
`mtard` package loads torch, seconds per step that no step needs. So this module imports nothing of
mtard at the top; Ray is imported inside the steps that talk to the cluster, and mtard's teacher code
inside the function that runs on a worker node.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PREFIX = "[rehearse.sh]"  # the driver script's name: its messages and ours read as one log
NODE_WAIT_S = 180
JOB_API_EXTRA_WAIT_S = 60
PLACEMENT_GROUP_WAIT_S = 60
INFEASIBLE = "No available node types can fulfill resource request"
# The fake worker nodes carry FAKE_GPU (launch/local_cluster.yaml): a task asking for a sliver of
# it lands on a worker node, never on the head.
WORKER_NODE_RESOURCE = "FAKE_GPU"
STANDARD_RESOURCES = {"CPU", "GPU", "memory", "object_store_memory"}


def say(message: str) -> None:
    print(f"{PREFIX} {message}", file=sys.stderr)


def sha256_hex(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# ---------------------------------------------------------------- before the cluster


def free_port(preferred: int) -> int:
    """`preferred` if nothing listens on it, else a free ephemeral port."""
    for port in (preferred, 0):
        with socket.socket() as probe:
            # like the servers themselves: a port in TIME_WAIT is free, one with a listener is not
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise OSError("no free port")


def head_start_flags(cluster: dict[str, Any]) -> list[str]:
    """The `ray start --head` resource flags for the head node type of a cluster YAML."""
    head = dict(cluster["available_node_types"][cluster["head_node_type"]]["resources"])
    flags = []
    for key, flag in (("CPU", "--num-cpus"), ("GPU", "--num-gpus"), ("object_store_memory", "--object-store-memory"), ("memory", "--memory")):
        if key in head:
            flags.append(f"{flag}={head.pop(key)}")
    if head:
        flags.append("--resources=" + json.dumps(head, separators=(",", ":")))
    return flags


def _worker_types(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    return [spec for name, spec in cluster["available_node_types"].items() if name != cluster["head_node_type"]]


def min_worker_nodes(cluster: dict[str, Any]) -> int:
    """How many worker nodes the autoscaler starts at once (the sum of the worker types' min_workers)."""
    return sum(spec.get("min_workers", 0) for spec in _worker_types(cluster))


def worker_custom_resources(cluster: dict[str, Any]) -> set[str]:
    """The custom resources of the worker node types: what tells a fake worker node from the head."""
    names: set[str] = set()
    for spec in _worker_types(cluster):
        names |= set(spec["resources"]) - STANDARD_RESOURCES
    return names


def prepare_lines(cluster: dict[str, Any], ports: Sequence[int]) -> list[str]:
    """Bash assignments for the driver to `eval`: PORTS (each wanted port, or a free stand-in), HEAD_FLAGS, MIN_WORKERS."""
    return [
        "PORTS=(" + " ".join(str(free_port(p)) for p in ports) + ")",
        "HEAD_FLAGS=(" + " ".join(shlex.quote(f) for f in head_start_flags(cluster)) + ")",
        f"MIN_WORKERS={min_worker_nodes(cluster)}",
    ]


def read_cluster_yaml(path: str) -> dict[str, Any]:
    with open(path) as f:
        return yaml.safe_load(f)


# ---------------------------------------------------------------- waiting on the cluster and the job


def wait_for_nodes(addr: str, want: int, head_pid: int, cluster: dict[str, Any]) -> None:
    """Until the head (with `mtard_driver`) and `want` worker nodes are alive, then until the job API answers."""
    from ray.job_submission import JobSubmissionClient
    from ray.util.state import list_nodes

    worker_custom = worker_custom_resources(cluster)
    deadline, last, err = time.time() + NODE_WAIT_S, None, None
    while time.time() < deadline:
        try:
            os.kill(head_pid, 0)
        except OSError:
            sys.exit("ray start died; see head.log")
        try:
            nodes = [n for n in list_nodes(address=addr, detail=True, raise_on_missing_output=False) if n.state == "ALIVE"]
        except Exception as e:  # the dashboard is still starting
            err = e
            time.sleep(2)
            continue
        heads = [n for n in nodes if n.is_head_node and "mtard_driver" in n.resources_total]
        workers = [n for n in nodes if not n.is_head_node and worker_custom <= set(n.resources_total)]
        status = (len(heads), len(workers))
        if status != last:
            say(f"nodes up: head={status[0]} workers={status[1]}/{want}")
            last = status
        if heads and len(workers) >= want:
            for n in [*heads, *workers]:
                shown = {k: v for k, v in n.resources_total.items() if not k.startswith("node:") and k not in ("memory", "object_store_memory")}
                say(f"  {'head  ' if n.is_head_node else 'worker'} {n.node_id} {shown}")
            break
        time.sleep(1)
    else:
        sys.exit(f"timed out waiting for nodes (last: {last}, last error: {err})")
    # The job API is a separate dashboard module that can come up after the State API.
    while True:
        try:
            JobSubmissionClient(addr).list_jobs()
            return
        except Exception as e:
            if time.time() > deadline + JOB_API_EXTRA_WAIT_S:
                sys.exit(f"the job API at {addr} never answered: {e}")
            time.sleep(2)


def infeasible_request(logs: str) -> str | None:
    """The autoscaler's line saying no node type can satisfy a request, if the job's logs hold one."""
    return next((line.strip() for line in logs.splitlines() if INFEASIBLE in line), None)


def wait_for_job(addr: str, job_id: str, timeout_s: int) -> int:
    """0 once the job SUCCEEDED, 1 if it ended otherwise, ran past `timeout_s` or asked for what no node offers."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(addr)
    start, last, next_log_check = time.time(), None, 0.0
    while True:
        status = client.get_job_status(job_id)
        if status != last:
            say(f"job {status.value} after {time.time() - start:.0f} s")
            last = status
        if status.is_terminal():
            return 0 if status == JobStatus.SUCCEEDED else 1
        if time.time() - start > timeout_s:
            say(f"job still {status.value} after {timeout_s} s: stopping it")
            client.stop_job(job_id)
            return 1
        if time.time() > next_log_check:  # fail fast on requests no node type can satisfy
            next_log_check = time.time() + 30
            line = infeasible_request(client.get_job_logs(job_id))
            if line is not None:
                say(f"infeasible resource request:\n  {line}\n  (the fake worker nodes offer what launch/local_cluster.yaml lists)")
                client.stop_job(job_id)
                return 1
        time.sleep(1)  # a status request is cheap; a rehearsal job ends within seconds of its search


def snapshot_working_dir(repo: str, run: Path) -> None:
    """Unpack into `run/workdir` exactly what `ray job submit --working-dir .` would upload (same ignore rules, same size limit)."""
    # Ray's own packaging code, private: the point is to match the upload byte for byte.
    from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE, create_package, unzip_package

    pkg = run / "workdir.zip"
    for attempt in range(3):  # a tree being edited meanwhile (a vanishing __pycache__) can trip the walk
        try:
            create_package(repo, pkg, include_gitignore=True)
            break
        except OSError as e:
            say(f"snapshot attempt {attempt + 1} failed: {e!r}")
            pkg.unlink(missing_ok=True)
            time.sleep(1)
    else:
        sys.exit("could not snapshot the repository")
    size = pkg.stat().st_size
    say(f"working-dir package: {size / 2**20:.1f} MiB (Ray's upload limit {GCS_STORAGE_MAX_SIZE / 2**20:.0f} MiB)")
    if size > GCS_STORAGE_MAX_SIZE:
        sys.exit("the working dir is too big for `ray job submit --working-dir .`: add the large files to .gitignore or .rayignore")
    unzip_package(pkg, str(run / "workdir"), remove_top_level_directory=False, unlink_zip=True)


# ---------------------------------------------------------------- checks on what the job left


@dataclass(frozen=True)
class Check:
    ok: bool
    message: str


def short_ids(ids: Iterable[str]) -> list[str]:
    return sorted(i[-8:] for i in ids)


def pareto_checks(exp: Path) -> list[Check]:
    pareto = exp / "pareto.csv"
    if pareto.is_file():
        with open(pareto, newline="") as f:
            rows = list(csv.reader(f))
    else:
        rows = []
    return [Check(len(rows) >= 2, f"{pareto} has a header and >= 1 row ({max(len(rows) - 1, 0)} rows)")]


def teacher_checks(node_teachers: Path, store: Path) -> list[Check]:
    """The driver staged the teachers in `store`, each named by its sha256; the nodes fetched them from there and trained none."""
    staged = sorted(store.glob("*.pt"))
    fetched = sorted((node_teachers / "staged").glob("*.pt"))
    return [
        Check(len(staged) >= 2 and all(sha256_hex(p) == p.stem for p in staged), f"{len(staged)} teacher(s) staged in {store}, each named by its sha256"),
        Check(
            len(fetched) >= 2 and {p.name for p in fetched} <= {p.name for p in staged} and all(sha256_hex(p) == p.stem for p in fetched),
            f"the nodes fetched {len(fetched)} staged teacher(s) into {node_teachers / 'staged'} (sha256 checked)",
        ),
        Check(not any(node_teachers.rglob("runs")) and not (node_teachers / "digits").exists(), "no node trained a teacher or read the driver's cache"),
    ]


def node_spread_checks(head: set[str], worker_nodes: set[str], train_nodes: set[str], controller_nodes: set[str], trial_nodes: set[str]) -> list[Check]:
    """Where the job's actors ran: training on >= 2 worker nodes and never on the head.

    Ray Train trials (RayTrainWorker / TrainController actors seen) train in their workers, with
    their controllers and trial drivers on the head; direct trials train in their Tune trial
    process (ImplicitFunc).
    """
    if train_nodes or controller_nodes:
        return [
            Check(len(train_nodes & worker_nodes) >= 2, f"Ray Train workers ran on >= 2 worker nodes (State API: {short_ids(train_nodes)})"),
            Check(not (train_nodes & head), "no Ray Train worker ran on the head"),
            Check(bool(controller_nodes) and controller_nodes <= head, f"Train controllers / trial drivers ran on the head only ({short_ids(controller_nodes)})"),
        ]
    return [
        Check(len(trial_nodes & worker_nodes) >= 2, f"direct trials trained on >= 2 worker nodes (State API: {short_ids(trial_nodes)})"),
        Check(not (trial_nodes & head), "no trial trained on the head"),
    ]


def trial_record_check(exp: Path, worker_nodes: set[str]) -> Check | None:
    """The node ids the search itself recorded (every trial_nodes.json under `exp`) are >= 2 worker nodes; None if it recorded none."""
    records = sorted(exp.rglob("trial_nodes.json"))
    if not records:
        return None
    recorded: set[str] = set()
    for record in records:
        recorded |= set(json.loads(record.read_text()).get("node_ids", []))
    return Check(len(recorded) >= 2 and recorded <= worker_nodes, f"{len(records)} trial_nodes.json record(s): workers on {short_ids(recorded)}, all worker nodes")


def corrupt_and_fetch(store: str, bad_store: str, sha256: str) -> tuple[bool, str]:
    """On a node: is a corrupted own copy fetched again from `store`, and what does fetching from `bad_store` say?

    `bad_store` holds a corrupted copy of the teacher; the answer is "accepted" if it is taken,
    else the refusal's message. Runs the node's own mtard (imported here: see the module docstring).
    """
    from mtard.errors import MtardError
    from mtard.teachers import node_copy, staged_path

    own = staged_path(sha256)
    own.parent.mkdir(parents=True, exist_ok=True)
    own.write_bytes(b"not a teacher")
    node_copy(store, sha256)
    replaced = sha256_hex(own) == sha256
    own.unlink()  # now only the corrupted storage copy is left to fetch
    try:
        node_copy(bad_store, sha256)
        return replaced, "accepted"
    except MtardError as err:
        return replaced, str(err)


def corruption_checks(store: Path, node_teachers: Path, good: Path) -> list[Check]:
    """`corrupt_and_fetch` run on a fake worker node, with the code the trials run, against a copy of `good` with one byte changed."""
    import ray

    bad_store = store.parent / "corrupt_store"
    bad_store.mkdir(exist_ok=True)
    (bad_store / good.name).write_bytes(good.read_bytes()[:-1] + b"x")
    ray.init(address="127.0.0.1:6379", logging_level="ERROR", log_to_driver=False)
    try:
        on_worker = ray.remote(num_cpus=0, resources={WORKER_NODE_RESOURCE: 0.001})(corrupt_and_fetch)
        replaced, said = ray.get(on_worker.remote(str(store), str(bad_store), good.stem), timeout=120)
    finally:
        ray.shutdown()
    return [
        Check(replaced, "a node's corrupted copy of a teacher is fetched again from the storage"),
        Check("does not match" in said and not (node_teachers / "staged" / good.name).exists(), f"a corrupted staged teacher is refused on a worker node ({said[:90]}...)"),
    ]


def job_checks(addr: str, submission_id: str, exp: Path, node_teachers: Path, store: Path) -> Iterator[Check]:
    """Every check on a finished rehearsal job, yielded as soon as it is known."""
    from ray.job_submission import JobSubmissionClient
    from ray.util.state import list_actors, list_nodes, list_placement_groups

    yield from pareto_checks(exp)
    yield from teacher_checks(node_teachers, store)

    # Where the job's actors ran (the State API keeps dead actors).
    job_hex = JobSubmissionClient(addr).get_job_info(submission_id).job_id
    nodes = list_nodes(address=addr, detail=True, raise_on_missing_output=False)
    head = {n.node_id for n in nodes if n.is_head_node}
    worker_nodes = {n.node_id for n in nodes if not n.is_head_node}
    actors = list_actors(address=addr, detail=True, limit=10000, filters=[("job_id", "=", job_hex)], raise_on_missing_output=False)

    def nodes_of(class_name: str) -> set[str]:
        return {a.node_id for a in actors if a.class_name == class_name and a.node_id}

    # ImplicitFunc: Tune's function-trainable actors, the trials themselves (direct trials train in
    # them) or, for Ray Train trials, their drivers.
    yield from node_spread_checks(head, worker_nodes, nodes_of("RayTrainWorker"), nodes_of("TrainController"), nodes_of("ImplicitFunc"))

    recorded = trial_record_check(exp, worker_nodes)
    if recorded is None:
        say("note: the search wrote no trial_nodes.json; relying on the State API")
    else:
        yield recorded

    # No placement group of this job may outlive it (a leaked one blocks later trials forever).
    deadline = time.time() + PLACEMENT_GROUP_WAIT_S
    while True:
        pgs = [p for p in list_placement_groups(address=addr, detail=True, limit=10000, raise_on_missing_output=False) if getattr(p, "creator_job_id", None) == job_hex]
        left = [p for p in pgs if p.state != "REMOVED"]
        if not left or time.time() > deadline:
            break
        time.sleep(3)
    yield Check(not left, f"all {len(pgs)} placement groups of the job removed" + (f"; left: {[(p.placement_group_id[-8:], p.state) for p in left]}" if left else ""))

    staged = sorted(store.glob("*.pt"))
    if staged:
        yield from corruption_checks(store, node_teachers, staged[0])


def report_checks(checks: Iterable[Check]) -> int:
    """Print each check as it comes; the number that failed."""
    failed = 0
    for check in checks:
        say(f"{'ok  ' if check.ok else 'FAIL'} {check.message}")
        failed += not check.ok
    return failed


# ---------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -P mtard/rehearsal.py", description="The Python steps of launch/rehearse.sh.")
    sub = parser.add_subparsers(dest="step", required=True)
    prepare = sub.add_parser("prepare", help="print bash assignments: PORTS, HEAD_FLAGS, MIN_WORKERS")
    prepare.add_argument("yaml")
    prepare.add_argument("ports", nargs="+", type=int, help="wanted ports; a taken one is replaced by a free one")
    nodes = sub.add_parser("wait-nodes", help="wait until the head and N worker nodes are up")
    nodes.add_argument("addr")
    nodes.add_argument("want", type=int)
    nodes.add_argument("head_pid", type=int)
    nodes.add_argument("yaml")
    snapshot = sub.add_parser("snapshot", help="unpack what `ray job submit --working-dir REPO` uploads into RUN/workdir")
    snapshot.add_argument("repo")
    snapshot.add_argument("run", type=Path)
    job = sub.add_parser("wait-job", help="wait for the job; exit 0 only if it succeeded")
    job.add_argument("addr")
    job.add_argument("job_id")
    job.add_argument("timeout_s", type=int)
    check = sub.add_parser("check", help="check what the job left; exit 1 if any check fails")
    check.add_argument("addr")
    check.add_argument("job_id")
    check.add_argument("exp", type=Path)
    check.add_argument("node_teachers", type=Path)
    check.add_argument("store", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.step == "prepare":
        print("\n".join(prepare_lines(read_cluster_yaml(args.yaml), args.ports)))
        return 0
    if args.step == "wait-nodes":
        wait_for_nodes(args.addr, args.want, args.head_pid, read_cluster_yaml(args.yaml))
        return 0
    if args.step == "snapshot":
        snapshot_working_dir(args.repo, args.run)
        return 0
    if args.step == "wait-job":
        return wait_for_job(args.addr, args.job_id, args.timeout_s)
    return 1 if report_checks(job_checks(args.addr, args.job_id, args.exp, args.node_teachers, args.store)) else 0


if __name__ == "__main__":
    sys.exit(main())
