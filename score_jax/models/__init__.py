"""Score networks. `get_model(config)` builds the linen module a config names."""

import jax.numpy as jnp

from score_jax.models.ncsn import NCSN
from score_jax.models.ncsnv2 import NCSNv2
from score_jax.models.refinenet import DOWNSAMPLINGS, depth_for_image_size

_MODELS = ("ncsn", "ncsnv2")


def get_model(config):
  """The linen module for `config.model.name`, sized from `config.data` and `config.model`.

  Both take x as NHWC images in [0, 1] and y the integer noise-level index and return the
  score, NHWC. The depth follows the image size as in NCSNv2 Table 3 (and Table 2 for NCSN).

  Raises:
    ValueError: unknown model name, or an image size the architecture cannot take.
  """
  name = config.model.name
  if name not in _MODELS:
    raise ValueError(f"config.model.name={name!r} is not a known model; expected one of {_MODELS}.")
  size = config.data.image_size
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
