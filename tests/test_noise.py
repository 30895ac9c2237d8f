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
