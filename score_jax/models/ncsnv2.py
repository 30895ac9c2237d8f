"""NCSNv2 (Song & Ermon 2020, App. B.1, Table 3): unconditional RefineNet, output / sigma.

The network never sees the noise-level index except to divide its output by sigma_y
(Technique 3), so `score_at_sigma` evaluates it at any continuous sigma.
"""

import jax.numpy as jnp

from score_jax.models.refinenet import RefineNet


class NCSNv2(RefineNet):
  """Score network s(x, sigma_y): x [B, H, W, C] in [0, 1], y int [B] -> [B, H, W, C].

  Attributes (besides RefineNet's): sigmas, the noise levels [num_classes] (float32 values,
  decreasing) that the index y refers to: the method's own, computed once by the builder.
  """
  sigmas: tuple = ()

  def _sigmas(self):
    if len(self.sigmas) != self.num_classes:
      raise ValueError(f"NCSNv2 has {len(self.sigmas)} sigmas for num_classes="
                       f"{self.num_classes}; expected one per level.")
    return jnp.asarray(self.sigmas, jnp.float32)

  def __call__(self, x, y):
    """Score at noise-level index y."""
    return self.score_at_sigma(x, self._sigmas()[y])

  def score_at_sigma(self, x, sigma):
    """Score at a continuous noise level; sigma is [] or [B], in data units."""
    sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (x.shape[0],))
    return self.features(x) / sigma[:, None, None, None]
