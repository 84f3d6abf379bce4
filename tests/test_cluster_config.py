"""cluster.yaml, launch/local_cluster.yaml and the launch/ scripts, checked offline.

The cluster files go through Ray's own schema check, the one `ray up` runs before any cloud call
(`prepare_config` + `validate_config`); the network is blocked while it runs. The launch scripts
get a syntax check, a --help check, and submit.sh a --dry-run of the command it would run.
"""

from __future__ import annotations

import copy
import re
import shutil
import socket
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import (
    fill_node_type_min_max_workers,
    merge_setup_commands,
    prepare_config,
    validate_config,
)

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster.yaml"
LOCAL = ROOT / "launch" / "local_cluster.yaml"
SCRIPTS = sorted((ROOT / "launch").glob("*.sh"))
ENTRY_SCRIPTS = [p for p in SCRIPTS if not p.name.startswith("_")]

IMAGE = "rayproject/ray:2.60.0-py311-gpu"
STORAGE_PLACEHOLDER = "s3://YOUR-BUCKET/mtard"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the offline config check tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def check_cloud(cfg: dict) -> dict:
    """What `ray up` does to the file before touching AWS."""
    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


def check_local(cfg: dict) -> dict:
    """What the autoscaler does with the fake-multinode file (prepare_config would need
    fake_multi_node/example.yaml, which the 2.60 wheel lacks: hence every field is listed)."""
    cfg = copy.deepcopy(cfg)
    validate_config(cfg)
    merge_setup_commands(cfg)
    fill_node_type_min_max_workers(cfg)
    validate_config(cfg)
    return cfg


def workers(cfg: dict) -> dict:
    return {k: v for k, v in cfg["available_node_types"].items() if k != cfg["head_node_type"]}


def head(cfg: dict) -> dict:
    return cfg["available_node_types"][cfg["head_node_type"]]


def docker_env(cfg: dict) -> dict:
    env = {}
    for opt in cfg["docker"].get("run_options", []):
        parts = opt.split()
        if len(parts) == 2 and parts[0] in ("--env", "-e"):
            key, _, value = parts[1].partition("=")
            env[key] = value
    return env


def code_lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")]


def world_open_rules(cfg: dict) -> list[dict]:
    rules = list(cfg["provider"].get("security_group", {}).get("IpPermissions", []))
    return [
        r for r in rules
        if any(ip.get("CidrIp") == "0.0.0.0/0" for ip in r.get("IpRanges", []))
        or any(ip.get("CidrIpv6") == "::/0" for ip in r.get("Ipv6Ranges", []))
    ]


# ---------------------------------------------------------------- Ray's schema


def test_cluster_yaml_passes_rays_own_checks_offline(no_network):
    prepared = check_cloud(load(CLUSTER))
    assert prepared["provider"]["type"] == "aws"
    assert prepared["cluster_name"] == "mtard"


def test_local_cluster_yaml_passes_rays_schema_and_lists_every_field():
    cfg = load(LOCAL)
    check_local(cfg)
    # The fields a defaults file would fill in (the AWS defaults list all of them).
    defaults = yaml.safe_load(
        (Path(ray.__file__).parent / "autoscaler" / "aws" / "defaults.yaml").read_text()
    )
    assert set(defaults) <= set(cfg), f"missing: {set(defaults) - set(cfg)}"
    assert cfg["provider"] == {
        "type": "fake_multinode",
        "use_node_id_as_ip": True,
        "disable_node_updaters": True,
        "disable_launch_config_check": True,
    }
    assert cfg["head_node_type"] == "ray.head.default"  # the fake provider hard-codes it


