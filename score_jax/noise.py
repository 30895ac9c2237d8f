"""Noise levels for score matching over several scales."""

import math

import numpy as np


def geometric_sigmas(sigma_begin: float, sigma_end: float, num_classes: int) -> np.ndarray:
  """Geometric sequence sigma_1 > ... > sigma_L, as NCSN / NCSNv2 use.

  Computed in float64 in NumPy and returned as float32, the same rounding as the official
  PyTorch code, so that index-conditioned networks see bit-identical sigmas.

  Args:
    sigma_begin: the largest noise standard deviation, sigma_1 (data units, [0, 1] images).
    sigma_end: the smallest, sigma_L; must be below sigma_begin.
    num_classes: L, the number of levels (at least 2).

  Returns:
    float32 array of shape [L], decreasing.
  """
  if not np.isfinite(sigma_begin) or not np.isfinite(sigma_end) or sigma_end <= 0:
    raise ValueError(
        f"sigma_begin={sigma_begin!r} and sigma_end={sigma_end!r} must be finite and positive.")
  if sigma_begin <= sigma_end:
    raise ValueError(
        f"sigma_begin={sigma_begin!r} must be larger than sigma_end={sigma_end!r}: "
        "noise levels run from the largest to the smallest.")
  if int(num_classes) != num_classes or num_classes < 2:
    raise ValueError(f"num_classes={num_classes!r} must be an integer >= 2 (the number of levels).")
  log_sigmas = np.linspace(np.log(sigma_begin), np.log(sigma_end), int(num_classes))
  return np.exp(log_sigmas).astype(np.float32)


# --- Noise settings from data: NCSNv2 Techniques 1, 2 and 4 ---------------------------------

def max_pairwise_distance(data, max_points: int = 10_000, subsample_above: int = 60_000,
                          seed: int = 0, block_size: int = 1024) -> float:
  """Technique 1: the largest Euclidean distance between two data points (sigma_1).

  Args:
    data: [N, ...] array; each example is flattened.
    max_points: with more than `subsample_above` points, a random `max_points` of them are
      used, as the paper does for its large datasets.
    subsample_above: see max_points.
    seed: seed of that subsample.
    block_size: rows per block; the [block, N] distance block is the peak memory.

  Returns:
    The distance, in the data's units (pixels in [0, 1] for images here).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  x = np.asarray(data, np.float32).reshape(len(data), -1)
  if len(x) < 2:
    raise ValueError(f"max_pairwise_distance needs at least 2 points; got {len(x)}.")
  if len(x) > subsample_above:
    x = x[np.random.default_rng(seed).choice(len(x), max_points, replace=False)]
  n = len(x)
  pad = (-n) % block_size
  # Padding repeats the first row: it adds no new pair, so the maximum is unchanged.
  xp = np.concatenate([x, np.repeat(x[:1], pad, 0)]) if pad else x
  blocks = xp.reshape(-1, block_size, x.shape[1])

  @jax.jit
  def run(blocks, full):
    sq = jnp.sum(full * full, axis=1)

    def block_max(b):
      d2 = jnp.sum(b * b, axis=1)[:, None] + sq[None, :] - 2.0 * b @ full.T
      return jnp.max(d2)

    return jnp.sqrt(jnp.maximum(jnp.max(jax.lax.map(block_max, blocks)), 0.0))

  return float(run(jnp.asarray(blocks), jnp.asarray(x)))


def _std_normal_cdf(z: float) -> float:
  return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def coverage(gamma: float, dim: int) -> float:
  """Phi(sqrt(2D)(gamma - 1) + 3 gamma) - Phi(sqrt(2D)(gamma - 1) - 3 gamma) (Technique 2):
  how much of N(0, sigma_i^2 I)'s radial mass falls in the 3-sigma shell of level i - 1."""
  a = math.sqrt(2.0 * dim) * (gamma - 1.0)
  return _std_normal_cdf(a + 3.0 * gamma) - _std_normal_cdf(a - 3.0 * gamma)


def geometric_ratio(dim: int, coverage_target: float = 0.5) -> float:
  """Technique 2: the common ratio gamma = sigma_{i-1} / sigma_i > 1 whose coverage is the
  target (0.5 in the paper), for data of dimension `dim` (e.g. 3072 for CIFAR-10)."""
  if 2.0 * dim <= 9.0:
    # sqrt(2D) <= 3: the lower shell edge never passes the mean, coverage tends to 1 again.
    raise ValueError(f"dim={dim!r}: Technique 2 needs D > 4.5 (sqrt(2D) > 3).")
  top = coverage(1.0, dim)
  if not 0.0 < coverage_target < top:
    raise ValueError(f"coverage={coverage_target!r} must lie in (0, {top:.4f}), the coverage "
                     "of gamma -> 1.")
  lo, hi = 1.0, 2.0
  while coverage(hi, dim) > coverage_target:  # coverage falls as gamma grows
    hi = 2.0 * hi
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if coverage(mid, dim) > coverage_target else (lo, mid)
  return 0.5 * (lo + hi)


def num_noise_levels(sigma_max: float, sigma_min: float, dim: int,
                     coverage_target: float = 0.5) -> int:
  """L from Techniques 1-2: enough geometric levels from sigma_max to sigma_min that
  consecutive levels have a ratio at most `geometric_ratio(dim, coverage_target)`."""
  if sigma_max <= sigma_min:
    raise ValueError(f"sigma_max={sigma_max!r} must exceed sigma_min={sigma_min!r}.")
  gamma = geometric_ratio(dim, coverage_target)
  return int(math.ceil(math.log(sigma_max / sigma_min) / math.log(gamma))) + 1


def langevin_variance_ratio(eps, n_steps_each: int, gamma: float, sigma_min: float):
  """NCSNv2 Eq. 4: s_T^2 / sigma_i^2 after T Langevin steps at level i, started from
  N(0, sigma_{i-1}^2 I), with the exact score and alpha_i = eps sigma_i^2 / sigma_L^2.

  1 means the samples have the variance of level i when it ends; eps may be an array.
  """
  eps = np.asarray(eps, np.float64)
  a = eps / sigma_min**2
  c = 2.0 * eps / (sigma_min**2 - sigma_min**2 * (1.0 - a) ** 2)
  return (1.0 - a) ** (2 * n_steps_each) * (gamma**2 - c) + c


def langevin_step_size(sigmas, n_steps_each: int, num: int = 20_000) -> float:
  """Technique 4: the eps that brings Eq. 4 closest to 1 for these geometric levels and T,
  by grid search (as the paper recommends) over eps in (0, sigma_L^2), log-spaced."""
  sigmas = np.asarray(sigmas, np.float64)
  if sigmas.ndim != 1 or len(sigmas) < 2:
    raise ValueError(f"sigmas must be a 1-D array of at least 2 levels; got {sigmas.shape}.")
  gamma = sigmas[0] / sigmas[1]
  s_min = sigmas[-1]
  grid = np.geomspace(s_min**2 * 1e-8, s_min**2 * (1 - 1e-9), num)
  err = np.abs(langevin_variance_ratio(grid, n_steps_each, gamma, s_min) - 1.0)
  best = int(np.argmin(err))
  lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, num - 1)]
  fine = np.linspace(lo, hi, 2001)
  err = np.abs(langevin_variance_ratio(fine, n_steps_each, gamma, s_min) - 1.0)
  return float(fine[int(np.argmin(err))])
