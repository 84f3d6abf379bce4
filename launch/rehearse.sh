#!/usr/bin/env bash
# Dress rehearsal of the cloud workflow on this machine: a fake multi-node Ray cluster
# (launch/local_cluster.yaml), the search submitted through launch/submit.sh exactly as on AWS,
# then checks on what came out. Exits non-zero if any check fails; always stops the cluster.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<USAGE
usage: launch/rehearse.sh [--space SPACE] [--timeout SECONDS] [--keep-running] [-- extra 'mtard search' args]

 1. starts the fake cluster in the background:
      RAY_FAKE_CLUSTER=1 setsid ray start --head --block --autoscaling-config=launch/local_cluster.yaml
        --port=6379 --temp-dir=RUN/ray --dashboard-host=127.0.0.1 ... (head resources from the YAML)
    with token authentication on (a throwaway token in RUN/auth_token, like the cloud cluster);
 2. waits until the head (mtard_driver) and the worker nodes from the YAML's min_workers are up;
 3. snapshots the repository exactly as 'ray job submit --working-dir .' would upload it (same
    .gitignore rules, same size limit) and submits SPACE (default digits_tiny) with
      launch/submit.sh SPACE RUN/storage   (MTARD_NAME=rehearsal, MTARD_WORKING_DIR=local://RUN/workdir)
    local:// because the fake nodes share one disk: with an uploaded working dir each fake node
    re-extracts the package into the same shared directory and deletes it under the running job;
 4. waits for the job (default timeout 1800 s; fails early if Ray reports an infeasible request);
 5. checks: the job SUCCEEDED; RUN/storage/rehearsal/pareto.csv has a header and a row; the
    job's trials trained on >= 2 distinct worker nodes and never on the head (direct trials: the
    Tune trial processes; Ray Train trials: their workers, with controllers and drivers on the head); every trial_nodes.json the search wrote
    under RUN/storage/rehearsal ({"node_ids": [...]}) agrees; the job left no placement group
    behind (a leak would hang later trials); the teachers, which only the driver's cache
    (\$MTARD_TEACHERS, else RUN/driver_teachers) has, were staged in RUN/storage/teachers and
    fetched by the nodes (whose cache is RUN/node_teachers), sha256-checked, never trained
    there; on a worker node a corrupted local copy is fetched again and a corrupted staged
    copy is refused;
 6. stops the cluster: the 'ray start' process it launched, then every process left in that
    process's session (setsid), SIGKILL after a grace period. It never runs 'ray stop', which
    would also kill other Ray clusters on this machine.

RUN is a fresh /tmp/mtard-rehearse.XXXXXX, kept afterwards (logs, results).
--keep-running  leave the cluster up at the end (prints how to stop it).
Needs: port 6379 free (the fake provider connects its nodes there), 'ray', 'setsid', and
'mtard' on PATH (the job runs the 'mtard' of this environment).
USAGE
}
if want_help "$@"; then usage; exit 0; fi

space=digits_tiny timeout_s=1800 keep_running=0
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --space) space="${2:?--space needs a value}"; shift ;;
    --timeout) timeout_s="${2:?--timeout needs a value}"; shift ;;
    --keep-running) keep_running=1 ;;
    --) shift; extra=("$@"); break ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done
[[ "$timeout_s" =~ ^[0-9]+$ ]] || die "--timeout must be a number of seconds"

need ray
need setsid "util-linux"
need mtard "pip install -e . in this environment"
RAY_BIN="$(command -v ray)"
PY="$(dirname "$RAY_BIN")/python"
[[ -x "$PY" ]] || PY="$(command -v python3)"
LOCAL_YAML="$LAUNCH_DIR/local_cluster.yaml"
cd "$REPO_ROOT"

say "checking that 'mtard search' exists"
run mtard search --help >/dev/null

free_port() {  # free_port PREFERRED -> PREFERRED if free, else any free port
  "$PY" - "$1" <<'EOF'
import socket, sys
want = int(sys.argv[1])
for port in (want, 0):
    s = socket.socket()
    # like the servers themselves: a port in TIME_WAIT is free, one with a listener is not
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("", port))
        print(s.getsockname()[1])
        break
    except OSError:
        pass
    finally:
        s.close()
