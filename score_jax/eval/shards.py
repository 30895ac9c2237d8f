"""What the eval jobs share: resumable shards on disk, hashes for provenance, and the
reference statistics file.

An eval writes its per-batch results as `shard_<i>.npz` files, atomically, into a folder
named by what the numbers depend on (`settings_tag`); a restarted job skips the shards on
disk, so a job killed at any moment and run again gives the numbers an uninterrupted one
gives. Process 0 writes; every host takes part in computing.
"""

import hashlib
import json
import os

import jax
import numpy as np

from score_jax import images

EVAL_DIR = "eval"


def sha256_of_file(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def sha256_of_params(params) -> str:
  """Of the float32 bytes of every leaf, in tree order: the same weights, the same hash."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(params):
    h.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
  return h.hexdigest()


def settings_tag(sampling: dict, *parts) -> str:
  """12 hex digits naming what a shard's numbers depend on besides (step, seed, index): the
  sampler settings and the feature network (FID) or the bound's settings (bpd). Shards of
  other settings live in other folders, so a rerun with a changed sampler never resumes
  from them."""
  blob = json.dumps([sampling, *parts], sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:12]


def atomic_savez(path: str, **arrays):
  tmp = path + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def atomic_json(path: str, obj) -> None:
  with open(path + ".tmp", "w") as f:
    json.dump(obj, f, indent=1, default=float)
  os.replace(path + ".tmp", path)


def missing_shards(path_of, n_shards: int) -> list:
  """The shard indices not on disk. Every host runs the same shards: process 0's view of
  the disk decides."""
  missing = [i for i in range(n_shards) if not os.path.exists(path_of(i))]
  if jax.process_count() == 1:
    return missing
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  mask = np.zeros(n_shards, np.int32)
  mask[missing] = 1
  mask = multihost_utils.broadcast_one_to_all(mask)
  return [int(i) for i in np.nonzero(mask)[0]]


def load_reference(path: str, dim: int) -> dict:
  """mu [d], sigma [d, d] (and features [N, d] when stored) from an npz: ours, pytorch-fid's
  (`--save-stats`) or EDM's `fid-refs/*.npz` (keys mu, sigma)."""
  if not path:
    raise ValueError("config.eval.ref_stats is empty; compute one with --mode=eval_ref or use "
                     "an EDM fid-refs/*.npz.")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config.eval.ref_stats={path!r} does not exist.")
  with np.load(path) as f:
    if "mu" not in f or "sigma" not in f:
      raise ValueError(f"{path} has keys {sorted(f.files)}; expected 'mu' and 'sigma'.")
    ref = {k: np.asarray(f[k], np.float64) for k in f.files if k in ("mu", "sigma", "features")}
  if ref["mu"].shape != (dim,) or ref["sigma"].shape != (dim, dim):
    raise ValueError(f"{path}: mu {ref['mu'].shape} and sigma {ref['sigma'].shape}; the "
                     f"Inception features have {dim} dimensions.")
  return ref


def to_inception_input(x01) -> np.ndarray:
  """[B, H, W, C] in [0, 1] -> uint8 [B, H, W, 3] (grayscale repeated)."""
  u8 = images.to_uint8(x01)
  return np.repeat(u8, 3, axis=-1) if u8.shape[-1] == 1 else u8


def features_fn_of(features: str, weights: str):
  """uint8 [N, H, W, 3] -> (features, logits) of the network `features` names: 'inception'
  (pytorch-fid's network from `weights`, the papers' FID) or 'mnist' (the shipped MNIST
  classifier: a Frechet distance for CPU jobs, comparable only with itself)."""
  from score_jax.eval import inception, mnist_features  # pylint: disable=g-import-not-at-top
  if features == "mnist":
    return mnist_features.load_mnist_features(weights)
  return inception.load_pytorch_fid(weights)


def features_dim(features: str) -> int:
  from score_jax.eval import inception, mnist_features  # pylint: disable=g-import-not-at-top
  return mnist_features.FEATURE_DIM if features == "mnist" else inception.POOL3_DIM


def eval_dir(workdir: str) -> str:
  return os.path.join(workdir, EVAL_DIR)
