"""The built-in runner on a tiny model: pulse, resume equivalence (incl. SIGKILL), NaN stop,
sharding equivalence on 8 fake CPU devices."""
import json
import os
import subprocess

import gin
import jax
import numpy as np
import pytest

import run_worker
import train_fixtures as support
from dsbs import experiment, train, train_checkpoints
from dsbs.seqio_ext import feature_converters as fc

pytestmark = pytest.mark.timeout(300)
support.share_compilation_cache()


@pytest.fixture(autouse=True)
def _clear_gin():
  yield
  gin.clear_config()


def _run(tmp_path, name, steps, extra="", argv=()):
  gin_file = support.tiny_gin(str(tmp_path / f"{name}.gin"), steps=steps, extra=extra)
  return train.main([f"--gin_file={gin_file}", f"--model_dir={tmp_path / name}", *argv])


def _rows(run_dir, kind="train"):
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["kind"] == kind]


def _params(run_dir, step):
  return train_checkpoints.restore_params(os.path.join(run_dir, "checkpoints", str(step), "params"))


_EXTRA = ("SAVING_PERIOD = 2\nEVAL_PERIOD = 100\n"
          "TrainConfig.eval_max_examples = 8\nDROPOUT_RATE = 0.1")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  """One uninterrupted 6-step run shared by the pulse and resume tests."""
  tmp = tmp_path_factory.mktemp("full")
  # An environment setting that changes what a run reads lands in its provenance.
  old = os.environ.get("DSBS_TFDS_DIR")
  os.environ["DSBS_TFDS_DIR"] = "/nonexistent/tfds"  # read only with DSBS_SOURCE=tfds
  try:
    out = _run(tmp, "full", 6, _EXTRA)
  finally:
    if old is None:
      os.environ.pop("DSBS_TFDS_DIR")
    else:
      os.environ["DSBS_TFDS_DIR"] = old
  gin.clear_config()
  return tmp / "full", out


def test_pulse_writes_run_dir(full_run):
  run_dir, out = full_run
  for name in ("metrics.jsonl", "operative_config.gin", "experiment.json", "model_config.json",
               "provenance.json", "train_result.json", "checkpoints/best.json"):
    assert (run_dir / name).exists(), name
  rows = _rows(run_dir)
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
  for key in ("loss", "loss_label", "loss_rationale", "lr", "grad_norm", "steps_per_s",
              "tokens_per_s"):
    assert np.isfinite(rows[-1][key]), key
  assert rows[-1]["loss"] < rows[0]["loss"]
  ev = _rows(run_dir, "eval")[-1]
  assert ev["step"] == 6
  assert {"loss/tiny_add_label_gt_byte", "loss/tiny_add_rationale_byte", "tiny_add_label_gt_byte/accuracy",
          "accuracy"} <= set(ev)
  assert out["eval"]["tiny_add_label_gt_byte/num_examples"] == 8
  assert train_checkpoints.Checkpointer(str(run_dir / "checkpoints")).all_steps() == [2, 4, 6]
  prov = json.loads((run_dir / "provenance.json").read_text())
  assert set(prov["tasks"]) == {"tiny_add_label_gt_byte", "tiny_add_rationale_byte"}
  assert prov["tasks"]["tiny_add_label_gt_byte"]["num_input_examples"]["train"] == 256
  assert "TrainConfig.log_period = 1" in (run_dir / "operative_config.gin").read_text()
  assert set(experiment.ENV_SETTINGS) <= set(prov["environment"])
  assert prov["environment"]["DSBS_TFDS_DIR"] == "/nonexistent/tfds"  # set by the fixture
  exp = json.loads((run_dir / "experiment.json").read_text())
  assert exp["student"] == "test_tiny" and exp["train_steps"] == 6
  assert exp["mixture_or_task_name"] == support.MIXTURE and exp["model_dir"] == str(run_dir)
  assert exp["pack"] is False and exp["dataset"] == "tiny_add"
  cfg = json.loads((run_dir / "model_config.json").read_text())
  assert cfg["vocab_size"] == 384 and cfg["dtype"] == "float32"  # byte vocab (259) padded


def test_paper_loss_normalisation():
  """batch_loss = a * L_label + (1 - a) * L_rationale with the converter's weights."""
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 11)).astype(np.float32)
  targets = np.array([[3, 4, 1, 0, 0], [5, 6, 7, 8, 1]], np.int32)
  alpha = 0.75
  c = fc.kind_coefficients(alpha)
  real = (targets > 0).astype(np.float32)
  weights = real * np.array([[c[0] / 3], [c[1] / 5]], np.float32)
  batch = {"decoder_target_tokens": targets, "decoder_loss_weights": weights,
           "decoder_task_kind": (real * np.array([[1], [2]])).astype(np.int32)}
  cfg = train.TrainConfig(z_loss=0.0)
  loss, aux = train.batch_loss(logits, batch, cfg, "paper")
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  ce = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
  l_label, l_rat = ce[0, :3].mean(), ce[1].mean()
  assert float(loss) == pytest.approx(alpha * l_label + (1 - alpha) * l_rat, rel=1e-5)
  assert float(aux["loss_label"]) == pytest.approx(l_label, rel=1e-5)
  assert float(aux["loss_rationale"]) == pytest.approx(l_rat, rel=1e-5)
  tok_loss, _ = train.batch_loss(logits, dict(batch, decoder_loss_weights=real), cfg, "tokens")
  assert float(tok_loss) == pytest.approx((ce * real).sum() / real.sum(), rel=1e-5)
  z, _ = train.batch_loss(logits, batch, train.TrainConfig(z_loss=1e-4), "paper")
  assert float(z) > float(loss)


