#!/usr/bin/env bash
# Follow the logs of a Ray job (cloud or local cluster).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<USAGE
usage: launch/logs.sh JOB_ID [--no-follow]

Runs 'ray job logs --address \$RAY_ADDRESS --follow JOB_ID' (Ctrl-C stops following, not the job;
'ray job stop JOB_ID' stops the job). --no-follow prints what is there and returns.
Environment: RAY_ADDRESS (default http://127.0.0.1:8265), RAY_AUTH_MODE (see submit.sh --help).
USAGE
}
if want_help "$@"; then usage; exit 0; fi
[[ $# -ge 1 && $# -le 2 ]] || { usage >&2; exit 2; }
job_id="$1"
follow=(--follow)
if [[ "${2:-}" == "--no-follow" ]]; then follow=(); elif [[ -n "${2:-}" ]]; then usage >&2; exit 2; fi
need ray

use_token_auth_if_available
run ray job logs --address "$RAY_ADDRESS" ${follow[@]+"${follow[@]}"} "$job_id"
