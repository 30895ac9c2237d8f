"""Score networks. `get_model(config)` builds the linen module a config names."""

import jax.numpy as jnp

from score_jax.models.ddpm import DDPMUNet
from score_jax.models.ncsn import NCSN
from score_jax.models.ncsnv2 import NCSNv2
from score_jax.models.refinenet import DOWNSAMPLINGS, depth_for_image_size

_MODELS = ("ncsn", "ncsnv2", "ddpm")


def get_model(config):
  """The linen module for `config.model.name`, sized from `config.data` and `config.model`.

  ncsn / ncsnv2 take x as NHWC images in [0, 1] and y the integer noise-level index and
  return the score, NHWC; their depth follows the image size as in NCSNv2 Table 3 (and
  Table 2 for NCSN). ddpm takes x_t (data in [-1, 1]) and the timestep index t and returns
  epsilon.

  Raises:
    ValueError: unknown model name, or an image size the architecture cannot take.
  """
  name = config.model.name
  if name not in _MODELS:
    raise ValueError(f"config.model.name={name!r} is not a known model; expected one of {_MODELS}.")
  size = config.data.image_size
  if name == "ddpm":
    return _ddpm_unet(config)
  depth = depth_for_image_size(size)
  factor = 2 ** DOWNSAMPLINGS[depth]
  if size < 8 or (size % factor and size != 28):
    raise ValueError(
        f"config.data.image_size={size!r} cannot be taken by {name} ({depth} depth, "
        f"{DOWNSAMPLINGS[depth]} stride-2 stages): expected a multiple of {factor} of at "
        "least 8, or 28.")
  common = dict(ngf=config.model.ngf, channels=config.data.channels, depth=depth,
                image_size=size, num_classes=config.model.num_classes)
  if name == "ncsn":
    return NCSN(**common)
  return NCSNv2(sigma_begin=config.model.sigma_begin, sigma_end=config.model.sigma_end,
                **common)


def example_inputs(config):
  """(x [1, H, W, C] zeros, y [1] int32 zeros): what `model.init` is traced with."""
  size, ch = config.data.image_size, config.data.channels
  return jnp.zeros((1, size, size, ch)), jnp.zeros((1,), jnp.int32)


def _ddpm_unet(config) -> DDPMUNet:
  m, size = config.model, config.data.image_size
  mult = tuple(int(v) for v in m.ch_mult)
  if m.ch <= 0 or not mult or min(mult) <= 0:
    raise ValueError(f"config.model.ch={m.ch!r}, ch_mult={m.ch_mult!r}: expected positive "
                     "values.")
  factor = 2 ** (len(mult) - 1)
  if size % factor:
    raise ValueError(f"config.data.image_size={size!r} cannot be taken by a DDPM U-Net with "
                     f"{len(mult)} levels: expected a multiple of {factor}.")
  chans = tuple(m.ch * v for v in mult)
  bad = [c for c in chans if c % m.num_groups]
  if bad:
    raise ValueError(f"config.model.num_groups={m.num_groups!r} does not divide the channel "
                     f"count {bad[0]} (model.ch * ch_mult).")
  res = [size // 2**i for i in range(len(mult))]
  unknown = [r for r in m.attn_resolutions if r not in res]
  if unknown:
    raise ValueError(f"config.model.attn_resolutions={tuple(m.attn_resolutions)!r}: "
                     f"{unknown[0]} is not one of the U-Net's resolutions {res}.")
  return DDPMUNet(out_channels=config.data.channels, block_out_channels=chans,
                  num_res_blocks=m.num_res_blocks,
                  attn_levels=tuple(i for i, r in enumerate(res) if r in m.attn_resolutions),
                  dropout=m.dropout, num_groups=m.num_groups,
                  attention_head_dim=m.attention_head_dim or None,
                  resamp_with_conv=m.resamp_with_conv)
