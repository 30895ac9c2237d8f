"""Every sampler of `samplers.SAMPLERS` against k-diffusion's and diffusers' own runs on an
exact Gaussian-mixture denoiser (tests/fixtures/samplers/README.md)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import FIXTURES
from score_jax import samplers
from score_jax.analytic import DiagonalGaussianMixture
from score_jax.samplers import schedules

FIX = os.path.join(FIXTURES, "samplers")
META = json.load(open(os.path.join(FIX, "cases.json")))
DET = np.load(os.path.join(FIX, "deterministic.npz"))
STO = np.load(os.path.join(FIX, "stochastic.npz"))
GMM = DiagonalGaussianMixture(DET["gmm/means"], DET["gmm/weights"], DET["gmm/stds"])


def test_the_mixture_denoiser_is_the_fixtures():
  f = np.load(os.path.join(FIX, "gmm_denoiser.npz"))
  with jax.enable_x64(True):
    one = lambda x, s: GMM.denoise(x[None], s)[0]
    got = jax.vmap(one)(jnp.asarray(f["x"]), jnp.asarray(f["sigma"]))
    logp = jax.vmap(lambda x, s: GMM.log_prob(x[None], s)[0])(jnp.asarray(f["x"]),
                                                             jnp.asarray(f["sigma"]))
  np.testing.assert_allclose(got, f["denoised"], rtol=0, atol=1e-12)
  np.testing.assert_allclose(logp, f["logp"], rtol=1e-12, atol=1e-12)


def _counted(fn):
  """`fn` with a host counter of its calls (the calls XLA makes, not the traces)."""
  calls = [0]

  def wrapped(x, sigma):
    jax.debug.callback(lambda: calls.__setitem__(0, calls[0] + 1))
    return fn(x, sigma)

  return wrapped, calls


@pytest.mark.parametrize("case", sorted(META["deterministic"]))
def test_deterministic_sampler_reproduces_the_library(case):
  meta = META["deterministic"][case]
  fn = samplers.SAMPLERS[meta["score_jax"]["sampler"]]
  den, calls = _counted(GMM.denoise)
  with jax.enable_x64(True):
    run = jax.jit(lambda x: fn(den, x, DET[f"{case}/sigmas"], None,
                               **meta["score_jax"]["options"]))
    out = np.asarray(run(jnp.asarray(DET[f"{case}/x_init"])))
    jax.effects_barrier()
  tol = meta["tol"]
  np.testing.assert_allclose(out, DET[f"{case}/x_out"], rtol=tol, atol=tol)
  assert calls[0] == int(DET[f"{case}/nfe"])


def _stats(x):
  """The fixtures' statistics of samples x [N, 2], in `stat_names` order."""
  with jax.enable_x64(True):
    labels = np.asarray(jnp.argmax(GMM.responsibilities(jnp.asarray(x)), axis=1))
    mean_logp = float(jnp.mean(GMM.log_prob(jnp.asarray(x))))
  parts = [[np.mean(labels == k) for k in range(3)]]
  parts.append(np.ravel([x[labels == k].mean(0) for k in range(3)]))
  parts.append(np.ravel([x[labels == k].var(0, ddof=1) for k in range(3)]))
  parts.append(x.mean(0))
  parts.append(np.cov(x.T, ddof=1)[np.triu_indices(2)])
  parts.append(np.quantile(x @ np.asarray(META["proj_u"]), META["quantile_levels"]))
  parts.append([mean_logp])
  return np.concatenate(parts)


@pytest.mark.parametrize("case", sorted(META["stochastic"]))
def test_stochastic_sampler_has_the_library_law(case):
  meta = META["stochastic"][case]
  fn = samplers.SAMPLERS[meta["score_jax"]["sampler"]]
  with jax.enable_x64(True):
    z = jax.random.normal(jax.random.PRNGKey(11), (meta["n_samples"], 2), jnp.float64)
    out = jax.jit(lambda x: fn(GMM.denoise, x, STO[f"{case}/sigmas"], jax.random.PRNGKey(5),
                               **meta["score_jax"]["options"]))(meta["x_init_std"] * z)
  z_scores = np.abs(_stats(np.asarray(out)) - STO[f"{case}/stats"]) / (
      np.sqrt(2.0) * STO[f"{case}/stats_se"])
  worst = int(np.argmax(z_scores))
  assert z_scores[worst] < 5, (META["stat_names"][worst], z_scores[worst])


