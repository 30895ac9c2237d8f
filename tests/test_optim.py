import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from score_jax import build
from score_jax import optim


def test_ema_params_follows_its_formula():
  decay = 0.9
  tx = optax.chain(optax.sgd(0.1), optim.ema_params(decay))
  params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
  state = tx.init(params)
  ema = jax.tree.map(np.asarray, params)
  for k in range(5):
    grads = {"w": jnp.array([0.3 * k, 1.0]), "b": jnp.array(-1.0 + k)}
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * np.asarray(p), ema, params)
  got = optim.ema_of(state)
  for name in params:
    np.testing.assert_allclose(got[name], ema[name], rtol=1e-6)
  # The EMA differs from the raw parameters: the test would catch a transform that copied them.
  assert not np.allclose(got["w"], params["w"])


def test_ema_params_passes_updates_through_and_needs_params():
  tx = optim.ema_params(0.5)
  params = {"w": jnp.ones(3)}
  state = tx.init(params)
  updates, _ = tx.update({"w": jnp.full(3, 2.0)}, state, params)
  np.testing.assert_array_equal(updates["w"], 2.0)
  with pytest.raises(ValueError, match="needs the current params"):
    tx.update({"w": jnp.ones(3)}, state)


def test_ema_of_returns_none_without_ema():
  assert optim.ema_of(optax.adam(1e-3).init({"w": jnp.ones(2)})) is None


def test_make_optimizer_is_torch_style_adam(tiny):
  # One step of Adam from zero state moves each parameter by lr * g / (|g| + eps) ~= lr.
  c = tiny()
  c.model.ema = False
  tx = build.build(c).optimizer
  params = {"w": jnp.array([1.0, 2.0])}
  updates, _ = tx.update({"w": jnp.array([0.5, -3.0])}, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], [-c.optim.lr, c.optim.lr], rtol=1e-4)


def test_make_optimizer_clips_gradients(tiny):
  c = tiny()
  c.model.ema = False
  c.optim.grad_clip = 1.0
  params = {"w": jnp.array([1.0, 2.0])}
  grads = [{"w": jnp.array([300.0, -400.0])}, {"w": jnp.array([0.1, 0.2])}]

  def run(tx):
    state, out = tx.init(params), []
    for g in grads:
      u, state = tx.update(g, state, params)
      out.append(u["w"])
    return np.asarray(out)

  want = run(optax.chain(optax.clip_by_global_norm(1.0),
                         optax.adam(c.optim.lr, b1=c.optim.beta1, eps=c.optim.eps)))
  np.testing.assert_allclose(run(build.build(c).optimizer), want, rtol=1e-5)
  c.optim.grad_clip = 0.0
  assert not np.allclose(run(build.build(c).optimizer), want, rtol=1e-3)


def test_make_optimizer_rejects_unknown_optimizer(tiny):
  c = tiny()
  c.optim.optimizer = "SGD"
  with pytest.raises(ValueError, match="optimizer='SGD'"):
    build.build(c).optimizer


def test_with_ema_replaces_the_average(tiny):
  tx = build.build(tiny()).optimizer
  state = tx.init({"w": jnp.zeros(2)})
  state = optim.with_ema(state, {"w": jnp.ones(2)})
  np.testing.assert_array_equal(optim.ema_of(state)["w"], 1.0)
  with pytest.raises(ValueError, match="no parameter EMA"):
    optim.with_ema(optax.adam(1e-3).init({"w": jnp.zeros(2)}), {"w": jnp.ones(2)})


def test_cosine_schedule_warms_up_then_follows_the_cosine(tiny):
  c = tiny(**{"training.n_iters": 110, "optim.schedule": "cosine", "optim.warmup": 10,
              "optim.lr": 2e-3, "optim.lr_end": 1e-4})
  lr = build.build(c).lr_fn
  np.testing.assert_allclose([lr(0), lr(5), lr(10)], [0.0, 1e-3, 2e-3], rtol=1e-6)
  # Half-way through the decay the cosine term is 0: the mean of lr and lr_end.
  np.testing.assert_allclose(lr(60), (2e-3 + 1e-4) / 2, rtol=1e-5)
  np.testing.assert_allclose(lr(110), 1e-4, rtol=1e-5)


def test_constant_schedule_with_and_without_warmup(tiny):
  c = tiny(**{"training.n_iters": 50, "optim.lr": 1e-3})
  assert [float(build.build(c).lr_fn(s)) for s in (0, 49)] == [1e-3, 1e-3]
  c.optim.warmup = 4
  np.testing.assert_allclose([build.build(c).lr_fn(s) for s in (0, 2, 4, 40)],
                             [0.0, 5e-4, 1e-3, 1e-3], rtol=1e-6)


def test_optimizer_steps_by_the_schedule(tiny):
  # A constant gradient makes Adam's bias-corrected direction exactly sign(g) (up to eps), so
  # each update is -lr(step) * sign(g).
  c = tiny(**{"training.n_iters": 4, "optim.schedule": "cosine", "optim.lr_end": 1e-5})
  c.model.ema = False
  tx, lr = build.build(c).optimizer, build.build(c).lr_fn
  params = {"w": jnp.array([1.0, 2.0])}
  state = tx.init(params)
  for step in range(4):
    u, state = tx.update({"w": jnp.array([0.5, -3.0])}, state, params)
    np.testing.assert_allclose(u["w"], [-lr(step), lr(step)], rtol=1e-4)


@pytest.mark.parametrize("override, match", [
    ({"optim.schedule": "linear"}, "schedule='linear'"),
    ({"optim.warmup": 4, "optim.schedule": "cosine"}, "warmup=4"),
    ({"optim.warmup": -1}, "warmup=-1"),
    ({"optim.schedule": "cosine", "optim.lr_end": 1.0}, "lr_end=1.0"),
])
def test_learning_rate_rejects_bad_settings(tiny, override, match):
  with pytest.raises(ValueError, match=match):
    build.build(tiny(**override)).lr_fn
