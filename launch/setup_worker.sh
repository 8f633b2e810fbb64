#!/usr/bin/env bash
# Sets up one Cloud TPU VM worker: jax[tpu], T5X from GitHub (it is not on PyPI), and this
# checkout of dsbs (unpacked at ~/dsbs by launch/tpu_vm.sh). Idempotent: re-running upgrades.
#
# Env: T5X_REF (git ref, default main), JAX_VERSION (pin for jax[tpu], default newest).
set -euo pipefail

T5X_REF="${T5X_REF:-main}"
JAX_SPEC="jax[tpu]${JAX_VERSION:+==$JAX_VERSION}"
LIBTPU_INDEX="https://storage.googleapis.com/jax-releases/libtpu_releases.html"
PIP=(python3 -m pip install --upgrade --quiet)

"${PIP[@]}" pip
"${PIP[@]}" "$JAX_SPEC" -f "$LIBTPU_INDEX"

# T5X pulls airio, jestimator, clu, seqio (and flax, optax) from GitHub through its setup.py.
if [[ ! -d ~/t5x/.git ]]; then
  git clone --quiet https://github.com/google-research/t5x ~/t5x
fi
git -C ~/t5x fetch --quiet origin "$T5X_REF"
git -C ~/t5x checkout --quiet FETCH_HEAD
"${PIP[@]}" -e "$HOME/t5x[tpu]" -f "$LIBTPU_INDEX"

# T5X's requirements may move jax; put the TPU build back on top.
"${PIP[@]}" "$JAX_SPEC" -f "$LIBTPU_INDEX"
"${PIP[@]}" -e "$HOME/dsbs"

# Import check only: touching the TPU here would start the multi-host runtime on a half-ready pod.
python3 -c "import jax, t5x, dsbs.tasks; print('worker ready: jax', jax.__version__)"
