"""One grain pipeline for every source:

  random-access source -> shuffle by seed (a new permutation each epoch) -> this host's share
  (every process_count-th example from process_index) -> decode and preprocess -> dequantise
  and flip (seeded per example) -> batch (drop remainder) -> prefetch by reading threads.

Nothing is decoded before it is needed and the prefetch buffer is bounded, so memory does not
grow with the dataset. The iterator's state (a few integers) is saved with each checkpoint,
so a resumed run reads exactly the batches an uninterrupted one would.
"""

import dataclasses
import threading
from typing import Optional

import grain
import numpy as np
import tqdm

from score_jax.data import sources, transforms


@dataclasses.dataclass
class BadImageCounter:
  """How many examples `skip_bad` dropped (this process), with the first file named."""
  count: int = 0
  first: Optional[str] = None
  _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

  def add(self, message: str):
    with self._lock:
      self.count += 1
      self.first = self.first or message


class _Prepare(grain.transforms.RandomMap):
  """Decode, preprocess, to [0, 1], dequantise, flip: one example -> float32 [H, W, C]."""

  def __init__(self, d, counter: Optional[BadImageCounter], preprocessed: bool = False):
    self.channels, self.kind, self.size, self.crop = (d.channels, d.preprocess, d.image_size,
                                                      d.crop_size)
    if preprocessed:  # an EDM dataset_tool archive: cropped already, only resized here
      self.kind = "resize"
    self.dequantize, self.flip, self.counter = d.dequantize, d.random_flip, counter

  def random_map(self, record, rng: np.random.Generator):
    try:
      img = transforms.decode(record["name"], record["payload"], self.channels)
      img = transforms.preprocess(img, self.kind, self.size, self.crop, record["name"])
    except transforms.BadImageError as e:
      if self.counter is None:
        raise
      self.counter.add(str(e))
      return None
    x = transforms.to_unit(img, rng if self.dequantize else None)
    if self.flip:
      x = transforms.random_flip(x, rng)
    return {"image": np.ascontiguousarray(x), "label": np.int64(record["label"])}


def make_train_dataset(spec, source=None, process_index: int = 0, process_count: int = 1,
                       counter: Optional[BadImageCounter] = None) -> grain.IterDataset:
  """This host's stream of training batches: {'image': float32 [B / hosts, H, W, C] in
  [0, 1], 'label': int64 [B / hosts]} (label -1 when the source has none), endless.

  `spec` is a `build.DataSpec` (its `batch_size` the global batch, `seed` the shuffle's).

  Raises (before anything is read): ValueError for a batch that does not divide over the
  hosts or a dataset smaller than one global batch, and whatever the source raises.
  """
  d, batch = spec, spec.batch_size
  source = sources.make_source(spec, "train") if source is None else source
  if batch % process_count:
    raise ValueError(f"config.training.batch_size={batch} must divide evenly over "
                     f"{process_count} hosts.")
  if len(source) < batch:
    raise ValueError(f"the dataset ({source!r}) has {len(source)} images, fewer than one "
                     f"batch (config.training.batch_size={batch}).")
  if d.skip_bad and counter is None:
    counter = BadImageCounter()
  prepare = _Prepare(d, counter if d.skip_bad else None,
                     getattr(source, "preprocessed", False))
  if not d.skip_bad:  # the first image shows most setting errors before anything is written
    prepare.random_map(source[0], np.random.default_rng(0))
  # Lazy: an element is decoded only when a host reads it. Its flip and dequantisation noise
  # are seeded by its position in the global stream, so they do not depend on the hosts.
  ds = grain.MapDataset.source(source).shuffle(seed=d.seed).repeat()
  ds = ds.random_map(prepare, seed=d.seed)
  per_host = batch // process_count
  ds = grain.MapDataset.source(_HostShare(ds, batch, per_host, process_index))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=d.num_threads,
                                            prefetch_buffer_size=d.prefetch * per_host),
                          allow_nones=True)
  if d.skip_bad:
    it = it.filter(lambda r: r is not None)
  return it.batch(per_host, drop_remainder=True)


class _HostShare:
  """This host's elements of the global stream: rows [index * per_host, (index + 1) *
  per_host) of every global batch, so that the hosts' slices, stacked in process order
  (as `jax.make_array_from_process_local_data` does), are the global batch one host reads."""

  def __init__(self, stream, global_batch: int, per_host: int, index: int):
    self._stream, self._g, self._p, self._i = stream, global_batch, per_host, index

  def __len__(self) -> int:
    return len(self._stream) // self._g * self._p

  def __getitem__(self, k: int):
    b, j = divmod(k, self._p)
    return self._stream[b * self._g + self._i * self._p + j]


def load_images(spec, split: str = "train", indices=None, source=None,
                progress: str = "") -> np.ndarray:
  """The images `indices` (default all) of a split, preprocessed, float32 [N, H, W, C] in
  [0, 1], unflipped and not dequantised: for analyses (calibration, figures) and inpainting,
  which want a fixed set in memory, not a stream. `source`: the split's source when the
  caller already made it (reading in batches). `spec`: a `build.DataSpec`; `progress`: the
  label of a progress bar over the images (none when empty)."""
  if source is None:
    source = sources.make_source(spec, split)
  indices = range(len(source)) if indices is None else [int(i) for i in indices]
  d = spec
  kind = "resize" if getattr(source, "preprocessed", False) else d.preprocess
  out = np.empty((len(indices), d.image_size, d.image_size, d.channels), np.float32)
  for i, index in enumerate(tqdm.tqdm(indices, desc=progress, unit="image", leave=False,
                                      disable=not progress)):
    record = source[index]
    img = transforms.decode(record["name"], record["payload"], d.channels)
    out[i] = transforms.to_unit(transforms.preprocess(img, kind, d.image_size, d.crop_size,
                                                      record["name"]))
  return out


def preview(spec, workdir: str, batches: int = 20) -> dict:
  """`--mode=data`: the first batch after preprocessing as `workdir/data_preview.png`, and
  the dataset's size, the batch shape and the pipeline's throughput (images/s over
  `batches` batches, decode and preprocessing included, no training)."""
  import os  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  from score_jax import images  # pylint: disable=g-import-not-at-top
  source = sources.make_source(spec, "train")
  counter = BadImageCounter()
  it = iter(make_train_dataset(spec, source, counter=counter))
  first = next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  rate = batches * first["image"].shape[0] / (time.perf_counter() - t0)
  path = os.path.join(workdir, "data_preview.png")
  images.save_grid(first["image"], path)
  return dict(source=repr(source), count=len(source), batch_shape=tuple(first["image"].shape),
              images_per_s=rate, skipped=counter.count, preview=path)
