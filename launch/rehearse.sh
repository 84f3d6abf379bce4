#!/usr/bin/env bash
# Dress rehearsal of the cloud workflow on this machine: a fake multi-node Ray cluster
# (launch/local_cluster.yaml), the search submitted through launch/submit.sh exactly as on AWS,
# then checks on what came out. Exits non-zero if any check fails; always stops the cluster.
# A bash driver: its Python steps are `python -P mtard/rehearsal.py <step>` (module mtard.rehearsal).
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

# The Python steps live in mtard/rehearsal.py (linted and tested), run with the Python next to `ray`,
# by path (-P: without mtard/ on sys.path) so that no step pays for importing the mtard package.
rehearsal() { "$PY" -P "$REPO_ROOT/mtard/rehearsal.py" "$@"; }

# Free ports (a busy one falls back to an ephemeral port, clear of the worker port range
# 10002-19999), and the head's `ray start` flags and the expected worker nodes, from local_cluster.yaml.
layout="$(rehearsal prepare "$LOCAL_YAML" 6379 "${REHEARSE_DASHBOARD_PORT:-8265}" 10001 52365)"
eval "$layout"
[[ "${PORTS[0]}" == 6379 ]] ||
  die "port 6379 is taken (another Ray cluster?); the fake multi-node provider always connects its nodes to 6379"
dash_port="${PORTS[1]}" client_port="${PORTS[2]}" agent_port="${PORTS[3]}"
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
{ od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; echo; } >"$RUN_DIR/auth_token"
chmod 600 "$RUN_DIR/auth_token"
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$RUN_DIR/auth_token"
unset RAY_AUTH_TOKEN

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
    for ((i = 0; i < 75; i++)); do kill -0 "$HEAD_PID" 2>/dev/null || break; sleep 0.2; done  # up to 15 s
  fi
  # (zombies excluded: they are already dead, waiting for their parent to reap them)
  session_pids() { ps -eo pid=,sid=,stat= | awk -v s="$SESSION" '$2 == s && $3 !~ /^Z/ { print $1 }'; }
  pids="$(session_pids | tr '\n' ' ')"
  if [[ -n "${pids// /}" ]]; then
    # shellcheck disable=SC2086
    show kill -TERM $pids; kill -TERM $pids 2>/dev/null || true
    # (the fake nodes' raylets take ~10 s to honour SIGTERM; the results are checked by now, so 3 s of grace)
    for ((i = 0; i < 15; i++)); do [[ -z "$(session_pids)" ]] && break; sleep 0.2; done
    pids="$(session_pids | tr '\n' ' ')"
    if [[ -n "${pids// /}" ]]; then
      # shellcheck disable=SC2086
      show kill -KILL $pids; kill -KILL $pids 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do [[ -z "$(session_pids)" ]] && break; sleep 0.2; done
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
rehearsal wait-nodes "$dash_addr" "$MIN_WORKERS" "$HEAD_PID" "$LOCAL_YAML"

# 3. Snapshot what `--working-dir .` would upload, and submit through submit.sh.
say "snapshotting the repository as Ray would upload it"
rehearsal snapshot "$REPO_ROOT" "$RUN_DIR"

job_id="$(RAY_ADDRESS="$dash_addr" MTARD_NAME="$NAME" MTARD_DRIVER_TEACHERS="$DRIVER_TEACHERS" MTARD_WORKING_DIR="local://$RUN_DIR/workdir" \
  "$LAUNCH_DIR/submit.sh" "$space" "$STORAGE" ${extra[@]+"${extra[@]}"})" ||
  die "submission failed (launch/submit.sh output above)"
[[ -n "$job_id" ]] || die "submit.sh printed no job id"
printf 'job_id=%s\n' "$job_id" >>"$RUN_DIR/pids"
say "job: $job_id (logs: RAY_ADDRESS=$dash_addr launch/logs.sh $job_id, or $RUN_DIR/job.log at the end)"

# 4. Wait for the job.
rehearsal wait-job "$dash_addr" "$job_id" "$timeout_s" || job_rc=$?
job_rc="${job_rc:-0}"
ray job logs --address "$dash_addr" "$job_id" >"$RUN_DIR/job.log" 2>&1 || true
if (( job_rc != 0 )); then
  say "job did not succeed; last lines of $RUN_DIR/job.log:"
  tail -n 60 "$RUN_DIR/job.log" >&2 || true
  exit 1
fi

# 5. Checks.
say "checking results, node spread and placement groups"
rehearsal check "$dash_addr" "$job_id" "$STORAGE/$NAME" "$NODE_TEACHERS" "$STORAGE/teachers"
