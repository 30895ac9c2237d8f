import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import noise, samplers

SIGMAS = noise.geometric_sigmas(1.0, 0.1, 4)


def gaussian_score(data_std):
  """Exact score of N(0, data_std^2) perturbed by N(0, sigma_i^2), indexed by level."""
  sig = jnp.asarray(SIGMAS)

  def score_fn(x, i):
    return -x / (data_std**2 + sig[i] ** 2)

  return score_fn


def run(x0, key, **kw):
  args = dict(n_steps_each=3, step_lr=1e-3, denoise=False)
  args.update(kw)
  return samplers.annealed_langevin(gaussian_score(0.5), x0, SIGMAS, key=key, **args)


def test_deterministic_for_a_key_and_different_across_keys():
  x0 = jnp.zeros((4, 3, 3, 1))
  a = run(x0, jax.random.PRNGKey(0))
  b = run(x0, jax.random.PRNGKey(0))
  c = run(x0, jax.random.PRNGKey(1))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_samples_do_not_depend_on_batch_splitting():
  key = jax.random.PRNGKey(3)
  x0 = samplers.uniform_init(key, (6, 2, 2, 1))
  whole = run(x0, key)
  first = run(x0[:2], key, sample_ids=jnp.arange(0, 2))
  rest = run(x0[2:], key, sample_ids=jnp.arange(2, 6))
  np.testing.assert_allclose(np.concatenate([first, rest]), whole, rtol=1e-6)
  # The starting noise is per sample too.
  np.testing.assert_array_equal(samplers.uniform_init(key, (2, 2, 2, 1), sample_ids=[4, 5]),
                                x0[4:])


def test_gaussian_start_has_the_first_levels_spread_and_is_per_sample():
  key = jax.random.PRNGKey(4)
  x0 = samplers.initial_samples("gaussian", key, (500, 4, 4, 1), 3.0)
  assert abs(float(jnp.std(x0)) / 3.0 - 1) < 0.03 and abs(float(jnp.mean(x0))) < 0.1
  part = samplers.initial_samples("gaussian", key, (2, 4, 4, 1), 3.0, sample_ids=[7, 8])
  np.testing.assert_array_equal(part, x0[7:9])
  np.testing.assert_array_equal(samplers.initial_samples("uniform", key, (3, 2, 2, 1), 3.0),
                                samplers.uniform_init(key, (3, 2, 2, 1)))
  with pytest.raises(ValueError, match="init='zeros'"):
    samplers.initial_samples("zeros", key, (1, 2, 2, 1), 3.0)


def test_reaches_the_target_gaussian():
  # Enough steps at a small step size: the last level's stationary law is
  # N(0, data_std^2 + sigma_L^2) up to the O(alpha) bias of the discretisation.
  data_std = 0.5
  x0 = jnp.zeros((4000, 1, 1, 1))
  x = samplers.annealed_langevin(gaussian_score(data_std), x0, SIGMAS, n_steps_each=200,
                                 step_lr=2e-3, key=jax.random.PRNGKey(0))
  target = data_std**2 + SIGMAS[-1] ** 2
  assert abs(float(jnp.var(x)) / target - 1) < 0.06
  assert abs(float(jnp.mean(x))) < 0.05


def test_denoise_adds_the_tweedie_step():
  key = jax.random.PRNGKey(0)
  x0 = jnp.ones((2, 2, 2, 1))
  plain = run(x0, key)
  den = run(x0, key, denoise=True)
  want = plain + SIGMAS[-1] ** 2 * gaussian_score(0.5)(plain, len(SIGMAS) - 1)
  np.testing.assert_allclose(den, want, rtol=1e-6)


def test_step_sizes_follow_algorithm_1():
  alphas = samplers.langevin_step_sizes(SIGMAS, 2e-5)
  np.testing.assert_allclose(alphas, 2e-5 * (SIGMAS / SIGMAS[-1]) ** 2, rtol=1e-6)


def test_keeps_dtype_and_compiles_once_for_any_level_count():
  x0 = jnp.zeros((2, 2, 2, 1), jnp.bfloat16)
  out = run(x0, jax.random.PRNGKey(0))
  assert out.dtype == jnp.bfloat16
  # The loops are scans: the jaxpr does not grow with L.
  sizes = []
  for n_levels in (3, 30):
    sig = np.geomspace(1.0, 0.1, n_levels).astype(np.float32)
    jaxpr = jax.make_jaxpr(lambda x: samplers.annealed_langevin(
        lambda y, i: -y, x, sig, 2, 1e-3, jax.random.PRNGKey(0)))(jnp.zeros((2, 2)))
    sizes.append(len(str(jaxpr)))
  assert abs(sizes[0] - sizes[1]) < 50


