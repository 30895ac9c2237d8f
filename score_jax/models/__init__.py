"""Score networks and their registry.

`NETWORKS` maps `model.name` to the linen class (or, for EDM, the function) that builds it
from explicit arguments; `score_jax.build` reads the config and calls it. ncsn / ncsnv2 take
x as NHWC images in [0, 1] and y the integer noise-level index and return the score, NHWC;
ddpm takes x_t (data in [-1, 1]) and the timestep index t and returns epsilon; edm takes
(x, sigma, class labels, augment labels) and returns D(x; sigma).
"""

import jax.numpy as jnp
import numpy as np

from score_jax.models import edm
from score_jax.models.ddpm import DDPMUNet
from score_jax.models.ncsn import NCSN
from score_jax.models.ncsnv2 import NCSNv2

NETWORKS = {"ncsn": NCSN, "ncsnv2": NCSNv2, "ddpm": DDPMUNet, "edm": edm.build}
# config.model.dtype: what the networks compute in. Parameters, optimizer state and EMA are
# float32 whatever it is (mixed precision), and so are the networks' outputs and the losses.
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
EDM_ARCHS = tuple(edm.ARCHS)
# EDM's augmentation labels: xflip, yflip, scale, rotate (2), aniso (2), translate (2).
AUGMENT_DIM = 9
# Constants kept with the parameters (buffers in the official code), not counted as
# parameters: NCSN++'s Fourier frequencies and iDDPM's sigma table.
BUFFERS = ("freqs", "u")


def get_model(config):
  """The linen module a config names (`score_jax.build.network`; kept for callers that
  have a config and want only the network)."""
  from score_jax import build  # pylint: disable=g-import-not-at-top
  return build.network(config)


def example_inputs(network, image_size: int, channels: int):
  """What `network.init` is traced with: (x [1, H, W, C] zeros, y [1] int32 zeros); for EDM
  networks (x, sigma [1] ones, one-hot labels [1, K] or None, augment labels [1, 9] or
  None), so that every optional input layer exists."""
  x = jnp.zeros((1, image_size, image_size, channels))
  if isinstance(network, edm.EDMNet):
    k, aug = network.label_dim, network.model.augment_dim
    return (x, jnp.ones((1,)), jnp.zeros((1, k)) if k else None,
            jnp.zeros((1, aug)) if aug else None)
  return x, jnp.zeros((1,), jnp.int32)


def count_params(params) -> int:
  """Trainable parameters, as the official code counts them (buffers excluded)."""
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  return sum(int(np.prod(v.shape)) for k, v in traverse_util.flatten_dict(params).items()
             if k[-1] not in BUFFERS)
