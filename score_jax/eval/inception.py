"""pytorch-fid's FID Inception-v3 in Flax, loaded from `pt_inception-2015-12-05-6726825d.pth`.

The network is torchvision's Inception3 with pytorch-fid's FIDInceptionA/C/E blocks (the TF
graph of `inception-2015-12-05`): average pools that do not count padding, a max pool in the
last block, BatchNorm eps 1e-3, 1008 logits. Input: uint8 NHWC -> [0, 1] -> bilinear resize
to 299x299 with half-pixel centres and no antialiasing (torch's `align_corners=False`) ->
2x - 1. Output: pool3 features [N, 2048] and logits [N, 1008], float32.

Module and parameter names are the state dict's (`Mixed_5b/branch1x1/conv/kernel`,
`.../bn/running_var`), so loading is a rename plus the OIHW -> HWIO transpose.
"""

import functools
import os
from typing import Callable, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from score_jax import sharding

WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
               "pt_inception-2015-12-05-6726825d.pth")
BN_EPS = 1e-3
POOL3_DIM = 2048


class _Conv(nn.Module):
  features: int
  kernel: Tuple[int, int]
  stride: int
  padding: Tuple[int, int]

  @nn.compact
  def __call__(self, x):
    w = self.param("kernel", nn.initializers.lecun_normal(),
                   self.kernel + (x.shape[-1], self.features))
    ph, pw = self.padding
    return jax.lax.conv_general_dilated(x, w.astype(x.dtype), (self.stride, self.stride),
                                        ((ph, ph), (pw, pw)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


class _BatchNorm(nn.Module):
  """Inference BatchNorm with torch's parameter names."""

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    weight = self.param("weight", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    mean = self.param("running_mean", nn.initializers.zeros, (c,))
    var = self.param("running_var", nn.initializers.ones, (c,))
    scale = weight / jnp.sqrt(var + BN_EPS)
    return (x - mean.astype(x.dtype)) * scale.astype(x.dtype) + bias.astype(x.dtype)


class BasicConv(nn.Module):
  """conv (no bias) -> BatchNorm -> ReLU."""
  features: int
  kernel: Sequence[int] = (1, 1)
  stride: int = 1
  padding: Sequence[int] = (0, 0)

  @nn.compact
  def __call__(self, x):
    x = _Conv(self.features, tuple(self.kernel), self.stride, tuple(self.padding), name="conv")(x)
    return nn.relu(_BatchNorm(name="bn")(x))


def _avg_pool_no_pad(x):
  """3x3, stride 1, padding 1, dividing by the in-image pixels only (count_include_pad=False)."""
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x, stride: int, pad: int = 0):
  return nn.max_pool(x, (3, 3), (stride, stride), ((pad, pad), (pad, pad)))


class InceptionA(nn.Module):  # FIDInceptionA
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(64, name="branch1x1")(x)
    b5 = BasicConv(48, name="branch5x5_1")(x)
    b5 = BasicConv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = BasicConv(64, name="branch3x3dbl_1")(x)
    b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = BasicConv(self.pool_features, name="branch_pool")(_avg_pool_no_pad(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(384, (3, 3), 2, name="branch3x3")(x)
    bd = BasicConv(64, name="branch3x3dbl_1")(x)
    bd = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = BasicConv(96, (3, 3), 2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool(x, 2)], axis=-1)


class InceptionC(nn.Module):  # FIDInceptionC
  c7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.c7
    b1 = BasicConv(192, name="branch1x1")(x)
    b7 = BasicConv(c7, name="branch7x7_1")(x)
    b7 = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = BasicConv(c7, name="branch7x7dbl_1")(x)
    bd = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = BasicConv(192, name="branch_pool")(_avg_pool_no_pad(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(192, name="branch3x3_1")(x)
    b3 = BasicConv(320, (3, 3), 2, name="branch3x3_2")(b3)
    b7 = BasicConv(192, name="branch7x7x3_1")(x)
    b7 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = BasicConv(192, (3, 3), 2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool(x, 2)], axis=-1)


class InceptionE(nn.Module):  # FIDInceptionE_1 (average pool) / FIDInceptionE_2 (max pool)
  max_pool: bool

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(320, name="branch1x1")(x)
    y = BasicConv(384, name="branch3x3_1")(x)
    y = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(y),
                         BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(y)], -1)
    z = BasicConv(448, name="branch3x3dbl_1")(x)
    z = BasicConv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(z)
    z = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(z),
                         BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(z)], -1)
    pooled = _max_pool(x, 1, 1) if self.max_pool else _avg_pool_no_pad(x)
    bp = BasicConv(192, name="branch_pool")(pooled)
    return jnp.concatenate([b1, y, z, bp], axis=-1)


