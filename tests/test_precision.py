"""model.dtype (bfloat16 compute) and model.remat on every network family.

The network checks trace the loss: what each convolution computes in, a float32 loss, that
blocks are rematerialised, which activations the backward keeps, and the same parameter tree
whatever the switches; `remat.join` is checked on small arrays. One compiled program per
family then runs what the train step differentiates: the bfloat16 loss against float32's
and the remat gradients against the plain ones."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from score_jax import build
from score_jax import models
from score_jax.models import remat as remat_lib

KEY = jax.random.PRNGKey(0)


def _config(family):
  if family in ("ncsnv2", "ncsn"):
    return tiny_config(**({"model.name": "ncsn"} if family == "ncsn" else {}))
  if family == "ddpm":
    from test_spine import tiny_ddpm  # pylint: disable=g-import-not-at-top
    return tiny_ddpm(**{"model.dropout": 0.1})
  from test_edm_train import tiny_edm  # pylint: disable=g-import-not-at-top
  if family == "edm_adm":
    c = tiny_edm(**{"model.arch": "DhariwalUNet", "model.model_channels": 64})
    c.model.channel_mult = (1, 1)  # a 64-channel block: ADM's attention needs 64 per head
    return c
  # Class labels on; no augmentation (its image warps are float32 data processing).
  return tiny_edm(**{"model.label_dim": 10})


def _loss_and_params(c, dtype, remat):
  c.model.dtype, c.model.remat = dtype, remat
  built = build.build(c)
  params = jax.eval_shape(built.network.init, KEY, *built.inputs)["params"]
  method = built.method
  batch = jnp.asarray(np.random.default_rng(0).random((8, 28, 28, 1), np.float32))
  labels = jnp.arange(8) % 10 if method.label_dim else None
  return (lambda p: method.loss_fn(p, batch, KEY, labels)), params


@pytest.mark.parametrize("family", ["ncsnv2", "ncsn", "ddpm", "edm_ddpmpp", "edm_adm"])
def test_compiled_bfloat16_loss_is_near_float32_and_remat_gives_the_plain_gradients(family):
  """Compiled and run, on real initial parameters: the bfloat16 loss within 2e-2 relative
  of float32's, and remat's gradients those of the plain backward pass to 1e-6 (relative,
  over the whole gradient), all from the same draws of data noise and sigma."""
  c = _config(family)
  built = build.build(c)
  params = built.network.init(KEY, *built.inputs)["params"]
  fns = {switch: _loss_and_params(c, *switch)[0]
         for switch in (("float32", False), ("bfloat16", False), ("float32", True))}

  @jax.jit
  def run(p):
    loss32, plain = jax.value_and_grad(fns["float32", False])(p)
    remat = jax.grad(fns["float32", True])(p)
    return loss32, fns["bfloat16", False](p), plain, remat

  loss32, loss16, plain, remat = run(params)
  assert np.isfinite(float(loss32)) and float(loss32) > 0
  assert abs(float(loss16) - float(loss32)) <= 2e-2 * abs(float(loss32)), (loss16, loss32)
  flat = lambda g: np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)]).astype(np.float64)
  g, r = flat(plain), flat(remat)
  assert np.linalg.norm(g) > 0
  assert np.linalg.norm(r - g) <= 1e-6 * np.linalg.norm(g), np.linalg.norm(r - g) / np.linalg.norm(g)


def _conv_output_dtypes(jaxpr_text):
  lines = [line for line in jaxpr_text.splitlines() if "= conv_general_dilated[" in line]
  return {line.split(":")[1].split("[")[0].strip() for line in lines}


@pytest.mark.parametrize("family", ["ncsnv2", "ncsn", "ddpm", "edm_ddpmpp", "edm_adm"])
def test_bfloat16_computes_in_bfloat16_and_remat_checkpoints_with_the_same_params(family):
  c = _config(family)
  _, plain = _loss_and_params(c, "float32", False)
  loss_fn, params = _loss_and_params(c, "bfloat16", True)
  jaxpr, loss = jax.make_jaxpr(loss_fn, return_shape=True)(params)
  text = str(jaxpr)
  # Every convolution computes in bfloat16 (their gradients follow: JAX transposes each
  # in its own dtype), the loss is float32, the blocks are rematerialised.
  assert _conv_output_dtypes(text) == {"bf16"}
  assert loss.dtype == jnp.float32
  assert re.search(r"\b(checkpoint|remat\d*)\[", text)
  # The switches change how the network runs, not what it is: the same parameters.
  assert jax.tree.structure(plain) == jax.tree.structure(params)
  assert jax.tree.leaves(plain) == jax.tree.leaves(params)


def _kept_activation_channels(loss_fn, params, batch_size=8):
  """Channel counts of the [B, H, W, C] activations the backward pass keeps (the residuals
  that jax.vjp closes over; shapes only, nothing computed)."""
  residuals = jax.eval_shape(lambda p: jax.vjp(loss_fn, p)[1], params)
  return {r.shape[-1] for r in jax.tree.leaves(residuals)
          if r.ndim == 4 and r.shape[0] == batch_size and r.shape[1] > 1}


@pytest.mark.parametrize("family", ["ddpm", "edm_ddpmpp", "edm_adm"])
def test_unet_remat_keeps_no_joined_skip_input(family):
  # The decoder's input is [h, skip] joined on the channel axis, wider than any level. Kept
  # as a block input it cost more than remat freed (DDPM 256 px on TPU: 13,983 MiB per
  # device without remat, 13,996 with); the blocks now join inside, keeping the halves.
  c = _config(family)
  widest = max(c.model.ch_mult if family == "ddpm" else c.model.channel_mult) * (
      c.model.ch if family == "ddpm" else c.model.model_channels)
  plain = _kept_activation_channels(*_loss_and_params(c, "float32", False))
  kept = _kept_activation_channels(*_loss_and_params(c, "float32", True))
  assert max(plain) > widest  # the joined inputs exist, and without remat they are kept
  assert max(kept) <= widest, (sorted(kept), widest)


def test_join_is_a_concatenation_and_its_gradient_the_two_halves():
  rng = np.random.default_rng(0)
  x, skip, w = (jnp.asarray(rng.normal(size=s), jnp.float32)
                for s in ((2, 3, 3, 4), (2, 3, 3, 6), (2, 3, 3, 10)))
  np.testing.assert_array_equal(remat_lib.join(x, skip, True), jnp.concatenate([x, skip], -1))
  f = lambda join: lambda a, b: jnp.sum(jnp.sin(join(a, b)) * w)
  got = jax.grad(f(lambda a, b: remat_lib.join(a, b, True)), argnums=(0, 1))(x, skip)
  want = jax.grad(f(lambda a, b: jnp.concatenate([a, b], -1)), argnums=(0, 1))(x, skip)
  for g, e in zip(got, want):
    assert g.shape == e.shape
    np.testing.assert_allclose(g, e, rtol=1e-6)
  # The halves come back through a barrier (XLA writes them out) only when asked.
  barrier = lambda split: "optimization_barrier" in str(jax.make_jaxpr(jax.grad(
      f(lambda a, b: remat_lib.join(a, b, split))))(x, skip))
  assert barrier(True) and not barrier(False)
  # Forward mode passes through (a custom_vjp would not): Jacobian-vector products stay open.
  tx, tskip = skip[..., :4], jnp.tile(x[..., :2], 3)
  _, tangent = jax.jvp(lambda a, b: remat_lib.join(a, b, True), (x, skip), (tx, tskip))
  np.testing.assert_array_equal(tangent, jnp.concatenate([tx, tskip], -1))


def test_compute_switches_are_checked_and_left_out_of_the_checkpoint_signature(tiny):
  c = tiny(**{"model.dtype": "float16"})
  with pytest.raises(ValueError, match="config.model.dtype='float16'.*bfloat16"):
    models.get_model(c)
  with pytest.raises(TypeError):  # the locked config keeps remat a bool
    tiny(**{"model.remat": "yes"})
  # A float32 checkpoint resumes with bfloat16 compute and remat, and back.
  a = build.model_signature(tiny())
  assert a == build.model_signature(tiny(**{"model.dtype": "bfloat16",
                                                  "model.remat": True}))
  assert "model.dtype" not in a and "model.ngf" in a
