"""Input shards and their positions: which shards a process reads, a restored position
continues with the very next batch, and one process reading two shards builds the global
batches that two processes reading one each build."""
import numpy as np
import pytest

import train_fixtures as support
from dsbs import input_pipeline


def _config(batch: int = 8) -> input_pipeline.InputConfig:
  conv = input_pipeline.loss_weighting_converter(False, 0.5, "paper")
  return input_pipeline.InputConfig(support.MIXTURE, {"inputs": 24, "targets": 16}, batch, conv,
                                    seed=3)


def _equal(a, b) -> bool:
  return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_shards_for_rows():
  assert input_pipeline.shards_for_rows(range(8), 8, 2) == [0, 1]
  assert input_pipeline.shards_for_rows(range(4), 8, 2) == [0]
  assert input_pipeline.shards_for_rows(range(4, 8), 8, 4) == [2, 3]
  with pytest.raises(ValueError, match="whole input shards"):
    input_pipeline.shards_for_rows(range(3), 8, 2)  # a shard's rows on two processes
  with pytest.raises(ValueError, match="does not split into 3 input shards"):
    input_pipeline.shards_for_rows(range(8), 8, 3)


def test_restored_position_continues_with_the_next_batch(tmp_path):
  running = input_pipeline.TrainInput(_config(), 2)
  for _ in range(5):
    next(running)
  running.save(str(tmp_path))
  want = [next(running) for _ in range(3)]
  restored = input_pipeline.TrainInput(_config(), 2)
  restored.restore(str(tmp_path))
  assert all(_equal(w, next(restored)) for w in want)
  with pytest.raises(FileNotFoundError, match="input shard 0 of 4"):
    input_pipeline.TrainInput(_config(), 4).restore(str(tmp_path))


def test_one_process_of_two_shards_equals_two_processes():
  one = input_pipeline.TrainInput(_config(), 2)
  halves = [input_pipeline.TrainInput(_config(), 2, rows=range(4)),
            input_pipeline.TrainInput(_config(), 2, rows=range(4, 8))]
  assert [h.shards for h in halves] == [[0], [1]]
  for _ in range(3):
    parts = [next(h) for h in halves]
    assert _equal(next(one), {k: np.concatenate([p[k] for p in parts]) for k in parts[0]})


def test_eval_batches_pad_the_last_batch_and_give_each_process_its_rows():
  cfg = input_pipeline.InputConfig(support.LABEL_TASK, {"inputs": 24, "targets": 16}, 16,
                                   _config().converter, split="validation")
  whole = list(input_pipeline.eval_batches(cfg))
  assert len(whole) == 2 and whole[-1]["decoder_loss_weights"][8:].sum() == 0  # 24 = 16 + 8
  mine = list(input_pipeline.eval_batches(cfg, rows=np.arange(8, 16)))
  assert all(_equal(m, {k: v[8:16] for k, v in w.items()}) for m, w in zip(mine, whole))