class FIDInception(nn.Module):
  """images uint8 [N, H, W, 3] -> (pool3 [N, 2048], logits [N, 1008]), float32."""

  @nn.compact
  def __call__(self, images):
    x = jnp.asarray(images, jnp.float32) / 255.0
    x = jax.image.resize(x, (x.shape[0], 299, 299, x.shape[3]), "bilinear", antialias=False)
    x = 2.0 * x - 1.0
    x = BasicConv(32, (3, 3), 2, name="Conv2d_1a_3x3")(x)
    x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = BasicConv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool(x, 2)
    x = BasicConv(80, name="Conv2d_3b_1x1")(x)
    x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max_pool(x, 2)
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(c7, name=name)(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE(False, name="Mixed_7b")(x)
    x = InceptionE(True, name="Mixed_7c")(x)
    pool3 = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(1008, name="fc")(pool3)
    return pool3, logits


class InceptionWeightsError(ValueError):
  """The weights file does not have the layout of pytorch-fid's FID Inception."""


def params_from_state_dict(state_dict) -> dict:
  """Flax params for `FIDInception` from pytorch-fid's state dict (name -> array), checking
  every name and shape; `num_batches_tracked` entries are ignored."""
  model = FIDInception()
  target = traverse_util.flatten_dict(jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 75, 75, 3), jnp.uint8)))["params"])
  out = {}
  for key, value in state_dict.items():
    if key.endswith("num_batches_tracked"):
      continue
    parts = key.split(".")
    if parts[-2:] == ["conv", "weight"]:
      path, value = tuple(parts[:-1]) + ("kernel",), np.transpose(value, (2, 3, 1, 0))
    elif parts == ["fc", "weight"]:
      path, value = ("fc", "kernel"), np.transpose(value)
    else:
      path = tuple(parts)
    if path not in target:
      raise InceptionWeightsError(f"weights key {key!r} is not part of pytorch-fid's FID "
                                  "Inception; is this the pt_inception-2015-12-05 file?")
    if tuple(np.shape(value)) != tuple(target[path].shape):
      raise InceptionWeightsError(f"weights key {key!r} has shape {tuple(np.shape(value))}; "
                                  f"the FID Inception expects {tuple(target[path].shape)}.")
    out[path] = np.asarray(value, np.float32)
  missing = sorted(".".join(p) for p in target if p not in out)
  if missing:
    raise InceptionWeightsError(f"the weights lack {len(missing)} tensor(s) of the FID "
                                f"Inception, first {missing[0]!r}.")
  return traverse_util.unflatten_dict(out)


@functools.lru_cache(maxsize=None)
def _features_fn(platform: str) -> Callable:
  """The network under jit for one platform, with its compiler options. The weights are an
  argument, not a closure constant: one compile per image shape for every loaded file, and
  no 96 MB of constants folded into the program."""
  def apply(params, images):
    with jax.default_matmul_precision("highest"):
      return FIDInception().apply({"params": params}, images)
  return jax.jit(apply, compiler_options=sharding.platform_compiler_options(platform))


def load_pytorch_fid(path: str) -> Callable:
  """images uint8 [N, H, W, 3] -> (pool3 [N, 2048], logits [N, 1008]) with pytorch-fid's
  weights file at `path`, read without torch (legacy or zip serialisation). jit-compiled;
  features in float32 at 'highest' matmul precision (accelerators otherwise use bf16/TF32
  passes, which move pool3 by about 1e-3)."""
  from score_jax.importers import torch_pickle  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"FID Inception weights {path!r} not found (config.eval.inception_weights). Download "
        f"{WEIGHTS_URL} (96 MB, pytorch-fid's) on a machine with internet and put it there; "
        "nothing is downloaded at run time. For 28x28 digits, --config.eval.features=mnist "
        "needs no download.")
  state = torch_pickle.load(path)
  if not isinstance(state, dict):
    raise InceptionWeightsError(f"{path} holds a {type(state).__name__}; expected a state dict.")
  params = jax.tree.map(jnp.asarray, params_from_state_dict(state))

  def run(images_uint8_nhwc):
    images = np.asarray(images_uint8_nhwc)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images must be uint8 [N, H, W, 3]; got {images.dtype} {images.shape} "
                       "(repeat grayscale images to three channels).")
    return _features_fn(jax.default_backend())(params, images)

  run.dim = POOL3_DIM
  return run
