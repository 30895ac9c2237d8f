import numpy as np
import pytest

from score_jax import noise


def test_geometric_sigmas_endpoints_and_ratio():
  s = noise.geometric_sigmas(50.0, 0.01, 232)
  assert s.dtype == np.float32 and s.shape == (232,)
  np.testing.assert_allclose([s[0], s[-1]], [50.0, 0.01], rtol=1e-6)
  ratios = s[1:] / s[:-1]
  np.testing.assert_allclose(ratios, ratios[0], rtol=1e-5)
  np.testing.assert_allclose(ratios[0], (0.01 / 50.0) ** (1 / 231), rtol=1e-5)


@pytest.mark.parametrize("begin,end,n,match", [
    (0.01, 1.0, 10, "larger than sigma_end"),
    (1.0, 1.0, 10, "larger than sigma_end"),
    (1.0, 0.0, 10, "positive"),
    (1.0, 0.01, 1, "num_classes"),
])
def test_geometric_sigmas_rejects_bad_input(begin, end, n, match):
  with pytest.raises(ValueError, match=match):
    noise.geometric_sigmas(begin, end, n)


def test_max_pairwise_distance_matches_brute_force():
  rng = np.random.default_rng(0)
  x = rng.random((300, 4, 4, 2)).astype(np.float32)
  flat = x.reshape(300, -1).astype(np.float64)
  want = np.sqrt(((flat[:, None] - flat[None]) ** 2).sum(-1).max())
  got = noise.max_pairwise_distance(x, block_size=64)  # 300 is not a multiple: padding path
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_max_pairwise_distance_subsamples_large_sets():
  x = np.zeros((50, 3), np.float32)
  x[7] = 10.0  # the farthest point; a 20-point subsample may or may not contain it
  full = noise.max_pairwise_distance(x)
  sub = noise.max_pairwise_distance(x, max_points=20, subsample_above=40, seed=1)
  assert full == pytest.approx(np.sqrt(300.0), rel=1e-6)
  assert sub <= full


def test_geometric_ratio_hits_the_coverage():
  for dim in (5, 784, 3072):
    gamma = noise.geometric_ratio(dim, 0.5)
    assert gamma > 1.0
    assert noise.coverage(gamma, dim) == pytest.approx(0.5, abs=1e-9)
  # Higher dimensions need finer ratios; CIFAR-10's is about 1.04.
  assert noise.geometric_ratio(3072) == pytest.approx(1.0398, abs=1e-4)
  with pytest.raises(ValueError, match="coverage=0.999"):
    noise.geometric_ratio(784, 0.999)
  with pytest.raises(ValueError, match="dim=2"):
    noise.geometric_ratio(2)


def test_num_noise_levels_gives_ratios_within_gamma():
  levels = noise.num_noise_levels(50.0, 0.01, 3072)
  gamma = noise.geometric_ratio(3072)
  assert (50.0 / 0.01) ** (1 / (levels - 1)) <= gamma < (50.0 / 0.01) ** (1 / (levels - 2))


def test_langevin_variance_ratio_matches_a_simulation():
  # Eq. 4 is exact for N(0, sigma_i^2 I) data started from N(0, sigma_{i-1}^2 I).
  gamma, sigma_l, sigma_i, eps, t = 1.3, 0.1, 0.5, 1e-3, 7
  alpha = eps * sigma_i**2 / sigma_l**2
  rng = np.random.default_rng(0)
  x = rng.normal(size=400_000) * gamma * sigma_i
  for _ in range(t):
    x = x + alpha * (-x / sigma_i**2) + np.sqrt(2 * alpha) * rng.normal(size=x.shape)
  want = float(noise.langevin_variance_ratio(eps, t, gamma, sigma_l))
  assert np.var(x) / sigma_i**2 == pytest.approx(want, rel=0.01)


@pytest.mark.parametrize("s1,levels,t,paper_eps", [
    (50, 232, 5, 6.2e-6), (90, 500, 5, 3.3e-6), (190, 1086, 3, 1.8e-6), (348, 2311, 3, 9e-7)])
def test_langevin_step_size_reproduces_table_4(s1, levels, t, paper_eps):
  eps = noise.langevin_step_size(noise.geometric_sigmas(s1, 0.01, levels), t)
  assert eps == pytest.approx(paper_eps, rel=0.02)