EOF
}
[[ "$(free_port 6379)" == 6379 ]] ||
  die "port 6379 is taken (another Ray cluster?); the fake multi-node provider always connects its nodes to 6379"
dash_port="$(free_port "${REHEARSE_DASHBOARD_PORT:-8265}")"
client_port="$(free_port 10001)"      # (a busy one falls back to an ephemeral port, clear of
agent_port="$(free_port 52365)"       #  the worker port range 10002-19999)
dash_addr="http://127.0.0.1:$dash_port"

RUN_DIR="$(mktemp -d /tmp/mtard-rehearse.XXXXXX)"
STORAGE="$RUN_DIR/storage"
NAME=rehearsal
say "run dir: $RUN_DIR"
# Separate teacher caches, as on separate machines: the driver (job entrypoint) trains or finds the
# teachers in its own cache; every node of the fake cluster (trial drivers, Train workers) starts
# with an empty one and can only get them from the storage, where the driver stages them.
DRIVER_TEACHERS="${MTARD_TEACHERS:-$RUN_DIR/driver_teachers}"
NODE_TEACHERS="$RUN_DIR/node_teachers"
say "teacher caches: driver $DRIVER_TEACHERS, nodes $NODE_TEACHERS (empty)"

# Token auth on, as on the cloud cluster, with a throwaway token (never touches ~/.ray).
"$PY" -c 'import secrets; print(secrets.token_hex(32))' >"$RUN_DIR/auth_token"
chmod 600 "$RUN_DIR/auth_token"
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$RUN_DIR/auth_token"
unset RAY_AUTH_TOKEN

# Head `ray start` flags and the expected worker nodes, from local_cluster.yaml.
read_layout() {
  "$PY" - "$LOCAL_YAML" <<'EOF'
import json, shlex, sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
types = cfg["available_node_types"]
head = dict(types[cfg["head_node_type"]]["resources"])
flags = []
for key, flag in (("CPU", "--num-cpus"), ("GPU", "--num-gpus"),
                  ("object_store_memory", "--object-store-memory"), ("memory", "--memory")):
    if key in head:
        flags.append(f"{flag}={head.pop(key)}")
if head:
    flags.append("--resources=" + json.dumps(head, separators=(",", ":")))
workers = sum(t.get("min_workers", 0) for n, t in types.items() if n != cfg["head_node_type"])
print("HEAD_FLAGS=(" + " ".join(shlex.quote(f) for f in flags) + ")")
print(f"MIN_WORKERS={workers}")
EOF
}
layout="$(read_layout)"
eval "$layout"
(( MIN_WORKERS >= 2 )) || die "local_cluster.yaml starts $MIN_WORKERS worker node(s); the node-spread check needs 2"

