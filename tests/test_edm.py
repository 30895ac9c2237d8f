import ast
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import FIXTURES
from score_jax import samplers, schedules
from score_jax.analytic import GaussianMixture


def fixture():
  d = np.load(os.path.join(FIXTURES, "edm_gmm_visible.npz"))
  # `cases` is stored as the text of a dict literal: read it without evaluating code.
  return d, ast.literal_eval(str(d["cases"]))


def rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("case", ["edm_heun18", "abl_euler_edm"])
def test_matches_official_edm_in_float64_and_float32(case):
  d, cases = fixture()
  with jax.enable_x64(True):
    gm = GaussianMixture(jnp.asarray(d["means"]), jnp.asarray(d["weights"]), float(d["std"]))
    out = samplers.ablation_sampler(gm.denoise, jnp.asarray(d["latents"]), jax.random.PRNGKey(0),
                               **cases[case])
    assert out.dtype == jnp.float64
    assert rel(out, d[case]) < 1e-6
  gm = GaussianMixture(jnp.asarray(d["means"], jnp.float32), jnp.asarray(d["weights"]),
                       float(d["std"]))
  out = samplers.ablation_sampler(gm.denoise, jnp.asarray(d["latents"], jnp.float32),
                             jax.random.PRNGKey(0), **cases[case])
  assert out.dtype == jnp.float32
  assert rel(out, d[case]) < 1e-3


MU, STD = 0.7, 0.5


def gaussian_denoiser(x, sigma):
  return MU + STD**2 / (STD**2 + sigma**2) * (x - MU)


def exact_ode_end(latents, sigma_max):
  """The probability-flow ODE maps x(sigma_max) = latents * sigma_max (s = 1) to
  mu + std / sqrt(std^2 + sigma_max^2) (x - mu) at sigma = 0, whatever the schedule."""
  x_max = latents * sigma_max
  return MU + STD / np.sqrt(STD**2 + sigma_max**2) * (x_max - MU)


def ode_error(n, solver, **kw):
  with jax.enable_x64(True):
    lat = jax.random.normal(jax.random.PRNGKey(0), (64, 4), jnp.float64)
    out = samplers.ablation_sampler(gaussian_denoiser, lat, jax.random.PRNGKey(1), num_steps=n,
                               solver=solver, sigma_min=1e-4, sigma_max=5.0, **kw)
    return float(np.max(np.abs(np.asarray(out) - exact_ode_end(np.asarray(lat), 5.0))))


def test_heun_is_second_order_and_euler_first():
  heun = [ode_error(n, "heun") for n in (16, 32, 64)]
  euler = [ode_error(n, "euler") for n in (16, 32, 64)]
  for a, b in zip(heun, heun[1:]):
    assert 3.0 < a / b < 5.0, heun
  for a, b in zip(euler, euler[1:]):
    assert 1.6 < a / b < 2.4, euler


@pytest.mark.parametrize("discretization", ["vp", "ve", "iddpm", "edm"])
@pytest.mark.parametrize("schedule,scaling", [("linear", "none"), ("vp", "vp"), ("ve", "none"),
                                               ("vp", "none"), ("linear", "vp")])
def test_every_option_solves_the_same_ode(discretization, schedule, scaling):
  # Every (time steps, sigma(t), s(t)) is a reparametrisation of one ODE: all converge to its
  # exact end point as the steps grow. A wrong derivative or scaling would converge to
  # another point, and the error would stop shrinking.
  errors = []
  with jax.enable_x64(True):
    lat = jax.random.normal(jax.random.PRNGKey(0), (16, 3), jnp.float64)
    lo, hi = schedules.default_sigma_range(discretization)
    for n in (64, 256):
      out = samplers.ablation_sampler(gaussian_denoiser, lat, jax.random.PRNGKey(1), num_steps=n,
                                 discretization=discretization, schedule=schedule,
                                 scaling=scaling)
      assert out.dtype == jnp.float64
      sig_max = schedules.sigma_steps(discretization, n, lo, hi)[0]
      errors.append(np.max(np.abs(np.asarray(out) - exact_ode_end(np.asarray(lat), sig_max))))
  assert errors[1] < errors[0] / 2.2, errors
  assert errors[1] < 0.1, errors


