#!/usr/bin/env bash
# Tear down the AWS cluster described by cluster.yaml (head and all workers).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<USAGE
usage: launch/down.sh [extra 'ray down' options]

Runs 'ray down -y cluster.yaml'. Results live in the storage path (S3), not on the nodes:
run launch/fetch.sh first if you want them locally, they stay in S3 either way.
Environment: MTARD_CLUSTER_YAML (default: cluster.yaml in the repository root).
USAGE
}
if want_help "$@"; then usage; exit 0; fi
need ray

cd "$REPO_ROOT"
run ray down -y "$CLUSTER_YAML" "$@"