HEAD_PID="" SESSION=""
stop_cluster() {
  [[ -n "$SESSION" ]] || return 0
  local pids i
  say "stopping the fake cluster (session $SESSION)"
  # The fake worker nodes are raylets started by the autoscaler, and they outlive the head:
  # stop the head's `ray start --block` first (it shuts its own processes down), then whatever
  # is left in the session it leads; SIGKILL what ignores SIGTERM.
  if kill -0 "$HEAD_PID" 2>/dev/null; then
    run kill -TERM "$HEAD_PID" || true
    for ((i = 0; i < 15; i++)); do kill -0 "$HEAD_PID" 2>/dev/null || break; sleep 1; done
  fi
  # (zombies excluded: they are already dead, waiting for their parent to reap them)
  session_pids() { ps -eo pid=,sid=,stat= | awk -v s="$SESSION" '$2 == s && $3 !~ /^Z/ { print $1 }'; }
  pids="$(session_pids | tr '\n' ' ')"
  if [[ -n "${pids// /}" ]]; then
    # shellcheck disable=SC2086
    show kill -TERM $pids; kill -TERM $pids 2>/dev/null || true
    for ((i = 0; i < 10; i++)); do [[ -z "$(session_pids)" ]] && break; sleep 1; done
    pids="$(session_pids | tr '\n' ' ')"
    if [[ -n "${pids// /}" ]]; then
      # shellcheck disable=SC2086
      show kill -KILL $pids; kill -KILL $pids 2>/dev/null || true
      for ((i = 0; i < 10; i++)); do [[ -z "$(session_pids)" ]] && break; sleep 1; done
    fi
  fi
  if [[ -n "$(session_pids)" ]]; then
    say "WARNING: processes of session $SESSION survived: $(session_pids | tr '\n' ' ')"
    return 1
  fi
  say "fake cluster stopped"
  SESSION=""
}
on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  if (( keep_running )) && [[ -n "$SESSION" ]]; then
    say "cluster left running: RAY_ADDRESS=$dash_addr RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH"
    say "stop it with: kill $HEAD_PID; then kill the processes of session $SESSION (ps -s $SESSION)"
  else
    stop_cluster || rc=1
  fi
  say "logs and results kept in $RUN_DIR"
  if (( rc == 0 )); then say "REHEARSAL PASSED"; else say "REHEARSAL FAILED (exit $rc)"; fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. Start. setsid makes `ray start` the leader of a new session, so every process of this
# cluster (raylets, workers, the fake worker nodes) can be found, and only those, by session id.
start_cmd=(env -u RAY_ADDRESS MTARD_TEACHERS="$NODE_TEACHERS" RAY_FAKE_CLUSTER=1 AUTOSCALER_UPDATE_INTERVAL_S=2
  setsid "$RAY_BIN" start --head --block --autoscaling-config="$LOCAL_YAML"
  --port=6379 --temp-dir="$RUN_DIR/ray" --dashboard-host=127.0.0.1 --dashboard-port="$dash_port"
  --ray-client-server-port="$client_port" --dashboard-agent-listen-port="$agent_port"
  --disable-usage-stats "${HEAD_FLAGS[@]}")
show "${start_cmd[@]}"
"${start_cmd[@]}" >"$RUN_DIR/head.log" 2>&1 </dev/null &
HEAD_PID=$!
disown "$HEAD_PID" 2>/dev/null || true  # tracked by pid/session below; no job-control chatter
sleep 1
sid="$(ps -o sid= -p "$HEAD_PID" | tr -d ' ')" || true
if [[ -z "$sid" ]]; then
  SESSION="$HEAD_PID"  # setsid made it a session leader: clean up whatever it left behind
  tail -n 30 "$RUN_DIR/head.log" >&2 || true
  die "ray start exited at once (log above: $RUN_DIR/head.log)"
fi
if [[ "$sid" != "$HEAD_PID" ]]; then
  # Never adopt someone else's session for the clean-up: stop only the process we started.
  kill -TERM "$HEAD_PID" 2>/dev/null || true
  die "setsid did not make ray start ($HEAD_PID) a session leader (it is in session $sid)"
fi
SESSION="$sid"
printf 'head_pid=%s\nsession=%s\ndashboard=%s\n' "$HEAD_PID" "$SESSION" "$dash_addr" >"$RUN_DIR/pids"
say "head: pid $HEAD_PID (session leader), dashboard $dash_addr"

# 2. Wait for the head and MIN_WORKERS worker nodes.
say "waiting for the head and $MIN_WORKERS worker nodes (up to 180 s)"
"$PY" - "$dash_addr" "$MIN_WORKERS" "$HEAD_PID" "$LOCAL_YAML" <<'EOF'
import os, sys, time, yaml
from ray.util.state import list_nodes
addr, want, head_pid, yaml_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cfg = yaml.safe_load(open(yaml_path))
worker_custom = set()
for name, t in cfg["available_node_types"].items():
    if name != cfg["head_node_type"]:
        worker_custom |= set(t["resources"]) - {"CPU", "GPU", "memory", "object_store_memory"}