def test_brownian_and_independent_noise_are_different_laws():
  """The check above can tell dpmpp_sde's two noise sources apart (the fixtures' z = 19)."""
  case = "kd_dpmpp_sde__karras__n8"
  with jax.enable_x64(True):
    z = jax.random.normal(jax.random.PRNGKey(11), (20000, 2), jnp.float64)
    out = samplers.SAMPLERS["dpmpp_sde"](GMM.denoise, 80.0 * z, STO[f"{case}/sigmas"],
                                         jax.random.PRNGKey(5), noise="independent")
  z_scores = np.abs(_stats(np.asarray(out)) - STO[f"{case}/stats"]) / (
      np.sqrt(2.0) * STO[f"{case}/stats_se"])
  assert z_scores.max() > 5


def test_stochastic_samples_do_not_depend_on_the_batch():
  sig = schedules.karras(5, 0.002, 80.0)
  x = 80.0 * jax.random.normal(jax.random.PRNGKey(0), (6, 2))
  for name in ("euler_ancestral", "dpmpp_2m_sde", "dpmpp_sde"):
    fn = samplers.SAMPLERS[name]
    whole = fn(GMM.denoise, x, sig, jax.random.PRNGKey(3))
    part = fn(GMM.denoise, x[2:5], sig, jax.random.PRNGKey(3), sample_ids=jnp.arange(2, 5))
    np.testing.assert_allclose(part, whole[2:5], rtol=1e-5, atol=1e-5)


def test_karras_schedule_is_k_diffusions():
  for n in ("5", "8", "12"):
    want = DET[f"kd_euler__karras__n{n}/sigmas"]
    np.testing.assert_array_equal(schedules.karras(int(n), 0.002, 80.0, 7.0), want)


def test_discrete_spacings_give_diffusers_timesteps():
  assert schedules.timesteps(5, 1000, "leading").tolist() == [800, 600, 400, 200, 0]
  assert schedules.timesteps(5, 1000, "trailing").tolist() == [999, 799, 599, 399, 199]
  assert schedules.timesteps(12, 1000, "trailing")[:3].tolist() == [999, 916, 832]
  assert schedules.timesteps(4, 1000, "linspace").tolist() == [999, 666, 333, 0]
  abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
  got = schedules.discrete(5, abar, "trailing")
  want = DET["df_dpmpp_2m__ddpm_trailing__n5/sigmas"]
  np.testing.assert_allclose(got, want, rtol=1e-6)  # the fixture's are float32 ratios


@pytest.mark.parametrize("bad,match", [
    (dict(sigmas=[1.0, 2.0, 0.0]), "must decrease"),
    (dict(sigmas=[1.0]), "steps >= 1"),
])
def test_bad_sigmas_are_refused(bad, match):
  with pytest.raises(ValueError, match=match):
    samplers.SAMPLERS["euler"](GMM.denoise, jnp.zeros((1, 2)), np.asarray(bad["sigmas"]))


def test_bad_options_are_named():
  sig = schedules.karras(3, 0.01, 10.0)
  with pytest.raises(ValueError, match="solver_type='rk4'"):
    samplers.SAMPLERS["dpmpp_2m"](GMM.denoise, jnp.zeros((1, 2)), sig, solver_type="rk4")
  with pytest.raises(ValueError, match="variant='bh3'"):
    samplers.SAMPLERS["unipc"](GMM.denoise, jnp.zeros((1, 2)), sig, variant="bh3")
  with pytest.raises(ValueError, match="needs a key"):
    samplers.SAMPLERS["dpmpp_sde"](GMM.denoise, jnp.zeros((1, 2)), sig)


