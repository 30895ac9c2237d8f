"""NCSNv2 (Song & Ermon 2020, Appendix B.1, Table 3): unconditional RefineNet, output / sigma.

Three depths, as in Table 3: 'base' (32-64 px), 'deeper' (96-128 px, one more cascade) and
'deepest' (256 px, two more). The network never sees the noise-level index except to divide
its output by sigma_y (Technique 3), so `score_at_sigma` can evaluate it at any sigma.
"""

import functools
from typing import Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

from score_jax import noise
from score_jax.models import layers

# (name, width multiplier of ngf, resample, dilation) for each residual stage, and
# (name, width multiplier) for each refine block, deepest first. Names are the official ones.
_STAGES = {
    "base": (("res1", 1, None, None), ("res2", 2, "down", None), ("res3", 2, "down", 2),
             ("res4", 2, "down", 4)),
    "deeper": (("res1", 1, None, None), ("res2", 2, "down", None), ("res3", 2, "down", None),
               ("res4", 4, "down", 2), ("res5", 4, "down", 4)),
    "deepest": (("res1", 1, None, None), ("res2", 2, "down", None), ("res3", 2, "down", None),
                ("res31", 2, "down", None), ("res4", 4, "down", 2), ("res5", 4, "down", 4)),
}
_REFINES = {
    "base": (("refine1", 2), ("refine2", 2), ("refine3", 1), ("refine4", 1)),
    "deeper": (("refine1", 4), ("refine2", 2), ("refine3", 2), ("refine4", 1),
               ("refine5", 1)),
    "deepest": (("refine1", 4), ("refine2", 2), ("refine31", 2), ("refine3", 2),
                ("refine4", 1), ("refine5", 1)),
}


def depth_for_image_size(image_size: int) -> str:
  """Table 3's choice of depth by resolution: <=64 base, <=128 deeper, else deepest."""
  if image_size <= 64:
    return "base"
  if image_size <= 128:
    return "deeper"
  return "deepest"


class NCSNv2(nn.Module):
  """Score network s(x, sigma_y) for x of shape [B, H, W, channels] in [0, 1].

  Attributes:
    ngf: base width (128 in the paper).
    channels: image channels (output has the same).
    sigma_begin, sigma_end, num_classes: the geometric noise levels the index y refers to.
    depth: 'base', 'deeper' or 'deepest' (see `depth_for_image_size`).
    image_size: only used for the 28x28 padding case of the official code.
  """
  ngf: int
  channels: int
  sigma_begin: float
  sigma_end: float
  num_classes: int
  depth: str = "base"
  image_size: Optional[int] = None

  def setup(self):
    if self.depth not in _STAGES:
      raise ValueError(f"depth={self.depth!r}; expected one of {sorted(_STAGES)}.")
    self.sigmas = jnp.asarray(
        noise.geometric_sigmas(self.sigma_begin, self.sigma_end, self.num_classes))
    norm = layers.InstanceNormPlus
    ngf = self.ngf
    self.begin_conv = layers.Conv(ngf, 3)
    stages = []
    for idx, (name, mult, resample, dilation) in enumerate(_STAGES[self.depth]):
      # The official 28x28 case pads before the last downsampling conv; with the dilated
      # last stage of the base depth that flag has no effect, but it is kept for fidelity.
      adjust = self.image_size == 28 and idx == len(_STAGES[self.depth]) - 1
      stages.append((
          layers.ResidualBlock(mult * ngf, norm, nn.elu, resample, dilation, adjust,
                               name=f"{name}_0"),
          layers.ResidualBlock(mult * ngf, norm, nn.elu, None, dilation, name=f"{name}_1"),
      ))
    self.stages = stages
    refines = []
    n = len(_REFINES[self.depth])
    for idx, (name, mult) in enumerate(_REFINES[self.depth]):
      refines.append(layers.RefineBlock(mult * ngf, nn.elu, start=idx == 0, end=idx == n - 1,
                                        name=name))
    self.refines = refines
    self.normalizer = norm()
    self.end_conv = layers.Conv(self.channels, 3)

  def unscaled(self, x):
    """The network before the division by sigma: [B, H, W, C] -> [B, H, W, C]."""
    h = self.begin_conv(2.0 * x - 1.0)
    feats = []
    for block_a, block_b in self.stages:
      h = block_b(block_a(h))
      feats.append(h)
    ref = None
    for refine, feat in zip(self.refines, reversed(feats)):
      inputs = [feat] if ref is None else [feat, ref]
      ref = refine(inputs, feat.shape[1:3])
    h = nn.elu(self.normalizer(ref))
    return self.end_conv(h)

  def __call__(self, x, y):
    """Score at noise-level index y: x [B, H, W, C], y int [B] -> [B, H, W, C]."""
    return self.score_at_sigma(x, self.sigmas[y])

  def score_at_sigma(self, x, sigma):
    """Score at a continuous noise level; sigma is [] or [B], in data units."""
    sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (x.shape[0],))
    return self.unscaled(x) / sigma[:, None, None, None]