deadline, last, err = time.time() + 180, None, None
while time.time() < deadline:
    try:
        os.kill(head_pid, 0)
    except OSError:
        sys.exit("ray start died; see head.log")
    try:
        nodes = [n for n in list_nodes(address=addr, detail=True, raise_on_missing_output=False)
                 if n.state == "ALIVE"]
    except Exception as e:  # dashboard still starting
        err = e
        time.sleep(2)
        continue
    heads = [n for n in nodes if n.is_head_node and "mtard_driver" in n.resources_total]
    workers = [n for n in nodes if not n.is_head_node
               and worker_custom <= set(n.resources_total)]
    status = (len(heads), len(workers))
    if status != last:
        print(f"[rehearse.sh] nodes up: head={status[0]} workers={status[1]}/{want}", file=sys.stderr)
        last = status
    if heads and len(workers) >= want:
        for n in [*heads, *workers]:
            r = {k: v for k, v in n.resources_total.items() if not k.startswith("node:")
                 and k not in ("memory", "object_store_memory")}
            print(f"[rehearse.sh]   {'head  ' if n.is_head_node else 'worker'} {n.node_id} {r}",
                  file=sys.stderr)
        break
    time.sleep(2)
else:
    sys.exit(f"timed out waiting for nodes (last: {last}, last error: {err})")
# The job API is a separate dashboard module that can come up after the State API.
from ray.job_submission import JobSubmissionClient
while True:
    try:
        JobSubmissionClient(addr).list_jobs()
        break
    except Exception as e:
        if time.time() > deadline + 60:
            sys.exit(f"the job API at {addr} never answered: {e}")
        time.sleep(2)
EOF

# 3. Snapshot what `--working-dir .` would upload, and submit through submit.sh.
say "snapshotting the repository as Ray would upload it"
"$PY" - "$REPO_ROOT" "$RUN_DIR" <<'EOF'
import sys, time
from pathlib import Path
from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE, create_package, unzip_package
repo, run = sys.argv[1], Path(sys.argv[2])
pkg = run / "workdir.zip"
for attempt in range(3):  # a tree being edited meanwhile (a vanishing __pycache__) can trip the walk
    try:
        create_package(repo, pkg, include_gitignore=True)
        break
    except OSError as e:
        print(f"[rehearse.sh] snapshot attempt {attempt + 1} failed: {e!r}", file=sys.stderr)
        pkg.unlink(missing_ok=True)
        time.sleep(1)
else:
    sys.exit("could not snapshot the repository")
size = pkg.stat().st_size
print(f"[rehearse.sh] working-dir package: {size / 2**20:.1f} MiB "
      f"(Ray's upload limit {GCS_STORAGE_MAX_SIZE / 2**20:.0f} MiB)", file=sys.stderr)
if size > GCS_STORAGE_MAX_SIZE:
    sys.exit("the working dir is too big for `ray job submit --working-dir .`: "
             "add the large files to .gitignore or .rayignore")
unzip_package(pkg, str(run / "workdir"), remove_top_level_directory=False, unlink_zip=True)
EOF

job_id="$(RAY_ADDRESS="$dash_addr" MTARD_NAME="$NAME" MTARD_DRIVER_TEACHERS="$DRIVER_TEACHERS" MTARD_WORKING_DIR="local://$RUN_DIR/workdir" \
  "$LAUNCH_DIR/submit.sh" "$space" "$STORAGE" ${extra[@]+"${extra[@]}"})" ||
  die "submission failed (launch/submit.sh output above)"
[[ -n "$job_id" ]] || die "submit.sh printed no job id"
printf 'job_id=%s\n' "$job_id" >>"$RUN_DIR/pids"
say "job: $job_id (logs: RAY_ADDRESS=$dash_addr launch/logs.sh $job_id, or $RUN_DIR/job.log at the end)"

