"""Optimizers and schedules: reference defaults, schedule shapes, and that each one trains."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dsbs import optim


def test_schedules_shape():
  s = optim.make_schedule(optim.ScheduleConfig(name="linear", warmup_steps=10), 1.0, 110)
  np.testing.assert_allclose([s(0), s(5), s(10), s(60), s(110)], [0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)
  c = optim.make_schedule(optim.ScheduleConfig(name="cosine", warmup_steps=0), 2.0, 100)
  np.testing.assert_allclose([c(0), c(50), c(100)], [2.0, 1.0, 0.0], atol=1e-5)
  r = optim.make_schedule(optim.ScheduleConfig(name="rsqrt", warmup_steps=100), 1e-2, 1000)
  assert float(r(49)) == pytest.approx(0.5e-2, rel=1e-5)  # linear warmup
  assert float(r(99)) == pytest.approx(1e-2, rel=1e-5)  # peak
  assert float(r(399)) == pytest.approx(0.5e-2, rel=1e-5)  # 1/sqrt decay: 4x steps, half rate
  k = optim.make_schedule(optim.ScheduleConfig(name="constant"), 1e-3, 10)
  assert float(k(0)) == float(k(9)) == pytest.approx(1e-3)


def test_bad_schedule_and_optimizer():
  with pytest.raises(ValueError, match="unknown schedule"):
    optim.make_schedule(optim.ScheduleConfig(name="step"), 1.0, 10)
  with pytest.raises(ValueError, match="unknown optimizer"):
    optim.make_optimizer(optim.OptimizerConfig(name="sgd"), 10)


def test_reference_defaults():
  _, ada = optim.make_optimizer(optim.OptimizerConfig(), 100)
  assert float(ada(0)) == float(ada(99)) == pytest.approx(1e-3)  # T5X: constant 1e-3
  _, adamw = optim.make_optimizer(optim.adamw_release(), 100)
  assert float(adamw(0)) == pytest.approx(5e-5) and float(adamw(100)) == pytest.approx(0.0)
  _, custom = optim.make_optimizer(optim.OptimizerConfig(), 100, learning_rate=3e-4)
  assert float(custom(0)) == pytest.approx(3e-4)  # LEARNING_RATE macro


def test_adafactor_matches_hand_computed_first_step():
  """One Adafactor step on a factored 2-D parameter, computed by hand from the T5X algorithm."""
  tx, _ = optim.make_optimizer(optim.OptimizerConfig(), 10)
  rng = np.random.default_rng(0)
  p = jnp.asarray(rng.normal(size=(256, 128)), jnp.float32)
  g = jnp.asarray(rng.normal(size=(256, 128)), jnp.float32)
  updates, _ = tx.update({"w": g}, tx.init({"w": p}), {"w": p})
  # Step 1: decay 1 - 1^-0.8 = 0, so the factored statistics are the row/col means of g^2+eps.
  g2 = np.asarray(g) ** 2 + 1e-30
  row, col = g2.mean(1), g2.mean(0)
  v = np.outer(row, col) / row.mean()
  u = np.asarray(g) / np.sqrt(v)
  u /= max(1.0, np.sqrt(np.mean(u ** 2)) / 1.0)  # update clipping, threshold 1.0
  scale = max(np.sqrt(np.mean(np.asarray(p) ** 2)), 1e-3)  # multiply_by_parameter_scale
  np.testing.assert_allclose(np.asarray(updates["w"]), -1e-3 * scale * u, rtol=2e-4, atol=1e-7)


@pytest.mark.parametrize("config", [optim.OptimizerConfig(), optim.adamw_release(),
                                    optim.OptimizerConfig(name="adamw", global_norm_clip=1.0,
                                                          schedule=optim.ScheduleConfig("cosine", 1e-1, 5))])
def test_optimizers_reduce_a_quadratic(config):
  tx, _ = optim.make_optimizer(config, 50, learning_rate=5e-2)
  target = jnp.full((2, 3), 2.0)
  params = {"w": jnp.ones((2, 3))}  # Adafactor scales steps by rms(param): start away from 0
  loss = lambda p: jnp.sum((p["w"] - target) ** 2)
  state = tx.init(params)
  first = loss(params)
  for _ in range(50):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
  assert loss(params) < 0.9 * first
