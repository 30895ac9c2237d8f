"""DDPM's variational bound in bits/dim, checked where it has a closed form: data that is a
single point, with the exact noise predictor for it."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from score_jax import build
from score_jax import likelihood, schedules

BETAS = schedules.ddpm_betas("linear", 1e-4, 0.02, 50)


def point_mass(shape=(3, 4, 4, 1)):
  """Three images on the uint8 grid in [-1, 1], edges included."""
  u8 = np.random.default_rng(0).integers(0, 256, shape)
  u8[0, 0, 0, 0], u8[0, 0, 1, 0] = 0, 255
  return jnp.asarray(u8 / 127.5 - 1.0, jnp.float32)


def exact_eps(x_star):
  """eps(x_t, t) for data that always equals x_star: x_t = sqrt(abar) x* + sqrt(1-abar) eps."""
  tab = schedules.ddpm_tables(BETAS)
  a = jnp.asarray(tab.sqrt_alphas_cumprod, jnp.float32)
  s = jnp.asarray(tab.sqrt_one_minus_alphas_cumprod, jnp.float32)
  return lambda x, t: (x - a[t][:, None, None, None] * x_star) / s[t][:, None, None, None]


def test_bound_of_a_point_mass_has_its_closed_form():
  x = point_mass()
  got = jax.jit(lambda x: likelihood.ddpm_bpd(exact_eps(x), x, jax.random.PRNGKey(0), BETAS,
                                              "fixed_small"))(x)
  tab = schedules.ddpm_tables(BETAS)
  abar_T = tab.alphas_cumprod[-1]
  xs = np.asarray(x, np.float64)
  prior = 0.5 * (-1 - np.log(1 - abar_T) + (1 - abar_T) + abar_T * xs ** 2)
  # The exact eps recovers x* at every t, so p's mean is the posterior's: with the
  # posterior's variance every KL vanishes, and the decoder is a Gaussian of variance
  # beta-tilde_1 centred on x*: the mass of x*'s bin.
  std = math.sqrt(tab.posterior_variance[1])
  half = special.ndtr(1 / 255 / std)
  mass = np.where(np.abs(xs) > 0.999, half, 2 * half - 1)
  per_image = lambda a: a.reshape(3, -1).mean(1) / math.log(2)
  np.testing.assert_allclose(got["prior"], per_image(prior), rtol=1e-5)
  np.testing.assert_allclose(got["kl"], 0.0, atol=1e-4)
  np.testing.assert_allclose(got["decoder"], per_image(-np.log(mass)), rtol=2e-3)
  np.testing.assert_allclose(got["total"], got["prior"] + got["kl"] + got["decoder"], rtol=1e-6)

  # beta_t instead of the posterior's variance pays for the mismatch at every t > 0; a
  # network that predicts no noise pays far more.
  large = likelihood.ddpm_bpd(exact_eps(x), x, jax.random.PRNGKey(0), BETAS, "fixed_large")
  assert np.all(large["kl"] > 0.05) and np.allclose(large["decoder"], got["decoder"])
  zero = likelihood.ddpm_bpd(lambda x, t: jnp.zeros_like(x), x, jax.random.PRNGKey(0), BETAS,
                             "fixed_small")
  assert np.all(zero["total"] > got["total"] + 1.0)


def test_numbers_do_not_depend_on_how_the_batch_is_split():
  x = point_mass((4, 4, 4, 1))
  eps = lambda x, t: 0.3 * x  # any network
  whole = likelihood.ddpm_bpd(eps, x, jax.random.PRNGKey(1), BETAS)["total"]
  halves = [likelihood.ddpm_bpd(eps, x[i:i + 2], jax.random.PRNGKey(1), BETAS,
                                sample_ids=jnp.arange(i, i + 2))["total"] for i in (0, 2)]
  np.testing.assert_allclose(np.concatenate(halves), whole, rtol=1e-6)


def test_unknown_variance_is_refused():
  with pytest.raises(ValueError, match="variance='learned'"):
    likelihood.ddpm_bpd(lambda x, t: x, point_mass(), jax.random.PRNGKey(0), BETAS, "learned")


def test_eval_mode_bpd_is_resumable(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  from score_jax import train  # pylint: disable=g-import-not-at-top
  from score_jax.eval import fid  # pylint: disable=g-import-not-at-top
  from test_spine import tiny_ddpm  # pylint: disable=g-import-not-at-top
  wd = str(tmp_path / "run")
  c = tiny_ddpm(**{"training.snapshot_sampling": False, "eval.metric": "bpd",
                   "eval.bpd_images": 12})
  train.train_and_evaluate(build.build(c), wd)
  first = fid.evaluate(build.build(c), wd)
  # 12 images in batches of 8: the second shard is the 4 left, not 8.
  (tag,) = os.listdir(os.path.join(wd, "eval", "4", "bpd"))
  shard_dir = os.path.join(wd, "eval", "4", "bpd", tag)
  assert sorted(os.listdir(shard_dir)) == ["shard_00000.npz", "shard_00001.npz"]
  assert np.load(os.path.join(shard_dir, "shard_00001.npz"))["total"].shape == (4,)
  saved = json.load(open(os.path.join(wd, "eval", "4_bpd.json")))
  assert saved["num_images"] == 12 and saved["split"] == "train" and 0 < saved["bpd"] < 50
  assert saved["bpd"] == pytest.approx(saved["prior"] + saved["kl"] + saved["decoder"])
  os.remove(os.path.join(shard_dir, "shard_00001.npz"))
  assert fid.evaluate(build.build(c), wd)["bpd"] == first["bpd"]


def test_bpd_needs_an_eps_network(tmp_path, tiny):
  from score_jax.eval import fid  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="needs an eps network"):
    fid.evaluate(build.build(tiny(**{"eval.metric": "bpd"})), str(tmp_path))
  with pytest.raises(ValueError, match="eval.metric='nll'"):
    fid.evaluate(build.build(tiny(**{"eval.metric": "nll"})), str(tmp_path))


def test_eval_mode_bpd_ode_is_resumable_on_any_network(tmp_path, tiny, tiny_trained):
  """The PF-ODE likelihood of an NCSNv2 network (no variational bound exists for it):
  3 images in batches of 2, the shards resumed, the same numbers again."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  from score_jax.eval import fid  # pylint: disable=g-import-not-at-top
  wd = str(tmp_path / "run")
  shutil.copytree(tiny_trained, wd)
  c = tiny(**{"eval.metric": "bpd_ode", "eval.bpd_images": 3, "eval.bpd_split": "train",
              "eval.ode_rtol": 1e-3, "eval.ode_atol": 1e-3, "sampling.batch_size": 2})
  first = fid.evaluate(build.build(c, "eval"), wd)
  saved = json.load(open(os.path.join(wd, "eval", "4_bpd_ode.json")))
  assert saved["num_images"] == 3 and np.isfinite(saved["bpd"]) and saved["bpd"] > 0
  (tag,) = os.listdir(os.path.join(wd, "eval", "4", "bpd_ode"))
  shard_dir = os.path.join(wd, "eval", "4", "bpd_ode", tag)
  assert sorted(os.listdir(shard_dir)) == ["shard_00000.npz", "shard_00001.npz"]
  os.remove(os.path.join(shard_dir, "shard_00001.npz"))
  assert fid.evaluate(build.build(c, "eval"), wd)["bpd"] == first["bpd"]
  with pytest.raises(ValueError, match="ode_trace='hutch'"):
    build.build(tiny(**{"eval.ode_trace": "hutch"}))