# 4. Wait for the job.
"$PY" - "$dash_addr" "$job_id" "$timeout_s" <<'EOF' || job_rc=$?
import sys, time
from ray.job_submission import JobStatus, JobSubmissionClient
addr, job_id, timeout_s = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = JobSubmissionClient(addr)
start, last, next_log_check = time.time(), None, 0.0
while True:
    status = client.get_job_status(job_id)
    if status != last:
        print(f"[rehearse.sh] job {status.value} after {time.time() - start:.0f} s", file=sys.stderr)
        last = status
    if status.is_terminal():
        sys.exit(0 if status == JobStatus.SUCCEEDED else 1)
    if time.time() - start > timeout_s:
        print(f"[rehearse.sh] job still {status.value} after {timeout_s} s: stopping it", file=sys.stderr)
        client.stop_job(job_id)
        sys.exit(1)
    if time.time() > next_log_check:  # fail fast on requests no node type can satisfy
        next_log_check = time.time() + 30
        logs = client.get_job_logs(job_id)
        if "No available node types can fulfill resource request" in logs:
            line = next(l for l in logs.splitlines() if "No available node types" in l)
            print(f"[rehearse.sh] infeasible resource request:\n  {line.strip()}\n"
                  "  (the fake worker nodes offer what launch/local_cluster.yaml lists)", file=sys.stderr)
            client.stop_job(job_id)
            sys.exit(1)
    time.sleep(5)
EOF
job_rc="${job_rc:-0}"
ray job logs --address "$dash_addr" "$job_id" >"$RUN_DIR/job.log" 2>&1 || true
if (( job_rc != 0 )); then
  say "job did not succeed; last lines of $RUN_DIR/job.log:"
  tail -n 60 "$RUN_DIR/job.log" >&2 || true
  exit 1
fi

# 5. Checks.
say "checking results, node spread and placement groups"
"$PY" - "$dash_addr" "$job_id" "$STORAGE/$NAME" "$DRIVER_TEACHERS" "$NODE_TEACHERS" "$STORAGE/teachers" <<'EOF'
import csv, hashlib, json, sys, time
from pathlib import Path
from ray.job_submission import JobSubmissionClient
from ray.util.state import list_actors, list_nodes, list_placement_groups
addr, sub_id, exp = sys.argv[1], sys.argv[2], Path(sys.argv[3])
driver_teachers, node_teachers, store = Path(sys.argv[4]), Path(sys.argv[5]), Path(sys.argv[6])
failures = []
def check(ok, msg):
    print(f"[rehearse.sh] {'ok  ' if ok else 'FAIL'} {msg}", file=sys.stderr)
    if not ok:
        failures.append(msg)

# pareto.csv
pareto = exp / "pareto.csv"
rows = list(csv.reader(open(pareto))) if pareto.is_file() else []
check(len(rows) >= 2, f"{pareto} has a header and >= 1 row ({max(len(rows) - 1, 0)} rows)")

# Teachers: the driver had them, the storage got them, the nodes fetched them from there.
sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
staged = sorted(store.glob("*.pt"))
fetched = sorted((node_teachers / "staged").glob("*.pt"))
check(len(staged) >= 2 and all(sha(p) == p.stem for p in staged),
      f"{len(staged)} teacher(s) staged in {store}, each named by its sha256")
check(len(fetched) >= 2 and {p.name for p in fetched} <= {p.name for p in staged}
      and all(sha(p) == p.stem for p in fetched),
      f"the nodes fetched {len(fetched)} staged teacher(s) into {node_teachers / 'staged'} (sha256 checked)")
check(not any(node_teachers.rglob("runs")) and not (node_teachers / "digits").exists(),
      "no node trained a teacher or read the driver's cache")

# Where the job's actors ran (the State API keeps dead actors).
job_hex = JobSubmissionClient(addr).get_job_info(sub_id).job_id
nodes = list_nodes(address=addr, detail=True, raise_on_missing_output=False)
head = {n.node_id for n in nodes if n.is_head_node}
workers_nodes = {n.node_id for n in nodes if not n.is_head_node}
actors = [a for a in list_actors(address=addr, detail=True, limit=10000,
                                 filters=[("job_id", "=", job_hex)], raise_on_missing_output=False)]
