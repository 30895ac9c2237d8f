import jax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import models
from score_jax.models import layers


def test_score_at_sigma_equals_indexed_call(tiny):
  c = tiny()
  model = models.get_model(c)
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 28, 28, 1))
  y = jnp.array([0, 2])
  v = model.init(jax.random.PRNGKey(1), x, y)
  sig = jnp.asarray(np.array([c.model.sigma_begin, c.model.sigma_end], np.float32))
  a = model.apply(v, x, y)
  b = model.apply(v, x, sig, method=model.score_at_sigma)
  np.testing.assert_allclose(a, b, rtol=1e-5)
  assert a.shape == x.shape


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3)])
def test_output_shape(tiny, size, channels):
  c = tiny(**{"data.image_size": size, "data.channels": channels})
  model = models.get_model(c)
  x = jnp.zeros((2, size, size, channels))
  out, _ = jax.eval_shape(lambda: model.init_with_output(jax.random.PRNGKey(0), x,
                                                         jnp.zeros(2, jnp.int32)))
  assert out.shape == x.shape


@pytest.mark.parametrize("size", [7, 31])
def test_rejects_image_sizes_the_network_cannot_take(tiny, size):
  with pytest.raises(ValueError, match=f"image_size={size}"):
    models.get_model(tiny(**{"data.image_size": size}))


def test_rejects_unknown_model(tiny):
  with pytest.raises(ValueError, match="'ncsnv3'"):
    models.get_model(tiny(**{"model.name": "ncsnv3"}))


def test_conv_init_is_pytorch_default():
  conv = layers.Conv(64, 3)
  v = conv.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 32)))["params"]
  bound = 1.0 / np.sqrt(32 * 9)
  for leaf in (v["kernel"], v["bias"]):
    assert float(jnp.max(jnp.abs(leaf))) <= bound
    assert float(jnp.max(jnp.abs(leaf))) > 0.9 * bound


def test_align_corners_resize_keeps_corners_and_interpolates_linearly():
  x = jnp.arange(3.0).reshape(1, 1, 3, 1) * jnp.ones((1, 2, 1, 1))
  out = layers.resize_bilinear_align_corners(x, (3, 5))
  np.testing.assert_allclose(out[0, 0, :, 0], [0, 0.5, 1, 1.5, 2], atol=1e-6)


@pytest.mark.parametrize("ties", [False, True])
def test_max_pool5_matches_flax_values_and_gradient(ties):
  # The hand-written VJP must route each window's gradient to the same element as XLA's
  # select-and-scatter: with ties (flat backgrounds, as in MNIST) to the first maximum.
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 7, 3))
  if ties:
    x = jnp.round(2 * x) / 2
    x = x.at[:, :4, :5].set(0.25)
  cot = jax.random.normal(jax.random.PRNGKey(1), x.shape)
  ref = lambda v: nn.max_pool(v, (5, 5), strides=(1, 1), padding=((2, 2), (2, 2)))
  np.testing.assert_array_equal(layers.max_pool5(x), ref(x))
  g_ref = jax.grad(lambda v: jnp.sum(ref(v) * cot))(x)
  g = jax.jit(jax.grad(lambda v: jnp.sum(layers.max_pool5(v) * cot)))(x)
  np.testing.assert_allclose(g, g_ref, rtol=0, atol=1e-5)
  # Each output's gradient lands on one input: the totals agree exactly in count.
  assert int(jnp.sum(g != 0)) == int(jnp.sum(g_ref != 0))
