"""Score networks. `get_model(config)` builds the linen module a config names."""

from score_jax.models.ncsnv2 import NCSNv2, depth_for_image_size

_MODELS = ("ncsnv2",)


def get_model(config):
  """The linen module for `config.model.name`, sized from `config.data` and `config.model`.

  Raises:
    ValueError: unknown model name, or an image size the architecture cannot take.
  """
  name = config.model.name
  if name not in _MODELS:
    raise ValueError(f"config.model.name={name!r} is not a known model; expected one of {_MODELS}.")
  size = config.data.image_size
  # Every stage keeps a positive size only if the input survives the stride-2 stages:
  # the RefineNet halves once (base), twice (deeper) or three times (deepest).
  depth = depth_for_image_size(size)
  n_down = {"base": 1, "deeper": 2, "deepest": 3}[depth]
  if size < 8 or (size % (2 ** n_down) and size != 28):
    raise ValueError(
        f"config.data.image_size={size!r} cannot be taken by NCSNv2 ({depth} depth): "
        f"expected a multiple of {2 ** n_down} of at least 8, or 28.")
  return NCSNv2(ngf=config.model.ngf, channels=config.data.channels,
                sigma_begin=config.model.sigma_begin, sigma_end=config.model.sigma_end,
                num_classes=config.model.num_classes, depth=depth, image_size=size)
