# shellcheck shell=bash
# Helpers sourced by the launch/*.sh scripts (not run on its own).
#
# Every script works against either cluster:
#   - the AWS cluster from cluster.yaml, reached through `ray dashboard cluster.yaml`, which
#     forwards its dashboard (the job submission API) to http://127.0.0.1:8265;
#   - a local cluster (launch/rehearse.sh, or `ray start --head`), same default address.
# Override the address with RAY_ADDRESS (e.g. RAY_ADDRESS=http://127.0.0.1:8266).

LAUNCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd "$LAUNCH_DIR/.." && pwd -P)"
CLUSTER_YAML="${MTARD_CLUSTER_YAML:-$REPO_ROOT/cluster.yaml}"
: "${RAY_ADDRESS:=http://127.0.0.1:8265}"
export RAY_ADDRESS

say() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# Shell-quote one word for display: bare when safe, else in single quotes.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then printf '%s' "$1"
  else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
# Print a command exactly (copy-pasteable) to stderr.
show() {
  local a out="+"
  for a in "$@"; do out+=" $(quote "$a")"; done
  printf '%s\n' "$out" >&2
}
# Print the exact command, then run it.
run() { show "$@"; "$@"; }

# `ray job submit ...`: shown only when $dry_run is 1, else run, with ray's own output on stderr
# (stdout carries only the job id the caller prints).
submit_job() {
  if (( dry_run )); then
    show "$@"
    say "dry run: not submitted"
    exit 0
  fi
  need ray
  # Right after a head starts, its dashboard may not yet have a job agent and answers
  # "No available agent to submit job, please try again later": do as it says, a few times.
  local try out
  for try in 1 2 3 4 5 6; do
    show "$@"
    if out=$("$@" 2>&1); then printf '%s\n' "$out" >&2; return 0; fi
    printf '%s\n' "$out" >&2
    [[ "$out" == *"No available agent to submit job"* && $try -lt 6 ]] || return 1
    say "the head's job agent is not up yet; trying again in 5 s ($try of 5 retries)"
    sleep 5
  done
}

want_help() {
  local a
  for a in "$@"; do
    [[ "$a" == "--" ]] && return 1
    [[ "$a" == "-h" || "$a" == "--help" ]] && return 0
  done
  return 1
}

# A tool this script needs. The README installs into the repository's .venv without activating it,
# so when a tool is not on PATH but that .venv has it, put the .venv's bin first and say so.
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [[ -x "$REPO_ROOT/.venv/bin/$1" ]]; then
    export PATH="$REPO_ROOT/.venv/bin:$PATH"
    say "using $1 from $REPO_ROOT/.venv/bin (not on PATH)"
    return 0
  fi
  die "'$1' not found on PATH or in $REPO_ROOT/.venv/bin${2:+ ($2)}"
}

# Token authentication: a Ray client only sends the token when RAY_AUTH_MODE=token. The
# cluster (cloud: cluster.yaml; local: rehearse.sh) requires it, so turn it on whenever a token
# is available and the user has not chosen a mode explicitly.
use_token_auth_if_available() {
  if [[ -z "${RAY_AUTH_MODE:-}" ]] && {
       [[ -n "${RAY_AUTH_TOKEN:-}" ]] || [[ -n "${RAY_AUTH_TOKEN_PATH:-}" ]] ||
       [[ -s "$HOME/.ray/auth_token" ]]; }; then
    export RAY_AUTH_MODE=token
    say "token found: using RAY_AUTH_MODE=token"
  fi
}

# The MTARD_STORAGE value exported to the cloud containers (docker.run_options in cluster.yaml).
cluster_storage() {
  [[ -f "$CLUSTER_YAML" ]] || return 0
  sed -nE 's/^[[:space:]]*-[[:space:]]*(--env|-e)[[:space:]]+MTARD_STORAGE=([^[:space:]"#]+).*/\2/p' \
    "$CLUSTER_YAML" | head -n 1
}

# Storage: explicit value, else $MTARD_STORAGE, else the value in cluster.yaml. Local paths are
# made absolute (a relative path would resolve inside the job's unpacked working dir).
resolve_storage() {
  local s="${1:-}" from="argument"
  if [[ -z "$s" && -n "${MTARD_STORAGE:-}" ]]; then s="$MTARD_STORAGE"; from="\$MTARD_STORAGE"; fi
  if [[ -z "$s" ]]; then s="$(cluster_storage)"; from="$CLUSTER_YAML"; fi
  [[ -n "$s" ]] || die "no storage: pass STORAGE, or export MTARD_STORAGE (s3://bucket/prefix or a path all nodes share)"
  if [[ "$s" == *YOUR-BUCKET* ]]; then
    die "storage '$s' (from $from) is still the placeholder: set your bucket in cluster.yaml, or pass STORAGE / export MTARD_STORAGE"
  fi
  if [[ "$s" != *://* ]]; then s="$(abspath "$s")"; fi
  say "storage: $s (from $from)"
  printf '%s\n' "$s"
}

# Absolute path without requiring it to exist (portable: no GNU realpath -m).
abspath() {
  local p="$1"
  [[ "$p" == /* ]] || p="$PWD/$p"
  # drop "/./" and a trailing "/." ; ".." is left to the filesystem
  p="${p//\/.\//\/}"; p="${p%/.}"
  printf '%s\n' "$p"
}

is_uri() { [[ "$1" == *://* ]]; }
