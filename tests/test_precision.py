"""model.dtype (bfloat16 compute) and model.remat on the RefineNet, DDPM and EDM networks.

The structural checks trace the loss gradient (nothing compiled): what each convolution
computes in, float32 parameter gradients and loss, that blocks are rematerialised, and the
same parameter tree whatever the switches. Remat's gradients are compiled and compared."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import compiled, tiny_config
from score_jax import checkpoints, methods, models

KEY = jax.random.PRNGKey(0)


def _config(family):
  if family == "ncsnv2":
    return tiny_config()
  if family == "ddpm":
    from test_spine import tiny_ddpm  # pylint: disable=g-import-not-at-top
    return tiny_ddpm(**{"model.dropout": 0.1})
  from test_edm_train import tiny_edm  # pylint: disable=g-import-not-at-top
  # Class labels on; no augmentation (its image warps are float32 data processing).
  return tiny_edm(**{"model.label_dim": 10})


def _loss_and_params(c, dtype, remat):
  c.model.dtype, c.model.remat = dtype, remat
  model = models.get_model(c)
  params = jax.eval_shape(model.init, KEY, *models.example_inputs(c))["params"]
  method = methods.get_method(c, model)
  batch = jnp.asarray(np.random.default_rng(0).random((8, 28, 28, 1), np.float32))
  labels = jnp.arange(8) % 10 if method.label_dim else None
  return (lambda p: method.loss_fn(p, batch, KEY, labels)), params


def _conv_output_dtypes(jaxpr_text):
  lines = [line for line in jaxpr_text.splitlines() if "= conv_general_dilated[" in line]
  return {line.split(":")[1].split("[")[0].strip() for line in lines}


# NCSN shares the RefineNet layers with NCSNv2 (all but the norms' conditioning) and ADM the
# UNetBlock with DDPM++: they are left out for the suite's time.
@pytest.mark.parametrize("family", ["ncsnv2", "ddpm", "edm_ddpmpp"])
def test_bfloat16_computes_in_bfloat16_and_remat_checkpoints_with_the_same_params(family):
  c = _config(family)
  _, plain = _loss_and_params(c, "float32", False)
  loss_fn, params = _loss_and_params(c, "bfloat16", True)
  jaxpr, (loss, grads) = jax.make_jaxpr(jax.value_and_grad(loss_fn), return_shape=True)(params)
  text = str(jaxpr)
  # Every convolution, forward and backward, computes in bfloat16; the loss and the
  # parameter gradients are float32; the blocks are rematerialised.
  assert _conv_output_dtypes(text) == {"bf16"}
  assert loss.dtype == jnp.float32
  assert {g.dtype for g in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}
  assert re.search(r"\b(checkpoint|remat\d*)\[", text)
  # The switches change how the network runs, not what it is: the same parameters.
  assert jax.tree.structure(plain) == jax.tree.structure(params)
  assert jax.tree.leaves(plain) == jax.tree.leaves(params)


def test_remat_gives_the_same_gradients():
  """On the DDPM U-Net with dropout on: remat replays the same dropout masks. (bfloat16's
  effect on training: experiments/mixed_precision.py, README.)"""
  c = _config("ddpm")
  c.model.ch_mult, c.model.attn_resolutions = (1,), (28,)  # one level: a quicker compile
  results = {}
  for dtype, remat in (("float32", False), ("float32", True)):
    loss_fn, shapes = _loss_and_params(c, dtype, remat)
    model = models.get_model(c)
    params = model.init(KEY, *models.example_inputs(c))["params"]
    loss, grads = compiled(jax.value_and_grad(loss_fn))(params)
    results[(dtype, remat)] = float(loss), np.concatenate(
        [np.ravel(g) for g in jax.tree.leaves(grads)])
  loss, g = results[("float32", False)]
  remat_loss, remat_g = results[("float32", True)]
  assert remat_loss == pytest.approx(loss, rel=1e-6)
  np.testing.assert_allclose(remat_g, g, rtol=1e-4, atol=1e-6 * np.abs(g).max())


def test_compute_switches_are_checked_and_left_out_of_the_checkpoint_signature(tiny):
  c = tiny(**{"model.dtype": "float16"})
  with pytest.raises(ValueError, match="config.model.dtype='float16'.*bfloat16"):
    models.get_model(c)
  with pytest.raises(TypeError):  # the locked config keeps remat a bool
    tiny(**{"model.remat": "yes"})
  # A float32 checkpoint resumes with bfloat16 compute and remat, and back.
  a = checkpoints.model_signature(tiny())
  assert a == checkpoints.model_signature(tiny(**{"model.dtype": "bfloat16",
                                                  "model.remat": True}))
  assert "model.dtype" not in a and "model.ngf" in a