def test_sigkill_resume_equals_uninterrupted(full_run, tmp_path):
  """SIGKILLed by the harness after step 5 (async save maybe in flight), resumed: same params."""
  gin_file = support.tiny_gin(str(tmp_path / "k.gin"), steps=6, extra=_EXTRA)
  run_dir = tmp_path / "killed"
  marker = str(tmp_path / "at_step_5")
  argv = run_worker.worker_argv({"stop_before": 5, "marker": marker},
                                [f"--gin_file={gin_file}", f"--model_dir={run_dir}"])
  with run_worker.Group([argv], support.subprocess_env(), str(tmp_path / "logs")) as group:
    assert run_worker.wait_for(marker, group, timeout=240), group.tail()
    group.kill(0)
    assert group.wait(30) == [-9], group.tail()
  assert train_checkpoints.Checkpointer(str(run_dir / "checkpoints")).latest_step() in (2, 4)
  train.main([f"--gin_file={gin_file}", f"--model_dir={run_dir}"])  # resumes
  a, b = _params(full_run[0], 6), _params(run_dir, 6)
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)
  resumed = [r["step"] for r in _rows(run_dir)]
  assert resumed[-1] == 6 and resumed.count(6) == 1


def _poison_from(n: int):
  """A test-only input wrapper: the loss weights of local batch n and later are NaN."""
  def wrap(batches):
    for i, batch in enumerate(batches, start=1):
      if i >= n:
        batch = dict(batch, decoder_loss_weights=np.full_like(batch["decoder_loss_weights"],
                                                              np.nan))
      yield batch
  return wrap


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
  extra = "SAVING_PERIOD = 2\nEVAL_PERIOD = 100\n" \
          "TrainConfig.log_period = 100\nTrainConfig.eval_max_examples = 4"
  gin_file = support.tiny_gin(str(tmp_path / "nan.gin"), steps=6, extra=extra)
  with pytest.raises(train.NonFiniteLossError, match=r"NaN/Inf between step 2 and step 4.*step 2"):
    train.main([f"--gin_file={gin_file}", f"--model_dir={tmp_path / 'nan'}"],
               wrap_input=_poison_from(4))
  ckpt = train_checkpoints.Checkpointer(str(tmp_path / "nan" / "checkpoints"))
  assert ckpt.all_steps() == [2]
  params = _params(tmp_path / "nan", 2)
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(params))


_SHARDING_SCRIPT = r"""
import json, os, sys
import gin, numpy as np
import jax
assert jax.device_count() == 8
import train_fixtures as support
from dsbs import train
losses = {}
for name, binds in [("1x1", ["TrainConfig.mesh_devices=1"]),
                    ("8x1", ["TrainConfig.mesh_data=8"]),
                    ("2x4fsdp", ["TrainConfig.mesh_data=2", "TrainConfig.mesh_model=4",
                                 "TrainConfig.fsdp=True"])]:
  gin.clear_config()
  d = os.path.join(sys.argv[1], name)
  train.main([f"--gin_file={sys.argv[2]}", f"--model_dir={d}"] + [f"--gin.{b}" for b in binds])
  with open(os.path.join(d, "metrics.jsonl")) as f:
    rows = list(map(json.loads, f))
  losses[name] = {"train": [r["loss"] for r in rows if r["kind"] == "train"],
                  "eval": [r for r in rows if r["kind"] == "eval"]}
print("LOSSES=" + json.dumps(losses))
"""


def test_sharded_meshes_match_one_device(tmp_path):
  """Training and the validation evaluation (losses, decoded accuracy) on 8 devices, data and
  2 x 4 with FSDP, as on one."""
  gin_file = support.tiny_gin(str(tmp_path / "s.gin"), steps=3,
                              extra="EVAL_PERIOD = 3\nSAVING_PERIOD"
                              " = 100\nTrainConfig.eval_max_examples = 11\nTrainConfig.async_"
                              "checkpoints = False")
  r = subprocess.run([support.PYTHON, "-c", _SHARDING_SCRIPT, str(tmp_path), gin_file],
                     env=support.subprocess_env(devices=8), capture_output=True, text=True,
                     timeout=280)
  assert r.returncode == 0, r.stderr[-3000:]
  losses = json.loads(r.stdout.split("LOSSES=")[1].splitlines()[0])
  ref = np.asarray(losses["1x1"]["train"])
  assert len(ref) == 3 and np.all(np.isfinite(ref))
  ref_eval = losses["1x1"]["eval"][-1]
  assert ref_eval[f"{support.LABEL_TASK}/num_examples"] == 11  # a padded last batch
  for name in ("8x1", "2x4fsdp"):
    np.testing.assert_allclose(losses[name]["train"], ref, atol=1e-5, rtol=0, err_msg=name)
    got = losses[name]["eval"][-1]
    assert set(got) == set(ref_eval), name
    for k in set(ref_eval) - {"kind"}:
      np.testing.assert_allclose(got[k], ref_eval[k], atol=1e-5, rtol=0, err_msg=f"{name} {k}")
