import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax.analytic import GaussianMixture


def mixture():
  rng = np.random.default_rng(0)
  return GaussianMixture(means=jnp.asarray(rng.normal(size=(3, 2, 2, 1)), jnp.float32),
                         weights=jnp.array([0.2, 0.3, 0.5]), std=0.4)


def log_prob(gm, x, sigma):
  """log of sum_k w_k N(x; mu_k, (std^2 + sigma^2) I) for one example."""
  var = gm.std**2 + sigma**2
  d = x.size
  sq = jnp.sum((x[None] - gm.means) ** 2, axis=(1, 2, 3))
  return jax.scipy.special.logsumexp(jnp.log(gm.weights) - sq / (2 * var)
                                     - 0.5 * d * jnp.log(2 * jnp.pi * var))


def test_score_is_the_gradient_of_the_log_density():
  gm = mixture()
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 2, 2, 1))
  sigma = jnp.array([0.1, 0.5, 1.0, 3.0])  # one per sample
  got = gm.score(x, sigma)
  want = jnp.stack([jax.grad(log_prob, argnums=1)(gm, x[b], sigma[b]) for b in range(4)])
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_denoiser_is_tweedie_and_shrinks_to_the_mean_of_the_closest_component():
  gm = mixture()
  x = jax.random.normal(jax.random.PRNGKey(2), (4, 2, 2, 1))
  np.testing.assert_allclose(gm.denoise(x, 0.7), x + 0.49 * gm.score(x, 0.7), rtol=1e-5,
                             atol=1e-6)
  # std = 0 and a tiny sigma: x near mu_1 denoises to mu_1, with no NaN from underflow.
  gm0 = gm._replace(std=0.0)
  x = gm.means[1:2] + 1e-4
  out = gm0.denoise(x, 1e-4)
  assert np.all(np.isfinite(out))
  np.testing.assert_allclose(out, gm.means[1:2], atol=1e-4)


def test_jit_vmap_and_layout():
  gm = mixture()
  x = jax.random.normal(jax.random.PRNGKey(3), (5, 2, 2, 1))
  a = jax.jit(gm.score)(x, 0.3)
  b = jax.vmap(lambda xi: gm.score(xi[None], 0.3)[0])(x)
  np.testing.assert_allclose(a, b, rtol=1e-5)
  flat = GaussianMixture(gm.means.reshape(3, 4), gm.weights, gm.std)
  np.testing.assert_allclose(flat.score(x.reshape(5, 4), 0.3), a.reshape(5, 4), rtol=1e-5)
  with pytest.raises(ValueError, match="example shape"):
    gm.score(jnp.zeros((2, 4)), 0.3)
