"""CRP max pooling's CPU-only gradient rule stays out of accelerator programs."""

import jax
import jax.numpy as jnp

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
