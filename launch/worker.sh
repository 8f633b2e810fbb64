#!/usr/bin/env bash
# The worker side of launch/tpu/: every worker of a Cloud TPU VM runs the same command
# (`gcloud ... ssh --worker=all`); this file arrives in the dsbs archive that `setup` ships.
#
#   worker.sh setup --code=ID --jax=VERSION --t5x=REVISION|none
#       Installs T5X at REVISION (from GitHub: it is not on PyPI), the dsbs tree unpacked at
#       ~/dsbs.new (moved to ~/dsbs), and jax[tpu]==VERSION last (T5X's and dsbs's requirements
#       may move jax). Each part is skipped when its marker in ~/.dsbs_setup holds the same
#       version; ~/.dsbs_setup/versions holds all three once the worker is ready.
#   worker.sh run --logs=gs://RUN/logs/ATTEMPT [--timeout=S] [--sync=S] [--env=K=V]... -- ARGV...
#       Frees the TPU (stale processes holding /dev/accel* or /dev/vfio, the libtpu lock file),
#       runs ARGV (the trainer, never re-parsed by a shell) under `timeout`, copies its log to
#       LOGS/worker-N.log every S seconds and on exit, and stops it when another worker has
#       failed (a FAILED-worker-N marker under LOGS), so that no worker waits forever in a
#       collective. Exits with the trainer's status (143 when stopped because of another worker).
set -euo pipefail

STATE="$HOME/.dsbs_setup"
# What a TPU process holds open: /dev/accel* (v4) or /dev/vfio/* (v5e, v5p, v6e); libtpu's lock.
TPU_DEVICES=('/dev/accel*' '/dev/vfio/*')
LIBTPU_LOCKFILE=/tmp/libtpu_lockfile
T5X_URL="https://github.com/google-research/t5x"
LIBTPU_INDEX="https://storage.googleapis.com/jax-releases/libtpu_releases.html"
PIP=(python3 -m pip install --quiet)

die() { echo "worker.sh: $*" >&2; exit 2; }
has() { [[ "$(cat "$STATE/$1" 2>/dev/null)" == "$2" ]]; }
mark() { printf '%s\n' "$2" > "$STATE/$1.tmp" && mv "$STATE/$1.tmp" "$STATE/$1"; }

worker_id() {
  # The TPU VM metadata server numbers the workers of a slice 0..N-1.
  curl -sf -H 'Metadata-Flavor: Google' \
    http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number \
    2>/dev/null || hostname
}

setup() {
  local code="" jax="" t5x="" arg changed=0
  for arg in "$@"; do
    case "$arg" in
      --code=*) code="${arg#*=}" ;;
      --jax=*) jax="${arg#*=}" ;;
      --t5x=*) t5x="${arg#*=}" ;;
      *) die "setup: unknown argument $arg" ;;
    esac
  done
  [[ -n "$code" && -n "$jax" && -n "$t5x" ]] || die "setup: --code, --jax and --t5x are required"
  mkdir -p "$STATE"
  rm -f "$STATE/versions"  # not ready until every part below is in place

  if [[ "$t5x" != none ]] && ! has t5x "$t5x"; then
    [[ -d "$HOME/t5x/.git" ]] || git clone --quiet "$T5X_URL" "$HOME/t5x"
    git -C "$HOME/t5x" fetch --quiet origin
    git -C "$HOME/t5x" checkout --quiet --detach "$t5x"
    "${PIP[@]}" -e "$HOME/t5x" -f "$LIBTPU_INDEX"
    mark t5x "$t5x"
    changed=1
  fi
  if ! has dsbs "$code"; then
    [[ -d "$HOME/dsbs.new" ]] || die "setup: no unpacked tree at ~/dsbs.new"
    rm -rf "$HOME/dsbs.old"
    if [[ -d "$HOME/dsbs" ]]; then mv "$HOME/dsbs" "$HOME/dsbs.old"; fi
    mv "$HOME/dsbs.new" "$HOME/dsbs"
    "${PIP[@]}" -e "$HOME/dsbs"
    rm -rf "$HOME/dsbs.old"
    mark dsbs "$code"
    changed=1
  fi
  rm -rf "$HOME/dsbs.new"
  if [[ $changed -eq 1 ]] || ! has jax "$jax"; then
    "${PIP[@]}" "jax[tpu]==$jax" -f "$LIBTPU_INDEX"
    mark jax "$jax"
  fi
  # Import check only: touching the TPU here would start the multi-host runtime on a half-ready
  # slice.
  local imports="import jax, dsbs.tasks"
  [[ "$t5x" == none ]] || imports+=", t5x"
  python3 -c "$imports; print('dsbs worker ready: jax', jax.__version__)"
  mark versions "dsbs=$code jax=$jax t5x=$t5x"
}

