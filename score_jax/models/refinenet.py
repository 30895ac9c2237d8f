"""The dilated RefineNet shared by NCSN (conditional) and NCSNv2 (unconditional).

NCSN (2019, App. A; NCSNv2 paper Table 2) puts CondInstanceNorm++ before every conv and
pool, with average pooling in the CRP blocks. NCSNv2 (Table 3) uses unconditional
InstanceNorm++ in the ResNet, no norms in the RefineNet blocks, and max pooling.
"""

import functools
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from score_jax.models import layers
from score_jax.models import remat as remat_lib

# (name, width multiplier of ngf, resample, dilation) of each residual stage, and
# (name, width multiplier) of each refine block, deepest first. Names are the official ones.
STAGES = {
    "base": (("res1", 1, None, None), ("res2", 2, "down", None), ("res3", 2, "down", 2),
             ("res4", 2, "down", 4)),
    "deeper": (("res1", 1, None, None), ("res2", 2, "down", None), ("res3", 2, "down", None),
               ("res4", 4, "down", 2), ("res5", 4, "down", 4)),
    "deepest": (("res1", 1, None, None), ("res2", 2, "down", None), ("res3", 2, "down", None),
                ("res31", 2, "down", None), ("res4", 4, "down", 2), ("res5", 4, "down", 4)),
}
REFINES = {
    "base": (("refine1", 2), ("refine2", 2), ("refine3", 1), ("refine4", 1)),
    "deeper": (("refine1", 4), ("refine2", 2), ("refine3", 2), ("refine4", 1),
               ("refine5", 1)),
    "deepest": (("refine1", 4), ("refine2", 2), ("refine31", 2), ("refine3", 2),
                ("refine4", 1), ("refine5", 1)),
}
# How many stride-2 stages each depth has (the dilated stages keep the resolution).
DOWNSAMPLINGS = {d: sum(1 for _, _, r, dil in s if r == "down" and dil is None)
                 for d, s in STAGES.items()}


def depth_for_image_size(image_size: int) -> str:
  """Table 3's depth by resolution: up to 64 px base, up to 128 deeper, else deepest."""
  if image_size <= 64:
    return "base"
  if image_size <= 128:
    return "deeper"
  return "deepest"


class RefineNet(nn.Module):
  """RefineNet body: x [B, H, W, C] in [0, 1] (and y [B] when conditional) -> [B, H, W, C].

  Attributes:
    ngf: base width (128 in the papers).
    channels: image channels.
    depth: 'base', 'deeper' or 'deepest'.
    image_size: only for the official 28x28 padding case.
    conditional: CondInstanceNorm++ on y everywhere (NCSN) instead of InstanceNorm++.
    num_classes: rows of the conditional norms' tables (L).
    dtype: the compute dtype (bfloat16 for mixed precision): every layer computes in its
      input's dtype, the norms take their statistics in float32, parameters stay float32
      and the output is float32.
    remat: recompute each residual and refine block in the backward pass (memory).
  """
  ngf: int
  channels: int
  depth: str = "base"
  image_size: Optional[int] = None
  conditional: bool = False
  num_classes: int = 1
  dtype: Any = jnp.float32
  remat: bool = False

  def setup(self):
    if self.depth not in STAGES:
      raise ValueError(f"depth={self.depth!r}; expected one of {sorted(STAGES)}.")
    if self.conditional:
      norm = functools.partial(layers.CondInstanceNormPlus, self.num_classes)
    else:
      norm = layers.InstanceNormPlus
    ngf = self.ngf
    residual_block = remat_lib.maybe(layers.ResidualBlock, self.remat)
    refine_block = remat_lib.maybe(layers.RefineBlock, self.remat,
                                   static_argnums=(2,))  # output_shape
    self.begin_conv = layers.Conv(ngf, 3)
    stages = []
    n_stages = len(STAGES[self.depth])
    for idx, (name, mult, resample, dilation) in enumerate(STAGES[self.depth]):
      # The official code pads the last downsampling stage for 28x28 inputs; with a dilated
      # last stage the flag changes nothing, but it is passed on as the original does.
      adjust = self.image_size == 28 and idx == n_stages - 1
      stages.append((
          residual_block(mult * ngf, norm, layers.elu, resample, dilation, adjust,
                         name=f"{name}_0"),
          residual_block(mult * ngf, norm, layers.elu, None, dilation, name=f"{name}_1"),
      ))
    self.stages = stages
    block_norm = norm if self.conditional else None
    n_refines = len(REFINES[self.depth])
    self.refines = [
        refine_block(mult * ngf, layers.elu, start=idx == 0, end=idx == n_refines - 1,
                     norm=block_norm, name=name)
        for idx, (name, mult) in enumerate(REFINES[self.depth])]
    self.normalizer = norm()
    self.end_conv = layers.Conv(self.channels, 3)

  def features(self, x, y=None):
    """The network output before any 1/sigma scaling, [B, H, W, channels]."""
    # The official data convention: [0, 1] -> [-1, 1].
    h = self.begin_conv(jnp.asarray(2.0 * x - 1.0, self.dtype))
    feats = []
    for block_a, block_b in self.stages:
      h = block_b(block_a(h, y), y)
      feats.append(h)
    ref = None
    for refine, feat in zip(self.refines, reversed(feats)):
      inputs = [feat] if ref is None else [feat, ref]
      ref = refine(inputs, feat.shape[1:3], y)
    h = layers.elu(self.normalizer(ref, y))
    return self.end_conv(h).astype(jnp.float32)
