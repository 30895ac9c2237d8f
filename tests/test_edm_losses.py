"""EDM's VP, VE and EDM losses against the official code with its own random draws."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from score_jax import losses
from score_jax.importers import load_edm_pkl

FIX = os.path.join(ROOT, "tests", "fixtures", "edm")
nhwc = lambda a: jnp.asarray(np.asarray(a).transpose(0, 2, 3, 1))


@pytest.mark.parametrize("kind", ["vp", "ve", "edm", "edm_aug"])
def test_losses_with_the_official_draws(kind):
  z = np.load(os.path.join(FIX, "edm_losses.npz"))
  net = {"vp": "songunet_ddpmpp_vp", "ve": "songunet_ddpmpp_ve", "edm": "songunet_ddpmpp_edm",
         "edm_aug": "songunet_ddpmpp_cond_aug_edm"}[kind]
  model, variables = load_edm_pkl(os.path.join(FIX, f"pkl_{net}.pkl"))
  draw = z[f"{kind}_rnd_normal" if kind.startswith("edm") else f"{kind}_rnd_uniform"]
  sigma, weight = losses.edm_training_sigma(kind[:3] if kind != "edm_aug" else "edm",
                                            jnp.asarray(draw.reshape(-1)))
  np.testing.assert_allclose(sigma, z[f"{kind}_sigma"].reshape(-1), rtol=2e-6)
  np.testing.assert_allclose(weight, z[f"{kind}_weight"].reshape(-1), rtol=1e-5)
  labels = z["edm_aug_labels"] if kind == "edm_aug" else None
  aug = jnp.asarray(z["edm_aug_augment_labels"]) if kind == "edm_aug" else None
  y = nhwc(z[f"{kind}_y"] if kind == "edm_aug" else z[f"{kind}_images"])  # the pipe's output
  denoise = lambda x, s: model.apply(variables, x, s, labels, aug)
  got = losses.denoising_loss_per_element(denoise, y, sigma, weight, nhwc(z[f"{kind}_noise"]))
  want = z[f"{kind}_loss"].transpose(0, 2, 3, 1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_batch_loss_does_not_depend_on_how_the_batch_is_split():
  y = jax.random.uniform(jax.random.PRNGKey(0), (6, 4, 4, 1)) * 2 - 1
  denoise = lambda x, s: 0.5 * x  # any denoiser
  key = jax.random.PRNGKey(1)
  whole = losses.edm_loss(denoise, y, key)
  parts = [losses.edm_loss(denoise, y[i::2], key, sample_ids=jnp.arange(i, 6, 2))
           for i in (0, 1)]
  np.testing.assert_allclose(np.stack(parts, 1).reshape(-1), whole, rtol=1e-6)
  assert whole.shape == (6,) and np.all(np.isfinite(whole))
  with pytest.raises(ValueError, match="EDM loss 'l2'"):
    losses.edm_loss(denoise, y, key, kind="l2")