free_tpu() {
  # Processes (ours, and others' when passwordless sudo allows) that still hold a TPU device: a
  # killed run's trainer keeps it open and the next one fails with "TPU in use".
  local sudo=() match=() pids pid dev
  if sudo -n true 2>/dev/null; then sudo=(sudo -n); fi
  for dev in "${TPU_DEVICES[@]}"; do match+=(${match[@]:+-o} -lname "$dev"); done
  pids=$("${sudo[@]}" find /proc -maxdepth 3 -path '/proc/[0-9]*/fd/*' \( "${match[@]}" \) \
           2>/dev/null | cut -d/ -f3 | sort -u | grep -vx "$$" || true)
  if [[ -n "$pids" ]]; then
    echo "worker $WORKER: stopping stale processes holding the TPU: $(echo $pids)" >&2
    "${sudo[@]}" kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 60); do
      pids=$(for pid in $pids; do if [[ -d /proc/$pid ]]; then echo "$pid"; fi; done)
      if [[ -z "$pids" ]]; then break; fi
      sleep 0.5
    done
    if [[ -n "$pids" ]]; then "${sudo[@]}" kill -KILL $pids 2>/dev/null || true; fi
  fi
  rm -f "$LIBTPU_LOCKFILE" 2>/dev/null || "${sudo[@]}" rm -f "$LIBTPU_LOCKFILE" || true
}

upload() {
  gcloud storage cp "$LOG" "$LOGS/worker-$WORKER.log" >/dev/null 2>&1 || \
    echo "worker $WORKER: could not copy the log to $LOGS (will retry)" >&2
}

stop_trainer() {
  local pid="${PID:-$!}"  # $!: the trainer when the trap came before `PID=$!`
  [[ -n "$pid" ]] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 60); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.5
  done
  kill -KILL "$pid" 2>/dev/null || true
}

run() {
  local timeout=0 sync=30 arg rc=0 peer=0
  local -a envs=()
  LOGS=""
  while (( $# )); do
    arg="$1"; shift
    case "$arg" in
      --logs=*) LOGS="${arg#*=}" ;;
      --timeout=*) timeout="${arg#*=}" ;;
      --sync=*) sync="${arg#*=}" ;;
      --env=*) envs+=("${arg#*=}") ;;
      --) break ;;
      *) die "run: unknown argument $arg" ;;
    esac
  done
  [[ -n "$LOGS" ]] || die "run: --logs is required"
  (( $# )) || die "run: no trainer command after --"
  for arg in "${envs[@]}"; do export "$arg"; done

  WORKER="$(worker_id)"
  free_tpu
  LOG="$HOME/dsbs_logs/${LOGS##*/}/worker-$WORKER.log"
  mkdir -p "$(dirname "$LOG")"
  local -a cmd=("$@")
  if [[ "$timeout" != 0 ]]; then cmd=(timeout --signal=TERM --kill-after=120 "$timeout" "$@"); fi
  echo "worker $WORKER: $(printf '%q ' "$@")" > "$LOG"
  # The ssh session ending (Ctrl-C in the launcher) or a shutdown stops the trainer, keeps its log.
  # Set before the trainer starts: a hang-up between its start and `PID=$!` still stops it.
  PID=""
  trap 'stop_trainer; upload; exit 143' TERM HUP INT
  if [[ "$WORKER" == 0 ]]; then  # one worker's output on the launcher's terminal is enough
    "${cmd[@]}" > >(tee -a "$LOG") 2>&1 &
  else
    "${cmd[@]}" >> "$LOG" 2>&1 &
  fi
  PID=$!

  while kill -0 "$PID" 2>/dev/null; do
    sleep "$sync" & wait $! || true
    upload
    if gcloud storage ls "$LOGS/FAILED-*" >/dev/null 2>&1; then
      peer=1
      echo "worker $WORKER: another worker failed ($LOGS/FAILED-*): stopping" | tee -a "$LOG" >&2
      stop_trainer
      break
    fi
  done
  wait "$PID" || rc=$?
  trap - TERM HUP INT
  upload
  if (( peer )); then exit 143; fi
  if (( rc != 0 )); then
    echo "worker $WORKER: exit status $rc" | tee -a "$LOG" >&2
    echo "$rc" | gcloud storage cp - "$LOGS/FAILED-worker-$WORKER" >/dev/null 2>&1 || true
    upload
  fi
  exit "$rc"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then  # run, not sourced (the tests source it)
  case "${1:-}" in
    setup) shift; setup "$@" ;;
    run) shift; run "$@" ;;
    *) die "usage: worker.sh setup|run ... (called by launch/tpu/)" ;;
  esac
fi
