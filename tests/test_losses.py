import jax
import jax.numpy as jnp
import numpy as np

from score_jax import losses


def test_dsm_loss_matches_hand_computation():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 2, 2, 1)).astype(np.float32)
  z = rng.normal(size=x.shape).astype(np.float32)
  labels = np.array([0, 2, 1])
  sigmas = np.array([2.0, 1.0, 0.5], np.float32)
  # A score that is easy to compute by hand: s(x, y) = -(y + 1) * x.
  score_fn = lambda xt, y: -(y + 1.0)[:, None, None, None] * xt
  got = losses.dsm_loss_per_sample(score_fn, jnp.asarray(x), jnp.asarray(labels),
                                   jnp.asarray(z), sigmas, anneal_power=2.0)
  want = []
  for b in range(3):
    sig = sigmas[labels[b]]
    xt = x[b] + sig * z[b]
    target = -(xt - x[b]) / sig**2
    s = -(labels[b] + 1.0) * xt
    want.append(0.5 * np.sum((s - target) ** 2) * sig**2)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


def test_dsm_loss_is_zero_for_the_exact_score_of_a_point_mass():
  # Data at 0 perturbed by N(0, sigma^2): the exact score of the perturbed data is -x/sigma^2,
  # which equals the DSM target, so the loss is 0 up to rounding.
  sigmas = np.array([3.0, 1.0, 0.1], np.float32)
  x = jnp.zeros((16, 4, 4, 1))
  score_fn = lambda xt, y: -xt / jnp.asarray(sigmas)[y][:, None, None, None] ** 2
  loss = losses.dsm_loss(score_fn, x, sigmas, jax.random.PRNGKey(0))
  assert float(loss) < 1e-8
  # A wrong score gives a clearly positive loss.
  assert float(losses.dsm_loss(lambda xt, y: 0 * xt, x, sigmas, jax.random.PRNGKey(0))) > 1.0
