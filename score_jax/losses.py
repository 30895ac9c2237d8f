"""Score-matching losses as pure functions."""

from typing import Callable

import jax
import jax.numpy as jnp

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def dsm_loss_per_sample(score_fn: ScoreFn, x, labels, noise, sigmas, anneal_power=2.0):
  """Denoising score matching over noise levels (NCSN Eq. 5-6, NCSNv2 Eq. 2), per sample.

  For x~ = x + sigma_i z the target score is -(x~ - x) / sigma_i^2 = -z / sigma_i, and
  l_i = 1/2 * ||s(x~, i) - target||^2 * sigma_i^anneal_power (sum over pixels). With the
  paper's weight sigma^2 every level contributes O(1).

  Args:
    score_fn: (x_perturbed [B, ...], labels [B]) -> score [B, ...].
    x: clean data [B, ...].
    labels: int [B], noise-level index of each sample.
    noise: standard normal [B, ...] (z above).
    sigmas: [L] noise levels.
    anneal_power: exponent of the sigma weight.

  Returns:
    [B] loss of each sample.
  """
  used = jnp.asarray(sigmas, x.dtype)[labels].reshape((-1,) + (1,) * (x.ndim - 1))
  perturbed = x + used * noise
  target = -noise / used
  scores = score_fn(perturbed, labels)
  sq = jnp.sum(jnp.square(scores - target).reshape(x.shape[0], -1), axis=-1)
  return 0.5 * sq * used.reshape(-1) ** anneal_power


def dsm_loss(score_fn: ScoreFn, x, sigmas, key, anneal_power=2.0):
  """Mean denoising score-matching loss with levels and noise drawn from `key`.

  The noise is drawn with the batch's global shape, so under jit with a sharded batch the
  values (and so the loss) do not depend on the number of devices.

  Returns:
    scalar loss (mean over the batch).
  """
  key_labels, key_noise = jax.random.split(key)
  labels = jax.random.randint(key_labels, (x.shape[0],), 0, len(sigmas))
  noise = jax.random.normal(key_noise, x.shape, x.dtype)
  return jnp.mean(dsm_loss_per_sample(score_fn, x, labels, noise, sigmas, anneal_power))


PROJECTIONS = ("gaussian", "rademacher")


def ssm_loss_per_sample(score_fn: ScoreFn, x, labels, noise, vectors, sigmas,
                        anneal_power=2.0):
  """Annealed sliced score matching with variance reduction (the official NCSN code's
  `anneal_sliced_score_estimation_vr`), per sample: at x~ = x + sigma_i z,

    l_i = (1/2 ||s(x~, i)||^2 + mean_p v_p^T (ds/dx~) v_p) * sigma_i^anneal_power,

  the Jacobian term by a vector-Jacobian product per projection v_p (one network call for
  all P of them). No target is needed: the objective is the score-matching one (Hyvarinen),
  sliced.

  Args:
    score_fn: (x_perturbed [B, ...], labels [B]) -> score [B, ...].
    x: clean data [B, ...]; labels: int [B]; noise: standard normal [B, ...] (z above).
    vectors: [P, B, ...] projections (Gaussian or Rademacher), P particles.
    sigmas: [L] noise levels; anneal_power: exponent of the sigma weight (2 as DSM's).

  Returns:
    [B] loss of each sample.
  """
  used = jnp.asarray(sigmas, x.dtype)[labels].reshape((-1,) + (1,) * (x.ndim - 1))
  perturbed = x + used * noise
  scores, pullback = jax.vjp(lambda u: score_fn(u, labels), perturbed)
  b = x.shape[0]
  loss1 = 0.5 * jnp.sum(jnp.square(scores).reshape(b, -1), axis=-1)
  loss2 = jnp.mean(jax.vmap(lambda v: jnp.sum((v * pullback(v)[0]).reshape(b, -1), axis=-1))(
      vectors), axis=0)
  return (loss1 + loss2) * used.reshape(-1) ** anneal_power


def ssm_loss(score_fn: ScoreFn, x, sigmas, key, anneal_power=2.0, projection="gaussian",
             n_particles: int = 1):
  """Mean annealed sliced score-matching loss, levels, noise and projections from `key`
  (global shapes, as `dsm_loss`). The official code draws Gaussian projections."""
  if projection not in PROJECTIONS:
    raise ValueError(f"projection={projection!r}; expected one of {PROJECTIONS}.")
  key_labels, key_noise, key_v = jax.random.split(key, 3)
  labels = jax.random.randint(key_labels, (x.shape[0],), 0, len(sigmas))
  noise = jax.random.normal(key_noise, x.shape, x.dtype)
  shape = (n_particles,) + x.shape
  vectors = (jax.random.normal(key_v, shape, x.dtype) if projection == "gaussian"
             else jax.random.rademacher(key_v, shape, x.dtype))
  return jnp.mean(ssm_loss_per_sample(score_fn, x, labels, noise, vectors, sigmas,
                                      anneal_power))


