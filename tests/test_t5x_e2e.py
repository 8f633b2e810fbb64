"""The tiny offline config through the real `python -m t5x.train` / `t5x.eval`, and checkpoint
interop between T5X and dsbs.model (skipped where T5X is not installed).

One tiny T5X run (20 steps, byte vocabulary, synthetic arith data, ~1-2 min on 2 CPU cores)
serves every test here:
  * T5X trains it and evaluates it on validation while training, and `t5x.eval` scores the
    checkpoint on test (the commands in gin_configs/smoke_offline.gin's header);
  * dsbs.model.checkpoint_formats reads T5X's checkpoint, and dsbs's Flax T5 gives the same
    logits as T5X's own network on those parameters;
  * a checkpoint exported by dsbs in T5X format evaluates under `t5x.eval` with predictions
    identical to the original checkpoint's.
"""
from __future__ import annotations

import importlib.util
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import dsbs.data
from dsbs.model import checkpoint_formats, config, network, param_tree

REPO = pathlib.Path(__file__).resolve().parent.parent
STEPS = 20
TASK = "arith_label_gt_byte"  # the scored task of arith_dsbs_byte

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("t5x") is None,
                       reason="T5X is not installed (not on PyPI): pip install it from GitHub "
                              "to run these, see gin_configs/README.md"),
    pytest.mark.timeout(900),
]


def _run(args: list[str], log: pathlib.Path) -> None:
  with open(log, "w", encoding="utf-8") as f:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, stdout=f,
                          stderr=subprocess.STDOUT, timeout=600, check=False)
  if proc.returncode:
    tail = "\n".join(log.read_text(encoding="utf-8").splitlines()[-40:])
    pytest.fail(f"python -m {' '.join(args)} exited {proc.returncode}; log tail:\n{tail}")


def _eval(checkpoint: str, out: pathlib.Path, *extra: str) -> pathlib.Path:
  _run(["t5x.eval", "--gin_file=gin_configs/model_smoke.gin", "--gin_file=gin_configs/eval.gin",
        "--gin.DATASET='arith'", f"--gin.CHECKPOINT_PATH='{checkpoint}'",
        f"--gin.EVAL_OUTPUT_DIR='{out}'", *extra], out.with_suffix(".log"))
  return out / "inference_eval"


def _metrics(path: pathlib.Path) -> list[dict]:
  return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> pathlib.Path:
  d = tmp_path_factory.mktemp("t5x_tiny") / "run"
  _run(["t5x.train", "--gin_file=gin_configs/smoke_offline.gin", f"--gin.MODEL_DIR='{d}'"],
       d.parent / "train.log")
  return d


@pytest.fixture(scope="module")
def test_eval(run_dir) -> pathlib.Path:
  return _eval(str(run_dir / f"checkpoint_{STEPS}"), run_dir.parent / "test_eval")


@pytest.fixture(scope="module")
def t5x_params(run_dir):
  """The trained parameters, read straight from T5X's Orbax checkpoint (independent of dsbs)."""
  tree = ocp.PyTreeCheckpointer().restore(str(run_dir / f"checkpoint_{STEPS}" / "state"))
  return jax.tree.map(np.asarray, tree["target"])


def _tiny_config():
  return config.get_config("smoke")  # = gin_configs/model_smoke.gin


def test_t5x_train_runs_tiny_config_with_validation_eval(run_dir):
  assert (run_dir / f"checkpoint_{STEPS}").is_dir()
  rows = _metrics(run_dir / "inference_eval" / f"{TASK}-metrics.jsonl")
  assert rows[-1]["step"] == STEPS and 0.0 <= rows[-1]["accuracy"] <= 100.0
  # The mixture's rationale task has no metric: only the label task is scored.
  assert not (run_dir / "inference_eval" / "arith_rationale_byte-metrics.jsonl").exists()
  config = (run_dir / "config.gin").read_text()
  assert "DsbsEncDecFeatureConverter" in config and "LOSS_ALPHA = 0.5" in config


def test_t5x_eval_scores_the_checkpoint_on_test(test_eval):
  rows = _metrics(test_eval / f"{TASK}-metrics.jsonl")
  assert rows == [{"step": STEPS, "accuracy": rows[0]["accuracy"]}]
  predictions = (test_eval / f"{TASK}-{STEPS:06d}.jsonl").read_text().splitlines()
  assert len(predictions) == len(dsbs.data.load_examples("arith", "test"))
  assert all("prediction" in json.loads(p) for p in predictions[:5])


def test_t5x_checkpoint_loads_through_dsbs(run_dir, t5x_params):
  """A user points dsbs at a T5X run's checkpoint_N dir and gets T5X's parameters."""
  _, params = checkpoint_formats.load_hf_or_t5x(str(run_dir / f"checkpoint_{STEPS}"),
                                                _tiny_config())
  ours, theirs = param_tree.flatten(params), param_tree.flatten(t5x_params)
  assert set(ours) == set(theirs)
  for k in theirs:
    np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)


def test_dsbs_network_matches_t5x_network_on_t5x_params(t5x_params):
  # T5X is not installed everywhere (this module is skipped then): imported by the tests
  from t5x.examples.t5 import network as t5x_network  # pylint: disable=g-import-not-at-top

  cfg = _tiny_config()
  t5x_cfg = t5x_network.T5Config(
      vocab_size=cfg.vocab_size, dtype="float32", emb_dim=cfg.emb_dim, num_heads=cfg.num_heads,
      num_encoder_layers=cfg.num_encoder_layers, num_decoder_layers=cfg.num_decoder_layers,
      head_dim=cfg.head_dim, mlp_dim=cfg.mlp_dim, mlp_activations=("gelu", "linear"),
      dropout_rate=0.0, logits_via_embedding=False)
  rng = np.random.default_rng(0)
  enc = rng.integers(3, 259, (3, 16))
  enc[:, -4:] = 0
  tgt = rng.integers(3, 259, (3, 9))
  tgt[:, -3:] = 0
  dec_in = np.concatenate([np.zeros((3, 1), tgt.dtype), tgt[:, :-1]], axis=1)
  ours = network.Transformer(cfg).apply({"params": t5x_params}, enc, dec_in, tgt,
                                        enable_dropout=False)
  theirs = t5x_network.Transformer(t5x_cfg).apply({"params": t5x_params}, enc, dec_in, tgt,
                                                  enable_dropout=False)
  assert float(jnp.max(jnp.abs(theirs))) > 0.1  # trained logits, not zeros
  np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=1e-5, rtol=1e-5)


def test_dsbs_exported_checkpoint_evaluates_under_t5x(run_dir, t5x_params, test_eval):
  """dsbs -> T5X format -> t5x.eval: same parameters, so the same predictions."""
  out = run_dir.parent / "exported"
  ckpt = checkpoint_formats.export(t5x_params, _tiny_config(), str(out), fmt="t5x", step=STEPS)
  # The export holds parameters only: T5X must not insist on optimizer slots.
  got = _eval(ckpt, run_dir.parent / "exported_eval",
              "--gin.utils.RestoreCheckpointConfig.strict=False")
  name = f"{TASK}-{STEPS:06d}.jsonl"
  assert (got / name).read_text() == (test_eval / name).read_text()
  assert _metrics(got / f"{TASK}-metrics.jsonl") == _metrics(test_eval / f"{TASK}-metrics.jsonl")
