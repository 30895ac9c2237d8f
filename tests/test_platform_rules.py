"""What the CPU backend gets (a max-pooling gradient rule, an ELU formula, YNNPACK kernels) stays out of
accelerator programs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_jax.models import layers


def _grad_hlo(fn, x, platform):
  grad = jax.jit(jax.grad(lambda a: jnp.sum(fn(a) ** 2)))
  return grad.trace(x).lower(lowering_platforms=(platform,)).as_text()


def test_max_pool_cpu_rule_stays_out_of_accelerator_programs():
  x = jnp.ones((1, 8, 8, 4))
  # CPU: the gather-based rule; GPU/TPU: XLA's select-and-scatter, as flax has it.
  assert "select_and_scatter" not in _grad_hlo(layers.max_pool5, x, "cpu")
  for platform in ("cuda", "tpu"):
    assert "select_and_scatter" in _grad_hlo(layers.max_pool5, x, platform), platform


def test_elu_cpu_formula_stays_out_of_accelerator_programs():
  x = jnp.ones((1, 4, 4, 2))
  assert "exponential_minus_one" not in _grad_hlo(layers.elu, x, "cpu")
  for platform in ("cuda", "tpu"):
    assert "exponential_minus_one" in _grad_hlo(layers.elu, x, platform), platform


def test_elu_cpu_formula_matches_flax_values_and_gradient():
  # Both sides of 0, values near 0 (where exp(x) - 1 and expm1 differ most), a large x whose
  # exp would overflow in the unused branch, and the infinities.
  x = jnp.concatenate([jnp.linspace(-20, 20, 4001), jnp.array([-1e-8, 1e-8, 0.0, 100.0, 1e30,
                                                               -jnp.inf, jnp.inf])])
  cot = jnp.cos(jnp.arange(x.size, dtype=jnp.float32))
  np.testing.assert_allclose(jax.jit(layers.elu)(x), nn.elu(x), rtol=0, atol=2e-7)
  g = jax.jit(jax.grad(lambda v: jnp.sum(layers.elu(v) * cot)))(x)
  g_ref = jax.grad(lambda v: jnp.sum(nn.elu(v) * cot))(x)
  assert bool(jnp.all(jnp.isfinite(g)))
  np.testing.assert_allclose(g, g_ref, rtol=0, atol=2e-7)
  # bfloat16 compute: as precise as nn.elu in bfloat16 near 0 (exp(x) - 1 rounded to
  # bfloat16 would give 0 or -2^-8 there).
  small = jnp.linspace(-1e-3, 0, 11).astype(jnp.bfloat16)
  out = jax.jit(layers.elu)(small)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_array_equal(out, nn.elu(small))


def test_cpu_programs_give_convolutions_to_ynnpack(tiny):
  from types import SimpleNamespace
  from score_jax import build, sharding, state, train
  mesh = sharding.data_mesh()
  c = tiny()
  built = build.build(c)
  target = state.abstract_state(built, mesh)
  step = train.jit_train_step(train.train_step_of(built), mesh)
  batch = jax.ShapeDtypeStruct((c.training.batch_size, 28, 28, 1), jnp.float32)
  hlo = step.lower(target, batch, jax.random.PRNGKey(0)).compile().as_text()
  assert "__ynn_fusion" in hlo
  # Elsewhere XLA compiles as it would: no CPU option reaches a GPU or TPU program.
  for platform in ("cuda", "tpu"):
    fake = SimpleNamespace(devices=np.array([SimpleNamespace(platform=platform)]))
    assert sharding.compiler_options(fake) is None