def ddpm_loss_per_sample(eps_fn: Callable, x0, t, noise, sqrt_alphas_cumprod,
                         sqrt_one_minus_alphas_cumprod):
  """L_simple (DDPM Eq. 14) per sample: mean over pixels of (eps(x_t, t) - noise)^2, with
  x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise.

  In the denoiser view (x = x_t / sqrt(abar_t), sigma_t^2 = (1 - abar_t) / abar_t) this is
  ||D(x; sigma_t) - x0||^2 / sigma_t^2 per pixel: the weighted denoising loss with
  lambda = 1 / sigma^2, written in epsilon so that it matches the original number for number.

  Args:
    eps_fn: (x_t [B, ...], t int32 [B]) -> predicted noise.
    x0: clean data in [-1, 1], [B, ...].
    t: int32 [B] timestep indices 0..T-1.
    noise: standard normal, [B, ...].
    sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod: [T] tables (float64 on the host).

  Returns:
    [B] per-sample losses.
  """
  shape = (-1,) + (1,) * (x0.ndim - 1)
  a = jnp.asarray(sqrt_alphas_cumprod, x0.dtype)[t].reshape(shape)
  s = jnp.asarray(sqrt_one_minus_alphas_cumprod, x0.dtype)[t].reshape(shape)
  x_t = a * x0 + s * noise
  err = jnp.square(eps_fn(x_t, t) - noise)
  return jnp.mean(err.reshape(x0.shape[0], -1), axis=-1)


def ddpm_loss(eps_fn: Callable, x0, key, sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod):
  """Mean L_simple over the batch with t ~ U{0..T-1} and the noise drawn from `key` (global
  shapes, so the loss does not depend on the device count)."""
  key_t, key_noise = jax.random.split(key)
  t = jax.random.randint(key_t, (x0.shape[0],), 0, len(sqrt_alphas_cumprod))
  noise = jax.random.normal(key_noise, x0.shape, x0.dtype)
  return jnp.mean(ddpm_loss_per_sample(eps_fn, x0, t, noise, sqrt_alphas_cumprod,
                                       sqrt_one_minus_alphas_cumprod))


# EDM (Karras et al. 2022, Sec. 5): every method as a weighted denoising loss
# lambda(sigma) ||D(y + sigma n; sigma) - y||^2, with its own sigma distribution.
EDM_LOSSES = ("vp", "ve", "edm")


def edm_training_sigma(kind: str, draw, beta_d: float = 19.9, beta_min: float = 0.1,
                       epsilon_t: float = 1e-5, sigma_min: float = 0.02,
                       sigma_max: float = 100.0, P_mean: float = -1.2, P_std: float = 1.2,
                       sigma_data: float = 0.5):
  """(sigma, weight) for the loss `kind` from its draw: u ~ U[0, 1) for 'vp' (t = 1 + u
  (epsilon_t - 1) through the VP SDE's sigma(t)) and 've' (log-uniform between sigma_min and
  sigma_max), both weighted 1 / sigma^2; r ~ N(0, 1) for 'edm' (ln sigma ~ N(P_mean, P_std^2),
  weight (sigma^2 + sigma_data^2) / (sigma sigma_data)^2)."""
  if kind == "vp":
    t = 1 + draw * (epsilon_t - 1)
    sigma = jnp.sqrt(jnp.exp(0.5 * beta_d * t ** 2 + beta_min * t) - 1)
    return sigma, 1 / sigma ** 2
  if kind == "ve":
    sigma = sigma_min * ((sigma_max / sigma_min) ** draw)
    return sigma, 1 / sigma ** 2
  if kind == "edm":
    sigma = jnp.exp(draw * P_std + P_mean)
    return sigma, (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2
  raise ValueError(f"EDM loss {kind!r}; expected one of {EDM_LOSSES}.")


def denoising_loss_per_element(denoise_fn: Callable, y, sigma, weight, noise):
  """lambda(sigma) (D(y + sigma n; sigma) - y)^2 per element, sigma and weight [B].

  denoise_fn(x [B, ...], sigma [B]) -> D [B, ...]; y the (augmented) clean images."""
  b = lambda v: v.reshape((-1,) + (1,) * (y.ndim - 1))
  d = denoise_fn(y + b(sigma) * noise, sigma)
  return b(weight) * jnp.square(d - y)


def edm_loss(denoise_fn: Callable, y, key, kind: str = "edm", sample_ids=None, **kwargs):
  """EDM's training loss for a batch y [B, ...] in [-1, 1]: [B] per-sample sums over
  pixels (the official loop sums and divides by the batch). Each sample's sigma and noise
  come from fold_in(key, its id) (default 0..B-1), so a batch split into accumulation rounds
  or over devices draws the same numbers."""
  from score_jax.samplers.common import per_sample_keys  # pylint: disable=g-import-not-at-top
  keys = per_sample_keys(key, y.shape[0], sample_ids)
  draw_fn = jax.random.normal if kind == "edm" else jax.random.uniform
  draw = jax.vmap(lambda k: draw_fn(jax.random.fold_in(k, 0), (), y.dtype))(keys)
  noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), y.shape[1:],
                                               y.dtype))(keys)
  sigma, weight = edm_training_sigma(kind, draw, **kwargs)
  per_element = denoising_loss_per_element(denoise_fn, y, sigma, weight, noise)
  return per_element.reshape(y.shape[0], -1).sum(axis=1)
