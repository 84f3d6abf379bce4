#!/usr/bin/env bash
# Train catalog teachers by their recipes as a Ray job on a GPU node, and publish them to the storage.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<USAGE
usage: launch/train_teacher.sh [--dry-run] NAME [NAME...] [-- STORAGE]

Runs, from the repository root:
  ray job submit --address \$RAY_ADDRESS --working-dir . --entrypoint-num-gpus 1 --no-wait -- \\
      mtard teachers train NAME... --publish STORAGE
and prints the job id. The job runs on a GPU worker node (the head has no GPU); each teacher goes
to STORAGE/teachers/<sha256>.pt with a record STORAGE/teachers/published/NAME.json, where every
later 'mtard search --storage STORAGE' (launch/submit.sh) finds it: the search driver pulls it
and stages it for the trial nodes. Searches never train a teacher that has no auto_train flag.

STORAGE  default: \$MTARD_STORAGE, else MTARD_STORAGE in cluster.yaml (as launch/submit.sh).
--dry-run  print the command, do not submit.
USAGE
}
if want_help "$@"; then usage; exit 0; fi

dry_run=0
if [[ "${1:-}" == "--dry-run" ]]; then dry_run=1; shift; fi
names=()
while [[ $# -gt 0 && "$1" != "--" ]]; do names+=("$1"); shift; done
[[ ${#names[@]} -ge 1 ]] || { usage >&2; exit 2; }
storage_arg=""
if [[ "${1:-}" == "--" ]]; then storage_arg="${2:-}"; fi
storage="$(resolve_storage "$storage_arg")"

cd "$REPO_ROOT"
job_id="mtard-teachers-$(date -u +%s)-$RANDOM"
use_token_auth_if_available
cmd=(ray job submit --address "$RAY_ADDRESS" --submission-id "$job_id" --working-dir "${MTARD_WORKING_DIR:-.}"
     --entrypoint-num-gpus 1 --no-wait -- mtard teachers train "${names[@]}" --publish "$storage")
submit_job "${cmd[@]}"
say "submitted; follow: launch/logs.sh $job_id"
printf '%s\n' "$job_id"