@pytest.mark.parametrize("path", [CLUSTER, LOCAL], ids=["cluster", "local"])
def test_unknown_key_is_rejected_naming_it(path: Path, tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(path.read_text() + "\nidle_timeout_mins: 3\n")
    check = check_cloud if path == CLUSTER else check_local
    with pytest.raises(jsonschema.ValidationError) as err:
        check(load(bad))
    assert "'idle_timeout_mins' was unexpected" in str(err.value)


@pytest.mark.parametrize("path", [CLUSTER, LOCAL], ids=["cluster", "local"])
def test_unknown_node_type_key_is_rejected_naming_it(path: Path):
    cfg = load(path)
    next(iter(workers(cfg).values()))["min_wrokers"] = 1
    check = check_cloud if path == CLUSTER else check_local
    with pytest.raises(jsonschema.ValidationError) as err:
        check(cfg)
    assert "'min_wrokers' was unexpected" in str(err.value)


@pytest.mark.parametrize("path", [CLUSTER, LOCAL], ids=["cluster", "local"])
def test_fractional_resource_is_rejected_naming_it(path: Path, tmp_path: Path):
    text = path.read_text()
    # the head's "CPU: 0" line, in the file's own layout
    fractional, n = re.subn(r"(\n\s+resources:\n\s+)CPU: 0\n", r"\1CPU: 1.5\n", text, count=1)
    assert n == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(fractional)
    check = check_cloud if path == CLUSTER else check_local
    with pytest.raises(jsonschema.ValidationError) as err:
        check(load(bad))
    assert "['resources']['CPU']" in str(err.value)
    assert "1.5 is not of type 'integer'" in str(err.value)


# ---------------------------------------------------------------- scheduling design


@pytest.mark.parametrize("path", [CLUSTER, LOCAL], ids=["cluster", "local"])
def test_head_hosts_drivers_and_no_training(path: Path):
    cfg = load(path)
    res = head(cfg)["resources"]
    # trial drivers take 0.01 each; the job's entrypoint takes 1 (launch/submit.sh)
    assert res["mtard_driver"] >= 100
    assert res["CPU"] == 0  # nothing that asks for a CPU (Train workers, stray tasks) lands here
    assert res.get("GPU", 0) == 0
    assert head(cfg).get("max_workers", 0) == 0
    for node_type in workers(cfg).values():
        assert "mtard_driver" not in node_type["resources"]


def test_cloud_gpu_workers():
    cfg = load(CLUSTER)
    gpu_types = workers(cfg)
    assert gpu_types
    for name, t in gpu_types.items():
        assert t["min_workers"] == 0, name
        assert t["resources"]["GPU"] >= 1, name
        assert t["resources"]["CPU"] >= 1, name
        assert re.fullmatch(r"(g5|g6|g6e|p4d|p4de|p5)\.\w+", t["node_config"]["InstanceType"]), name
        assert 0 <= t["max_workers"] <= cfg["max_workers"], name
        assert "InstanceMarketOptions" not in t["node_config"], "spot must stay commented out"
        # workers write checkpoints to S3 themselves, so they need an instance profile
        assert "instance-profile/" in t["node_config"]["IamInstanceProfile"]["Arn"]
    assert "g5.xlarge" in {t["node_config"]["InstanceType"] for t in gpu_types.values()}
    assert any(t["max_workers"] >= 1 for t in gpu_types.values())
    assert 1 <= cfg["max_workers"] <= 16
    assert 5 <= cfg["idle_timeout_minutes"] <= 30
    text = CLUSTER.read_text()
    assert re.search(r"#\s*InstanceMarketOptions:\s*\n\s*#\s*MarketType: spot", text)


def test_local_workers_stand_in_for_gpus_and_start_at_once():
    cfg = load(LOCAL)
    types = workers(cfg)
    assert sum(t.get("min_workers", 0) for t in types.values()) >= 2
    for name, t in types.items():
        assert t["resources"]["FAKE_GPU"] >= 1, name
        assert t["resources"]["CPU"] >= 1, name
        assert t.get("min_workers", 0) <= t["max_workers"] <= cfg["max_workers"], name


# ---------------------------------------------------------------- image, storage, auth, ports


def test_image_pinned_to_installed_ray_and_python():
    docker = load(CLUSTER)["docker"]
    assert docker["image"] == IMAGE
    assert f"rayproject/ray:{ray.__version__}-py311-gpu" == IMAGE
    assert "head_image" not in docker and "worker_image" not in docker


def test_shared_memory_is_sized_on_every_node():
    cfg = load(CLUSTER)
    docker = cfg["docker"]
    head_opts = docker.get("run_options", []) + docker.get("head_run_options", [])
    assert any(o.startswith("--shm-size=") for o in head_opts)
    for name, t in workers(cfg).items():
        opts = docker.get("run_options", []) + docker.get("worker_run_options", []) + (
            t.get("docker", {}).get("worker_run_options", [])
        )
        assert any(o.startswith("--shm-size=") for o in opts), name


def test_storage_placeholder_is_wired_once_for_tune_train_and_submit():
    cfg = load(CLUSTER)
    env = docker_env(cfg)
    # exported into every container: the job, trial drivers and Train workers all see it
    assert env["MTARD_STORAGE"] == STORAGE_PLACEHOLDER
    assert env["AWS_DEFAULT_REGION"] == cfg["provider"]["region"]
    # no other value anywhere in the file
    values = set(re.findall(r"MTARD_STORAGE=(\S+)", "\n".join(code_lines(CLUSTER))))
    assert values == {STORAGE_PLACEHOLDER}
    # launch/submit.sh's fallback reads this same value ...
    out = subprocess.run(
        ["bash", "-c", 'source launch/_common.sh && cluster_storage'],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == STORAGE_PLACEHOLDER
    # ... and refuses to submit while it is the placeholder
    res = run_script("submit.sh", "--dry-run", "pyproject.toml", env={"MTARD_STORAGE": ""})
    assert res.returncode != 0
    assert STORAGE_PLACEHOLDER in res.stderr and "placeholder" in res.stderr


def test_code_is_synced_and_installed_with_project_pins():
    cfg = load(CLUSTER)
    assert cfg["file_mounts"]["~/mtard"] == "."
    assert "pip install -e ~/mtard" in cfg["setup_commands"]
    assert ".gitignore" in cfg["rsync_filter"]
    assert any("boto3" in c for c in cfg["head_setup_commands"])  # the autoscaler needs it


def test_token_authentication_stays_on():
    cfg = load(CLUSTER)
    assert docker_env(cfg)["RAY_AUTH_MODE"] == "token"
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    code = "\n".join(code_lines(CLUSTER))
    assert "RAY_AUTH_MODE=disabled" not in code
    assert "auth_token" in " ".join(cfg["setup_commands"])  # fail fast without the token


def test_no_port_is_open_to_the_world():
    cfg = load(CLUSTER)
    assert world_open_rules(cfg) == []
    assert not any(
        r.get("FromPort", 0) <= port <= r.get("ToPort", -1)
        for r in cfg["provider"].get("security_group", {}).get("IpPermissions", [])
        for port in (8265, 6006)
    )
    for t in cfg["available_node_types"].values():
        assert "NetworkInterfaces" not in t["node_config"]  # no public-IP / SG side door
    # the checker itself catches an open dashboard
    leaky = copy.deepcopy(cfg)
    leaky["provider"]["security_group"] = {"IpPermissions": [
        {"FromPort": 8265, "ToPort": 8265, "IpProtocol": "tcp",
         "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}
    check_cloud(leaky)  # valid for Ray ...
    assert world_open_rules(leaky)  # ... but not for us


# ---------------------------------------------------------------- launch scripts


def run_script(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        ["bash", str(ROOT / "launch" / name), *args],
        cwd=ROOT, capture_output=True, text=True, env=full_env, timeout=60,
    )


def test_launch_scripts_are_all_there():
    names = {p.name for p in ENTRY_SCRIPTS}
    assert {"up.sh", "down.sh", "submit.sh", "logs.sh", "tensorboard.sh", "fetch.sh",
            "rehearse.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_launch_script_syntax(script: Path):
    subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.parametrize("script", ENTRY_SCRIPTS, ids=lambda p: p.name)
def test_launch_script_help_and_strict_mode(script: Path):
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert script.stat().st_mode & 0o111, f"{script.name} is not executable"
    res = run_script(script.name, "--help")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: launch/" + script.name)


def test_submit_dry_run_prints_the_exact_job_command(tmp_path: Path):
    res = run_script(
        "submit.sh", "--dry-run", "pyproject.toml", str(tmp_path / "store"), "--max-trials", "3",
        env={"MTARD_NAME": "nightly", "RAY_ADDRESS": "http://127.0.0.1:8299"},
    )
    assert res.returncode == 0, res.stderr
    cmd = next(ln for ln in res.stderr.splitlines() if ln.startswith("+ ray job submit"))
    assert cmd == (
        "+ ray job submit --address http://127.0.0.1:8299 --submission-id "
        + re.search(r"--submission-id (\S+)", cmd).group(1)
        + " --working-dir . --entrypoint-resources '{\"mtard_driver\": 1}' --no-wait --"
        f" mtard search pyproject.toml --storage {tmp_path}/store --name nightly --max-trials 3"
    )
    assert res.stdout == ""  # stdout is reserved for the job id


def test_submit_rejects_a_space_outside_the_repository(tmp_path: Path):
    space = tmp_path / "space.yaml"
    space.write_text("x: 1\n")
    res = run_script("submit.sh", "--dry-run", str(space), str(tmp_path))
    assert res.returncode != 0
    assert "outside" in res.stderr


def test_rehearse_stops_only_what_it_started():
    text = (ROOT / "launch" / "rehearse.sh").read_text()
    assert 'RAY_FAKE_CLUSTER=1' in text and '--autoscaling-config="$LOCAL_YAML"' in text
    assert "setsid" in text  # its processes are found by session id ...
    # ... and `ray stop` (which kills every Ray cluster of this user) is never run
    assert not re.search(r'^\s*(run |show )?("\$RAY_BIN"|ray) stop\b', text, re.M)


def test_need_falls_back_to_the_repository_venv(tmp_path: Path):
    # The README installs into ./.venv without activating it; the scripts must still find `ray`.
    (tmp_path / "launch").mkdir()
    shutil.copy(ROOT / "launch" / "_common.sh", tmp_path / "launch" / "_common.sh")
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    tool = venv_bin / "mtard-test-tool"
    tool.write_text("#!/bin/sh\necho from-venv\n")
    tool.chmod(0o755)
    script = tmp_path / "launch" / "probe.sh"
    script.write_text('source "$(dirname "$0")/_common.sh"\nneed "$1"\n"$1"\n')
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    found = subprocess.run(["bash", str(script), "mtard-test-tool"], env=env, capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "from-venv"
    assert f"using mtard-test-tool from {tmp_path.resolve()}/.venv/bin" in found.stderr
    missing = subprocess.run(["bash", str(script), "mtard-absent-tool"], env=env, capture_output=True, text=True)
    assert missing.returncode != 0
    assert "'mtard-absent-tool' not found on PATH or in" in missing.stderr
