"""NCSN (Song & Ermon 2019, App. A; NCSNv2 paper Table 2): the conditional RefineNet.

Every norm is CondInstanceNorm++ indexed by the noise level y, the CRP blocks average-pool,
and the output is the score itself (no 1/sigma).
"""

from score_jax.models.refinenet import RefineNet


class NCSN(RefineNet):
  """Score network s(x, y): x [B, H, W, C] in [0, 1], y int [B] -> [B, H, W, C]."""
  conditional: bool = True

  def __call__(self, x, y):
    return self.features(x, y)