LIK = np.load(os.path.join(FIX, "pf_ode_likelihood.npz"))
# Point 4 (-2.5, 2) lies 187 nats below the mode: the forward flow squeezes its
# neighbourhood so hard that the backward one cannot find it again from x(sigma_max) as
# stored (rtol 1e-7 there); every other point comes back.
WELL_POSED = [0, 1, 2, 3, 5]


def test_ode_nll_with_the_exact_trace_is_the_exact_log_density():
  from score_jax import likelihood  # pylint: disable=g-import-not-at-top
  with jax.enable_x64(True):
    nll = likelihood.ode_nll(GMM.denoise, jnp.asarray(LIK["y"]), float(LIK["sigma_min"]),
                             float(LIK["sigma_max"]), None, exact_trace=True)
  np.testing.assert_allclose(-np.asarray(nll), LIK["exact_logp"], rtol=0, atol=1e-2)
  bpd = likelihood.bits_per_dim(np.asarray(nll), 2, data_range=256.0)  # no offset: nats only
  np.testing.assert_allclose(bpd, LIK["exact_bpd"], rtol=0, atol=1e-2)


def test_ode_nll_with_hutchinson_probes_is_unbiased():
  from score_jax import likelihood  # pylint: disable=g-import-not-at-top
  with jax.enable_x64(True):
    y = jnp.tile(jnp.asarray(LIK["y"][WELL_POSED]), (400, 1))
    for probe in ("rademacher", "gaussian"):
      nll = likelihood.ode_nll(GMM.denoise, y, float(LIK["sigma_min"]), float(LIK["sigma_max"]),
                               jax.random.PRNGKey(0), probe=probe)
      per_point = -np.asarray(nll).reshape(400, len(WELL_POSED))
      err = per_point.mean(0) - LIK["exact_logp"][WELL_POSED]
      se = per_point.std(0) / np.sqrt(400)
      assert np.all(np.abs(err) < 5 * se + 1e-3), (probe, err, se)


def test_ode_sampler_returns_to_the_data_from_the_forward_solution():
  sig = np.array([float(LIK["sigma_max"]), float(LIK["sigma_min"])])
  den, calls = _counted(GMM.denoise)
  with jax.enable_x64(True):
    x, nfe = jax.jit(lambda x: samplers.SAMPLERS["ode"](den, x, sig, return_nfe=True))(
        jnp.asarray(LIK["ode_x_sigma_max"]))
    jax.effects_barrier()
  np.testing.assert_allclose(np.asarray(x)[WELL_POSED], LIK["y"][WELL_POSED], atol=1e-3)
  assert int(nfe) == calls[0] > 0  # the calls it reports are the calls it made
  with jax.enable_x64(True):  # Heun on a fixed log-sigma grid: 2 calls a step
    _, nfe = samplers.SAMPLERS["ode"](GMM.denoise, jnp.asarray(LIK["ode_x_sigma_max"]),
                                      np.geomspace(20480, 0.002, 101), solver="heun",
                                      return_nfe=True)
  assert int(nfe) == 200


def test_pc_corrector_moves_samples_toward_the_data_law():
  """In 512 dimensions, where score_sde's snr rule is meant to work: one corrector step per
  level brings the samples' spread closer to the data's (0.3^2) than the predictor alone."""
  from score_jax.analytic import GaussianMixture  # pylint: disable=g-import-not-at-top
  means = jnp.stack([jnp.full((512,), 0.5), jnp.full((512,), -0.5)])
  gm = GaussianMixture(means, jnp.array([0.7, 0.3]), std=0.3)
  z = 20.0 * jax.random.normal(jax.random.PRNGKey(0), (256, 512))
  sig = schedules.log_snr(50, 0.01, 20.0)
  spread = {}
  for n in (0, 1):
    x = np.asarray(samplers.SAMPLERS["pc"](gm.denoise, z, sig, jax.random.PRNGKey(1),
                                           n_corrector=n))
    sign = np.where(x.mean(1, keepdims=True) > 0, 0.5, -0.5)
    spread[n] = float((x - sign).var())
    assert 0.55 < float((sign > 0).mean()) < 0.85
  assert abs(spread[1] - 0.09) < abs(spread[0] - 0.09) and abs(spread[1] - 0.09) < 0.01
