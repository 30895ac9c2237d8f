"""`--mode=eval_ref`: reference statistics (mu, sigma, optionally the features) of a
dataset's images in the eval's feature network."""

import os

import numpy as np
import tqdm

from score_jax import data
from score_jax.eval import shards


def reference_statistics(data_spec, spec, out_path: str, features_fn=None,
                         keep_features=None) -> dict:
  """mu and sigma (float64 sums) of the features of the training data of `data_spec` (its
  source and preprocessing, no flips), in batches of `spec.batch_size` (a `build.EvalSpec`:
  its `features` network, `ref_max_images`, `ref_features`), written to `out_path` as an
  npz that pytorch-fid and EDM's fid.py read (keys mu, sigma; `features` too when kept, for
  KID)."""
  if features_fn is None:
    features_fn = shards.features_fn_of(spec.features, spec.features_weights)
  keep = spec.ref_features if keep_features is None else keep_features
  source = data.make_source(data_spec, "train")
  n = len(source) if not spec.ref_max_images else min(spec.ref_max_images, len(source))
  total, outer, count, kept = None, None, 0, []
  batch = spec.batch_size
  for start in tqdm.trange(0, n, batch, desc="eval_ref", unit="batch", leave=False):
    x = data.load_images(data_spec, "train", indices=range(start, min(n, start + batch)),
                         source=source)
    pool3 = np.asarray(features_fn(shards.to_inception_input(x))[0], np.float64)
    total = pool3.sum(0) if total is None else total + pool3.sum(0)
    outer = pool3.T @ pool3 if outer is None else outer + pool3.T @ pool3
    count += len(pool3)
    if keep:
      kept.append(pool3.astype(np.float32))
  mu = total / count
  sigma = (outer - count * np.outer(mu, mu)) / (count - 1)
  arrays = dict(mu=mu, sigma=sigma, num_images=np.int64(count), source=np.str_(repr(source)))
  if keep:
    arrays["features"] = np.concatenate(kept)
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  shards.atomic_savez(out_path, **arrays)
  print(f"Reference statistics of {count} images of {source!r} -> {out_path}")
  return arrays


def run(built, workdir: str) -> dict:
  """`--mode=eval_ref` of a `build.Built`: to `eval.ref_out`, or workdir/ref_stats.npz."""
  out = built.eval.ref_out or os.path.join(workdir, "ref_stats.npz")
  return reference_statistics(built.data, built.eval, out)