train_nodes = {a.node_id for a in actors if a.class_name == "RayTrainWorker" and a.node_id}
ctrl_nodes = {a.node_id for a in actors if a.class_name == "TrainController" and a.node_id}
# Tune's function-trainable actors: the trials themselves (one-worker "direct" trials train in
# them) or, for Ray Train trials, their drivers.
trial_nodes = {a.node_id for a in actors if a.class_name == "ImplicitFunc" and a.node_id}
short = lambda ids: sorted(i[-8:] for i in ids)
if train_nodes or ctrl_nodes:  # Ray Train trials (workers > 1 or resources.ray_train)
    check(len(train_nodes & workers_nodes) >= 2,
          f"Ray Train workers ran on >= 2 worker nodes (State API: {short(train_nodes)})")
    check(not (train_nodes & head), "no Ray Train worker ran on the head")
    check(bool(ctrl_nodes) and ctrl_nodes <= head,
          f"Train controllers / trial drivers ran on the head only ({short(ctrl_nodes)})")
else:  # direct trials: each trains in its own Tune trial process
    check(len(trial_nodes & workers_nodes) >= 2,
          f"direct trials trained on >= 2 worker nodes (State API: {short(trial_nodes)})")
    check(not (trial_nodes & head), "no trial trained on the head")

# Node ids recorded by the search itself: any trial_nodes.json under the experiment,
# {"node_ids": [hex node id of each Train worker, ...], ...}.
records = sorted(exp.rglob("trial_nodes.json"))
if records:
    recorded = set()
    for r in records:
        recorded |= set(json.load(open(r)).get("node_ids", []))
    check(len(recorded) >= 2 and recorded <= workers_nodes,
          f"{len(records)} trial_nodes.json record(s): workers on {short(recorded)}, all worker nodes")
else:
    print("[rehearse.sh] note: the search wrote no trial_nodes.json; relying on the State API",
          file=sys.stderr)

# No placement group of this job may outlive it (a leaked one blocks later trials forever).
deadline = time.time() + 60
while True:
    pgs = [p for p in list_placement_groups(address=addr, detail=True, limit=10000,
                                            raise_on_missing_output=False)
           if getattr(p, "creator_job_id", None) == job_hex]
    left = [p for p in pgs if p.state != "REMOVED"]
    if not left or time.time() > deadline:
        break
    time.sleep(3)
check(not left, f"all {len(pgs)} placement groups of the job removed"
      + (f"; left: {[(p.placement_group_id[-8:], p.state) for p in left]}" if left else ""))

# Corrupted copies, checked on a fake worker node with the code the trials run: the node's own
# copy corrupted -> fetched again from the storage; the storage's copy corrupted -> refused.
if staged:
    import ray
    ray.init(address="127.0.0.1:6379", logging_level="ERROR", log_to_driver=False)

    @ray.remote(num_cpus=0, resources={"FAKE_GPU": 0.001})
    def corruption_checks(store: str, bad_store: str, sha256: str) -> tuple[bool, str]:
        import hashlib
        from mtard.errors import MtardError
        from mtard.teachers import node_copy, staged_path
        own = staged_path(sha256)
        own.parent.mkdir(parents=True, exist_ok=True)
        own.write_bytes(b"not a teacher")
        node_copy(store, sha256)
        replaced = hashlib.sha256(own.read_bytes()).hexdigest() == sha256
        own.unlink()  # now only the corrupted storage copy is left to fetch
        try:
            node_copy(bad_store, sha256)
            return replaced, "accepted"
        except MtardError as err:
            return replaced, str(err)

    bad_store = store.parent / "corrupt_store"
    bad_store.mkdir(exist_ok=True)
    good = staged[0]
    (bad_store / good.name).write_bytes(good.read_bytes()[:-1] + b"x")  # one byte changed
    replaced, said = ray.get(corruption_checks.remote(str(store), str(bad_store), good.stem), timeout=120)
    ray.shutdown()
    check(replaced, "a node's corrupted copy of a teacher is fetched again from the storage")
    check("does not match" in said and not (node_teachers / "staged" / good.name).exists(),
          f"a corrupted staged teacher is refused on a worker node ({said[:90]}...)")
sys.exit(1 if failures else 0)
EOF
