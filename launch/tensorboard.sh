#!/usr/bin/env bash
# TensorBoard for a search: on the cloud head through an SSH tunnel, or locally on 127.0.0.1.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<USAGE
usage: launch/tensorboard.sh [--cloud|--local] [--port N] [STORAGE/NAME | STORAGE]

Shows the TensorBoard logdir STORAGE/NAME (one search: Tune writes ray/tune/<metric> scalars
and HParams per trial) or STORAGE (all searches). Default: \$MTARD_STORAGE, else MTARD_STORAGE
in cluster.yaml.

--cloud (default for s3://... logdirs) runs TensorBoard on the head of the cluster.yaml cluster,
  bound to 127.0.0.1 there, and forwards the port over SSH:
    ray exec cluster.yaml "tensorboard --logdir LOGDIR --host 127.0.0.1 --port N" --port-forward N
  (the same as 'ray attach cluster.yaml -p N' and starting TensorBoard in that shell).
  No port is opened in the cluster's security group.
--local (default for plain paths) runs TensorBoard here, on 127.0.0.1 only.
Then open http://127.0.0.1:N (N defaults to 6006). Ctrl-C stops it.
USAGE
}
if want_help "$@"; then usage; exit 0; fi

mode="" port=6006 logdir=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cloud) mode=cloud ;;
    --local) mode=local ;;
    --port) port="${2:?--port needs a value}"; shift ;;
    --port=*) port="${1#--port=}" ;;
    -*) usage >&2; exit 2 ;;
    *) [[ -z "$logdir" ]] || { usage >&2; exit 2; }; logdir="$1" ;;
  esac
  shift
done
[[ "$port" =~ ^[0-9]+$ ]] || die "--port must be a number"

logdir="$(resolve_storage "$logdir")"
if [[ -z "$mode" ]]; then
  if is_uri "$logdir"; then mode=cloud; else mode=local; fi
fi

if [[ "$mode" == local ]]; then
  need tensorboard "it comes with mtard's dependencies"
  [[ -d "$logdir" ]] || die "no such directory: $logdir"
  say "open http://127.0.0.1:$port"
  run tensorboard --logdir "$logdir" --host 127.0.0.1 --port "$port"
else
  need ray
  cd "$REPO_ROOT"
  say "open http://127.0.0.1:$port once TensorBoard reports it is serving"
  run ray exec "$CLUSTER_YAML" "tensorboard --logdir $(quote "$logdir") --host 127.0.0.1 --port $port" \
    --port-forward "$port"
fi
