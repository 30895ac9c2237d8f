"""Score networks. `get_model(config)` builds the linen module a config names."""

import jax.numpy as jnp
import numpy as np

from score_jax.models.ddpm import DDPMUNet
from score_jax.models.ncsn import NCSN
from score_jax.models.ncsnv2 import NCSNv2
from score_jax.models.refinenet import DOWNSAMPLINGS, depth_for_image_size

_MODELS = ("ncsn", "ncsnv2", "ddpm", "edm")
# config.model.dtype: what the networks compute in. Parameters, optimizer state and EMA are
# float32 whatever it is (mixed precision), and so are the networks' outputs and the losses.
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_options(config) -> dict:
  """The network arguments that change how it runs, not what it is: `dtype` and `remat`.

  Raises:
    ValueError: a dtype outside COMPUTE_DTYPES (the config's types keep remat a bool).
  """
  m = config.model
  if m.dtype not in COMPUTE_DTYPES:
    raise ValueError(f"config.model.dtype={m.dtype!r}; expected one of {sorted(COMPUTE_DTYPES)}.")
  return dict(dtype=COMPUTE_DTYPES[m.dtype], remat=m.remat)


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
  if name == "edm":
    return _edm_net(config)
  depth = depth_for_image_size(size)
  factor = 2 ** DOWNSAMPLINGS[depth]
  if size < 8 or (size % factor and size != 28):
    raise ValueError(
        f"config.data.image_size={size!r} cannot be taken by {name} ({depth} depth, "
        f"{DOWNSAMPLINGS[depth]} stride-2 stages): expected a multiple of {factor} of at "
        "least 8, or 28.")
  common = dict(ngf=config.model.ngf, channels=config.data.channels, depth=depth,
                image_size=size, num_classes=config.model.num_classes,
                **compute_options(config))
  if name == "ncsn":
    return NCSN(**common)
  return NCSNv2(sigma_begin=config.model.sigma_begin, sigma_end=config.model.sigma_end,
                **common)


def example_inputs(config):
  """What `model.init` is traced with: (x [1, H, W, C] zeros, y [1] int32 zeros); for EDM
  networks (x, sigma [1] ones, one-hot labels [1, K] or None, augment labels [1, 9] or
  None), so that every optional input layer exists."""
  size, ch = config.data.image_size, config.data.channels
  x = jnp.zeros((1, size, size, ch))
  if config.model.name == "edm":
    m = config.model
    return (x, jnp.ones((1,)), jnp.zeros((1, m.label_dim)) if m.label_dim else None,
            jnp.zeros((1, AUGMENT_DIM)) if m.augment_p > 0 else None)
  return x, jnp.zeros((1,), jnp.int32)


# EDM's augmentation labels: xflip, yflip, scale, rotate (2), aniso (2), translate (2).
AUGMENT_DIM = 9
# Constants kept with the parameters (buffers in the official code), not counted as
# parameters: NCSN++'s Fourier frequencies and iDDPM's sigma table.
BUFFERS = ("freqs", "u")


def count_params(params) -> int:
  """Trainable parameters, as the official code counts them (buffers excluded)."""
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  return sum(int(np.prod(v.shape)) for k, v in traverse_util.flatten_dict(params).items()
             if k[-1] not in BUFFERS)


EDM_ARCHS = ("SongUNet", "DhariwalUNet")


def _edm_net(config):
  from score_jax.models import edm  # pylint: disable=g-import-not-at-top
  m, size = config.model, config.data.image_size
  if m.arch not in EDM_ARCHS:
    raise ValueError(f"config.model.arch={m.arch!r}; expected one of {EDM_ARCHS}.")
  if m.precond not in edm.PRECONDS:
    raise ValueError(f"config.model.precond={m.precond!r}; expected one of {edm.PRECONDS}.")
  mult = tuple(int(v) for v in m.channel_mult)
  if m.model_channels <= 0 or not mult or min(mult) <= 0:
    raise ValueError(f"config.model.model_channels={m.model_channels!r}, channel_mult="
                     f"{m.channel_mult!r}: expected positive values.")
  if size % 2 ** (len(mult) - 1):
    raise ValueError(f"config.data.image_size={size!r} cannot be taken by {m.arch} with "
                     f"{len(mult)} levels: expected a multiple of {2 ** (len(mult) - 1)}.")
  if m.label_dim < 0:
    raise ValueError(f"config.model.label_dim={m.label_dim!r} must be >= 0.")
  net = dict(model_channels=m.model_channels, channel_mult=mult,
             channel_mult_emb=m.channel_mult_emb, num_blocks=m.num_blocks,
             attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout,
             label_dropout=m.label_dropout, **compute_options(config))
  if m.arch == "SongUNet":
    net.update(embedding_type=m.embedding_type, channel_mult_noise=m.channel_mult_noise,
               encoder_type=m.encoder_type, decoder_type=m.decoder_type,
               resample_filter=tuple(m.resample_filter))
  pre = dict(sigma_data=m.sigma_data) if m.precond == "edm" else {}
  if m.precond == "iddpm":
    pre = dict(M=m.M, C_1=m.C_1, C_2=m.C_2)
  return edm.build(m.arch, m.precond, size, config.data.channels, label_dim=m.label_dim,
                   augment_dim=AUGMENT_DIM if m.augment_p > 0 else 0, precond_kwargs=pre,
                   **net)


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
                  resamp_with_conv=m.resamp_with_conv, **compute_options(config))