def test_snapshots_are_the_states_after_every_kth_level():
  key = jax.random.PRNGKey(0)
  x0 = jnp.ones((2, 2, 2, 1))
  final, snaps = run(x0, key, snapshot_every=2)
  assert snaps.shape == (2, 2, 2, 2, 1)  # L = 4 levels, every 2nd
  np.testing.assert_array_equal(final, run(x0, key))
  np.testing.assert_array_equal(snaps[-1], final)  # no denoising: the last state is final
  # The state after level 2 is what a 2-level run over the first two sigmas gives.
  first_two = samplers.annealed_langevin(gaussian_score(0.5), x0, SIGMAS[:2], n_steps_each=3,
                                         step_lr=1e-3 * (SIGMAS[1] / SIGMAS[-1]) ** 2,
                                         key=key)
  np.testing.assert_allclose(snaps[0], first_two, rtol=1e-5)


def test_inpainting_keeps_known_pixels_up_to_sigma_l_noise():
  key = jax.random.PRNGKey(5)
  known = jax.random.uniform(key, (3, 4, 4, 1))
  mask = jnp.zeros((4, 4, 1)).at[:2].set(1.0)  # top half known, one mask for all samples
  x0 = samplers.uniform_init(jax.random.PRNGKey(6), known.shape)
  out = samplers.annealed_langevin_inpaint(gaussian_score(0.5), x0, known, mask, SIGMAS, 3,
                                           1e-3, key)
  top = np.asarray(out[:, :2] - known[:, :2])
  assert np.abs(top).max() < 5 * SIGMAS[-1]  # data + sigma_L z
  assert np.abs(top).max() > 0  # ... with the noise Algorithm 2 puts there
  # The unknown pixels moved away from their start and differ from the known image.
  assert not np.allclose(out[:, 2:], x0[:, 2:])
  # Per-sample noise: a slice of the batch gives the same completions.
  part = samplers.annealed_langevin_inpaint(gaussian_score(0.5), x0[1:], known[1:], mask,
                                            SIGMAS, 3, 1e-3, key, sample_ids=jnp.arange(1, 3))
  np.testing.assert_allclose(part, out[1:], rtol=1e-6)


def test_interpolation_ends_are_the_plain_samples_and_the_middle_mixes():
  key = jax.random.PRNGKey(7)
  x0 = samplers.uniform_init(key, (2, 3, 3, 1))
  out = samplers.annealed_langevin_interpolate(gaussian_score(0.5), x0, 4, SIGMAS, 3, 1e-3,
                                               key)
  assert out.shape == (2, 5, 3, 3, 1)
  for r in range(2):
    for k, sid in ((0, 2 * r), (4, 2 * r + 1)):
      plain = run(x0[r:r + 1], key, sample_ids=jnp.array([sid]))
      # Equal up to rounding: XLA may fuse the update differently for the two batch shapes.
      np.testing.assert_allclose(out[r, k], plain[0], rtol=1e-6, atol=1e-7)
  # Interior interpolants differ from both ends and move gradually from one to the other.
  d = [float(jnp.linalg.norm(out[0, k] - out[0, 0])) for k in range(5)]
  assert d[0] == 0 and all(a < b for a, b in zip(d, d[1:]))


def test_level_callback_reports_every_level_in_order_and_changes_nothing():
  """The progress hook of all three Langevin samplers sees levels 0..L-1 once each, in order,
  under jit, and the samples are the same as without it."""
  key = jax.random.PRNGKey(8)
  x0 = samplers.uniform_init(key, (2, 3, 3, 1))
  known = jnp.ones_like(x0)
  mask = jnp.zeros((3, 3, 1)).at[0].set(1.0)
  calls = {
      "sample": lambda cb: samplers.annealed_langevin(
          gaussian_score(0.5), x0, SIGMAS, 3, 1e-3, key, on_level_done=cb),
      "inpaint": lambda cb: samplers.annealed_langevin_inpaint(
          gaussian_score(0.5), x0, known, mask, SIGMAS, 3, 1e-3, key, on_level_done=cb),
      "interpolate": lambda cb: samplers.annealed_langevin_interpolate(
          gaussian_score(0.5), x0, 2, SIGMAS, 3, 1e-3, key, on_level_done=cb),
  }
  for name, call in calls.items():
    seen = []
    with_cb = jax.jit(lambda: call(lambda i: seen.append(int(i))))()
    jax.effects_barrier()
    assert seen == list(range(len(SIGMAS))), name
    np.testing.assert_array_equal(with_cb, jax.jit(lambda: call(None))(), err_msg=name)
