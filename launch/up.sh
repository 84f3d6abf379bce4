#!/usr/bin/env bash
# Start (or update) the AWS cluster described by cluster.yaml.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<USAGE
usage: launch/up.sh [extra 'ray up' options, e.g. --no-config-cache]

Runs 'ray up -y cluster.yaml' from the repository root (file_mounts sync '.' to ~/mtard).
Before that it refuses a cluster.yaml that still has YOUR-... placeholders, and creates your
cluster auth token (~/.ray/auth_token, 'ray get-auth-token --generate') if you have none:
token authentication is on in cluster.yaml and file_mounts copies the token to every node.
Then keep 'ray dashboard cluster.yaml' running to reach the dashboard / job API on
http://127.0.0.1:8265 (what launch/submit.sh and launch/logs.sh use).

Environment: MTARD_CLUSTER_YAML (default: cluster.yaml in the repository root).
USAGE
}
if want_help "$@"; then usage; exit 0; fi
need ray "pip install 'ray[default]==2.60.0' boto3"

cd "$REPO_ROOT"
if grep -n 'YOUR-' "$CLUSTER_YAML" | grep -v '^[0-9]*:[[:space:]]*#' >&2; then
  die "replace the YOUR-... placeholders above in $CLUSTER_YAML first"
fi
if [[ ! -s "$HOME/.ray/auth_token" && -z "${RAY_AUTH_TOKEN_PATH:-}" ]]; then
  say "no ~/.ray/auth_token yet: generating one (kept private: not printed)"
  run ray get-auth-token --generate >/dev/null
  run chmod 600 "$HOME/.ray/auth_token"
fi
run ray up -y "$CLUSTER_YAML" "$@"
say "next: 'ray dashboard $CLUSTER_YAML' (keep it running), then launch/submit.sh SPACE"
