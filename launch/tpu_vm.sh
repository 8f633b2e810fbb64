#!/usr/bin/env bash
# One training job on a Cloud TPU VM: create the VM, set up every worker, train on all workers,
# copy the run dir back, delete the VM (on success, failure or Ctrl-C).
#
#   launch/tpu_vm.sh --name=dsbs-anli-770m --zone=us-central2-b --accelerator=v4-32 \
#     --model_dir=gs://my-bucket/dsbs/anli_770m --gin_file=gin_configs/anli_770m.gin \
#     --gin=MIXTURE_OR_TASK_NAME="'anli1_dsbs'" [--dry_run]
#
# Flags (all --flag=value):
#   --name          TPU VM name (lowercase letters, digits, '-'; required)
#   --zone          GCE zone (required), e.g. us-central2-b (v4), us-west4-a (v5e)
#   --accelerator   --accelerator-type, e.g. v4-32, v5litepod-64 (required)
#   --version       TPU VM runtime (default tpu-ubuntu2204-base; v5e: v2-alpha-tpuv5-lite)
#   --project       GCP project (default: gcloud's configured project)
#   --model_dir     gs:// run dir; T5X writes checkpoints and metrics there (required)
#   --gin_file      gin file relative to the repo root (repeatable; default gin_configs/anli_770m.gin)
#   --gin           extra binding KEY=VALUE passed as --gin.KEY=VALUE (repeatable)
#   --engine        t5x (python -m t5x.train, default) or dsbs (python -m dsbs.train)
#   --data_dir      where the released benchmark data lives (gs:// or a path on the workers);
#                   exported to the workers as DSBS_DATA_DIR
#   --t5x_ref       T5X git ref to install (default main)
#   --jax_version   jax[tpu] version pin (default: newest)
#   --collect_to    local dir to copy the run dir into after training (default: none)
#   --spot          create a Spot VM
#   --keep          do not delete the VM at the end (debugging)
#   --dry_run       print every command instead of running it
#   --job_json      JSON describing the sweep cell; written to <model_dir>/dsbs_job.json
#
# Every worker receives this checkout (tracked and untracked-but-not-ignored files, as a tarball),
# runs launch/setup_worker.sh, then the same training command: JAX's multi-host runtime connects
# the workers; T5X writes the run dir from process 0.
set -euo pipefail

NAME="" ZONE="" ACCEL="" VERSION="tpu-ubuntu2204-base" PROJECT="" MODEL_DIR="" ENGINE="t5x"
DATA_DIR="" T5X_REF="main" JAX_VERSION="" COLLECT_TO="" SPOT=0 KEEP=0 DRY_RUN=0 JOB_JSON=""
GIN_FILES=() GIN_BINDINGS=()

die() { echo "tpu_vm.sh: $*" >&2; exit 2; }

for arg in "$@"; do
  case "$arg" in
    --name=*) NAME="${arg#*=}" ;;
    --zone=*) ZONE="${arg#*=}" ;;
    --accelerator=*) ACCEL="${arg#*=}" ;;
    --version=*) VERSION="${arg#*=}" ;;
    --project=*) PROJECT="${arg#*=}" ;;
    --model_dir=*) MODEL_DIR="${arg#*=}" ;;
    --gin_file=*) GIN_FILES+=("${arg#*=}") ;;
    --gin=*) GIN_BINDINGS+=("${arg#*=}") ;;
    --engine=*) ENGINE="${arg#*=}" ;;
    --data_dir=*) DATA_DIR="${arg#*=}" ;;
    --t5x_ref=*) T5X_REF="${arg#*=}" ;;
    --jax_version=*) JAX_VERSION="${arg#*=}" ;;
    --collect_to=*) COLLECT_TO="${arg#*=}" ;;
    --job_json=*) JOB_JSON="${arg#*=}" ;;
    --spot) SPOT=1 ;;
    --keep) KEEP=1 ;;
    --dry_run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) die "unknown argument: $arg (see --help)" ;;
  esac
done

