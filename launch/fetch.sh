#!/usr/bin/env bash
# Copy a search's results (and the Pareto front's checkpoints) from the storage path to here.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<USAGE
usage: launch/fetch.sh [--from-head] NAME|STORAGE/NAME [DEST]

Copies from STORAGE/NAME into DEST (default: runs/NAME in the repository, git-ignored):
  pareto.csv, pareto.json (required), trials.csv, study.db (Optuna; optuna-dashboard can open
  it), and the checkpoint directory of every Pareto-front member listed in pareto.json
  (members' "checkpoint" (or "checkpoint_path") entries, relative to STORAGE/NAME or absolute
  under it), keeping their relative paths.
NAME alone means \$MTARD_STORAGE/NAME (else MTARD_STORAGE from cluster.yaml).

How, by storage:
  s3://...     aws s3 cp (needs the AWS CLI and credentials for the bucket)
  a local dir  cp -R (a local cluster, or storage mounted here)
  --from-head  the path is on the cloud head's disk: ray rsync-down cluster.yaml
USAGE
}
if want_help "$@"; then usage; exit 0; fi

from_head=0
if [[ "${1:-}" == "--from-head" ]]; then from_head=1; shift; fi
[[ $# -ge 1 && $# -le 2 ]] || { usage >&2; exit 2; }

if [[ "$1" == */* ]]; then
  src="$1"
  is_uri "$src" || (( from_head )) || src="$(abspath "$src")"
else
  storage="$(resolve_storage "")"
  src="${storage%/}/$1"
fi
src="${src%/}"
name="$(basename "$src")"
dest="$(abspath "${2:-$REPO_ROOT/runs/$name}")"

if (( from_head )); then
  kind=head
elif [[ "$src" == s3://* ]]; then
  kind=s3
elif is_uri "$src"; then
  die "unsupported storage scheme: $src (s3://, a local path, or --from-head)"
else
  kind=local
  [[ -d "$src" ]] || die "no such directory: $src"
fi
case "$kind" in
  s3) need aws "the AWS CLI" ;;
  head) need ray ;;
esac

# copy file|dir REL [optional]: SRC/REL -> DEST/REL
copy() {
  local what="$1" rel="$2" optional="${3:-}"
  local from="$src/$rel" to="$dest/$rel" ok=1
  mkdir -p "$(dirname "$to")"
  case "$kind" in
    local)
      if [[ ! -e "$from" ]]; then ok=0
      elif [[ "$what" == dir ]]; then mkdir -p "$to"; run cp -R "$from/." "$to"
      else run cp "$from" "$to"; fi ;;
    s3)
      if [[ "$what" == dir ]]; then
        # an absent prefix copies nothing and still succeeds
        run aws s3 cp --only-show-errors --recursive "$from" "$to" && [[ -e "$to" ]] || ok=0
      else
        run aws s3 cp --only-show-errors "$from" "$to" || ok=0
      fi ;;
    head)
      run ray rsync-down "$CLUSTER_YAML" "$from" "$to" && [[ -e "$to" ]] || ok=0 ;;
  esac
  if (( ! ok )); then
    [[ -n "$optional" ]] || die "could not copy $from"
    say "skipped (not there): $from"
  fi
}

mkdir -p "$dest"
[[ "$kind" != head ]] || cd "$REPO_ROOT"
copy file pareto.csv
copy file pareto.json
copy file trials.csv optional
copy file study.db optional

# The front's checkpoints, from pareto.json. Accepted shapes: a list of members, or an object
# with the list under "front" / "members" / "pareto" / "trials"; a member's checkpoint is a path
# string or {"path": ...} under "checkpoint" / "checkpoint_path" / "checkpoint_dir"; it may be
# relative to STORAGE/NAME, or absolute (with or without the s3:// scheme) under it.
ckpts=()
while IFS= read -r line; do ckpts+=("$line"); done < <(python3 - "$dest/pareto.json" "$src" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
src = sys.argv[2].split("://", 1)[-1].rstrip("/")
members = data
if isinstance(data, dict):
    members = next((data[k] for k in ("front", "members", "pareto", "trials") if k in data), [])
seen = []
for m in members if isinstance(members, list) else []:
    if not isinstance(m, dict):
        continue
    for key in ("checkpoint", "checkpoint_path", "checkpoint_dir"):
        c = m.get(key)
        if isinstance(c, dict):
            c = c.get("path")
        if isinstance(c, str) and c:
            break
    else:
        continue
    p = c.split("://", 1)[-1].rstrip("/")
    if p.startswith(src + "/"):
        p = p[len(src) + 1:]
    elif p.startswith("/") or "://" in c:
        print(f"[fetch.sh] not under {sys.argv[2]}, not copied: {c}", file=sys.stderr)
        continue
    # pareto.json is data, not a list of paths to trust: a ".." anywhere (x/../../payload)
    # would copy from outside the experiment to outside DEST.
    if p.startswith("/") or ".." in p.split("/"):
        print(f"[fetch.sh] unsafe checkpoint path (absolute or with ..), not copied: {c}", file=sys.stderr)
        continue
    if p not in seen:
        seen.append(p)
        print(p)
PY
)
if [[ ${#ckpts[@]} -eq 0 ]]; then
  say "pareto.json names no checkpoints under $src: copied the tables only"
fi
missing=0
for rel in ${ckpts[@]+"${ckpts[@]}"}; do
  copy dir "$rel" optional || true
  [[ -e "$dest/$rel" ]] || missing=$((missing + 1))
done
say "fetched $src -> $dest (${#ckpts[@]} front checkpoint(s), $missing missing)"
(( missing == 0 )) || die "$missing front checkpoint(s) listed in pareto.json were not found"
