"""Orbax checkpointer: round trip, keep-N plus best, run-dir resolution, best.json."""
import json

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dsbs import train_checkpoints


def _state(v):
  params = {"dense": {"kernel": jnp.full((4, 3), v, jnp.float32)}, "scale": jnp.full((3,), v)}
  opt = optax.adam(1e-3).init(params)
  return params, opt


def test_round_trip_keep_latest_plus_best(tmp_path):
  root = str(tmp_path / "run" / "checkpoints")
  ck = train_checkpoints.Checkpointer(root, keep=2, best_metric="accuracy", async_save=True)
  accs = {2: 50.0, 4: 90.0, 6: 60.0, 8: None, 10: 70.0}
  for step, acc in accs.items():
    params, opt = _state(float(step))
    ck.save(step, params, opt, {"batches_consumed": step * 3},
            None if acc is None else {"accuracy": acc, "loss": 1.0})
  ck.wait()
  assert ck.all_steps() == [4, 8, 10]  # latest two plus the best (4), never the best dropped
  abstract_p = train_checkpoints.abstract_like(_state(0.0)[0])
  abstract_o = train_checkpoints.abstract_like(_state(0.0)[1])
  params, opt, meta = ck.restore(8, abstract_p, abstract_o)
  np.testing.assert_array_equal(params["dense"]["kernel"], np.full((4, 3), 8.0))
  assert isinstance(opt[0], optax.ScaleByAdamState)
  assert meta == {"batches_consumed": 24, "step": 8}
  ck.close()
  assert json.loads((tmp_path / "run" / "checkpoints" / "best.json").read_text())["step"] == 4
  # A run dir resolves to its best checkpoint, a step dir to itself.
  path, step = train_checkpoints.find_params_dir(str(tmp_path / "run"))
  assert step == 4 and path.endswith("checkpoints/4/params")
  path, step = train_checkpoints.find_params_dir(str(tmp_path / "run" / "checkpoints" / "10"))
  assert step == 10
  restored = train_checkpoints.restore_params(path)
  np.testing.assert_array_equal(restored["scale"], np.full((3,), 10.0))
  # Reopening keeps the best record: a worse eval does not replace it.
  ck = train_checkpoints.Checkpointer(root, keep=2, best_metric="accuracy")
  ck.save(12, *_state(12.0), {"batches_consumed": 0}, {"accuracy": 80.0})
  ck.close()
  assert json.loads((tmp_path / "run" / "checkpoints" / "best.json").read_text())["step"] == 4


def test_missing_checkpoints_are_a_clear_error(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no checkpoints found"):
    train_checkpoints.find_params_dir(str(tmp_path / "empty"))
  with pytest.raises(ValueError, match="best_mode"):
    train_checkpoints.Checkpointer(str(tmp_path / "c"), best_mode="top")


def test_tied_best_names_a_kept_checkpoint(tmp_path):
  """Equal validation scores: best.json names the checkpoint the keep policy preserves (the
  later one), so evaluating the run dir tests the best, not the latest, checkpoint."""
  root = str(tmp_path / "run" / "checkpoints")
  ck = train_checkpoints.Checkpointer(root, keep=1, best_metric="accuracy", async_save=False)
  for step, acc in ((250, 17.0), (500, 21.0), (750, 21.0), (1000, 18.0), (1250, 17.0)):
    ck.save(step, *_state(float(step)), {"batches_consumed": step}, {"accuracy": acc})
  ck.close()
  assert ck.all_steps() == [750, 1250]
  assert json.loads((tmp_path / "run" / "checkpoints" / "best.json").read_text())["step"] == 750
  assert train_checkpoints.find_params_dir(str(tmp_path / "run"))[1] == 750


class _Position:
  """A stand-in input position: one number in a file of the item's directory."""

  def __init__(self, value: int = 0):
    self.value = value

  def save(self, directory: str) -> None:
    with open(f"{directory}/position.json", "w") as f:
      json.dump(self.value, f)

  def restore(self, directory: str) -> None:
    with open(f"{directory}/position.json") as f:
      self.value = json.load(f)


def test_input_position_is_saved_with_the_step_and_restored(tmp_path):
  ck = train_checkpoints.Checkpointer(str(tmp_path / "c"), keep=3, async_save=True)
  position = _Position(7)
  ck.save(1, *_state(1.0), {"batches_consumed": 7}, input_position=position)
  position.value = 99  # the loop moves on right after the save returns
  ck.save(2, *_state(2.0), {"batches_consumed": 9})  # a step saved without a position
  ck.wait()
  assert ck.read_meta(1) == {"batches_consumed": 7, "step": 1}
  restored = _Position()
  abstract = [train_checkpoints.abstract_like(t) for t in _state(0.0)]
  ck.restore(1, *abstract, input_position=restored)
  assert restored.value == 7  # what the position was when step 1 was saved
  with pytest.raises(FileNotFoundError, match="no saved input position"):
    ck.restore(2, *abstract, input_position=_Position())
  ck.close()