[[ -n "$NAME" ]] || die "--name is required"
[[ "$NAME" =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]] || die "--name=$NAME: use lowercase letters, digits and '-', start with a letter"
[[ -n "$ZONE" ]] || die "--zone is required"
[[ -n "$ACCEL" ]] || die "--accelerator is required (e.g. v4-32)"
[[ "$MODEL_DIR" == gs://* ]] || die "--model_dir must be a gs:// path (the workers write it), got '$MODEL_DIR'"
[[ "$ENGINE" == t5x || "$ENGINE" == dsbs ]] || die "--engine must be t5x or dsbs, got '$ENGINE'"
[[ ${#GIN_FILES[@]} -gt 0 ]] || GIN_FILES=(gin_configs/anli_770m.gin)

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for f in "${GIN_FILES[@]}"; do
  [[ -f "$REPO/$f" ]] || die "--gin_file=$f not found under $REPO"
done

TPU=(gcloud compute tpus tpu-vm)
LOC=(--zone="$ZONE")
[[ -n "$PROJECT" ]] && LOC+=(--project="$PROJECT")

# Prints the command (shell-quoted); runs it unless --dry_run.
run() {
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [[ $DRY_RUN -eq 0 ]]; then "$@"; fi
}

# The training command every worker runs, built as one shell-quoted string for ssh --command.
train_cmd() {
  local -a cmd=(python3 -m "$ENGINE.train")
  local f b
  for f in "${GIN_FILES[@]}"; do cmd+=("--gin_file=$f"); done
  if [[ "$ENGINE" == t5x ]]; then
    cmd+=("--gin.MODEL_DIR='$MODEL_DIR'")
  else
    cmd+=("--model_dir=$MODEL_DIR")
  fi
  for b in "${GIN_BINDINGS[@]}"; do cmd+=("--gin.$b"); done
  local env="export DSBS_DATA_DIR=$(printf %q "$DATA_DIR"); cd ~/dsbs &&"
  [[ -n "$DATA_DIR" ]] || env="cd ~/dsbs &&"
  printf '%s' "$env"; printf ' %q' "${cmd[@]}"; printf ' 2>&1 | tee ~/train.log; exit ${PIPESTATUS[0]}'
}

CREATED=0
teardown() {
  local rc=$?
  if [[ $CREATED -eq 1 ]]; then
    # Keep the workers' logs next to the run dir before the VM goes away.
    run "${TPU[@]}" ssh "$NAME" "${LOC[@]}" --worker=all \
      --command="gsutil -q cp ~/train.log $MODEL_DIR/logs/worker-\$(hostname).log || true" || true
    if [[ $KEEP -eq 1 ]]; then
      echo "tpu_vm.sh: --keep: leaving $NAME running; delete it with:" >&2
      printf '  %q' "${TPU[@]}" delete "$NAME" "${LOC[@]}" --quiet >&2; echo >&2
    else
      run "${TPU[@]}" delete "$NAME" "${LOC[@]}" --quiet || echo "tpu_vm.sh: delete of $NAME failed: delete it by hand" >&2
    fi
  fi
  exit $rc
}
trap teardown EXIT
trap 'exit 130' INT TERM

# 1. Create the VM.
CREATE=("${TPU[@]}" create "$NAME" "${LOC[@]}" --accelerator-type="$ACCEL" --version="$VERSION")
[[ $SPOT -eq 1 ]] && CREATE+=(--spot)
CREATED=1  # set before create: a half-created VM must be deleted too
run "${CREATE[@]}"

# 2. Ship this checkout and set up every worker.
TARBALL="$(mktemp -d)/dsbs.tgz"
if [[ $DRY_RUN -eq 0 ]]; then
  (cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
    | xargs -0 tar czf "$TARBALL" --ignore-failed-read)
fi
run "${TPU[@]}" scp "$TARBALL" "$NAME:~/dsbs.tgz" "${LOC[@]}" --worker=all
SETUP="rm -rf ~/dsbs && mkdir -p ~/dsbs && tar xzf ~/dsbs.tgz -C ~/dsbs && \
T5X_REF=$(printf %q "$T5X_REF") JAX_VERSION=$(printf %q "$JAX_VERSION") bash ~/dsbs/launch/setup_worker.sh"
run "${TPU[@]}" ssh "$NAME" "${LOC[@]}" --worker=all --command="$SETUP"

# 3. Record the job, then train on every worker.
if [[ -n "$JOB_JSON" ]]; then
  JOB_FILE="$(mktemp)"
  [[ $DRY_RUN -eq 1 ]] || printf '%s\n' "$JOB_JSON" > "$JOB_FILE"
  run gsutil -q cp "$JOB_FILE" "$MODEL_DIR/dsbs_job.json"
fi
run "${TPU[@]}" ssh "$NAME" "${LOC[@]}" --worker=all --command="$(train_cmd)"

# 4. Collect the run dir.
if [[ -n "$COLLECT_TO" ]]; then
  [[ $DRY_RUN -eq 1 ]] || mkdir -p "$COLLECT_TO"
  run gsutil -m -q cp -r "$MODEL_DIR" "$COLLECT_TO/"
fi
echo "tpu_vm.sh: done: $MODEL_DIR"
