"""NCSNv2 (Song & Ermon 2020, App. B.1, Table 3): unconditional RefineNet, output / sigma.

The network never sees the noise-level index except to divide its output by sigma_y
(Technique 3), so `score_at_sigma` evaluates it at any continuous sigma.
"""

import jax.numpy as jnp

from score_jax import noise
from score_jax.models.refinenet import RefineNet


class NCSNv2(RefineNet):
  """Score network s(x, sigma_y): x [B, H, W, C] in [0, 1], y int [B] -> [B, H, W, C].

  Attributes (besides RefineNet's): sigma_begin, sigma_end (and num_classes) define the
  geometric noise levels that the index y refers to.
  """
  sigma_begin: float = 1.0
  sigma_end: float = 0.01

  def _sigmas(self):
    return jnp.asarray(noise.geometric_sigmas(self.sigma_begin, self.sigma_end,
                                              self.num_classes))

  def __call__(self, x, y):
    """Score at noise-level index y."""
    return self.score_at_sigma(x, self._sigmas()[y])

  def score_at_sigma(self, x, sigma):
    """Score at a continuous noise level; sigma is [] or [B], in data units."""
    sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (x.shape[0],))
    return self.features(x) / sigma[:, None, None, None]
