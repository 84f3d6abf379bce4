#!/usr/bin/env bash
# Submit `mtard search` as a Ray job (cloud cluster or local cluster); prints the job id.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<USAGE
usage: launch/submit.sh [--dry-run] SPACE [STORAGE] [extra 'mtard search' args...]

Runs, from the repository root:
  ray job submit --address \$RAY_ADDRESS --submission-id ID --working-dir . \\
      --entrypoint-resources '{"mtard_driver": 1}' --no-wait -- \\
      mtard search search_spaces/SPACE.yaml --storage STORAGE --name NAME [extra args]
and prints ID, the job id, as the only line on stdout (everything else goes to stderr):
  JOB=\$(launch/submit.sh digits_tiny) && launch/logs.sh "\$JOB"

SPACE    a name in search_spaces/ (digits_tiny) or a path to a YAML file inside the repository.
STORAGE  where results go: s3://bucket/prefix for the cloud, a directory for a local cluster.
         Default: \$MTARD_STORAGE, else MTARD_STORAGE in cluster.yaml (must not be the placeholder).
         Results end up in STORAGE/NAME (pareto.csv, pareto.json, trials.csv, study.db, ...).
extra    passed to 'mtard search' as is (e.g. --resume PATH). A --name here replaces the default.
--dry-run  print the command, do not submit.

The job's entrypoint asks for 1 unit of 'mtard_driver', which only the head node has, so the
search always runs on the head (never on a spot GPU node).

Environment:
  RAY_ADDRESS        job API address (default http://127.0.0.1:8265: 'ray dashboard cluster.yaml'
                     forwards the cloud head there; a local head listens there)
  MTARD_NAME         experiment name (default SPACE-YYYYmmdd-HHMMSS, UTC)
  MTARD_DRIVER_TEACHERS  the search driver's teacher cache (\$MTARD_TEACHERS of the job only; workers
                     keep their own). Teachers reach the workers through STORAGE/teachers either way;
                     rehearse.sh sets it so the fake nodes provably get them from there.
  MTARD_WORKING_DIR  what to ship as the job's working dir (default '.': upload the tree, minus
                     .gitignore'd files). 'local:///abs/dir' uses a directory already present on
                     every node instead (launch/rehearse.sh does this: its fake nodes share a disk).
  RAY_AUTH_MODE      set to 'token' automatically when you have a token (~/.ray/auth_token).
USAGE
}
if want_help "$@"; then usage; exit 0; fi

dry_run=0
if [[ "${1:-}" == "--dry-run" ]]; then dry_run=1; shift; fi
[[ $# -ge 1 ]] || { usage >&2; exit 2; }
space="$1"; shift
storage_arg=""
if [[ $# -ge 1 && "$1" != -* ]]; then storage_arg="$1"; shift; fi
extra=()
if [[ $# -gt 0 ]]; then extra=("$@"); fi

# The job runs in the shipped copy of the repository, so the space must be a file inside it.
if [[ -f "$space" ]]; then
  space_abs="$(cd "$(dirname -- "$space")" && pwd -P)/$(basename -- "$space")"
  [[ "$space_abs" == "$REPO_ROOT"/* ]] || die "$space is outside $REPO_ROOT; the job could not see it"
  space_path="${space_abs#"$REPO_ROOT"/}"
else
  space_path="search_spaces/${space%.yaml}.yaml"
  [[ -f "$REPO_ROOT/$space_path" ]] ||
    die "no such search space: $space_path (have: $(cd "$REPO_ROOT" && ls search_spaces 2>/dev/null | tr '\n' ' '))"
fi
space_name="$(basename "$space_path" .yaml)"

storage="$(resolve_storage "$storage_arg")"

# The name: --name in the extra args wins; else MTARD_NAME; else SPACE-timestamp.
name=""
for ((i = 0; i < ${#extra[@]}; i++)); do
  case "${extra[i]}" in
    --name) name="${extra[i+1]:-}" ;;
    --name=*) name="${extra[i]#--name=}" ;;
  esac
done
name_args=()
if [[ -z "$name" ]]; then
  name="${MTARD_NAME:-${space_name}-$(date -u +%Y%m%d-%H%M%S)}"
  name_args=(--name "$name")
fi
[[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || die "name '$name': use letters, digits, '.', '_' and '-' only"

cd "$REPO_ROOT"
job_id="mtard-${name}-$(date -u +%s)-$RANDOM"
working_dir="${MTARD_WORKING_DIR:-.}"

entry_env=()
if [[ -n "${MTARD_DRIVER_TEACHERS:-}" ]]; then entry_env=(env "MTARD_TEACHERS=$MTARD_DRIVER_TEACHERS"); fi

use_token_auth_if_available
cmd=(ray job submit --address "$RAY_ADDRESS" --submission-id "$job_id"
     --working-dir "$working_dir" --entrypoint-resources '{"mtard_driver": 1}' --no-wait
     -- ${entry_env[@]+"${entry_env[@]}"} mtard search "$space_path" --storage "$storage" ${name_args[@]+"${name_args[@]}"} ${extra[@]+"${extra[@]}"})
submit_job "${cmd[@]}"
say "submitted; results: $storage/$name"
say "follow: launch/logs.sh $job_id    fetch: launch/fetch.sh $storage/$name"
printf '%s\n' "$job_id"
