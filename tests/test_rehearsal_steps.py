"""The Python steps of launch/rehearse.sh (mtard/rehearsal.py) that need no cluster.

The steps that talk to a cluster (waiting on nodes and the job, the State API checks, the
snapshot) run for real in test_rehearsal.py's end-to-end rehearsal.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mtard import rehearsal
from mtard.rehearsal import Check

ROOT = Path(__file__).resolve().parents[1]
LOCAL_YAML = ROOT / "launch" / "local_cluster.yaml"


def test_run_by_path_a_step_imports_neither_mtard_nor_torch() -> None:
    # launch/rehearse.sh runs each step as `python -P mtard/rehearsal.py STEP`: seconds saved per step.
    proc = subprocess.run(
        [sys.executable, "-P", "-X", "importtime", str(ROOT / "mtard" / "rehearsal.py"), "prepare", str(LOCAL_YAML), "0"],
        capture_output=True, text=True, check=True,
    )
    assert "MIN_WORKERS=2" in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "yaml" in imported and not imported & {"mtard", "torch", "ray"}


def test_free_port_keeps_a_free_port_and_replaces_a_listened_one() -> None:
    with socket.socket() as listener:
        listener.bind(("", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        stand_in = rehearsal.free_port(taken)
        assert stand_in != taken and stand_in > 0
    assert rehearsal.free_port(stand_in) == stand_in  # nothing listens on it: kept


def test_the_head_flags_and_workers_come_from_local_cluster_yaml() -> None:
    cluster = rehearsal.read_cluster_yaml(str(LOCAL_YAML))
    assert rehearsal.head_start_flags(cluster) == ["--num-cpus=0", "--object-store-memory=300000000", '--resources={"mtard_driver":1000}']
    assert rehearsal.min_worker_nodes(cluster) == 2
    assert rehearsal.worker_custom_resources(cluster) == {"FAKE_GPU"}


def test_head_flags_cover_gpus_memory_and_several_worker_types() -> None:
    cluster = {
        "head_node_type": "h",
        "available_node_types": {
            "h": {"resources": {"CPU": 2, "GPU": 1, "memory": 10}},
            "a": {"resources": {"CPU": 1, "A": 1}, "min_workers": 1},
            "b": {"resources": {"GPU": 1, "B": 2}},
        },
    }
    assert rehearsal.head_start_flags(cluster) == ["--num-cpus=2", "--num-gpus=1", "--memory=10"]
    assert rehearsal.min_worker_nodes(cluster) == 1
    assert rehearsal.worker_custom_resources(cluster) == {"A", "B"}


def test_prepare_prints_assignments_bash_can_eval(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as listener:
        listener.bind(("", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        assert rehearsal.main(["prepare", str(LOCAL_YAML), str(taken)]) == 0
    script = capsys.readouterr().out + '\nprintf "%s|" "${PORTS[@]}" "${#HEAD_FLAGS[@]}" "${HEAD_FLAGS[2]}" "$MIN_WORKERS"'
    fields = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.split("|")
    assert fields[0] != str(taken)  # the taken port was replaced
    assert fields[1:4] == ["3", '--resources={"mtard_driver":1000}', "2"]


def test_an_infeasible_request_is_found_in_the_job_logs() -> None:
    logs = "starting\n  (autoscaler) No available node types can fulfill resource request {'GPU': 1.0}. Add suitable node types.\nmore"
    assert rehearsal.infeasible_request(logs) == "(autoscaler) No available node types can fulfill resource request {'GPU': 1.0}. Add suitable node types."
    assert rehearsal.infeasible_request("all fine\n") is None


def test_pareto_check_wants_a_header_and_a_row(tmp_path: Path) -> None:
    assert rehearsal.pareto_checks(tmp_path) == [Check(False, f"{tmp_path / 'pareto.csv'} has a header and >= 1 row (0 rows)")]
    (tmp_path / "pareto.csv").write_text("trial,clean\n")
    assert not rehearsal.pareto_checks(tmp_path)[0].ok
    (tmp_path / "pareto.csv").write_text("trial,clean\nt1,0.9\n")
    assert rehearsal.pareto_checks(tmp_path)[0] == Check(True, f"{tmp_path / 'pareto.csv'} has a header and >= 1 row (1 rows)")


def _stage(directory: Path, content: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{hashlib.sha256(content).hexdigest()}.pt"
    path.write_bytes(content)
    return path


def test_teacher_checks(tmp_path: Path) -> None:
    store, nodes = tmp_path / "store", tmp_path / "node_teachers"
    for content in (b"clean teacher", b"robust teacher"):
        _stage(store, content)
        _stage(nodes / "staged", content)
    assert [c.ok for c in rehearsal.teacher_checks(nodes, store)] == [True, True, True]

    (nodes / "digits" / "runs").mkdir(parents=True)  # a node trained a teacher
    assert [c.ok for c in rehearsal.teacher_checks(nodes, store)] == [True, True, False]

    misnamed = store / ("0" * 64 + ".pt")  # a staged file whose content is not its name
    misnamed.write_bytes(b"something else")
    assert [c.ok for c in rehearsal.teacher_checks(nodes, store)][0] is False


def test_node_spread_checks() -> None:
    head, workers = {"head"}, {"w1", "w2"}
    train = rehearsal.node_spread_checks(head, workers, train_nodes={"w1", "w2"}, controller_nodes={"head"}, trial_nodes={"head"})
    assert [c.ok for c in train] == [True, True, True]
    crowded = rehearsal.node_spread_checks(head, workers, train_nodes={"w1", "head"}, controller_nodes={"w2"}, trial_nodes=set())
    assert [c.ok for c in crowded] == [False, False, False]
    direct = rehearsal.node_spread_checks(head, workers, train_nodes=set(), controller_nodes=set(), trial_nodes={"w1", "w2"})
    assert [c.ok for c in direct] == [True, True] and "direct trials" in direct[0].message
    assert [c.ok for c in rehearsal.node_spread_checks(head, workers, set(), set(), {"w1", "head"})] == [False, False]


def test_trial_record_check(tmp_path: Path) -> None:
    workers = {"a" * 40, "b" * 40}
    assert rehearsal.trial_record_check(tmp_path, workers) is None
    for trial, node in (("t1", "a" * 40), ("t2", "b" * 40)):
        (tmp_path / trial).mkdir()
        (tmp_path / trial / "trial_nodes.json").write_text(f'{{"node_ids": ["{node}"]}}')
    assert rehearsal.trial_record_check(tmp_path, workers) == Check(True, f"2 trial_nodes.json record(s): workers on {['a' * 8, 'b' * 8]}, all worker nodes")
    assert not rehearsal.trial_record_check(tmp_path, {"a" * 40}).ok  # one recorded node is not a worker node


def test_a_corrupted_copy_is_fetched_again_and_a_corrupted_store_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTARD_TEACHERS", str(tmp_path / "node_teachers"))
    good = _stage(tmp_path / "store", b"a teacher's bytes")
    bad_store = tmp_path / "bad_store"
    bad_store.mkdir()
    (bad_store / good.name).write_bytes(b"a teacher's bytez")
    replaced, said = rehearsal.corrupt_and_fetch(str(tmp_path / "store"), str(bad_store), good.stem)
    assert replaced
    assert "does not match" in said
    assert not (tmp_path / "node_teachers" / "staged" / good.name).exists()


def test_report_checks_prints_each_and_counts_failures(capsys: pytest.CaptureFixture[str]) -> None:
    assert rehearsal.report_checks([Check(True, "first"), Check(False, "second"), Check(False, "third")]) == 2
    assert capsys.readouterr().err.splitlines() == ["[rehearse.sh] ok   first", "[rehearse.sh] FAIL second", "[rehearse.sh] FAIL third"]