def test_default_ranges_and_time_steps():
  assert schedules.default_sigma_range("edm") == (0.002, 80.0)
  assert schedules.default_sigma_range("ve") == (0.02, 100.0)
  lo, hi = schedules.default_sigma_range("vp")
  # sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1) with beta_d 19.9, beta_min 0.1.
  assert lo == pytest.approx(np.sqrt(np.expm1(0.5 * 19.9e-6 + 1e-4)), rel=1e-9)
  assert hi == pytest.approx(np.sqrt(np.expm1(10.05)), rel=1e-9)  # 152.0
  for disc in ("vp", "ve", "iddpm", "edm"):
    lo, hi = schedules.default_sigma_range(disc)
    s = schedules.sigma_steps(disc, 18, lo, hi)
    assert s.shape == (18,) and np.all(np.diff(s) < 0)
    assert s[0] <= hi * (1 + 1e-9) and s[-1] >= lo * (1 - 1e-9)
  edm = schedules.sigma_steps("edm", 18, 0.002, 80.0)
  assert edm[0] == pytest.approx(80.0) and edm[-1] == pytest.approx(0.002)
  with pytest.raises(ValueError, match="discretization='ddim'"):
    schedules.default_sigma_range("ddim")


def test_churn_is_per_sample_and_samples_the_target():
  lat = jax.random.normal(jax.random.PRNGKey(0), (2000, 2))
  kw = dict(num_steps=32, S_churn=40, S_min=0.05, S_max=50, sigma_max=5.0)
  out = samplers.ablation_sampler(gaussian_denoiser, lat, jax.random.PRNGKey(3), **kw)
  assert abs(float(jnp.mean(out)) - MU) < 0.05 and abs(float(jnp.std(out)) - STD) < 0.05
  assert not np.allclose(out, samplers.ablation_sampler(gaussian_denoiser, lat,
                                                   jax.random.PRNGKey(4), **kw))
  part = samplers.ablation_sampler(gaussian_denoiser, lat[10:20], jax.random.PRNGKey(3),
                              sample_ids=jnp.arange(10, 20), **kw)
  np.testing.assert_allclose(part, out[10:20], rtol=1e-5, atol=1e-6)


def test_runs_on_ncsnv2_through_its_continuous_sigma(tiny):
  from score_jax import models
  c = tiny()
  model = models.get_model(c)
  x = jnp.zeros((2, 28, 28, 1))
  v = model.init(jax.random.PRNGKey(0), x, jnp.zeros(2, jnp.int32))
  score = lambda x, s: model.apply(v, x, s, method=model.score_at_sigma)
  den = samplers.denoiser_from_score(score)
  out = samplers.ablation_sampler(den, jax.random.normal(jax.random.PRNGKey(1), x.shape),
                             jax.random.PRNGKey(2), num_steps=3, sigma_min=0.01, sigma_max=1.0)
  assert out.shape == x.shape and bool(jnp.all(jnp.isfinite(out)))
  # D = x + sigma^2 s at a per-sample sigma.
  sig = jnp.array([0.5, 0.1])
  np.testing.assert_allclose(den(x + 0.3, sig),
                             x + 0.3 + sig[:, None, None, None] ** 2 * score(x + 0.3, sig),
                             rtol=1e-5)


def test_bad_options_are_named():
  lat = jnp.zeros((1, 2))
  with pytest.raises(ValueError, match="solver='rk4'"):
    samplers.ablation_sampler(gaussian_denoiser, lat, jax.random.PRNGKey(0), solver="rk4")
  with pytest.raises(ValueError, match="schedule='cosine'"):
    samplers.ablation_sampler(gaussian_denoiser, lat, jax.random.PRNGKey(0), schedule="cosine")
  with pytest.raises(ValueError, match="scaling='sub-vp'"):
    samplers.ablation_sampler(gaussian_denoiser, lat, jax.random.PRNGKey(0), scaling="sub-vp")
